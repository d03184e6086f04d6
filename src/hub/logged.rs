//! The hub's log half: emits, offsets, reads of the log, and retention.
//!
//! Every emit, whichever door it came in by, passes [`events::prepare`] here
//! and queues for the log writer ([`super::log`]); the receipt comes back once
//! the event is committed and on its way to the deliverer.

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{Map, Value};

use super::{Hub, Inner, OffsetProblem, Receipt, log};
use crate::error::Rejection;
use crate::events::{self, Emit, Prepared};

impl Hub {
    /// Emits one event: validates it against the catalog, appends it to the log
    /// and delivers it. Returns once it is committed, with its offset.
    pub async fn emit(&self, emit: Emit) -> Result<Receipt, Rejection> {
        let prepared = events::prepare(emit, self.inner.options.max_payload_bytes)?;
        self.append_one(prepared).await
    }

    /// Emits many events. Each is validated on its own; the valid ones are
    /// committed together, in order. One result per event, in order.
    pub async fn emit_many(&self, emits: Vec<Emit>) -> Vec<Result<Receipt, Rejection>> {
        let max = self.inner.options.max_payload_bytes;
        let checked: Vec<Result<Prepared, Rejection>> =
            emits.into_iter().map(|e| events::prepare(e, max)).collect();
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

    /// Events of the log for `rooms` after `after`, for clients that poll.
    pub async fn read_events(
        &self,
        rooms: &[String],
        after: i64,
        limit: usize,
    ) -> Result<Vec<crate::store::StoredEvent>, Rejection> {
        let Some(log) = self.log_reader() else {
            return Ok(Vec::new());
        };
        log.rooms(rooms, after, i64::MAX, limit).await.map_err(|e| {
            tracing::error!(error = %e, "event read failed");
            Rejection::internal("the event log is unavailable")
        })
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

/// Prunes the log while the hub lives.
pub(super) async fn prune_forever(hub: std::sync::Weak<Inner>) {
    loop {
        let Some(inner) = hub.upgrade() else { return };
        let retention = inner.options.retention;
        Hub { inner }.prune_once().await;
        // Prune about ten times per retention window, at most once a minute.
        let pause = (retention / 10).clamp(Duration::from_millis(200), Duration::from_secs(60));
        tokio::time::sleep(pause).await;
    }
}
