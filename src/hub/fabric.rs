//! What the hub needs from the Socket.IO layer, and nothing more.
//!
//! The hub decides *what* goes *where*; the fabric moves bytes to sockets on this
//! node. `realtime` implements it over socketioxide, whatever the adapter, which
//! keeps the hub free of socketioxide's adapter generics and lets its logic be
//! tested with a fake.

use serde_json::value::RawValue;
use socketioxide::socket::Sid;

/// A logged event on its way to sockets.
#[derive(Debug)]
pub struct LoggedEvent {
    /// Position in the log.
    pub seq: i64,
    /// Event name.
    pub event: String,
    /// The envelope, as stored.
    pub payload: Box<RawValue>,
    /// Target rooms.
    pub rooms: Vec<String>,
    /// Excluded rooms.
    pub except: Vec<String>,
}

/// What happened to a send to one socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendOutcome {
    /// Queued for the client.
    Sent,
    /// The socket is not (or no longer) connected here.
    Gone,
    /// Its outgoing buffer is full; nothing was queued. The caller decides
    /// whether to wait or to [`Fabric::force_reconnect`] it.
    Slow,
}

/// This node's sockets and rooms, for `/health` and `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Census {
    /// Sockets on the websocket transport.
    pub websocket: usize,
    /// Sockets on the polling transport.
    pub polling: usize,
    /// Rooms with at least one local socket (internal rooms excluded).
    pub rooms: usize,
}

/// A future that does not borrow.
pub type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

/// Moves events to the sockets connected to this node.
pub trait Fabric: Send + Sync + 'static {
    /// Sends a logged event to every local socket in one of its rooms and in none
    /// of its excluded rooms, once per socket. Returns how many sockets got it.
    /// A socket whose buffer is full is forced to reconnect: it will replay from
    /// its last offset rather than silently miss this event.
    fn deliver(&self, event: &LoggedEvent) -> usize;

    /// Closes a socket's transport without a Socket.IO disconnect, so that the
    /// client reconnects by itself (and replays what it missed).
    fn force_reconnect(&self, sid: Sid);

    /// Sends one event to one local socket.
    fn send(&self, sid: Sid, event: &str, payload: &RawValue) -> SendOutcome;

    /// Ends a local socket with a Socket.IO disconnect (the client does not
    /// reconnect by itself: used when its token expired).
    fn disconnect(&self, sid: Sid);

    /// Puts a local socket in rooms.
    fn join(&self, sid: Sid, rooms: &[String]);

    /// The rooms a local socket is in (empty when it is gone).
    fn rooms_of(&self, sid: Sid) -> Vec<String>;

    /// Sends an ephemeral (unlogged) event to `rooms` on every node, except the
    /// socket `except` (the one that caused it).
    fn signal(&self, rooms: &[String], except: &[String], event: &str, payload: &serde_json::Value);

    /// Disconnects every socket in `room` on every node, with a Socket.IO
    /// disconnect (the client does not reconnect by itself).
    fn disconnect_room(&self, room: String) -> BoxFuture<Result<(), String>>;

    /// Counts of this node's sockets and rooms.
    fn census(&self) -> Census;
}
