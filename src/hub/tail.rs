//! The shared log's tail: how a node learns that another node committed.
//!
//! With PostgreSQL, every append ends with a `NOTIFY` carrying the committing
//! node and the last offset. Each node listens, and hands other nodes' positions
//! to its deliverer, which reads the missing stretch from the log and delivers
//! it in offset order to its own sockets. A periodic look at the log's head
//! covers notifications lost while the listening connection was down.

use std::time::Duration;

use super::delivery::DeliveryHandle;
use crate::store::Store;

/// How often the head of the log is checked even without notifications.
const POLL_EVERY: Duration = Duration::from_secs(2);

pub(crate) fn spawn(
    store: Store,
    node: String,
    delivery: DeliveryHandle,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let mut listener = match store.log_listener().await {
                Ok(Some(l)) => l,
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen to the shared log; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let mut poll = tokio::time::interval(POLL_EVERY);
            loop {
                tokio::select! {
                    next = listener.next() => match next {
                        Ok(Some((origin, seq))) if origin != node => delivery.remote(seq).await,
                        Ok(Some(_)) => {}
                        // Reconnected: catch up on whatever was committed meanwhile.
                        Ok(None) => catch_up(&store, &delivery).await,
                        Err(e) => {
                            tracing::warn!(error = %e, "shared log listener failed; reconnecting");
                            break;
                        }
                    },
                    _ = poll.tick() => catch_up(&store, &delivery).await,
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
}

async fn catch_up(store: &Store, delivery: &DeliveryHandle) {
    if let Ok(meta) = store.log_meta().await {
        delivery.remote(meta.last_seq).await;
    }
}
