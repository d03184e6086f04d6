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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use parking_lot::Mutex;
    use serde_json::Value;
    use serde_json::value::RawValue;
    use socketioxide::socket::Sid;

    use super::*;
    use crate::hub::{BoxFuture, Census, Fabric, HubOptions, LoggedEvent, SendOutcome};

    /// One signal as the fabric got it.
    #[derive(Debug, Clone)]
    struct Signal {
        rooms: Vec<String>,
        except: Vec<String>,
        event: String,
        payload: Value,
    }

    /// A fabric that records the signals it is given and does nothing else.
    #[derive(Default)]
    struct Signals(Mutex<Vec<Signal>>);

    impl Fabric for Signals {
        fn deliver(&self, _: &LoggedEvent) -> usize {
            0
        }
        fn force_reconnect(&self, _: Sid) {}
        fn send(&self, _: Sid, _: &str, _: &RawValue) -> SendOutcome {
            SendOutcome::Gone
        }
        fn disconnect(&self, _: Sid) {}
        fn join(&self, _: Sid, _: &[String]) {}
        fn leave(&self, _: Sid, _: &str) {}
        fn rooms_of(&self, _: Sid) -> Vec<String> {
            Vec::new()
        }
        fn signal(&self, rooms: &[String], except: &[String], event: &str, payload: &RawValue) {
            self.0.lock().push(Signal {
                rooms: rooms.to_vec(),
                except: except.to_vec(),
                event: event.into(),
                payload: serde_json::from_str(payload.get()).unwrap(),
            });
        }
        fn disconnect_room(&self, _: String) -> BoxFuture<Result<(), String>> {
            Box::pin(async { Ok(()) })
        }
        fn census(&self) -> Census {
            Census::default()
        }
    }

    const ROOM: &str = "shipment:s1";

    /// An announcer over an in-memory hub and presence, a room of at most
    /// `limit` viewers announced one by one, and what it signals.
    struct Board {
        announcer: Announcer,
        presence: Presence,
        signals: Arc<Signals>,
    }

    impl Board {
        async fn new(limit: usize) -> Board {
            let signals = Arc::new(Signals::default());
            let options = HubOptions {
                replay_limit: 100,
                retention: Duration::from_secs(60),
                node: "n1".into(),
                max_payload_bytes: 1 << 16,
            };
            let (hub, _tasks) = Hub::start(None, signals.clone(), options).await.unwrap();
            let presence = Presence::memory();
            let announcer = Announcer::new(hub, presence.clone(), limit);
            Board {
                announcer,
                presence,
                signals,
            }
        }

        /// `user` opens the room, as a session does.
        async fn arrive(&self, user: &str) {
            let change = self.presence.join(ROOM, user, user, "sid").await;
            self.announcer
                .arrived(ROOM, user, user, "sid", change.viewers);
        }

        /// `user` closes it.
        async fn depart(&self, user: &str, how: Departure) {
            let change = self.presence.leave(ROOM, user, "sid").await;
            self.announcer
                .departed(ROOM, user, user, "sid", how, change.viewers);
        }

        /// The signals since the last call: `(event, userId, viewersCount)`.
        fn told(&self) -> Vec<(String, Value, Value)> {
            std::mem::take(&mut *self.signals.0.lock())
                .into_iter()
                .map(|s| {
                    (
                        s.event,
                        s.payload["userId"].clone(),
                        s.payload["viewersCount"].clone(),
                    )
                })
                .collect()
        }
    }

    fn said(event: &str, user: &str, count: usize) -> (String, Value, Value) {
        (event.into(), user.into(), count.into())
    }

    async fn wait(d: Duration) {
        tokio::time::sleep(d).await;
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_arrival_in_a_quiet_room_is_told_at_once_to_the_others_only() {
        let board = Board::new(100).await;
        board.arrive("ann").await;
        let signals = board.signals.0.lock().clone();
        assert_eq!(signals.len(), 1, "told before any window ends");
        assert_eq!(signals[0].rooms, [ROOM]);
        assert_eq!(
            signals[0].except,
            [rooms::user_room("ann")],
            "not to her own tabs"
        );
        assert_eq!(signals[0].payload["shipmentId"], "s1");
        assert_eq!(board.told(), [said("user:viewing", "ann", 1)]);
        wait(COALESCE_WINDOW * 2).await;
        assert!(
            board.told().is_empty(),
            "nothing more to say at the window's end"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn arrivals_within_the_window_are_told_at_its_end_with_the_count_then() {
        let board = Board::new(100).await;
        board.arrive("ann").await;
        board.told();
        board.arrive("bob").await;
        board.arrive("cy").await;
        assert!(board.told().is_empty(), "gathered, not told one by one");
        wait(COALESCE_WINDOW + Duration::from_millis(1)).await;
        let mut told = board.told();
        told.sort_by_key(|(_, user, _)| user.to_string());
        assert_eq!(
            told,
            [
                said("user:viewing", "bob", 3),
                said("user:viewing", "cy", 3)
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_user_who_came_and_went_within_the_window_is_not_told() {
        let board = Board::new(100).await;
        board.arrive("ann").await;
        board.told();
        board.arrive("bob").await;
        board.depart("bob", Departure::Left).await;
        wait(COALESCE_WINDOW * 2).await;
        assert!(board.told().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_departure_is_told_as_how_the_user_went() {
        let board = Board::new(100).await;
        board.arrive("ann").await;
        board.arrive("bob").await;
        wait(COALESCE_WINDOW * 2).await;
        board.told();
        board.depart("bob", Departure::Disconnected).await;
        assert_eq!(board.told(), [said("user:disconnected", "bob", 1)]);
        wait(COALESCE_WINDOW * 2).await;
        board.depart("ann", Departure::Left).await;
        assert_eq!(board.told(), [said("user:left", "ann", 0)]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_room_past_the_limit_is_told_its_count_at_most_once_an_interval() {
        let board = Board::new(2).await;
        for user in ["ann", "bob"] {
            board.arrive(user).await;
        }
        wait(COALESCE_WINDOW * 2).await;
        board.told();
        for user in ["cy", "dee", "eve"] {
            board.arrive(user).await;
        }
        assert!(board.told().is_empty(), "no one is told of each arrival");
        wait(COUNT_INTERVAL - Duration::from_millis(1)).await;
        assert!(board.told().is_empty());
        wait(Duration::from_millis(2)).await;
        assert_eq!(
            board.told(),
            [("viewers:count".into(), Value::Null, 5.into())]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn flush_all_tells_every_gathered_departure_before_its_window_ends() {
        let board = Board::new(100).await;
        for user in ["ann", "bob", "cy"] {
            board.arrive(user).await;
        }
        wait(COALESCE_WINDOW * 2).await;
        board.told();
        board.depart("ann", Departure::Disconnected).await;
        board.depart("bob", Departure::Disconnected).await;
        board.depart("cy", Departure::Disconnected).await;
        assert_eq!(board.told(), [said("user:disconnected", "ann", 2)]);
        board.announcer.flush_all().await;
        let mut told = board.told();
        told.sort_by_key(|(_, user, _)| user.to_string());
        assert_eq!(
            told,
            [
                said("user:disconnected", "bob", 0),
                said("user:disconnected", "cy", 0)
            ]
        );
        wait(COALESCE_WINDOW * 2).await;
        assert!(
            board.told().is_empty(),
            "and the window's timer says nothing again"
        );
    }
}
