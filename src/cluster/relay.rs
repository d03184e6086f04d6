//! Cross-node operations for the plain WebSocket front.
//!
//! Socket.IO's signals and disconnects cross nodes inside socketioxide's Redis
//! adapter, which only reaches Socket.IO sockets. Plain connections get the
//! same through this relay: one Redis channel per cluster, on the same
//! self-healing driver. Each node publishes from one task, in the order the
//! operations were made, and ignores its own messages (it applied them locally).
//! Logged events need none of this: every node reads them from the shared log.

use std::sync::Arc;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use socketioxide_redis::drivers::Driver;
use tokio::sync::mpsc;

use super::driver::ResilientDriver;
use crate::hub::fabric::Queued;

/// Operations waiting to be published; beyond this, the newest are dropped.
const QUEUE: usize = 4096;

/// An operation another node must apply to its own plain connections.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(crate) enum Relayed {
    /// An ephemeral event to rooms.
    Signal {
        rooms: Vec<String>,
        except: Vec<String>,
        event: String,
        payload: serde_json::Value,
    },
    /// Close every connection in a room (a controller's user disconnect).
    DisconnectRoom { room: String },
}

#[derive(Serialize, Deserialize)]
struct Envelope {
    node: String,
    #[serde(flatten)]
    op: Relayed,
}

/// Where a node's plain front applies what other nodes relay.
pub(crate) trait RelayTarget: Send + Sync + 'static {
    fn apply(&self, op: Relayed);
}

/// Publishes this node's operations.
#[derive(Clone)]
pub(crate) struct Relay {
    node: String,
    /// Serialised envelopes, for the one task that publishes them.
    tx: mpsc::Sender<Queued<Vec<u8>>>,
}

impl Relay {
    /// Starts publishing and listening on `cluster`'s channel.
    pub(crate) fn start(
        driver: ResilientDriver,
        cluster: &str,
        node: &str,
        target: Arc<dyn RelayTarget>,
    ) -> Relay {
        let channel = format!("{cluster}-plain");
        let (tx, mut rx) = mpsc::channel::<Queued<Vec<u8>>>(QUEUE);
        let publisher = driver.clone();
        let out = channel.clone();
        tokio::spawn(async move {
            while let Some(queued) = rx.recv().await {
                let Some(bytes) = queued.item() else { continue };
                if let Err(e) = publisher.publish(out.clone(), bytes).await {
                    tracing::debug!(error = %e, "plain relay publish failed");
                }
            }
        });
        let me = node.to_string();
        tokio::spawn(async move {
            let mut stream = loop {
                match driver.subscribe(channel.clone(), QUEUE).await {
                    Ok(stream) => break stream,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot subscribe to the plain relay; retrying");
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    }
                }
            };
            while let Some((_, bytes)) = stream.next().await {
                match serde_json::from_slice::<Envelope>(&bytes) {
                    Ok(env) if env.node != me => target.apply(env.op),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "unreadable plain relay message"),
                }
            }
        });
        Relay {
            node: node.to_string(),
            tx,
        }
    }

    /// Queues an operation for the other nodes.
    pub(crate) fn publish(&self, op: Relayed) {
        let env = Envelope {
            node: self.node.clone(),
            op,
        };
        let Ok(bytes) = serde_json::to_vec(&env) else {
            return;
        };
        if self.tx.try_send(Queued::Item(bytes)).is_err() {
            crate::metrics::signal_dropped();
        }
    }

    /// Resolves once the operations queued before the call are published
    /// (or failed to be).
    pub(crate) async fn settle(&self) {
        let (marker, reached) = Queued::marker();
        let _ = self.tx.send(marker).await;
        reached.await;
    }
}
