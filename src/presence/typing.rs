//! Typing indicators that stop by themselves.
//!
//! A client sends `typing:start` while its user types and `typing:stop` when
//! done; a closed tab never sends the stop. Each start sets a deadline of
//! [`TYPING_TTL`] (a client that keeps typing keeps refreshing it); a sweeper
//! ends whatever passed its deadline, so nobody is "typing" forever.

use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use serde_json::json;
use tokio::time::Instant;

use crate::hub::Hub;
use crate::rooms;

/// How long a `typing:start` holds without a refresh.
pub const TYPING_TTL: Duration = Duration::from_secs(5);
const SWEEP_EVERY: Duration = Duration::from_millis(500);

/// Who is typing where.
#[derive(Clone)]
pub struct Typing {
    inner: Arc<Inner>,
}

struct Inner {
    hub: Hub,
    /// (room, user) → deadline.
    active: DashMap<(String, String), Instant>,
}

impl Typing {
    /// Typing indicators announced through `hub`; starts the sweeper.
    pub fn start(hub: Hub) -> Typing {
        let typing = Typing {
            inner: Arc::new(Inner {
                hub,
                active: DashMap::new(),
            }),
        };
        let weak = Arc::downgrade(&typing.inner);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(SWEEP_EVERY).await;
                let Some(inner) = weak.upgrade() else { return };
                let now = Instant::now();
                let mut expired = Vec::new();
                inner.active.retain(|key, deadline| {
                    if *deadline <= now {
                        expired.push(key.clone());
                        false
                    } else {
                        true
                    }
                });
                crate::memory::give_back_shared_room(&inner.active);
                for (room, user) in expired {
                    announce(&inner.hub, &room, &user, false);
                }
            }
        });
        typing
    }

    /// `user` types in `room`: announced once, then only refreshed.
    pub fn started(&self, room: &str, user: &str) {
        let key = (room.to_string(), user.to_string());
        let fresh = self
            .inner
            .active
            .insert(key, Instant::now() + TYPING_TTL)
            .is_none();
        if fresh {
            announce(&self.inner.hub, room, user, true);
        }
    }

    /// `user` stopped typing in `room` (or left it, or disconnected).
    pub fn stopped(&self, room: &str, user: &str) {
        if self
            .inner
            .active
            .remove(&(room.to_string(), user.to_string()))
            .is_some()
        {
            announce(&self.inner.hub, room, user, false);
        }
    }
}

fn announce(hub: &Hub, room: &str, user: &str, typing: bool) {
    hub.signal(
        &[room.to_string()],
        &[rooms::user_room(user)],
        "typing",
        &json!({ "room": room, "userId": user, "typing": typing, "timestamp": crate::events::now_iso8601() }),
    );
}
