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
pub mod log;
pub mod offset;
mod quiet;
mod reader;
mod tail;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use serde::Serialize;
use serde_json::{Map, Value};
use socketioxide::socket::Sid;
use tokio::sync::oneshot;

pub use catalog::CatalogEmits;
pub(crate) use census::OpenConnection;
pub use delivery::{Fill, Membership};
pub use fabric::{BoxFuture, Census, Fabric, Fabrics, LoggedEvent, SendOutcome};
pub use offset::{OffsetCodec, OffsetProblem};

use crate::error::Rejection;
use crate::events::{self, Emit, Prepared};
use crate::store::{Store, StoreError};
use delivery::{DeliveryHandle, JoinOp, JoinReply};
use log::LogHandle;
use reader::LogReader;

/// Events read from the database per page during a replay.
const REPLAY_PAGE: usize = 1000;
/// How long a replay waits for a slow client's buffer before giving up on it.
const REPLAY_SEND_PATIENCE: Duration = Duration::from_secs(10);

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
    /// The store's reads, with offsets.
    log_reader: Option<LogReader>,
    codec: OffsetCodec,
    pruned_through: AtomicI64,
    options: HubOptions,
    census: Arc<census::CensusBoard>,
    quiet: Arc<quiet::QuietUsers>,
}

/// Runs a task livehub cannot work without. If it panics, nothing would be
/// delivered any more while the process looked alive: exit instead, so that the
/// supervisor restarts livehub and clients reconnect and replay.
pub(crate) fn spawn_critical<F>(name: &'static str, task: F) -> tokio::task::JoinHandle<()>
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    use futures_util::FutureExt;
    tokio::spawn(async move {
        if std::panic::AssertUnwindSafe(task)
            .catch_unwind()
            .await
            .is_err()
        {
            tracing::error!(
                task = name,
                "a critical task panicked; exiting so that a supervisor restarts livehub"
            );
            std::process::exit(70);
        }
    })
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
        let log_reader = store.clone().map(|s| LogReader::new(s, codec.clone()));
        let shared_log = log_reader.clone().filter(|_| shared.is_some());
        let (delivery, deliverer) =
            delivery::spawn(fabric.clone(), last_seq, shared_log, quiet.clone());
        let tail = shared.map(|store| tail::spawn(store, node.to_string(), delivery.clone()));
        let sink = match &store {
            Some(s) => log::Sink::Store(s.clone()),
            None => log::Sink::Memory { last_seq },
        };
        let (log, writer) = log::spawn(sink, codec.clone(), delivery.clone());
        let census = Arc::new(census::CensusBoard::default());
        let hub = Hub {
            inner: Arc::new(Inner {
                log,
                delivery,
                fabric,
                store,
                log_reader,
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
            .map(|_| tokio::spawn(prune_forever(hub.downgrade())));
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

    fn downgrade(&self) -> std::sync::Weak<Inner> {
        Arc::downgrade(&self.inner)
    }

    /// Emits one event: validates it against the catalog, appends it to the log
    /// and delivers it. Returns once it is committed, with its offset.
    pub async fn emit(&self, emit: Emit) -> Result<Receipt, Rejection> {
        let prepared = events::prepare(emit)?;
        self.append_one(prepared).await
    }

    /// Emits many events. Each is validated on its own; the valid ones are
    /// committed together, in order. One result per event, in order.
    pub async fn emit_many(&self, emits: Vec<Emit>) -> Vec<Result<Receipt, Rejection>> {
        let checked: Vec<Result<Prepared, Rejection>> =
            emits.into_iter().map(events::prepare).collect();
        let valid: Vec<Prepared> = checked
            .iter()
            .filter_map(|r| r.as_ref().ok().cloned())
            .collect();
        let mut committed = self.inner.log.append(valid).await.into_iter();
        checked
            .into_iter()
            .map(|r| match r {
                Ok(_) => committed.next().expect("one receipt per valid event"),
                Err(e) => Err(e),
            })
            .collect()
    }

    /// Emits an event livehub itself produces (chat, read receipts): logged and
    /// replayable like any other, but exempt from the catalog and the reserved names.
    pub(crate) async fn emit_system(
        &self,
        event: &str,
        data: Map<String, Value>,
        rooms: Vec<String>,
    ) -> Result<Receipt, Rejection> {
        self.append_one(events::system(event, data, rooms)).await
    }

    async fn append_one(&self, prepared: Prepared) -> Result<Receipt, Rejection> {
        self.inner
            .log
            .append(vec![prepared])
            .await
            .pop()
            .unwrap_or_else(|| Err(Rejection::internal("the event log dropped the event")))
    }

    /// Waits until every emit queued so far is committed and delivered.
    pub async fn flush(&self) {
        self.inner.log.append(Vec::new()).await;
        self.inner.delivery.barrier().await;
    }

    /// The log position delivered on this node.
    pub fn position(&self) -> i64 {
        self.inner.delivery.position()
    }

    /// The offset of `seq` in this log.
    pub fn offset_of(&self, seq: i64) -> String {
        self.inner.codec.format(seq)
    }

    /// The `seq` after which the log still holds every event (older ones were pruned).
    pub fn retained_from(&self) -> i64 {
        self.inner.pruned_through.load(Ordering::Relaxed)
    }

    /// Whether the log may hold an event to `user`'s room after `seq`: when
    /// not, their offline queue from `seq` is provably empty, and a connect
    /// need not read the database for it (see [`quiet`]).
    pub(crate) fn user_may_have_events_after(&self, user: &str, seq: i64) -> bool {
        self.inner
            .quiet
            .may_have_after(&crate::rooms::user_room(user), seq)
    }

    /// The offset clients should treat as "now".
    pub fn latest_offset(&self) -> String {
        self.offset_of(self.position())
    }

    /// Whether events are written to a database (and can be replayed).
    pub fn is_durable(&self) -> bool {
        self.inner.store.is_some()
    }

    /// The `seq` an offset from a client names, or why it cannot be replayed from.
    pub async fn resolve_offset(&self, offset: &str) -> Result<i64, OffsetProblem> {
        if self.inner.store.is_none() {
            return Err(OffsetProblem::LogDisabled);
        }
        let pruned = self.inner.pruned_through.load(Ordering::Relaxed);
        let position = self.position();
        match self.inner.codec.parse(offset, position, pruned) {
            // Another node may be ahead of this one: ask the shared log.
            Err(OffsetProblem::Unknown) => {
                let last = match &self.inner.store {
                    Some(s) => s.log_meta().await.map(|m| m.last_seq).unwrap_or(position),
                    None => position,
                };
                self.inner.codec.parse(offset, last, pruned)
            }
            other => other,
        }
    }

    /// Whether more than the replay limit of events for `rooms` follow `after`.
    pub async fn too_far_behind(&self, rooms: &[String], after: i64) -> Result<bool, JoinFailure> {
        let Some(store) = &self.inner.store else {
            return Ok(false);
        };
        let limit = self.inner.options.replay_limit;
        // Seqs are consecutive: no more than `known - after` events follow
        // `after` in the log as this node knows it (every local commit, and
        // other nodes' as they announce them). A client back from a short drop
        // (the usual reconnect) is then within the limit without a database
        // count: a reconnect storm is thousands of these at once.
        if self.inner.delivery.known() - after <= limit as i64 {
            return Ok(false);
        }
        let n = store
            .count_rooms(rooms, after, limit + 1)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "replay count failed");
                JoinFailure::Store
            })?;
        Ok(n > limit)
    }

    /// Puts a socket in rooms, first sending it what `fill` asks for, exactly
    /// once and in order (see [`delivery`]). Returns how many events were sent.
    pub async fn join(
        &self,
        sid: Sid,
        membership: Arc<Membership>,
        rooms: Vec<String>,
        mut fill: Option<Fill>,
    ) -> Result<usize, JoinFailure> {
        let mut sent = 0;
        loop {
            let (reply, answer) = oneshot::channel();
            self.inner
                .delivery
                .join(JoinOp {
                    sid,
                    membership: membership.clone(),
                    rooms: rooms.clone(),
                    fill: fill.clone(),
                    reply,
                })
                .await;
            match answer.await.unwrap_or(JoinReply::Gone) {
                JoinReply::Joined { sent: n, .. } => {
                    self.inner.census.changed();
                    return Ok(sent + n);
                }
                JoinReply::Gone => return Err(JoinFailure::Gone),
                JoinReply::NotCovered { through } => {
                    fill = self
                        .fill_from_store(sid, &membership, fill, through, &mut sent)
                        .await?;
                }
                JoinReply::Backlog {
                    sent: n,
                    sent_through,
                    through,
                } => {
                    sent += n;
                    if let Some(f) = fill.as_mut() {
                        f.advance_to(sent_through);
                    }
                    fill = self
                        .fill_from_store(sid, &membership, fill, through, &mut sent)
                        .await?;
                }
            }
        }
    }

    /// Sends a fill's stretch up to `through` from the database and returns
    /// the fill that is left (none without a log: then there is nothing to read).
    async fn fill_from_store(
        &self,
        sid: Sid,
        membership: &Membership,
        fill: Option<Fill>,
        through: i64,
        sent: &mut usize,
    ) -> Result<Option<Fill>, JoinFailure> {
        let (Some(log), Some(mut f)) = (&self.inner.log_reader, fill) else {
            return Ok(None);
        };
        *sent += self
            .send_from_store(log, sid, membership, &f, through)
            .await?;
        f.advance_to(through);
        Ok(Some(f))
    }

    /// Sends the events of `fill` up to `through` from the database, paced to
    /// what the client's buffer takes. The socket is not yet in the fill's
    /// rooms, so nothing in this stretch can also reach it live.
    async fn send_from_store(
        &self,
        log: &LogReader,
        sid: Sid,
        membership: &Membership,
        fill: &Fill,
        through: i64,
    ) -> Result<usize, JoinFailure> {
        let rooms: Vec<String> = fill.after.iter().map(|(r, _)| r.clone()).collect();
        let mut cursor = fill.min_after();
        let mut sent = 0;
        loop {
            let page = log
                .rooms(&rooms, cursor, through, REPLAY_PAGE)
                .await
                .map_err(|e| {
                    tracing::error!(error = %e, "replay read failed");
                    JoinFailure::Store
                })?;
            let socket_rooms = self.inner.fabric.rooms_of(sid);
            let full = page.len() == REPLAY_PAGE;
            for ev in page {
                cursor = ev.seq;
                if fill.wants(ev.seq, &ev.rooms, &ev.except, membership, &socket_rooms) {
                    self.send_patiently(sid, &ev.event, &fill.payload(ev.seq, ev.payload))
                        .await?;
                    sent += 1;
                }
            }
            if !full {
                return Ok(sent);
            }
        }
    }

    async fn send_patiently(
        &self,
        sid: Sid,
        event: &str,
        payload: &serde_json::value::RawValue,
    ) -> Result<(), JoinFailure> {
        let deadline = tokio::time::Instant::now() + REPLAY_SEND_PATIENCE;
        loop {
            match self.inner.fabric.send(sid, event, payload) {
                SendOutcome::Sent => return Ok(()),
                SendOutcome::Gone => return Err(JoinFailure::Gone),
                SendOutcome::Slow if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                SendOutcome::Slow => {
                    self.inner.fabric.force_reconnect(sid);
                    return Err(JoinFailure::Slow);
                }
            }
        }
    }

    /// Events of the log for `rooms` after `after`, for clients that poll.
    pub async fn read_events(
        &self,
        rooms: &[String],
        after: i64,
        limit: usize,
    ) -> Result<Vec<crate::store::StoredEvent>, Rejection> {
        let Some(log) = &self.inner.log_reader else {
            return Ok(Vec::new());
        };
        log.rooms(rooms, after, i64::MAX, limit).await.map_err(|e| {
            tracing::error!(error = %e, "event read failed");
            Rejection::internal("the event log is unavailable")
        })
    }

    /// Sends an ephemeral event (presence, typing…) to rooms on every node,
    /// except sockets in the `except` rooms. Not logged, not replayed.
    pub(crate) fn signal(&self, rooms: &[String], except: &[String], event: &str, payload: &Value) {
        self.inner.fabric.signal(rooms, except, event, payload);
    }

    /// Sends an ephemeral event to one socket on this node (`pong`, `replay:reset`…).
    pub(crate) fn send_to(&self, sid: Sid, event: &str, payload: &Value) -> SendOutcome {
        let raw = serde_json::value::to_raw_value(payload).expect("JSON values serialise");
        self.inner.fabric.send(sid, event, &raw)
    }

    /// Takes a connection on this node out of a room.
    pub(crate) fn leave(&self, sid: Sid, room: &str) {
        self.inner.fabric.leave(sid, room);
        self.inner.census.changed();
    }

    /// The rooms a connection on this node is in.
    pub(crate) fn rooms_of(&self, sid: Sid) -> Vec<String> {
        self.inner.fabric.rooms_of(sid)
    }

    /// The rooms of a user's connections on this node (internal ones excluded).
    pub(crate) fn user_rooms(&self, user: &str) -> Vec<String> {
        let mut rooms: Vec<String> = self
            .inner
            .fabric
            .user_rooms(user)
            .into_iter()
            .filter(|r| !crate::rooms::is_internal(r))
            .collect();
        rooms.sort();
        rooms.dedup();
        rooms
    }

    /// Ends one socket on this node with a Socket.IO disconnect.
    pub(crate) fn disconnect_socket(&self, sid: Sid) {
        self.inner.fabric.disconnect(sid);
    }

    /// Disconnects every socket of a user, on every node.
    pub async fn disconnect_user(&self, user_id: &str) -> Result<(), Rejection> {
        self.inner
            .fabric
            .disconnect_room(crate::rooms::user_sockets_room(user_id))
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "user disconnect failed");
                Rejection::internal("could not reach every node")
            })
    }

    /// This node's sockets and rooms by kind (walked again only after a
    /// change, or [`census::MAX_AGE`] after the last walk; see [`census`]).
    pub fn census(&self) -> Census {
        self.inner.census.current(|| self.inner.fabric.census())
    }

    /// This node's open connections of every front, exactly.
    pub fn open_connections(&self) -> usize {
        self.inner.census.open()
    }

    /// Counts a connection a front accepted, until the guard is dropped.
    pub(crate) fn connection_opened(&self) -> census::OpenConnection {
        self.inner.census.opened()
    }

    async fn prune_once(&self) {
        let Some(store) = &self.inner.store else {
            return;
        };
        let now = chrono::Utc::now().timestamp_millis();
        let cutoff = now - self.inner.options.retention.as_millis() as i64;
        let idem_cutoff = now - log::IDEMPOTENCY_WINDOW.as_millis() as i64;
        match store.prune(cutoff, idem_cutoff).await {
            Ok(through) => self.inner.pruned_through.store(through, Ordering::Relaxed),
            Err(e) => tracing::warn!(error = %e, "event log pruning failed; will retry"),
        }
    }
}

async fn prune_forever(hub: std::sync::Weak<Inner>) {
    loop {
        let Some(inner) = hub.upgrade() else { return };
        let retention = inner.options.retention;
        Hub { inner }.prune_once().await;
        // Prune about ten times per retention window, at most once a minute.
        let pause = (retention / 10).clamp(Duration::from_millis(200), Duration::from_secs(60));
        tokio::time::sleep(pause).await;
    }
}
