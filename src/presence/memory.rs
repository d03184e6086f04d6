//! Presence in this process's memory: exact, instant, single node.

use std::collections::HashMap;
use std::sync::Arc;

use dashmap::DashMap;

use super::{Change, Viewer};
use crate::memory::{give_back_room, give_back_shared_room};

#[derive(Debug)]
struct Viewing {
    name: String,
    sockets: Vec<String>,
}

/// Presence of a single node.
#[derive(Clone, Default)]
pub struct MemoryPresence {
    rooms: Arc<DashMap<String, HashMap<String, Viewing>>>,
    users: Arc<DashMap<String, Vec<String>>>,
}

impl MemoryPresence {
    pub(super) async fn join(&self, room: &str, user: &str, name: &str, sid: &str) -> Change {
        let mut viewers = self.rooms.entry(room.to_string()).or_default();
        let entry = viewers.entry(user.to_string()).or_insert_with(|| Viewing {
            name: name.to_string(),
            sockets: Vec::new(),
        });
        let user_changed = entry.sockets.is_empty();
        if !entry.sockets.iter().any(|s| s == sid) {
            entry.sockets.push(sid.to_string());
        }
        entry.name = name.to_string();
        Change {
            user_changed,
            viewers: viewers.len(),
        }
    }

    pub(super) async fn leave(&self, room: &str, user: &str, sid: &str) -> Change {
        let Some(mut viewers) = self.rooms.get_mut(room) else {
            return Change {
                user_changed: false,
                viewers: 0,
            };
        };
        let mut user_changed = false;
        if let Some(entry) = viewers.get_mut(user) {
            let before = entry.sockets.len();
            entry.sockets.retain(|s| s != sid);
            if entry.sockets.is_empty() && before > 0 {
                viewers.remove(user);
                give_back_room(&mut *viewers);
                user_changed = true;
            }
        }
        let count = viewers.len();
        drop(viewers);
        if count == 0 {
            self.rooms.remove_if(room, |_, v| v.is_empty());
            give_back_shared_room(&self.rooms);
        }
        Change {
            user_changed,
            viewers: count,
        }
    }

    pub(super) async fn viewers(&self, room: &str, limit: usize) -> (Vec<Viewer>, usize) {
        let Some(viewers) = self.rooms.get(room) else {
            return (Vec::new(), 0);
        };
        let total = viewers.len();
        let mut list: Vec<Viewer> = viewers
            .iter()
            .take(limit)
            .map(|(user, viewing)| Viewer {
                user_id: user.clone(),
                name: viewing.name.clone(),
                socket_id: viewing.sockets.first().cloned().unwrap_or_default(),
            })
            .collect();
        drop(viewers);
        list.sort_by(|a, b| a.user_id.cmp(&b.user_id));
        (list, total)
    }

    pub(super) async fn count(&self, room: &str) -> usize {
        self.rooms.get(room).map_or(0, |v| v.len())
    }

    pub(super) async fn connect_user(&self, user: &str, sid: &str) -> bool {
        let mut sockets = self.users.entry(user.to_string()).or_default();
        let first = sockets.is_empty();
        sockets.push(sid.to_string());
        first
    }

    pub(super) async fn disconnect_user(&self, user: &str, sid: &str) -> bool {
        let last = match self.users.get_mut(user) {
            Some(mut sockets) => {
                let before = sockets.len();
                sockets.retain(|s| s != sid);
                before > 0 && sockets.is_empty()
            }
            None => false,
        };
        if last {
            self.users.remove_if(user, |_, s| s.is_empty());
            give_back_shared_room(&self.users);
        }
        last
    }

    pub(super) async fn users_online(&self) -> usize {
        self.users.len()
    }

    /// Every (room, user, name, socket) held here.
    pub(super) fn room_entries(&self) -> Vec<(String, String, String, String)> {
        let mut out = Vec::new();
        for room in self.rooms.iter() {
            for (user, viewing) in room.value() {
                for sid in &viewing.sockets {
                    out.push((
                        room.key().clone(),
                        user.clone(),
                        viewing.name.clone(),
                        sid.clone(),
                    ));
                }
            }
        }
        out
    }

    /// Every (user, socket) connected here.
    pub(super) fn user_entries(&self) -> Vec<(String, String)> {
        self.users
            .iter()
            .flat_map(|e| {
                e.value()
                    .iter()
                    .map(|sid| (e.key().clone(), sid.clone()))
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn counts_users_not_sockets() {
        let p = MemoryPresence::default();
        assert_eq!(
            p.join("s:1", "ann", "Ann", "a1").await,
            Change {
                user_changed: true,
                viewers: 1
            }
        );
        assert_eq!(
            p.join("s:1", "ann", "Ann", "a2").await,
            Change {
                user_changed: false,
                viewers: 1
            }
        );
        assert_eq!(
            p.join("s:1", "bob", "Bob", "b1").await,
            Change {
                user_changed: true,
                viewers: 2
            }
        );
        assert_eq!(
            p.join("s:1", "ann", "Ann", "a2").await,
            Change {
                user_changed: false,
                viewers: 2
            },
            "rejoin is a no-op"
        );
        assert_eq!(
            p.leave("s:1", "ann", "a1").await,
            Change {
                user_changed: false,
                viewers: 2
            },
            "one tab left"
        );
        assert_eq!(
            p.leave("s:1", "ann", "a2").await,
            Change {
                user_changed: true,
                viewers: 1
            }
        );
        assert_eq!(
            p.leave("s:1", "ann", "a2").await,
            Change {
                user_changed: false,
                viewers: 1
            },
            "twice is a no-op"
        );
        let (viewers, total) = p.viewers("s:1", 10).await;
        assert_eq!(total, 1);
        assert_eq!(
            viewers,
            vec![Viewer {
                user_id: "bob".into(),
                name: "Bob".into(),
                socket_id: "b1".into()
            }]
        );
        assert_eq!(
            p.leave("s:1", "bob", "b1").await,
            Change {
                user_changed: true,
                viewers: 0
            }
        );
        assert!(p.rooms.is_empty(), "empty rooms are forgotten");
        assert_eq!(
            p.leave("nowhere", "x", "y").await,
            Change {
                user_changed: false,
                viewers: 0
            }
        );
    }

    #[tokio::test]
    async fn users_online_by_first_and_last_socket() {
        let p = MemoryPresence::default();
        assert!(p.connect_user("ann", "a1").await);
        assert!(!p.connect_user("ann", "a2").await);
        assert_eq!(p.users_online().await, 1);
        assert!(!p.disconnect_user("ann", "a1").await);
        assert!(p.disconnect_user("ann", "a2").await);
        assert!(!p.disconnect_user("ann", "a2").await);
        assert_eq!(p.users_online().await, 0);
    }
}
