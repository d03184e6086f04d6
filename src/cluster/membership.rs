//! Which nodes of the cluster are alive, for `/health`.
//!
//! Every node writes itself into `<cluster>:nodes` (a sorted set: node →
//! expiry) and its connection count into `<cluster>:nodes:conns` every
//! [`HEARTBEAT`]; a node that stops is not counted once its entry expires.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::ConnectionManager;

use super::driver::REDIS_TIMEOUT;

/// How often a node says it is alive.
pub(crate) const HEARTBEAT: Duration = Duration::from_secs(5);
/// How long a node counts as alive after its last heartbeat.
const ALIVE_FOR: Duration = Duration::from_secs(15);

/// This node's membership of the cluster.
pub(crate) struct Membership {
    conn: ConnectionManager,
    nodes_key: String,
    connections_key: String,
    node: String,
    /// The last count Redis gave, for when it does not answer.
    nodes: AtomicUsize,
}

impl Membership {
    /// Node `node` of cluster `cluster`, on `conn`.
    pub(crate) fn new(conn: ConnectionManager, cluster: &str, node: &str) -> Arc<Membership> {
        Arc::new(Membership {
            conn,
            nodes_key: format!("{cluster}:nodes"),
            connections_key: format!("{cluster}:nodes:conns"),
            node: node.to_string(),
            nodes: AtomicUsize::new(1),
        })
    }

    /// Heartbeats every [`HEARTBEAT`] while the membership is in use;
    /// `connections` counts this node's connections.
    pub(crate) fn start(self: &Arc<Self>, connections: impl Fn() -> usize + Send + 'static) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(HEARTBEAT);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(membership) = weak.upgrade() else {
                    return;
                };
                membership.heartbeat(connections()).await;
            }
        });
    }

    async fn heartbeat(&self, connections: usize) {
        let now = now_ms();
        let mut pipe = redis::pipe();
        pipe.zadd(
            &self.nodes_key,
            &self.node,
            now + ALIVE_FOR.as_millis() as i64,
        )
        .ignore();
        pipe.hset(&self.connections_key, &self.node, connections)
            .ignore();
        pipe.cmd("ZCOUNT").arg(&self.nodes_key).arg(now).arg("+inf");
        let mut conn = self.conn.clone();
        let answer = tokio::time::timeout(REDIS_TIMEOUT, pipe.query_async::<(usize,)>(&mut conn));
        if let Ok(Ok((nodes,))) = answer.await {
            self.nodes.store(nodes, Ordering::Relaxed);
        }
    }

    /// Live nodes: asked from Redis now, or the last count when it does not answer.
    pub(crate) async fn nodes(&self) -> usize {
        let mut conn = self.conn.clone();
        let mut count = redis::cmd("ZCOUNT");
        count.arg(&self.nodes_key).arg(now_ms()).arg("+inf");
        let answer = tokio::time::timeout(REDIS_TIMEOUT, count.query_async::<usize>(&mut conn));
        match answer.await {
            Ok(Ok(n)) => {
                self.nodes.store(n, Ordering::Relaxed);
                n
            }
            _ => self.nodes.load(Ordering::Relaxed),
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
