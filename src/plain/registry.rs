//! This node's plain WebSocket connections and their rooms: the hub's
//! [`Fabric`] for the plain front.
//!
//! Each connection has one bounded queue of outgoing frames, drained by its
//! own task (see [`super::conn`]). An event is rendered once and its bytes are
//! shared by every connection it goes to; a connection whose queue is full is
//! closed (it reconnects and replays from its offset) rather than skipped.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use dashmap::DashMap;
use parking_lot::Mutex;
use serde_json::value::RawValue;
use socketioxide::socket::Sid;
use tokio_util::sync::CancellationToken;

use super::frames;
use super::outbox::{Outbox, Refused};
use crate::cluster::relay::{Relay, RelayTarget, Relayed};
use crate::hub::{BoxFuture, Census, Fabric, LoggedEvent, SendOutcome};
use crate::session::Session;

/// Close codes livehub uses on plain connections.
pub(crate) mod close {
    /// Normal close, on the user's disconnect by a controller.
    pub const KICKED: u16 = 4000;
    /// Refused or expired token.
    pub const UNAUTHORIZED: u16 = 4401;
    /// Nothing heard from the client for too long.
    pub const IDLE: u16 = 4408;
    /// The server is restarting: reconnect.
    pub const RESTART: u16 = 1012;
    /// Too slow to keep up: reconnect and replay.
    pub const TRY_AGAIN: u16 = 1013;
    /// A frame far over the size cap.
    pub const TOO_BIG: u16 = 1009;
}

/// What a connection's task writes, in order.
pub(crate) enum Outgoing {
    /// A JSON text frame.
    Text(Utf8Bytes),
    /// A ping whose pong proves the client read everything before it.
    Probe(axum::body::Bytes),
}

/// One plain connection, as the registry and its task share it.
pub(crate) struct Conn {
    pub sid: Sid,
    /// The connection's session (for shutdown's cleanup).
    pub session: Arc<Session>,
    out: Outbox,
    /// The probe waiting for its pong: its payload and who to tell.
    probe: Mutex<Option<(axum::body::Bytes, tokio::sync::oneshot::Sender<()>)>>,
    rooms: Mutex<HashSet<String>>,
    /// Seed-001 names this connection used, by livehub room name.
    aliases: Mutex<HashMap<String, String>>,
    closing: Mutex<Option<(u16, String)>>,
    /// Cancelled when the connection must close (see [`Conn::close`]).
    pub kill: CancellationToken,
    /// Bytes of text frames queued and not yet written.
    queued_bytes: std::sync::atomic::AtomicUsize,
}

use crate::hub::fabric::OUTGOING_BYTE_BUDGET as BYTE_BUDGET;

impl Conn {
    /// A connection, its outgoing queue empty.
    pub(crate) fn new(sid: Sid, session: Arc<Session>) -> Conn {
        Conn {
            sid,
            probe: Mutex::default(),
            session,
            out: Outbox::default(),
            rooms: Mutex::default(),
            aliases: Mutex::default(),
            closing: Mutex::default(),
            kill: CancellationToken::new(),
            queued_bytes: Default::default(),
        }
    }

    /// Queues a frame: `Slow` when the connection's queue is full in frames
    /// or in bytes ([`BYTE_BUDGET`]).
    pub(crate) fn push(&self, frame: Utf8Bytes) -> SendOutcome {
        use std::sync::atomic::Ordering::Relaxed;
        let len = frame.len();
        if self.queued_bytes.fetch_add(len, Relaxed) + len > BYTE_BUDGET {
            self.queued_bytes.fetch_sub(len, Relaxed);
            return SendOutcome::Slow;
        }
        match self.out.push(Outgoing::Text(frame)) {
            Ok(()) => SendOutcome::Sent,
            Err(refused) => {
                self.queued_bytes.fetch_sub(len, Relaxed);
                match refused {
                    Refused::Full => SendOutcome::Slow,
                    Refused::Closed => SendOutcome::Gone,
                }
            }
        }
    }

    /// The next frame to write, once one is waiting (`None` once closed).
    pub(crate) async fn next_out(&self) -> Option<Outgoing> {
        self.dequeued(self.out.next().await)
    }

    /// The next frame to write, if one is waiting.
    pub(crate) fn try_next_out(&self) -> Option<Outgoing> {
        self.dequeued(self.out.try_next())
    }

    /// The connection's task has finished: nothing more is queued for it.
    pub(crate) fn finished(&self) {
        self.out.close();
    }

    /// A frame left the queue for the socket: its bytes no longer count.
    fn dequeued(&self, out: Option<Outgoing>) -> Option<Outgoing> {
        if let Some(Outgoing::Text(frame)) = &out {
            self.queued_bytes
                .fetch_sub(frame.len(), std::sync::atomic::Ordering::Relaxed);
        }
        out
    }

    /// A pong arrived: it answers the waiting probe if its payload matches.
    pub(crate) fn pong(&self, payload: &[u8]) {
        let mut probe = self.probe.lock();
        if probe
            .as_ref()
            .is_some_and(|(nonce, _)| nonce.as_ref() == payload)
            && let Some((_, done)) = probe.take()
        {
            let _ = done.send(());
        }
    }

    /// Asks the connection's task to close with `code` (the first reason wins).
    pub(crate) fn close(&self, code: u16, reason: &str) {
        self.closing
            .lock()
            .get_or_insert_with(|| (code, reason.to_string()));
        self.kill.cancel();
    }

    /// Why the connection is closing, once [`Conn::close`] was called.
    pub(crate) fn close_reason(&self) -> Option<(u16, String)> {
        self.closing.lock().clone()
    }

    /// Remembers that the client calls `canonical` by `alias`, from its join
    /// on (its replay is renamed too). The name goes when the connection
    /// leaves the room, or when the join fails ([`Conn::forget_alias`]), so
    /// the names kept are those of its rooms and of the joins it has queued.
    pub(crate) fn remember_alias(&self, alias: String, canonical: String) {
        self.aliases.lock().insert(canonical, alias);
    }

    /// Forgets the client's name for `canonical`, unless it is in that room.
    pub(crate) fn forget_alias(&self, canonical: &str) {
        if !self.rooms.lock().contains(canonical) {
            self.aliases.lock().remove(canonical);
        }
    }

    fn alias_of(&self, room: &str) -> Option<String> {
        let aliases = self.aliases.lock();
        if aliases.is_empty() {
            return None;
        }
        aliases.get(room).cloned()
    }

    /// The connection's rooms.
    pub(crate) fn rooms(&self) -> Vec<String> {
        self.rooms.lock().iter().cloned().collect()
    }
}

/// Every plain connection on this node.
#[derive(Default)]
pub(crate) struct Registry {
    conns: DashMap<Sid, Arc<Conn>>,
    rooms: DashMap<String, HashSet<Sid>>,
    /// Other nodes' plain connections, in a cluster.
    relay: std::sync::OnceLock<Relay>,
}

impl RelayTarget for Registry {
    fn apply(&self, op: Relayed) {
        match op {
            Relayed::Signal {
                rooms,
                except,
                event,
                payload,
            } => match serde_json::value::to_raw_value(&payload) {
                Ok(payload) => self.signal_here(&rooms, &except, &event, &payload),
                Err(e) => tracing::warn!(error = %e, "a relayed signal did not serialise"),
            },
            Relayed::DisconnectRoom { room } => self.disconnect_here(room),
        }
    }
}

impl Registry {
    /// Relays signals and disconnects to the other nodes of a cluster.
    pub(crate) fn set_relay(&self, relay: Relay) {
        let _ = self.relay.set(relay);
    }

    fn signal_here(&self, rooms: &[String], except: &[String], event: &str, payload: &RawValue) {
        let conns = self.members(rooms, except);
        if conns.is_empty() {
            return;
        }
        // Only events that name a room are renamed per connection.
        let room = frames::names_a_room(event)
            .then(|| room_field(payload.get()))
            .flatten();
        self.fan_out(conns, &[(event, payload.get())], room.as_deref());
    }

    fn disconnect_here(&self, room: String) {
        for conn in self.members(&[room], &[]) {
            conn.close(close::KICKED, "disconnected by the server");
        }
    }

    pub(crate) fn add(&self, conn: Arc<Conn>) {
        self.conns.insert(conn.sid, conn);
    }

    /// Forgets a connection and its rooms.
    pub(crate) fn remove(&self, sid: Sid) {
        let Some((_, conn)) = self.conns.remove(&sid) else {
            return;
        };
        for room in conn.rooms() {
            self.leave(sid, &room);
        }
        crate::memory::give_back_shared_room(&self.conns);
        crate::memory::give_back_shared_room(&self.rooms);
    }

    pub(crate) fn get(&self, sid: Sid) -> Option<Arc<Conn>> {
        self.conns.get(&sid).map(|c| c.clone())
    }

    /// How many connections there are.
    pub(crate) fn len(&self) -> usize {
        self.conns.len()
    }

    /// Every connection, for shutdown.
    pub(crate) fn all(&self) -> Vec<Arc<Conn>> {
        self.conns.iter().map(|c| c.value().clone()).collect()
    }

    /// The connections in any of `rooms` and in none of `except`.
    fn members(&self, rooms: &[String], except: &[String]) -> Vec<Arc<Conn>> {
        let mut sids: HashSet<Sid> = HashSet::new();
        for room in rooms {
            if let Some(members) = self.rooms.get(room) {
                sids.extend(members.iter().copied());
            }
        }
        for room in except {
            if let Some(members) = self.rooms.get(room) {
                members.iter().for_each(|s| {
                    sids.remove(s);
                });
            }
        }
        sids.into_iter().filter_map(|s| self.get(s)).collect()
    }

    /// Sends a run of events with the same rooms to their connections.
    fn deliver_events(&self, run: &[&LoggedEvent]) -> Vec<usize> {
        let Some(first) = run.first() else {
            return Vec::new();
        };
        let conns = self.members(&first.rooms, &first.except);
        if conns.is_empty() {
            return vec![0; run.len()];
        }
        let room = first.rooms.first().map(String::as_str);
        let run: Vec<_> = run
            .iter()
            .map(|e| (e.event.as_str(), e.payload.get()))
            .collect();
        self.fan_out(conns, &run, room)
    }

    /// Sends one rendering of each event of a run (`(name, payload)`, same
    /// rooms) to each of `conns`, renamed per connection where it names the
    /// room another way, the whole run to one connection before the next: its
    /// writer then sends them in one write. Returns how many got each event.
    fn fan_out(
        &self,
        conns: Vec<Arc<Conn>>,
        run: &[(&str, &str)],
        room: Option<&str>,
    ) -> Vec<usize> {
        let mut shared: Vec<Option<Utf8Bytes>> = vec![None; run.len()];
        let mut reached = vec![0; run.len()];
        for conn in conns {
            for (i, &(event, payload)) in run.iter().enumerate() {
                let alias = room
                    .filter(|_| frames::names_a_room(event))
                    .and_then(|r| conn.alias_of(r));
                let frame = match alias {
                    Some(alias) => {
                        Utf8Bytes::from(frames::event_frame(event, payload, Some(&alias)))
                    }
                    None => shared[i]
                        .get_or_insert_with(|| {
                            Utf8Bytes::from(frames::event_frame(event, payload, None))
                        })
                        .clone(),
                };
                match conn.push(frame) {
                    SendOutcome::Sent => reached[i] += 1,
                    SendOutcome::Slow => {
                        crate::metrics::lagging_disconnect("plain");
                        conn.close(close::TRY_AGAIN, "too slow: reconnect and replay");
                        break;
                    }
                    SendOutcome::Gone => break,
                }
            }
        }
        reached
    }
}

impl Fabric for Registry {
    fn deliver(&self, event: &LoggedEvent) -> usize {
        self.deliver_events(&[event])[0]
    }

    fn deliver_run(&self, run: &[Arc<LoggedEvent>]) -> Vec<usize> {
        self.deliver_events(&run.iter().map(|e| &**e).collect::<Vec<_>>())
    }

    fn force_reconnect(&self, sid: Sid) {
        // A connection too slow for its replay, or whose connect could not
        // read what it is owed: either way, reconnecting replays it.
        if let Some(conn) = self.get(sid) {
            conn.close(close::TRY_AGAIN, "reconnect and replay");
        }
    }

    fn send(&self, sid: Sid, event: &str, payload: &RawValue) -> SendOutcome {
        let Some(conn) = self.get(sid) else {
            return SendOutcome::Gone;
        };
        let room = frames::names_a_room(event)
            .then(|| room_field(payload.get()))
            .flatten();
        let alias = room.and_then(|r| conn.alias_of(&r));
        conn.push(Utf8Bytes::from(frames::event_frame(
            event,
            payload.get(),
            alias.as_deref(),
        )))
    }

    fn disconnect(&self, sid: Sid) {
        if let Some(conn) = self.get(sid) {
            conn.close(close::UNAUTHORIZED, "unauthorized: token expired");
        }
    }

    fn join(&self, sid: Sid, rooms: &[String]) {
        let Some(conn) = self.get(sid) else { return };
        let mut mine = conn.rooms.lock();
        for room in rooms {
            if mine.insert(room.clone()) {
                self.rooms.entry(room.clone()).or_default().insert(sid);
            }
        }
    }

    fn leave(&self, sid: Sid, room: &str) {
        if let Some(conn) = self.get(sid) {
            conn.rooms.lock().remove(room);
            conn.aliases.lock().remove(room);
        }
        self.rooms.remove_if_mut(room, |_, members| {
            members.remove(&sid);
            crate::memory::give_back_room(members);
            members.is_empty()
        });
    }

    fn rooms_of(&self, sid: Sid) -> Vec<String> {
        self.get(sid).map(|c| c.rooms()).unwrap_or_default()
    }

    fn user_rooms(&self, user: &str) -> Vec<String> {
        self.members(&[crate::rooms::user_sockets_room(user)], &[])
            .iter()
            .flat_map(|c| c.rooms())
            .collect()
    }

    fn signal(&self, rooms: &[String], except: &[String], event: &str, payload: &RawValue) {
        self.signal_here(rooms, except, event, payload);
        if let Some(relay) = self.relay.get() {
            relay.publish(Relayed::Signal {
                rooms: rooms.to_vec(),
                except: except.to_vec(),
                event: event.to_string(),
                payload: serde_json::from_str(payload.get()).unwrap_or_default(),
            });
        }
    }

    fn settle(&self) -> BoxFuture<()> {
        let relay = self.relay.get().cloned();
        Box::pin(async move {
            if let Some(relay) = relay {
                relay.settle().await;
            }
        })
    }

    fn disconnect_room(&self, room: String) -> BoxFuture<Result<(), String>> {
        if let Some(relay) = self.relay.get() {
            relay.publish(Relayed::DisconnectRoom { room: room.clone() });
        }
        self.disconnect_here(room);
        Box::pin(async { Ok(()) })
    }

    fn census(&self) -> Census {
        Census {
            plain: self.conns.len(),
            rooms: self
                .rooms
                .iter()
                .filter(|r| !crate::rooms::is_internal(r.key()))
                .count(),
            ..Census::default()
        }
    }
}

fn room_field(payload: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct WithRoom {
        room: Option<String>,
    }
    serde_json::from_str::<WithRoom>(payload).ok()?.room
}

/// How long a connection has to show it read its replay before the queue is
/// left owed to its next connection.
const PROBE_PATIENCE: std::time::Duration = std::time::Duration::from_secs(60);

impl crate::session::ReceiptProbe for Conn {
    /// A ping queued behind everything sent so far: its pong means the client
    /// read all of it (frames and pings travel in order on one stream).
    fn confirm(&self) -> BoxFuture<bool> {
        let nonce = axum::body::Bytes::from(rand::random::<[u8; 8]>().to_vec());
        let (done, answered) = tokio::sync::oneshot::channel();
        *self.probe.lock() = Some((nonce.clone(), done));
        let queued = self.out.push(Outgoing::Probe(nonce)).is_ok();
        Box::pin(async move {
            queued
                && tokio::time::timeout(PROBE_PATIENCE, answered)
                    .await
                    .is_ok_and(|r| r.is_ok())
        })
    }
}
