//! What the hub needs from the Socket.IO layer, and nothing more.
//!
//! The hub decides *what* goes *where*; the fabric moves bytes to sockets on this
//! node. `realtime` implements it over socketioxide, whatever the adapter, which
//! keeps the hub free of socketioxide's adapter generics and lets its logic be
//! tested with a fake.

use std::sync::Arc;

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

/// Bytes a connection may have waiting to be written before it counts as too
/// slow (closed so that it reconnects and replays). Frames are shared between
/// connections, but a slow one keeps alive every frame it has not read: this
/// bounds what one slow reader can hold, whatever the size of the events.
pub(crate) const OUTGOING_BYTE_BUDGET: usize = 4 << 20;

/// Outgoing packets one connection may have queued before it counts as too slow.
///
/// A controller's batch (up to 1,000 events) can land on one socket in a single
/// burst, so the buffer holds two full batches: a client that keeps up never
/// trips it, one that stopped reading does. Queue slots are allocated as they
/// fill, so an idle connection does not pay for the headroom.
pub(crate) const SOCKET_BUFFER_PACKETS: usize = 2048;

/// This node's sockets and rooms, for `/health` and `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Census {
    /// Sockets on the websocket transport.
    pub websocket: usize,
    /// Sockets on the polling transport.
    pub polling: usize,
    /// Plain WebSocket connections.
    pub plain: usize,
    /// Rooms with at least one local socket (internal rooms excluded).
    pub rooms: usize,
}

impl Census {
    /// Connections of every kind.
    pub fn connections(&self) -> usize {
        self.websocket + self.polling + self.plain
    }
}

/// What a queue drained in order by one task carries: an item, or a marker
/// the task answers when it reaches it, once everything queued before it has
/// been handled. [`Fabric::settle`] waits on such markers.
pub(crate) enum Queued<T> {
    Item(T),
    Marker(tokio::sync::oneshot::Sender<()>),
}

impl<T> Queued<T> {
    /// The item to handle; a marker is answered here and gives `None`.
    pub(crate) fn item(self) -> Option<T> {
        match self {
            Queued::Item(item) => Some(item),
            Queued::Marker(reached) => {
                let _ = reached.send(());
                None
            }
        }
    }

    /// A marker, and what resolves when the draining task reaches it, or at
    /// once if the marker is dropped (the queue is closed).
    pub(crate) fn marker() -> (Self, impl std::future::Future<Output = ()>) {
        let (reached, answer) = tokio::sync::oneshot::channel();
        (Queued::Marker(reached), async {
            let _ = answer.await;
        })
    }
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

    /// Sends a run of logged events that share their rooms and excluded rooms,
    /// in order, as [`Fabric::deliver`] does, and returns how many sockets got
    /// each. A fabric may queue the whole run to one socket before the next:
    /// its writer then sends the events in one write. A socket that is found too
    /// slow is sent nothing more of the run: it replays from what it last got.
    fn deliver_run(&self, run: &[Arc<LoggedEvent>]) -> Vec<usize> {
        run.iter().map(|event| self.deliver(event)).collect()
    }

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

    /// Takes a local socket out of a room.
    fn leave(&self, sid: Sid, room: &str);

    /// The rooms a local socket is in (empty when it is gone).
    fn rooms_of(&self, sid: Sid) -> Vec<String>;

    /// The rooms of a user's connections on this node.
    fn user_rooms(&self, _user: &str) -> Vec<String> {
        Vec::new()
    }

    /// Sends an ephemeral (unlogged) event to `rooms` on every node, except the
    /// sockets in the `except` rooms. The payload comes serialised once, for
    /// every front and node.
    fn signal(&self, rooms: &[String], except: &[String], event: &str, payload: &RawValue);

    /// Resolves once what was queued for other nodes before the call (signals,
    /// and logged events where they cross through the cluster) has been
    /// handed to it, or given up on. Shutdown waits on it: the departures a
    /// draining node records last would otherwise go with the process.
    fn settle(&self) -> BoxFuture<()> {
        Box::pin(async {})
    }

    /// Disconnects every socket in `room` on every node, with a Socket.IO
    /// disconnect (the client does not reconnect by itself).
    fn disconnect_room(&self, room: String) -> BoxFuture<Result<(), String>>;

    /// Counts of this node's sockets and rooms.
    fn census(&self) -> Census;
}

/// Several fabrics as one: the Socket.IO sockets and the plain WebSocket
/// connections of this node. Connection ids are unique across them, so an
/// operation on one id reaches the one fabric that knows it.
pub struct Fabrics(pub Vec<Arc<dyn Fabric>>);

impl Fabric for Fabrics {
    fn deliver(&self, event: &LoggedEvent) -> usize {
        self.0.iter().map(|f| f.deliver(event)).sum()
    }

    fn deliver_run(&self, run: &[Arc<LoggedEvent>]) -> Vec<usize> {
        let mut reached = vec![0; run.len()];
        for fabric in &self.0 {
            for (sum, n) in reached.iter_mut().zip(fabric.deliver_run(run)) {
                *sum += n;
            }
        }
        reached
    }

    fn force_reconnect(&self, sid: Sid) {
        self.0.iter().for_each(|f| f.force_reconnect(sid));
    }

    fn send(&self, sid: Sid, event: &str, payload: &RawValue) -> SendOutcome {
        for f in &self.0 {
            match f.send(sid, event, payload) {
                SendOutcome::Gone => continue,
                other => return other,
            }
        }
        SendOutcome::Gone
    }

    fn disconnect(&self, sid: Sid) {
        self.0.iter().for_each(|f| f.disconnect(sid));
    }

    fn join(&self, sid: Sid, rooms: &[String]) {
        self.0.iter().for_each(|f| f.join(sid, rooms));
    }

    fn leave(&self, sid: Sid, room: &str) {
        self.0.iter().for_each(|f| f.leave(sid, room));
    }

    fn rooms_of(&self, sid: Sid) -> Vec<String> {
        self.0
            .iter()
            .map(|f| f.rooms_of(sid))
            .find(|rooms| !rooms.is_empty())
            .unwrap_or_default()
    }

    fn user_rooms(&self, user: &str) -> Vec<String> {
        self.0.iter().flat_map(|f| f.user_rooms(user)).collect()
    }

    fn signal(&self, rooms: &[String], except: &[String], event: &str, payload: &RawValue) {
        self.0
            .iter()
            .for_each(|f| f.signal(rooms, except, event, payload));
    }

    fn settle(&self) -> BoxFuture<()> {
        use futures_util::FutureExt;
        Box::pin(futures_util::future::join_all(self.0.iter().map(|f| f.settle())).map(|_| ()))
    }

    fn disconnect_room(&self, room: String) -> BoxFuture<Result<(), String>> {
        let all: Vec<_> = self
            .0
            .iter()
            .map(|f| f.disconnect_room(room.clone()))
            .collect();
        Box::pin(async move {
            let mut result = Ok(());
            for done in futures_util::future::join_all(all).await {
                result = result.and(done);
            }
            result
        })
    }

    fn census(&self) -> Census {
        self.0.iter().fold(Census::default(), |mut sum, f| {
            let c = f.census();
            sum.websocket += c.websocket;
            sum.polling += c.polling;
            sum.plain += c.plain;
            sum.rooms += c.rooms;
            sum
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Queued;

    #[tokio::test]
    async fn a_marker_resolves_after_what_was_queued_before_it_is_handled() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Queued<i32>>();
        let handled = std::sync::Arc::new(parking_lot::Mutex::new(Vec::new()));
        let record = handled.clone();
        tokio::spawn(async move {
            while let Some(queued) = rx.recv().await {
                let Some(item) = queued.item() else { continue };
                tokio::task::yield_now().await; // handling takes a while
                record.lock().push(item);
            }
        });
        for i in 0..3 {
            tx.send(Queued::Item(i)).unwrap();
        }
        let (marker, reached) = Queued::marker();
        tx.send(marker).unwrap();
        tx.send(Queued::Item(3)).unwrap();
        reached.await;
        assert_eq!(handled.lock()[..3], [0, 1, 2]);

        // A marker that never reaches a task (the queue is gone) resolves too.
        let (marker, reached) = Queued::<()>::marker();
        drop(marker);
        let waited = tokio::time::timeout(std::time::Duration::from_secs(1), reached).await;
        assert!(waited.is_ok(), "a dropped marker does not hold its waiter");
    }
}
