//! The Socket.IO side: connecting sockets, their events, and moving events to them.
//!
//! * [`connect`] — the auth middleware and per-socket setup;
//! * [`dispatch`] — incoming events, in order, to [`handlers`];
//! * [`session`] — per-socket state and its job queue;
//! * [`limits`] — rate and connection caps;
//! * [`transport`] — client addresses and forced reconnects;
//! * [`IoFabric`] — the hub's [`Fabric`] over socketioxide, for any adapter.

pub mod connect;
pub mod dispatch;
pub mod expiry;
pub mod handlers;
pub mod limits;
pub mod session;
pub mod transport;

use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use serde_json::value::RawValue;
use socketioxide::adapter::Adapter;
use socketioxide::socket::Sid;
use socketioxide::{SocketIo, SocketIoBuilder, TransportType};

use crate::auth::Verifier;
use crate::chat::Chat;
use crate::config::Config;
use crate::hub::{BoxFuture, Census, Fabric, Hub, LoggedEvent, SendOutcome};
use crate::presence::{Announcer, Presence, Typing};
use crate::store::Store;
use limits::ConnectionsPerIp;
use transport::{ConnInfo, TransportControl};

/// Outgoing packets one socket may have queued before it counts as too slow.
///
/// A controller's batch (up to 1,000 events) can land on one socket in a single
/// burst, so the buffer holds two full batches: a client that keeps up never
/// trips it, one that stopped reading does. Queue slots are allocated as they
/// fill, so an idle socket does not pay for the headroom.
pub const SOCKET_BUFFER_PACKETS: usize = 2048;

/// The settings the socket side needs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Largest accepted message.
    pub max_payload_bytes: usize,
    /// Client events per socket per minute.
    pub rate_limit_per_minute: u32,
    /// Connections per address.
    pub max_connections_per_ip: u32,
    /// Proxies trusted for `X-Forwarded-For`.
    pub trusted_proxies: Vec<IpNet>,
    /// Rooms per socket.
    pub max_rooms_per_socket: usize,
    /// Most viewers a join ack lists (`PRESENCE_BROADCAST_LIMIT`).
    pub presence_broadcast_limit: usize,
}

impl Settings {
    /// From the validated configuration.
    pub fn from_config(c: &Config) -> Settings {
        Settings {
            max_payload_bytes: c.max_payload_bytes,
            rate_limit_per_minute: c.rate_limit_per_minute,
            max_connections_per_ip: c.max_connections_per_ip,
            trusted_proxies: c.trusted_proxies.clone(),
            max_rooms_per_socket: c.max_rooms_per_socket,
            presence_broadcast_limit: c.presence_broadcast_limit,
        }
    }
}

/// Shared state of every socket handler.
pub struct Realtime {
    /// The emitter.
    pub hub: Hub,
    /// Token verification.
    pub verifier: Verifier,
    /// Forced reconnects.
    pub transport: Arc<TransportControl>,
    /// Connections per address.
    pub connections: ConnectionsPerIp,
    /// Orders each user's connects and disconnects on this node.
    pub user_locks: session::UserLocks,
    /// Sockets connected per branch on this node.
    pub branch_sockets: session::BranchSockets,
    /// Limits.
    pub settings: Settings,
    /// The database, for the offline queue (none when the log is off).
    pub store: Option<Store>,
    /// Who views what, and who is connected.
    pub presence: Presence,
    /// Tells rooms who came and went.
    pub announcer: Announcer,
    /// Typing indicators.
    pub typing: Typing,
    /// Chat.
    pub chat: Chat,
    /// Token lifetimes.
    pub expiry: expiry::Expiry,
}

/// What the socket side is built from.
pub struct Parts {
    /// The emitter.
    pub hub: Hub,
    /// Token verification.
    pub verifier: Verifier,
    /// Forced reconnects.
    pub transport: Arc<TransportControl>,
    /// Limits.
    pub settings: Settings,
    /// The offline queue's database (none when the log is off).
    pub store: Option<Store>,
    /// Presence.
    pub presence: Presence,
    /// Chat.
    pub chat: Chat,
    /// `PRESENCE_BROADCAST_LIMIT`.
    pub presence_broadcast_limit: usize,
}

impl Realtime {
    /// Shared handler state.
    pub fn new(parts: Parts) -> Realtime {
        Realtime {
            announcer: Announcer::new(
                parts.hub.clone(),
                parts.presence.clone(),
                parts.presence_broadcast_limit,
            ),
            typing: Typing::start(parts.hub.clone()),
            expiry: expiry::Expiry::start(parts.hub.clone()),
            hub: parts.hub,
            verifier: parts.verifier,
            transport: parts.transport,
            connections: ConnectionsPerIp::default(),
            user_locks: session::UserLocks::default(),
            branch_sockets: session::BranchSockets::default(),
            settings: parts.settings,
            store: parts.store,
            presence: parts.presence,
            chat: parts.chat,
        }
    }

    /// Records that the user's last socket is gone at log `position`, so that
    /// events for the user after it wait for their next connection.
    pub(crate) async fn mark_offline(&self, user: &str, position: i64) {
        if let Some(store) = &self.store {
            let now = chrono::Utc::now().timestamp_millis();
            if let Err(e) = store.mark_offline(user, position, now).await {
                tracing::warn!(error = %e, "could not record an offline user");
            }
        }
    }

    pub(crate) async fn take_offline(&self, user: &str) -> Option<i64> {
        let store = self.store.as_ref()?;
        store.take_offline(user).await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "offline queue lookup failed");
            None
        })
    }

    pub(crate) async fn forget_offline(&self, user: &str) {
        let _ = self.take_offline(user).await;
    }
}

/// The heartbeat's view of this node.
struct NodeView(Hub);

impl crate::presence::redis::NodeState for NodeView {
    fn position(&self) -> i64 {
        self.0.position()
    }
    fn connections(&self) -> usize {
        let c = self.0.census();
        c.websocket + c.polling
    }
}

/// Starts the Redis presence heartbeat and turns lapsed entries (a node that
/// died) into `user:disconnected`, the offline queue mark and an `offline` status.
pub fn start_cluster_presence(
    ctx: &Arc<Realtime>,
    presence: &crate::presence::redis::RedisPresence,
) {
    use crate::presence::announce::Departure;
    use crate::presence::redis::Lapsed;
    let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
    presence.start(Arc::new(NodeView(ctx.hub.clone())), tx);
    let ctx = Arc::downgrade(ctx);
    tokio::spawn(async move {
        while let Some(lapsed) = rx.recv().await {
            let Some(ctx) = ctx.upgrade() else { return };
            match lapsed {
                Lapsed::Viewer {
                    room,
                    user,
                    name,
                    socket_id,
                    viewers,
                } => {
                    ctx.typing.stopped(&room, &user);
                    ctx.announcer.departed(
                        &room,
                        &user,
                        &name,
                        &socket_id,
                        Departure::Disconnected,
                        viewers,
                    );
                }
                Lapsed::User {
                    user,
                    branch,
                    name,
                    seq,
                } => {
                    if let Some(store) = &ctx.store {
                        let now = chrono::Utc::now().timestamp_millis();
                        if let Err(e) = store.mark_offline(&user, seq, now).await {
                            tracing::warn!(error = %e, "could not record an offline user");
                        }
                    }
                    if let Some(branch) = branch {
                        ctx.hub.signal(
                            &[format!("branch:{branch}")],
                            &[],
                            "presence",
                            &serde_json::json!({ "userId": user, "name": name, "status": "offline", "timestamp": crate::events::now_iso8601() }),
                        );
                    }
                }
            }
        }
    });
}

/// How often sockets are checked for a transport that is gone.
const GHOST_SWEEP_EVERY: Duration = Duration::from_secs(5);

/// Ends sockets whose websocket connection is gone but that Engine.IO never
/// closed. engineioxide 0.17 leaks the session of a websocket handshake whose
/// first write fails (a client that connects and vanishes at once): it never
/// times out, holds a connection slot of its address, and counts in `/health`.
/// A socket found so on two sweeps in a row is disconnected.
pub fn start_ghost_sweeper<A: Adapter>(io: SocketIo<A>, transport: Arc<TransportControl>) {
    tokio::spawn(async move {
        let mut suspects = std::collections::HashSet::new();
        loop {
            tokio::time::sleep(GHOST_SWEEP_EVERY).await;
            let Some(ns) = io.of("/") else { return };
            let mut now_suspect = std::collections::HashSet::new();
            for socket in ns.local().sockets() {
                if socket.transport_type() != TransportType::Websocket {
                    continue; // polling sessions time out by Engine.IO's heartbeat
                }
                let sid = socket.id.to_string();
                let handshake = socket.req_parts().extensions.get::<ConnInfo>();
                let gone = transport
                    .websocket_conn(&sid, handshake)
                    .is_some_and(|c| c.is_closed());
                if !gone {
                    continue;
                }
                if suspects.contains(&socket.id) {
                    tracing::info!(%sid, "ending a socket whose connection is gone");
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
pub async fn drain<A: Adapter>(io: &SocketIo<A>, ctx: &Arc<Realtime>) {
    use futures_util::StreamExt;
    let Some(ns) = io.of("/") else { return };
    let sessions: Vec<Arc<session::Session>> = ns
        .local()
        .sockets()
        .iter()
        .filter_map(|s| s.extensions.get::<Arc<session::Session>>())
        .collect();
    futures_util::stream::iter(sessions)
        .for_each_concurrent(64, |session| async move {
            handlers::on_disconnect(ctx, &session).await;
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
pub fn register<A: Adapter + socketioxide_core::adapter::DefinedAdapter>(
    io: &SocketIo<A>,
    ctx: Arc<Realtime>,
) -> A::InitRes {
    io.ns("/", connect::ConnectFlow(ctx))
}

/// The hub's fabric over a socketioxide instance.
pub struct IoFabric<A: Adapter> {
    io: SocketIo<A>,
    transport: Arc<TransportControl>,
    /// Deliver logged events through the adapter to every node (a cluster
    /// without a shared log) instead of to this node's sockets only.
    cross_node_broadcast: bool,
    /// Signals wait here for the one task that sends them, so that they go out
    /// in the order they were made (an `offline` never overtakes its `online`).
    signals: tokio::sync::mpsc::UnboundedSender<Signal>,
}

/// An ephemeral broadcast waiting to be sent.
struct Signal {
    rooms: Vec<String>,
    except: Vec<String>,
    event: String,
    payload: serde_json::Value,
}

/// Sends signals one after the other, through the adapter (every node), or —
/// when the cluster does not answer — to this node's sockets at least.
async fn send_signals<A: Adapter>(
    io: SocketIo<A>,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Signal>,
) {
    while let Some(signal) = rx.recv().await {
        let Some(ns) = io.of("/") else { return };
        let mut everywhere = ns.clone().to(signal.rooms.clone());
        let mut here = ns.local().to(signal.rooms);
        if !signal.except.is_empty() {
            everywhere = everywhere.except(signal.except.clone());
            here = here.except(signal.except);
        }
        let sent = tokio::time::timeout(
            CLUSTER_BROADCAST_TIMEOUT,
            everywhere.emit(&signal.event, &signal.payload),
        )
        .await;
        if !matches!(sent, Ok(Ok(()))) {
            tracing::debug!("cluster broadcast failed; delivering on this node only");
            let _ = here.emit(&signal.event, &signal.payload).await;
        }
    }
}

impl<A: Adapter> IoFabric<A> {
    /// A local socket. (`SocketIo::get_socket` panics once shutdown has closed
    /// the namespace; deliveries may still be flushing then.)
    fn socket(&self, sid: Sid) -> Option<socketioxide::extract::SocketRef<A>> {
        self.io.of("/")?.get_socket(sid)
    }

    /// Over `io`.
    pub fn new(
        io: SocketIo<A>,
        transport: Arc<TransportControl>,
        cross_node_broadcast: bool,
    ) -> Self {
        let (signals, queue) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(send_signals(io.clone(), queue));
        IoFabric {
            io,
            transport,
            cross_node_broadcast,
            signals,
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

impl<A: Adapter> Fabric for IoFabric<A> {
    fn deliver(&self, event: &LoggedEvent) -> usize {
        if self.cross_node_broadcast {
            // Other nodes have no shared log to read this from: send it through the adapter.
            let Some(ns) = self.io.of("/") else { return 0 };
            let mut op = ns.to(event.rooms.clone());
            if !event.except.is_empty() {
                op = op.except(event.except.clone());
            }
            let name = event.event.clone();
            let payload = event.payload.clone();
            tokio::spawn(async move {
                if let Err(e) = op.emit(&name, &*payload).await {
                    tracing::warn!(error = %e, "cross-node delivery failed");
                }
            });
            return 0;
        }
        let Some(ns) = self.io.of("/") else { return 0 };
        let mut op = ns.local().to(event.rooms.clone());
        if !event.except.is_empty() {
            op = op.except(event.except.clone());
        }
        let mut reached = 0;
        for socket in op.sockets() {
            match outcome(socket.emit(&event.event, &*event.payload)) {
                SendOutcome::Sent => reached += 1,
                SendOutcome::Slow => {
                    crate::metrics::rejected("slow_client");
                    self.force_reconnect(socket.id);
                }
                SendOutcome::Gone => {}
            }
        }
        reached
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

    fn rooms_of(&self, sid: Sid) -> Vec<String> {
        self.socket(sid)
            .map(|s| s.rooms().into_iter().map(|r| r.to_string()).collect())
            .unwrap_or_default()
    }

    fn signal(
        &self,
        rooms: &[String],
        except: &[String],
        event: &str,
        payload: &serde_json::Value,
    ) {
        let _ = self.signals.send(Signal {
            rooms: rooms.to_vec(),
            except: except.to_vec(),
            event: event.to_string(),
            payload: payload.clone(),
        });
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
