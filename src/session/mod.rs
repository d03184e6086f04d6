//! The session layer: what every connection has, whichever front it came in by.
//!
//! A front (Socket.IO in [`crate::realtime`], plain WebSocket in [`crate::plain`])
//! authenticates a connection, builds its [`Session`] and decodes each request
//! into a [`crate::commands::Command`]; from there on both run the same code:
//! [`handlers`] joins the automatic rooms with replay, applies commands, and
//! cleans up on disconnect, all through the [`Hub`].
//!
//! * [`state`] — per-connection state and its ordered job queue;
//! * [`handlers`] — connect, commands, disconnect;
//! * [`limits`] — rate and connection caps;
//! * [`expiry`] — token lifetimes.

pub(crate) mod expiry;
pub(crate) mod handlers;
pub(crate) mod limits;
pub(crate) mod marks;
pub(crate) mod state;

use std::sync::Arc;

use ipnet::IpNet;

use crate::auth::Verifier;
use crate::chat::Chat;
use crate::config::Config;
use crate::hub::Hub;
use crate::presence::{Announcer, Presence, Statuses, Typing};
use crate::store::Store;
use limits::ConnectionsPerIp;
pub(crate) use state::{Job, Reply, Session};

/// A front that can prove its client has read everything sent to it so far
/// (the plain front: a ping's pong). Without one, a replay handed to the
/// transport counts as delivered.
pub(crate) trait ReceiptProbe: Send + Sync {
    /// Resolves `true` once the client has read everything sent before the call.
    fn confirm(&self) -> crate::hub::BoxFuture<bool>;
}

/// The settings connections need.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
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
    pub(crate) fn from_config(c: &Config) -> Settings {
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

/// What every connection's handlers share, on this node.
pub(crate) struct Sessions {
    /// The emitter.
    pub hub: Hub,
    /// Token verification.
    pub verifier: Verifier,
    /// Connections per address (both fronts share the cap).
    pub connections: ConnectionsPerIp,
    /// Orders each user's connects and disconnects on this node.
    pub user_locks: state::UserLocks,
    /// Sockets connected per branch on this node.
    pub branch_sockets: state::BranchSockets,
    /// Limits.
    pub settings: Settings,
    /// The users' offline marks (none when the log is off).
    pub marks: Option<marks::Marks>,
    /// Who views what, and who is connected.
    pub presence: Presence,
    /// Tells rooms who came and went.
    pub announcer: Announcer,
    /// Tells branches their users' statuses.
    pub statuses: Statuses,
    /// Typing indicators.
    pub typing: Typing,
    /// Chat.
    pub chat: Chat,
    /// Token lifetimes.
    pub expiry: expiry::Expiry,
}

/// What the session layer is built from.
pub(crate) struct Parts {
    /// The emitter.
    pub hub: Hub,
    /// Token verification.
    pub verifier: Verifier,
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

impl Sessions {
    /// Admits a connection from `ip` under `MAX_CONNECTIONS_PER_IP`, counted
    /// as open on this node until its slot is released or dropped.
    pub(crate) fn admit(&self, ip: std::net::IpAddr) -> Option<limits::ConnectionSlot> {
        self.connections
            .acquire(ip, self.settings.max_connections_per_ip, || {
                Some(self.hub.connection_opened())
            })
    }

    /// Shared handler state.
    pub(crate) fn new(parts: Parts) -> Sessions {
        Sessions {
            announcer: Announcer::new(
                parts.hub.clone(),
                parts.presence.clone(),
                parts.presence_broadcast_limit,
            ),
            statuses: Statuses::on_hub(parts.hub.clone()),
            typing: Typing::start(parts.hub.clone()),
            expiry: expiry::Expiry::start(parts.hub.clone()),
            hub: parts.hub,
            verifier: parts.verifier,
            connections: ConnectionsPerIp::default(),
            user_locks: state::UserLocks::default(),
            branch_sockets: state::BranchSockets::default(),
            settings: parts.settings,
            marks: parts.store.map(marks::Marks::start),
            presence: parts.presence,
            chat: parts.chat,
        }
    }

    /// Records that the user's last socket is gone at log `position`, so that
    /// events for the user after it wait for their next connection.
    pub(crate) fn mark_offline(&self, user: &str, position: i64) {
        if let Some(marks) = &self.marks {
            marks.set(user, crate::store::OfflineMark::Offline(position));
        }
    }

    /// Records that the user is online and has everything up to `position`.
    pub(crate) fn mark_online(&self, user: &str, position: i64) {
        if let Some(marks) = &self.marks {
            marks.set(user, crate::store::OfflineMark::Online(position));
        }
    }

    /// Where the user's offline queue starts (`None` without a log).
    pub(crate) async fn offline_mark(
        &self,
        user: &str,
    ) -> Result<Option<crate::store::OfflineMark>, crate::store::StoreError> {
        let Some(marks) = &self.marks else {
            return Ok(None);
        };
        marks
            .get(user)
            .await
            .map(Some)
            .inspect_err(|e| tracing::warn!(error = %e, "offline queue lookup failed"))
    }

    /// Waits until every offline mark made so far is written (shutdown).
    pub(crate) async fn flush_marks(&self) {
        if let Some(marks) = &self.marks {
            marks.flush().await;
        }
    }
}

/// The heartbeat's view of this node.
struct NodeView(Hub);

impl crate::presence::redis::NodeState for NodeView {
    fn position(&self) -> i64 {
        self.0.position()
    }
}

/// Starts the Redis presence heartbeat and turns lapsed entries (a node that
/// died) into `user:disconnected`, the offline queue mark and an `offline` status.
pub(crate) fn start_cluster_presence(
    ctx: &Arc<Sessions>,
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
                    // An offline queue whose replay the dead node had not
                    // finished is still owed from where it started. A mark
                    // that cannot be read is left as the dead node left it:
                    // the user's next connect resumes from there, where
                    // writing this connection's start could skip a queue.
                    match ctx.offline_mark(&user).await {
                        Ok(Some(crate::store::OfflineMark::Offline(owed))) => {
                            ctx.mark_offline(&user, owed.min(seq));
                        }
                        Ok(_) => ctx.mark_offline(&user, seq),
                        Err(_) => {}
                    }
                    if let Some(branch) = branch {
                        ctx.statuses.lapsed(&branch, &user, &name);
                    }
                }
            }
        }
    });
}
