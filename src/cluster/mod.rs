//! Several livehub nodes behaving as one.
//!
//! What crosses nodes, and how:
//!
//! * **Logged events** (everything controllers emit, chat) ride the shared
//!   PostgreSQL log: each node tails it and delivers every event to its own
//!   sockets in offset order (see [`crate::hub`]). That is what keeps replay
//!   exact across nodes, and it needs no Redis at all.
//! * **Socket.IO operations** — ephemeral signals (presence, typing), cluster-wide
//!   disconnects — ride socketioxide's Redis adapter, on a [`driver`] that
//!   survives Redis restarts.
//! * **Plain WebSocket operations** (the same signals and disconnects, for
//!   plain connections) ride [`relay`], on the same driver.
//! * **Presence** lives in Redis with per-entry expiry ([`crate::presence::redis`]),
//!   so counting viewers never asks other nodes.

pub mod driver;
pub(crate) mod relay;

use socketioxide_redis::{CustomRedisAdapter, RedisAdapterConfig, RedisAdapterCtr};

use crate::presence::redis::RedisPresence;
use driver::ResilientDriver;

/// socketioxide's Redis adapter on livehub's driver.
pub type ClusterAdapter<E> = CustomRedisAdapter<E, ResilientDriver>;

/// The Redis side of a cluster node.
pub struct Cluster {
    /// socketioxide's adapter state.
    pub adapter: RedisAdapterCtr<ResilientDriver>,
    /// Presence shared through Redis.
    pub presence: RedisPresence,
    /// The pub/sub driver, for the plain front's relay.
    pub driver: ResilientDriver,
}

/// Connects to Redis for node `node` of cluster `name`. Fails when Redis
/// cannot be reached at start-up; afterwards the connection heals by itself.
pub async fn connect(url: &str, name: &str, node: &str) -> anyhow::Result<Cluster> {
    let client = redis::Client::open(with_resp3(url))?;
    let driver = ResilientDriver::connect(&client).await?;
    let presence = RedisPresence::new(driver.connection(), name, node);
    let adapter = RedisAdapterCtr::new_with_driver(
        driver.clone(),
        RedisAdapterConfig::default()
            .with_prefix(format!("{name}-sio"))
            .with_request_timeout(std::time::Duration::from_secs(2)),
    );
    Ok(Cluster {
        adapter,
        presence,
        driver,
    })
}

/// Pub/sub push messages need RESP3; ask for it unless the URL already says.
fn with_resp3(url: &str) -> String {
    if url.contains("protocol=") {
        url.to_string()
    } else if url.contains('?') {
        format!("{url}&protocol=resp3")
    } else {
        format!("{url}?protocol=resp3")
    }
}

/// This node's view of the cluster, for `/health`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterHealth {
    /// Whether Redis answers (cross-node signals and presence work).
    pub redis_up: bool,
    /// Nodes that heartbeated recently.
    pub nodes: usize,
}

impl ClusterHealth {
    /// Asks the presence store (one bounded Redis call).
    pub async fn of(presence: &RedisPresence) -> ClusterHealth {
        let nodes = presence.nodes().await;
        ClusterHealth {
            redis_up: presence.is_healthy(),
            nodes,
        }
    }
}
