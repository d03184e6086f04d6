//! Telling a room who came and went, without drowning it.
//!
//! A join or leave is recorded here as a transition of one user. In a quiet room
//! the first transition is announced at once; the ones that follow within a
//! short window are gathered and announced together at its end: a user who came
//! and went within the window is not announced at all, a burst of joins becomes
//! one event per user, and each event carries the count at send time.
//!
//! In a room with more than `PRESENCE_BROADCAST_LIMIT` viewers, per-user events
//! stop: announcing every arrival to every viewer is quadratic (5,000 people
//! opening one dashboard would be 12.5 million frames). The room gets
//! `viewers:count { room, viewersCount }` instead, at most once a second.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::{Value, json};

use super::Presence;
use crate::hub::Hub;
use crate::rooms::{self, EntityKind, Room};

/// How long transitions are gathered in a small room.
pub const COALESCE_WINDOW: Duration = Duration::from_millis(50);
/// The shortest time between two `viewers:count` events of one room.
pub const COUNT_INTERVAL: Duration = Duration::from_secs(1);

/// Why a user stopped viewing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Departure {
    /// `leave:*` / `unsubscribe`: `user:left`.
    Left,
    /// The socket disconnected: `user:disconnected`.
    Disconnected,
}

#[derive(Debug, Clone)]
struct Transition {
    was_viewing: bool,
    viewing: bool,
    name: String,
    socket_id: String,
    departure: Departure,
}

#[derive(Default)]
struct Pending {
    users: HashMap<String, Transition>,
}

/// Announces presence transitions to rooms.
#[derive(Clone)]
pub struct Announcer {
    inner: Arc<Inner>,
}

struct Inner {
    hub: Hub,
    presence: Presence,
    limit: usize,
    pending: Mutex<HashMap<String, Pending>>,
    /// Held shared by each window's flush from before it takes its room's
    /// transitions until they are queued, and exclusively by
    /// [`Announcer::flush_all`], so that a flush already under way (awaiting
    /// the room's count) is finished when shutdown's returns.
    flushing: tokio::sync::RwLock<()>,
}

impl Announcer {
    /// Announces through `hub`, reading counts from `presence`; `limit` is
    /// `PRESENCE_BROADCAST_LIMIT`.
    pub fn new(hub: Hub, presence: Presence, limit: usize) -> Announcer {
        Announcer {
            inner: Arc::new(Inner {
                hub,
                presence,
                limit,
                pending: Mutex::new(HashMap::new()),
                flushing: tokio::sync::RwLock::new(()),
            }),
        }
    }

    /// Records that `user` started viewing `room` (`viewers` users now).
    pub fn arrived(&self, room: &str, user: &str, name: &str, socket_id: &str, viewers: usize) {
        self.record(room, user, name, socket_id, true, Departure::Left, viewers);
    }

    /// Records that `user` stopped viewing `room`.
    pub fn departed(
        &self,
        room: &str,
        user: &str,
        name: &str,
        socket_id: &str,
        how: Departure,
        viewers: usize,
    ) {
        self.record(room, user, name, socket_id, false, how, viewers);
    }

    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        room: &str,
        user: &str,
        name: &str,
        socket_id: &str,
        viewing: bool,
        departure: Departure,
        viewers: usize,
    ) {
        let transition = Transition {
            was_viewing: !viewing,
            viewing,
            name: name.to_string(),
            socket_id: socket_id.to_string(),
            departure,
        };
        let large = viewers > self.inner.limit;
        let mut windows = self.inner.pending.lock();
        match windows.get_mut(room) {
            // A window is open: gather, the flush at its end announces the net change.
            Some(pending) => {
                pending
                    .users
                    .entry(user.to_string())
                    .and_modify(|t| {
                        t.viewing = viewing;
                        t.departure = departure;
                        t.socket_id = socket_id.to_string();
                    })
                    .or_insert(transition);
            }
            // Quiet room: announce now (leading edge) and open a window for what follows.
            None => {
                let mut pending = Pending::default();
                if large {
                    pending.users.insert(user.to_string(), transition.clone());
                }
                windows.insert(room.to_string(), pending);
                drop(windows);
                if !large {
                    self.announce(room, user, &transition, viewers);
                }
                let window = if large {
                    COUNT_INTERVAL
                } else {
                    COALESCE_WINDOW
                };
                let this = self.clone();
                let room = room.to_string();
                tokio::spawn(async move {
                    tokio::time::sleep(window).await;
                    this.flush(&room).await;
                });
            }
        }
    }

    fn announce(&self, room: &str, user: &str, t: &Transition, count: usize) {
        let event = match (t.viewing, t.departure) {
            (true, _) => "user:viewing",
            (false, Departure::Left) => "user:left",
            (false, Departure::Disconnected) => "user:disconnected",
        };
        let timestamp = crate::events::now_iso8601();
        let payload = presence_payload(room, user, &t.name, &t.socket_id, count, &timestamp);
        // To the others in the room: not to any of this user's own tabs.
        let rooms = [room.to_string()];
        self.inner
            .hub
            .signal(&rooms, &[rooms::user_room(user)], event, &payload);
    }

    /// A room's gathered transitions, taken out of the map.
    fn take_pending(&self, room: &str) -> Option<Pending> {
        let mut pending = self.inner.pending.lock();
        let taken = pending.remove(room);
        crate::memory::give_back_room(&mut *pending);
        taken
    }

    async fn flush(&self, room: &str) {
        let _flushing = self.inner.flushing.read().await;
        if let Some(pending) = self.take_pending(room) {
            self.announce_pending(room, pending).await;
        }
    }

    /// Announces every room's gathered transitions now (shutdown: the
    /// departures of this node's viewers must reach the other nodes before it
    /// goes; their windows' timers would fire too late).
    pub async fn flush_all(&self) {
        let _no_other_flush = self.inner.flushing.write().await;
        let windows = std::mem::take(&mut *self.inner.pending.lock());
        for (room, pending) in windows {
            self.announce_pending(&room, pending).await;
        }
    }

    async fn announce_pending(&self, room: &str, pending: Pending) {
        if pending.users.is_empty() {
            return;
        }
        let count = self.inner.presence.count(room).await;
        if count > self.inner.limit {
            let timestamp = crate::events::now_iso8601();
            let payload = json!({ "room": room, "viewersCount": count, "timestamp": timestamp });
            self.inner
                .hub
                .signal(&[room.to_string()], &[], "viewers:count", &payload);
            return;
        }
        for (user, t) in &pending.users {
            // Came and went (or went and came back) within the window: nothing to say.
            if t.was_viewing != t.viewing {
                self.announce(room, user, t, count);
            }
        }
    }
}

/// `{ userId, name, socketId, viewersCount, timestamp, room }` plus
/// `shipmentId` / `orderId` for those rooms.
pub fn presence_payload(
    room: &str,
    user: &str,
    name: &str,
    socket_id: &str,
    count: usize,
    timestamp: &str,
) -> Value {
    let mut payload = json!({
        "userId": user,
        "name": name,
        "socketId": socket_id,
        "viewersCount": count,
        "timestamp": timestamp,
        "room": room,
    });
    match rooms::parse(room) {
        Ok(Room::Entity(EntityKind::Shipment, id)) => payload["shipmentId"] = id.into(),
        Ok(Room::Entity(EntityKind::Order, id)) => payload["orderId"] = id.into(),
        _ => {}
    }
    payload
}
