//! Users' offline marks, written off the connect path.
//!
//! Every user's first connect and last disconnect changes their mark, and a
//! write is a commit (an fsync with SQLite): one per connect would make a
//! connect storm wait on the disk. Instead a mark is recorded here at once —
//! reads see it immediately — and one task writes whatever is waiting in a
//! single transaction, the latest mark of each user. Writes keep the order the
//! marks were made in. A mark lost to a crash before its write errs towards
//! duplicates, never loss: the row still holds an earlier position.

use std::sync::Arc;

use dashmap::DashMap;
use tokio::sync::{mpsc, oneshot};

use crate::store::{OfflineMark, Store};

/// Users whose marks are written in one transaction, at most.
const BATCH: usize = 2048;

/// The least time from one write's start to the next. A write is a commit, and
/// in a connect storm one per few marks cost more than the connects
/// themselves; waiting lets a batch gather, and a user who comes and goes
/// within it costs one row instead of two. A lone mark after a quiet spell is
/// written at once.
const WRITE_EVERY: std::time::Duration = std::time::Duration::from_millis(50);

enum Op {
    /// A user's mark changed (the latest is in `pending`).
    Changed(String),
    /// Answer once everything before it is written.
    Flush(oneshot::Sender<()>),
}

/// The marks: written behind, read through.
#[derive(Clone)]
pub(crate) struct Marks {
    store: Store,
    /// Marks made but not yet written, with a version to know which write covered them.
    pending: Arc<DashMap<String, (OfflineMark, u64)>>,
    tx: mpsc::UnboundedSender<Op>,
}

impl Marks {
    /// Starts the writer; it stops when every handle is dropped.
    pub(crate) fn start(store: Store) -> Marks {
        let (tx, rx) = mpsc::unbounded_channel();
        let pending = Arc::new(DashMap::new());
        tokio::spawn(write_forever(store.clone(), pending.clone(), rx));
        Marks { store, pending, tx }
    }

    /// Sets `user`'s mark; it is read back at once and written soon.
    pub(crate) fn set(&self, user: &str, mark: OfflineMark) {
        {
            let mut entry = self.pending.entry(user.to_string()).or_insert((mark, 0));
            entry.0 = mark;
            entry.1 += 1;
        }
        let _ = self.tx.send(Op::Changed(user.to_string()));
    }

    /// `user`'s mark: the one waiting to be written, else the stored one.
    pub(crate) async fn get(&self, user: &str) -> crate::store::StoreResult<OfflineMark> {
        if let Some(entry) = self.pending.get(user) {
            return Ok(entry.0);
        }
        self.store.offline_mark(user).await
    }

    /// Waits until every mark set so far is written (shutdown).
    pub(crate) async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Op::Flush(done)).is_ok() {
            let _ = wait.await;
        }
    }
}

async fn write_forever(
    store: Store,
    pending: Arc<DashMap<String, (OfflineMark, u64)>>,
    mut rx: mpsc::UnboundedReceiver<Op>,
) {
    let mut last_write: Option<tokio::time::Instant> = None;
    while let Some(first) = rx.recv().await {
        if let (Some(at), Op::Changed(_)) = (last_write, &first) {
            tokio::time::sleep_until(at + WRITE_EVERY).await;
        }
        // Each user once: the batch writes their latest mark.
        let mut users = std::collections::HashSet::new();
        let mut flushes = Vec::new();
        let mut op = Some(first);
        while let Some(next) = op.take() {
            match next {
                Op::Changed(user) => {
                    users.insert(user);
                }
                Op::Flush(done) => flushes.push(done),
            }
            if users.len() < BATCH {
                op = rx.try_recv().ok();
            }
        }
        last_write = Some(tokio::time::Instant::now());
        let batch: Vec<(String, OfflineMark, u64)> = users
            .into_iter()
            .filter_map(|u| {
                let (mark, version) = *pending.get(&u)?;
                Some((u, mark, version))
            })
            .collect();
        write(&store, &batch).await;
        for (user, _, version) in &batch {
            // Only if no newer mark arrived meanwhile (that one has its own write queued).
            pending.remove_if(user, |_, (_, v)| v == version);
        }
        crate::memory::give_back_shared_room(&pending);
        for done in flushes {
            let _ = done.send(());
        }
    }
}

/// Writes a batch, retrying while the database is away (the marks stay
/// readable from memory meanwhile).
async fn write(store: &Store, batch: &[(String, OfflineMark, u64)]) {
    if batch.is_empty() {
        return;
    }
    let marks: Vec<(String, OfflineMark)> = batch.iter().map(|(u, m, _)| (u.clone(), *m)).collect();
    for attempt in 0u32.. {
        let now = chrono::Utc::now().timestamp_millis();
        match store.set_offline_marks(&marks, now).await {
            Ok(()) => return,
            Err(e) if attempt < 20 => {
                if attempt == 0 {
                    tracing::warn!(error = %e, users = marks.len(), "could not record offline marks; retrying");
                }
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
            Err(e) => {
                tracing::error!(error = %e, users = marks.len(), "gave up recording offline marks");
                return;
            }
        }
    }
}
