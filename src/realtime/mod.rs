//! The Socket.IO front: connecting sockets, decoding their events, and moving
//! events to them.
//!
//! * [`connect`] — the auth middleware and per-socket setup;
//! * [`dispatch`] — incoming events, decoded into commands, queued in order;
//! * [`IoFabric`] — the hub's [`Fabric`] over socketioxide, for any adapter.
//!
//! Everything after decoding is the session layer's ([`crate::session`]).

pub(crate) mod admin;
pub(crate) mod connect;
pub(crate) mod dispatch;

use std::sync::Arc;
use std::time::Duration;

use serde_json::value::RawValue;
use socketioxide::adapter::Adapter;
use socketioxide::socket::Sid;
use socketioxide::{BroadcastError, SocketIo, SocketIoBuilder, TransportType};

use crate::config::Config;
use crate::hub::fabric::{OUTGOING_BYTE_BUDGET, Queued, SOCKET_BUFFER_PACKETS};
use crate::hub::{BoxFuture, Census, Fabric, LoggedEvent, SendOutcome};
use crate::session::{Session, Sessions};
use crate::transport::{ConnInfo, Outbox, TransportControl};

/// Events at most this big are not counted against a websocket's byte budget:
/// the packet cap alone keeps what they can hold within the budget
/// (`SOCKET_BUFFER_PACKETS` of them make `OUTGOING_BYTE_BUDGET`). Counting
/// means a look at the socket's connection, a few cache misses per socket per
/// event: in a profile of a fan-out to 5,000 sockets it was the largest cost
/// livehub added to socketioxide's. So only events that could outgrow the
/// budget within the packet cap pay it. A slow reader then holds at most
/// about twice the budget: uncounted small frames up to the packet cap, and
/// counted large ones up to the budget.
const UNCOUNTED_EVENT_BYTES: usize = OUTGOING_BYTE_BUDGET / SOCKET_BUFFER_PACKETS;

/// How often sockets are checked for a transport that is gone.
const GHOST_SWEEP_EVERY: Duration = Duration::from_secs(5);

/// Ends sockets whose websocket connection is gone but that Engine.IO never
/// closed. engineioxide 0.17 leaks the session of a websocket handshake whose
/// first write fails (a client that connects and vanishes at once): it never
/// times out, holds a connection slot of its address, and counts in `/health`.
/// A socket found so on two sweeps in a row is disconnected.
pub(crate) fn start_ghost_sweeper<A: Adapter>(io: SocketIo<A>, transport: Arc<TransportControl>) {
    tokio::spawn(async move {
        let mut suspects = std::collections::HashSet::new();
        loop {
            tokio::time::sleep(GHOST_SWEEP_EVERY).await;
            crate::metrics::transport_sessions(transport.sweep());
            let Some(ns) = io.of("/") else { return };
            let mut now_suspect = std::collections::HashSet::new();
            for socket in ns.local().sockets() {
                if socket.transport_type() != TransportType::Websocket {
                    continue; // polling sessions time out by Engine.IO's heartbeat
                }
                let handshake = socket.req_parts().extensions.get::<ConnInfo>();
                let gone = transport
                    .websocket_conn(socket.id, handshake)
                    .is_some_and(|c| c.is_closed());
                if !gone {
                    continue;
                }
                if suspects.contains(&socket.id) {
                    tracing::info!(sid = %socket.id, "ending a socket whose connection is gone");
                    let _ = socket.disconnect();
                } else {
                    now_suspect.insert(socket.id);
                }
            }
            suspects = now_suspect;
        }
    });
}

/// Runs livehub's disconnect cleanup for every socket on this node, before
/// shutdown closes the transports (socketioxide drops the namespace first, so
/// its disconnect handlers would not run): presence is withdrawn and each user's
/// offline position recorded, so that what is emitted while they reconnect —
/// here after a restart, or on another node — reaches them.
pub(crate) async fn drain<A: Adapter>(io: &SocketIo<A>, ctx: &Arc<Sessions>) {
    use futures_util::StreamExt;
    let Some(ns) = io.of("/") else { return };
    let sessions: Vec<Arc<Session>> = ns
        .local()
        .sockets()
        .iter()
        .filter_map(|s| s.extensions.get::<Arc<Session>>())
        .collect();
    futures_util::stream::iter(sessions)
        .for_each_concurrent(64, |session| async move {
            crate::session::handlers::on_disconnect(ctx, &session).await;
        })
        .await;
}

/// socketioxide configured from livehub's settings.
pub fn builder(config: &Config) -> SocketIoBuilder {
    // Messages up to MAX_PAYLOAD_BYTES are handled; larger ones up to twice that
    // are read and refused with a `too_large` ack (the socket stays). Beyond
    // that the transport itself refuses: the websocket is closed or the polling
    // request gets 413, and only that client reconnects.
    let hard_cap = config.max_payload_bytes * 2;
    SocketIo::builder()
        .max_payload(hard_cap as u64)
        .ws_max_message_size(hard_cap)
        .ws_max_frame_size(hard_cap)
        .max_buffer_size(SOCKET_BUFFER_PACKETS)
        // Clients send small messages: a 1 KiB read chunk (instead of 4 KiB) is
        // plenty, and an idle websocket keeps it.
        .ws_read_buffer_size(1024)
        .ping_interval(Duration::from_secs(25))
        .ping_timeout(Duration::from_secs(20))
        .connect_timeout(Duration::from_secs(45))
        .transports([TransportType::Polling, TransportType::Websocket])
}

/// Registers livehub's handlers on the default namespace. The result is the
/// adapter's initialisation (nothing for the local adapter; the Redis
/// subscriptions for the cluster adapter), for the caller to await or spawn.
pub(crate) fn register<A: Adapter + socketioxide_core::adapter::DefinedAdapter>(
    io: &SocketIo<A>,
    sessions: Arc<Sessions>,
    transport: Arc<TransportControl>,
) -> A::InitRes {
    io.ns(
        "/",
        connect::ConnectFlow {
            sessions,
            transport,
        },
    )
}

/// The hub's fabric over a socketioxide instance.
pub(crate) struct IoFabric<A: Adapter> {
    io: SocketIo<A>,
    transport: Arc<TransportControl>,
    /// Deliver logged events through the adapter to every node (a cluster
    /// without a shared log) instead of to this node's sockets only.
    cross_node_broadcast: bool,
    /// Signals wait here for the one task that sends them, so that they go out
    /// in the order they were made (an `offline` never overtakes its `online`).
    /// Bounded: when the cluster is too slow to take them, the newest are
    /// dropped and counted, instead of memory growing behind a hung Redis.
    signals: tokio::sync::mpsc::Sender<Queued<Signal>>,
    /// Logged events for other nodes (without a shared log), in commit order.
    /// Never dropped; the deliverer, bounded by the log, is their only source.
    cross_node_events: tokio::sync::mpsc::UnboundedSender<Queued<Signal>>,
}

/// Signals waiting for the cluster at most; past it new ones are dropped.
const SIGNAL_QUEUE: usize = 4096;
/// After a cluster broadcast times out, signals go to this node's sockets
/// only for this long, so that a hung Redis costs one timeout, not one per signal.
const CLUSTER_BACKOFF: Duration = Duration::from_secs(5);

/// An ephemeral broadcast waiting to be sent.
struct Signal {
    rooms: Vec<String>,
    except: Vec<String>,
    event: String,
    payload: Box<RawValue>,
}

/// Sends signals one after the other, through the adapter (every node), or —
/// when the cluster does not answer — to this node's sockets at least. Both
/// queues (ephemeral signals, and logged events crossing nodes without a
/// shared log) are drained by it, each by its own task.
async fn send_in_order<A: Adapter>(
    io: SocketIo<A>,
    mut queue: impl futures_util::Stream<Item = Queued<Signal>> + Unpin,
) {
    use futures_util::StreamExt;
    let mut cluster_down_until = None;
    while let Some(queued) = queue.next().await {
        if let Some(signal) = queued.item() {
            broadcast(&io, signal, &mut cluster_down_until).await;
        }
    }
}

/// One broadcast to every node, within [`CLUSTER_BROADCAST_TIMEOUT`], or to
/// this node's sockets while the cluster is backed off.
async fn broadcast<A: Adapter>(
    io: &SocketIo<A>,
    signal: Signal,
    cluster_down_until: &mut Option<tokio::time::Instant>,
) {
    let Some(ns) = io.of("/") else { return };
    let backed_off = cluster_down_until.is_some_and(|t| tokio::time::Instant::now() < t);
    if !backed_off {
        let everywhere = ns
            .clone()
            .to(signal.rooms.clone())
            .except(signal.except.clone());
        let sent = tokio::time::timeout(
            CLUSTER_BROADCAST_TIMEOUT,
            everywhere.emit(&signal.event, &*signal.payload),
        )
        .await;
        match sent {
            // A socket error comes after the other nodes were sent it: only
            // some of this node's sockets (closing, or full) did not take it,
            // and sending it here again would repeat it to all the others.
            Ok(Ok(()) | Err(BroadcastError::Socket(_))) => {
                *cluster_down_until = None;
                return;
            }
            Ok(Err(_)) => {}
            Err(_) => *cluster_down_until = Some(tokio::time::Instant::now() + CLUSTER_BACKOFF),
        }
        tracing::debug!("cluster broadcast failed; delivering on this node only");
    }
    let here = ns.local().to(signal.rooms).except(signal.except);
    let _ = here.emit(&signal.event, &*signal.payload).await;
}

impl<A: Adapter> IoFabric<A> {
    /// The byte count of the connection carrying a websocket socket. Polling
    /// sockets have none: what they hold is bounded in packets, and a client
    /// that stops polling misses its heartbeat. Runs per socket for every event
    /// over [`UNCOUNTED_EVENT_BYTES`], so it reads the handshake's request
    /// parts and the upgrade map (no lock on the socket, unlike its extensions).
    fn outbox(&self, socket: &socketioxide::extract::SocketRef<A>) -> Option<Outbox> {
        if socket.transport_type() != TransportType::Websocket {
            return None;
        }
        let handshake = socket.req_parts().extensions.get::<ConnInfo>();
        self.transport.websocket_outbox(socket.id, handshake)
    }

    /// A local socket. (`SocketIo::get_socket` panics once shutdown has closed
    /// the namespace; deliveries may still be flushing then.)
    fn socket(&self, sid: Sid) -> Option<socketioxide::extract::SocketRef<A>> {
        self.io.of("/")?.get_socket(sid)
    }

    /// Over `io`.
    pub(crate) fn new(
        io: SocketIo<A>,
        transport: Arc<TransportControl>,
        cross_node_broadcast: bool,
    ) -> Self {
        let (signals, mut queue) = tokio::sync::mpsc::channel(SIGNAL_QUEUE);
        let queue = futures_util::stream::poll_fn(move |cx| queue.poll_recv(cx));
        tokio::spawn(send_in_order(io.clone(), queue));
        let (cross_node_events, mut events) = tokio::sync::mpsc::unbounded_channel();
        let events = futures_util::stream::poll_fn(move |cx| events.poll_recv(cx));
        tokio::spawn(send_in_order(io.clone(), events));
        IoFabric {
            io,
            transport,
            cross_node_broadcast,
            signals,
            cross_node_events,
        }
    }
}

/// How long a cluster-wide broadcast may take before livehub falls back to this
/// node's sockets (Redis down or slow).
const CLUSTER_BROADCAST_TIMEOUT: Duration = Duration::from_secs(1);

fn outcome(result: Result<(), socketioxide::SendError>) -> SendOutcome {
    use socketioxide::{SendError, SocketError};
    match result {
        Ok(()) => SendOutcome::Sent,
        Err(SendError::Socket(SocketError::InternalChannelFull)) => SendOutcome::Slow,
        Err(_) => SendOutcome::Gone,
    }
}

/// A run's events, as they are queued to each socket.
struct Run<'a> {
    events: Vec<&'a LoggedEvent>,
    /// Per event, the bytes it counts against a socket's byte budget: its
    /// size near enough (the packet as socketioxide frames it,
    /// `42["event",payload]`), for events over [`UNCOUNTED_EVENT_BYTES`] only.
    counted_bytes: Vec<Option<usize>>,
}

impl<'a> Run<'a> {
    fn new(events: Vec<&'a LoggedEvent>) -> Self {
        let counted_bytes = events
            .iter()
            .map(|e| e.event.len() + e.payload.get().len() + 8)
            .map(|bytes| (bytes > UNCOUNTED_EVENT_BYTES).then_some(bytes))
            .collect();
        Run {
            events,
            counted_bytes,
        }
    }
}

impl<A: Adapter> IoFabric<A> {
    /// Queues a run of events with the same rooms to each local socket in
    /// them, the whole run to one socket before the next, and returns how many
    /// sockets got each event.
    fn fan_out(&self, run: Run) -> Vec<usize> {
        let mut reached = vec![0; run.events.len()];
        if self.cross_node_broadcast {
            self.send_across(&run.events);
            return reached;
        }
        let (Some(first), Some(ns)) = (run.events.first(), self.io.of("/")) else {
            return reached;
        };
        let mut op = ns.local().to(first.rooms.clone());
        if !first.except.is_empty() {
            op = op.except(first.except.clone());
        }
        for socket in op.sockets() {
            let sent = self.send_run(&socket, &run);
            for reached in &mut reached[..sent] {
                *reached += 1;
            }
        }
        reached
    }

    /// Queues a run to one socket, and returns how many of its events went.
    /// A socket found too slow is forced to reconnect and gets no more.
    fn send_run(&self, socket: &socketioxide::extract::SocketRef<A>, run: &Run) -> usize {
        // The socket's connection is looked up at its first counted event:
        // most runs have none.
        let mut outbox = None;
        for (sent, (event, &counted)) in run.events.iter().zip(&run.counted_bytes).enumerate() {
            let over_budget = counted.is_some_and(|bytes| {
                outbox
                    .get_or_insert_with(|| self.outbox(socket))
                    .as_ref()
                    .is_some_and(|outbox| !outbox.queue(bytes, OUTGOING_BYTE_BUDGET))
            });
            let result = if over_budget {
                SendOutcome::Slow
            } else {
                outcome(socket.emit(&event.event, &*event.payload))
            };
            match result {
                SendOutcome::Sent => {}
                SendOutcome::Slow => {
                    crate::metrics::lagging_disconnect("socketio");
                    self.force_reconnect(socket.id);
                    return sent;
                }
                SendOutcome::Gone => return sent,
            }
        }
        run.events.len()
    }

    /// Sends events through the adapter to every node: other nodes have no
    /// shared log to read them from. In commit order (the one signal task), and
    /// to this node's sockets at least when the cluster does not answer.
    fn send_across(&self, events: &[&LoggedEvent]) {
        for event in events {
            let _ = self.cross_node_events.send(Queued::Item(Signal {
                rooms: event.rooms.clone(),
                except: event.except.clone(),
                event: event.event.clone(),
                payload: event.payload.to_owned(),
            }));
        }
    }
}

impl<A: Adapter> Fabric for IoFabric<A> {
    fn deliver(&self, event: &LoggedEvent) -> usize {
        self.fan_out(Run::new(vec![event]))[0]
    }

    fn deliver_run(&self, run: &[Arc<LoggedEvent>]) -> Vec<usize> {
        self.fan_out(Run::new(run.iter().map(|e| &**e).collect()))
    }

    fn send(&self, sid: Sid, event: &str, payload: &RawValue) -> SendOutcome {
        match self.socket(sid) {
            Some(socket) => outcome(socket.emit(event, payload)),
            None => SendOutcome::Gone,
        }
    }

    fn force_reconnect(&self, sid: Sid) {
        let Some(socket) = self.socket(sid) else {
            return;
        };
        let conn = socket.req_parts().extensions.get::<ConnInfo>().cloned();
        let websocket = socket.transport_type() == TransportType::Websocket;
        tracing::info!(%sid, websocket, "closing a slow client's transport; it will reconnect and replay");
        self.transport
            .kill(&sid.to_string(), conn.as_ref(), websocket);
        if !websocket {
            // A polling session has no connection of its own to lose: end it here
            // (its requests are refused, so the client never sees the disconnect
            // packet and reconnects as after a network error).
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let _ = socket.disconnect();
            });
        }
    }

    fn disconnect(&self, sid: Sid) {
        if let Some(socket) = self.socket(sid) {
            let _ = socket.disconnect();
        }
    }

    fn join(&self, sid: Sid, rooms: &[String]) {
        if let Some(socket) = self.socket(sid) {
            socket.join(rooms.to_vec());
        }
    }

    fn leave(&self, sid: Sid, room: &str) {
        if let Some(socket) = self.socket(sid) {
            socket.leave(room.to_string());
        }
    }

    fn rooms_of(&self, sid: Sid) -> Vec<String> {
        self.socket(sid)
            .map(|s| s.rooms().into_iter().map(|r| r.to_string()).collect())
            .unwrap_or_default()
    }

    fn user_rooms(&self, user: &str) -> Vec<String> {
        let Some(ns) = self.io.of("/") else {
            return Vec::new();
        };
        ns.local()
            .to(crate::rooms::user_sockets_room(user))
            .sockets()
            .iter()
            .flat_map(|s| s.rooms())
            .map(|r| r.to_string())
            .collect()
    }

    fn signal(&self, rooms: &[String], except: &[String], event: &str, payload: &RawValue) {
        let signal = Signal {
            rooms: rooms.to_vec(),
            except: except.to_vec(),
            event: event.to_string(),
            payload: payload.to_owned(),
        };
        if self.signals.try_send(Queued::Item(signal)).is_err() {
            crate::metrics::signal_dropped();
        }
    }

    fn settle(&self) -> BoxFuture<()> {
        let (event_marker, events_reached) = Queued::marker();
        let _ = self.cross_node_events.send(event_marker);
        let signals = self.signals.clone();
        Box::pin(async move {
            let (signal_marker, signals_reached) = Queued::marker();
            // Waits for room in a full queue: a marker is never dropped.
            let _ = signals.send(signal_marker).await;
            signals_reached.await;
            events_reached.await;
        })
    }

    fn disconnect_room(&self, room: String) -> BoxFuture<Result<(), String>> {
        let Some(ns) = self.io.of("/") else {
            return Box::pin(async { Err("livehub is shutting down".to_string()) });
        };
        let everywhere = ns.clone().to(room.clone());
        let here = ns.local().to(room);
        Box::pin(async move {
            match tokio::time::timeout(CLUSTER_BROADCAST_TIMEOUT, everywhere.disconnect()).await {
                Ok(Ok(())) => Ok(()),
                failed => {
                    let _ = here.disconnect().await;
                    Err(match failed {
                        Ok(Err(e)) => e.to_string(),
                        _ => "the cluster did not answer in time".into(),
                    })
                }
            }
        })
    }

    fn census(&self) -> Census {
        let mut census = Census::default();
        // After shutdown closed the namespace there is nothing to count.
        let Some(ns) = self.io.of("/") else {
            return census;
        };
        for socket in ns.clone().local().sockets() {
            match socket.transport_type() {
                TransportType::Websocket => census.websocket += 1,
                TransportType::Polling => census.polling += 1,
            }
        }
        census.rooms = self
            .io
            .of("/")
            .map(|ns| {
                ns.local()
                    .sockets()
                    .iter()
                    .flat_map(|s| s.rooms())
                    .filter(|r| !crate::rooms::is_internal(r))
                    .collect::<std::collections::HashSet<_>>()
                    .len()
            })
            .unwrap_or(0);
        census
    }
}
