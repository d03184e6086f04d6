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
//! * **Long-polling requests** that land on a node other than their session's
//!   owner are forwarded to it over HTTP ([`forward`]), so polling needs no
//!   sticky sessions.
//! * **Presence** lives in Redis with per-entry expiry ([`crate::presence::redis`]),
//!   so counting viewers never asks other nodes.

pub mod driver;
pub(crate) mod forward;
pub(crate) mod membership;
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
    /// Which nodes are alive.
    pub(crate) membership: std::sync::Arc<membership::Membership>,
}

/// How long start-up waits for Redis.
const STARTUP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Connects to Redis for node `node` of cluster `name`, over TLS for a
/// `rediss://` URL (trusting `ca`, a PEM certificate, instead of the system's
/// roots when given). Fails when Redis cannot be reached at start-up;
/// afterwards the connection heals by itself.
pub async fn connect(
    url: &str,
    ca: Option<&[u8]>,
    name: &str,
    node: &str,
) -> anyhow::Result<Cluster> {
    let url = with_resp3(url);
    let client = match ca {
        None => redis::Client::open(url)?,
        Some(pem) => redis::Client::build_with_tls(
            url,
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem.to_vec()),
            },
        )?,
    };
    // The manager retries on its own; at start-up, say what is wrong instead.
    let driver = tokio::time::timeout(STARTUP_TIMEOUT, ResilientDriver::connect(&client))
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "no answer within {} s (a rediss:// URL to a server without TLS, or the reverse, looks like this)",
                STARTUP_TIMEOUT.as_secs()
            )
        })??;
    let presence = RedisPresence::new(driver.connection(), name, node);
    let membership = membership::Membership::new(driver.connection(), name, node);
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
        membership,
    })
}

/// Pub/sub push messages need RESP3; ask for it unless the URL already says
/// (before a `#insecure` fragment, where the query would be lost).
fn with_resp3(url: &str) -> String {
    let (base, fragment) = url
        .split_once('#')
        .map_or((url, None), |(b, f)| (b, Some(f)));
    let joined = if base.contains("protocol=") {
        base.to_string()
    } else if base.contains('?') {
        format!("{base}&protocol=resp3")
    } else {
        format!("{base}?protocol=resp3")
    };
    match fragment {
        Some(f) => format!("{joined}#{f}"),
        None => joined,
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
    /// Asks Redis for the live nodes (one bounded call); Redis is up when
    /// presence's last call was answered.
    pub(crate) async fn of(
        membership: &membership::Membership,
        presence: &RedisPresence,
    ) -> ClusterHealth {
        ClusterHealth {
            redis_up: presence.is_healthy(),
            nodes: membership.nodes().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::with_resp3;

    #[test]
    fn resp3_is_asked_for_in_the_query_not_the_fragment() {
        assert_eq!(with_resp3("redis://h:1"), "redis://h:1?protocol=resp3");
        assert_eq!(
            with_resp3("redis://h/2?x=1"),
            "redis://h/2?x=1&protocol=resp3"
        );
        assert_eq!(
            with_resp3("redis://h?protocol=resp2"),
            "redis://h?protocol=resp2"
        );
        assert_eq!(
            with_resp3("rediss://u:p@h:1/#insecure"),
            "rediss://u:p@h:1/?protocol=resp3#insecure"
        );
    }
}
