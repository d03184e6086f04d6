//! The hub: the one place that emits.
//!
//! HTTP routes, socket handlers and Rust code inside a backend all call the hub;
//! nothing else sends events to sockets. An emit flows one way:
//!
//! ```text
//! Emit ──prepare (catalog, rooms)──▶ log writer ──commit──▶ deliverer ──▶ sockets
//!                                     (batched)   offset     (in order)
//! ```
//!
//! [`Hub::emit`] returns once the event is committed to the log and queued for
//! delivery, with its offset. Joins with replay go through the deliverer too
//! (see [`delivery`]), which is what makes replay exact.
//!
//! # Where things are
//!
//! [`Hub`] is one handle with two halves, each in its own file:
//!
//! * `logged.rs`, the log half: [`Hub::emit`] and the other emits, offsets,
//!   reads of the log, retention. The tasks behind it: the writer ([`log`]),
//!   reads with offsets (`reader.rs`), other nodes' commits (`tail.rs`).
//! * `sockets.rs`, the delivery half: [`Hub::join`] with its replay, ephemeral
//!   sends, this node's connections and [`Census`]. The task behind it: the
//!   deliverer ([`delivery`]), over a [`Fabric`] (the sockets of every front).
//! * The writer runs on a thread of its own (`lane.rs`), not queued behind the
//!   sockets' tasks on the shared runtime; the deliverer runs among them. What
//!   the writer hands back (events, answers) wakes its task through the I/O
//!   driver (`handoff.rs`), not through the runtime's shared queue.
//! * The catalog's events by name: [`CatalogEmits`], an extension trait.
//!
//! # Emitting from Rust
//!
//! A controller in a Rust backend holds a [`Hub`] (from [`crate::app::App::hub`])
//! and calls it after each change: [`Hub::emit`] for any event, or the
//! catalog's events by name through [`CatalogEmits`]:
//!
//! ```no_run
//! use livehub::hub::{CatalogEmits, Hub};
//! use livehub::events::Severity;
//! use serde_json::json;
//!
//! async fn shipment_received(hub: &Hub, shipment_id: &str, user_id: &str) -> Result<(), livehub::Rejection> {
//!     // To `shipment:{id}`, the catalog's default room.
//!     let receipt = hub.shipment_updated(shipment_id, json!({ "status": "received" })).await?;
//!     println!("logged at {}", receipt.offset);
//!
//!     hub.order_status_changed("o-17", Some("branch-3"), json!({ "oldStatus": "pending", "newStatus": "in_progress" })).await?;
//!     hub.upload_progress(user_id, "upload-9", 40.0, json!({ "fileName": "pod.pdf" })).await?;
//!     hub.notify_user(user_id, "Shipment received", "Dock 4 signed for it", Severity::Success).await?;
//!     Ok(())
//! }
//! ```

mod catalog;
mod census;
pub mod delivery;
pub mod fabric;
mod handoff;
mod lane;
pub mod log;
mod logged;
pub mod offset;
mod quiet;
mod reader;
mod sockets;
mod tail;

use std::sync::Arc;
use std::sync::atomic::AtomicI64;
use std::time::Duration;

use serde::Serialize;

pub use catalog::CatalogEmits;
pub(crate) use census::OpenConnection;
pub use delivery::{Fill, Membership};
pub use fabric::{BoxFuture, Census, Fabric, Fabrics, LoggedEvent, SendOutcome};
pub use offset::{OffsetCodec, OffsetProblem};

use crate::store::{Store, StoreError};
use delivery::DeliveryHandle;
use log::LogHandle;
use reader::LogReader;

/// What an emit left behind: where it is in the log, and where it went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Receipt {
    /// The event's offset.
    pub offset: String,
    /// The rooms it was delivered to.
    pub rooms: Vec<String>,
    /// Whether this is the receipt of an earlier emit with the same idempotency key.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub duplicate: bool,
}

/// Why a join could not complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinFailure {
    /// The socket disconnected meanwhile.
    Gone,
    /// The socket could not take its replay and was told to reconnect.
    Slow,
    /// The database failed.
    Store,
}

/// Settings the hub needs.
#[derive(Debug, Clone)]
pub struct HubOptions {
    /// Events one replay may send before the client is told to refetch instead.
    pub replay_limit: usize,
    /// How long events are kept.
    pub retention: Duration,
    /// This node's name (commits from other nodes are delivered from the shared log).
    pub node: String,
    /// The largest `data` of an emit, in bytes of JSON (`MAX_PAYLOAD_BYTES`).
    pub max_payload_bytes: usize,
}

/// The emitter. Cheap to clone; every clone is the same hub.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

struct Inner {
    log: LogHandle,
    delivery: DeliveryHandle,
    fabric: Arc<dyn Fabric>,
    store: Option<Store>,
    codec: OffsetCodec,
    pruned_through: AtomicI64,
    options: HubOptions,
    census: Arc<census::CensusBoard>,
    quiet: Arc<quiet::QuietUsers>,
}

/// The hub's background tasks, to await on shutdown.
pub struct HubTasks {
    writer: tokio::task::JoinHandle<()>,
    deliverer: tokio::task::JoinHandle<()>,
    pruner: Option<tokio::task::JoinHandle<()>>,
    tail: Option<tokio::task::JoinHandle<()>>,
}

impl HubTasks {
    /// Stops pruning and waits for the writer and deliverer to drain. Call after
    /// every [`Hub`] clone is dropped.
    pub async fn finish(self) {
        if let Some(p) = self.pruner {
            p.abort();
        }
        if let Some(t) = self.tail {
            t.abort();
        }
        let _ = self.writer.await;
        let _ = self.deliverer.await;
    }
}

impl Hub {
    /// Starts the writer, the deliverer and (with a store) the retention pruner.
    /// Without a store, events are numbered in memory and nothing can be replayed.
    pub async fn start(
        store: Option<Store>,
        fabric: Arc<dyn Fabric>,
        options: HubOptions,
    ) -> Result<(Hub, HubTasks), StoreError> {
        let node = options.node.clone();
        let (epoch, last_seq, pruned) = match &store {
            Some(s) => {
                let meta = s.log_meta().await?;
                (meta.epoch, meta.last_seq, meta.pruned_through)
            }
            None => (format!("mem{:05x}", rand::random::<u32>() & 0xfffff), 0, 0),
        };
        let codec = OffsetCodec::new(epoch);
        let quiet = Arc::new(quiet::QuietUsers::default());
        if let Some(s) = &store {
            match s.user_room_highs().await {
                Ok(highs) => quiet.fill(highs),
                // Every connect then reads the database, as without the table.
                Err(e) => tracing::warn!(error = %e, "cannot read users' last events"),
            }
        }
        let shared = store.clone().filter(Store::is_shared);
        let shared_log = shared.clone().map(|s| LogReader::new(s, codec.clone()));
        let (delivery, deliverer) =
            delivery::spawn(fabric.clone(), last_seq, shared_log, quiet.clone());
        let tail = shared.map(|store| tail::spawn(store, node.to_string(), delivery.clone()));
        let sink = match &store {
            Some(s) => log::Sink::Store(s.clone()),
            None => log::Sink::Memory { last_seq },
        };
        let (log, writer) =
            log::spawn(sink, codec.clone(), delivery.clone()).map_err(sqlx::Error::Io)?;
        let census = Arc::new(census::CensusBoard::default());
        let hub = Hub {
            inner: Arc::new(Inner {
                log,
                delivery,
                fabric,
                store,
                codec,
                pruned_through: AtomicI64::new(pruned),
                options,
                census,
                quiet,
            }),
        };
        let pruner = hub
            .inner
            .store
            .as_ref()
            .map(|_| tokio::spawn(logged::prune_forever(hub.downgrade())));
        Ok((
            hub,
            HubTasks {
                writer,
                deliverer,
                pruner,
                tail,
            },
        ))
    }

    /// The log's reads, with offsets (none without a store).
    fn log_reader(&self) -> Option<LogReader> {
        let store = self.inner.store.clone()?;
        Some(LogReader::new(store, self.inner.codec.clone()))
    }

    fn downgrade(&self) -> std::sync::Weak<Inner> {
        Arc::downgrade(&self.inner)
    }
}
