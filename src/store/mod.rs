//! The database boundary: every SQL statement livehub runs lives under this module.
//!
//! [`Store`] is one type with two backings — embedded SQLite (the default) and
//! PostgreSQL — chosen by `DATABASE_URL`. Each method dispatches to the backing's
//! own SQL (`sqlite`, `postgres`); callers never see which one runs.
//!
//! The event log's invariant, on both backings: an event's `seq` is allocated
//! from `log_meta.last_seq` inside the transaction that inserts it, under the
//! database's write lock (SQLite) or a row lock (PostgreSQL). So sequence numbers
//! are gapless and become visible strictly in order: a reader that sees `seq = n`
//! has already been able to see every `seq < n`. Replay and the cluster tail rely
//! on that.

pub mod chat;
mod postgres;
mod sqlite;
pub use sqlite::WAL_SIZE_LIMIT;

pub use chat::{NewMessage, SearchQuery, StoredMessage};

use crate::config::DatabaseUrl;

/// A database failure. Callers turn it into an `internal` refusal; it is never
/// the caller's fault.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The query or connection failed.
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
    /// A migration failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// Stored data could not be read back.
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

/// Result of a store call.
pub type StoreResult<T> = Result<T, StoreError>;

/// Where a user's offline queue starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OfflineMark {
    /// No row: the user never connected (or not within memory of the log).
    Never,
    /// Their last connection went at this `seq`; nothing has been delivered since.
    Offline(i64),
    /// Connected, caught up to this `seq` at their connect. Found by a first
    /// connection, it means their node died without recording the departure.
    Online(i64),
}

impl OfflineMark {
    fn from_row(row: Option<(i64, i64)>) -> OfflineMark {
        match row {
            None => OfflineMark::Never,
            Some((seq, 0)) => OfflineMark::Offline(seq),
            Some((seq, _)) => OfflineMark::Online(seq),
        }
    }

    /// The row's `(since_seq, online)`, the inverse of [`OfflineMark::from_row`]
    /// (`None` for `Never`: there is nothing to write).
    fn to_row(self) -> Option<(i64, i64)> {
        match self {
            OfflineMark::Never => None,
            OfflineMark::Offline(seq) => Some((seq, 0)),
            OfflineMark::Online(seq) => Some((seq, 1)),
        }
    }
}

/// The rows `(user_id, since_seq, online)` that write `marks`, as if written
/// one after the other: one row per user, their last mark (one statement may
/// not update a row twice); `Never` writes nothing.
fn mark_rows(marks: &[(String, OfflineMark)]) -> Vec<(&str, i64, i64)> {
    let mut last = std::collections::HashMap::with_capacity(marks.len());
    for (user, mark) in marks {
        if let Some(row) = mark.to_row() {
            last.insert(user.as_str(), row);
        }
    }
    last.into_iter()
        .map(|(user, (seq, online))| (user, seq, online))
        .collect()
}

/// The most rows one cached multi-row statement takes.
const ROWS_PER_CACHED_STATEMENT: usize = 64;

/// Events (or idempotency keys) one pruning transaction deletes at most.
pub const PRUNE_STEP: usize = 5_000;

/// Splits `rows` into runs whose lengths are powers of two, at most
/// [`ROWS_PER_CACHED_STATEMENT`], longest first. A multi-row statement's text
/// grows with its rows, so writing each batch as one statement parsed it anew
/// every time (in SQLite about 2,000 instructions per row, more than running
/// it); with these runs a batch of any size uses one of seven texts, each
/// prepared once per connection and kept small.
pub(crate) fn cached_runs<T>(rows: &[T]) -> impl Iterator<Item = &[T]> {
    let mut rest = rows;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let len = ROWS_PER_CACHED_STATEMENT.min(1 << rest.len().ilog2());
        let (run, tail) = rest.split_at(len);
        rest = tail;
        Some(run)
    })
}

/// The log's identity and extent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogMeta {
    /// Random id of this log, fixed when the database is created. An offset from
    /// another log (a wiped database, another environment) is recognised by it.
    pub epoch: String,
    /// The newest `seq` appended.
    pub last_seq: i64,
    /// Every `seq` up to this one has been pruned by retention.
    pub pruned_through: i64,
}

/// An event to append.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// Event name.
    pub event: String,
    /// The envelope to store, without its offset (see [`crate::events::with_offset`]).
    pub payload: String,
    /// Target rooms.
    pub rooms: Vec<String>,
    /// Excluded rooms.
    pub except: Vec<String>,
    /// Idempotency key, if the emitter gave one.
    pub idempotency_key: Option<String>,
    /// Unix milliseconds.
    pub created_at_ms: i64,
}

/// What happened to one event of an append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Appended {
    /// Stored at `seq`.
    New {
        /// Its position in the log.
        seq: i64,
    },
    /// Its idempotency key was used within the window: nothing was stored,
    /// and this is the first emit's receipt.
    Duplicate {
        /// The first emit's position.
        seq: i64,
        /// The first emit's rooms.
        rooms: Vec<String>,
    },
}

/// An event read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// Position in the log.
    pub seq: i64,
    /// Event name.
    pub event: String,
    /// The envelope as stored: without its offset, which the hub adds (see
    /// [`crate::events::with_offset`]). Rows written by earlier versions carry it.
    pub payload: String,
    /// Target rooms.
    pub rooms: Vec<String>,
    /// Excluded rooms.
    pub except: Vec<String>,
    /// Unix milliseconds.
    pub created_at_ms: i64,
}

#[derive(Clone)]
enum Backend {
    Sqlite(sqlite::SqliteStore),
    Postgres(postgres::PgStore),
}

/// The database: event log, idempotency keys, offline users, chat.
#[derive(Clone)]
pub struct Store {
    backend: Backend,
    /// This node's name, carried by commit notifications so a node can ignore its own.
    origin: std::sync::Arc<str>,
}

/// Commit notifications of a shared (PostgreSQL) log.
pub struct LogListener(postgres::PgLogListener);

impl LogListener {
    /// The next commit: `(origin node, last seq)`. `None` means the connection
    /// was lost and re-established: notifications may have been missed, so the
    /// caller should catch up from the log.
    pub async fn next(&mut self) -> StoreResult<Option<(String, i64)>> {
        self.0.next().await
    }
}

macro_rules! dispatch {
    ($self:ident . $method:ident ( $($arg:expr),* )) => {
        match &$self.backend {
            Backend::Sqlite(b) => b.$method($($arg),*).await,
            Backend::Postgres(b) => b.$method($($arg),*).await,
        }
    };
}

impl Store {
    /// Opens the database (creating an SQLite file if needed), runs the
    /// migrations, and starts the database's own upkeep (SQLite: checkpoints,
    /// and giving its caches back when quiet).
    pub async fn connect(url: &DatabaseUrl) -> StoreResult<Store> {
        let store = Self::open(url).await?;
        store.migrate().await?;
        if let Backend::Sqlite(b) = &store.backend {
            b.spawn_upkeep();
        }
        Ok(store)
    }

    /// Opens the database without migrating it.
    pub async fn open(url: &DatabaseUrl) -> StoreResult<Store> {
        let backend = match url {
            DatabaseUrl::Sqlite(u) => Backend::Sqlite(sqlite::SqliteStore::open(u).await?),
            DatabaseUrl::Postgres(u) => Backend::Postgres(postgres::PgStore::open(u).await?),
        };
        Ok(Store {
            backend,
            origin: "".into(),
        })
    }

    /// The same store, tagging its commits with this node's name.
    pub fn with_origin(mut self, node: &str) -> Store {
        self.origin = node.into();
        self
    }

    /// Listens for commits by other nodes (PostgreSQL only; `None` on SQLite).
    pub async fn log_listener(&self) -> StoreResult<Option<LogListener>> {
        match &self.backend {
            Backend::Sqlite(_) => Ok(None),
            Backend::Postgres(b) => Ok(Some(LogListener(b.listener().await?))),
        }
    }

    /// Opens PostgreSQL inside `schema` (created if missing): isolated test databases.
    pub async fn connect_postgres_schema(url: &str, schema: &str) -> StoreResult<Store> {
        let store = Store {
            backend: Backend::Postgres(postgres::PgStore::open_in_schema(url, schema).await?),
            origin: "".into(),
        };
        store.migrate().await?;
        Ok(store)
    }

    /// Runs pending migrations and makes sure the log has its identity row.
    pub async fn migrate(&self) -> StoreResult<()> {
        let epoch = new_epoch();
        dispatch!(self.migrate(&epoch))
    }

    /// `sqlite` or `postgres`.
    pub fn kind(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// Whether several nodes can share this database's log.
    pub fn is_shared(&self) -> bool {
        matches!(self.backend, Backend::Postgres(_))
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> bool {
        dispatch!(self.ping()).is_ok()
    }

    /// The log's epoch and extent.
    pub async fn log_meta(&self) -> StoreResult<LogMeta> {
        dispatch!(self.log_meta())
    }

    /// Appends a batch in one transaction: one commit for many emits (group commit).
    ///
    /// Events whose idempotency key was used after `idempotency_cutoff_ms` are not
    /// stored and come back as [`Appended::Duplicate`].
    pub async fn append(
        &self,
        batch: &[NewEvent],
        idempotency_cutoff_ms: i64,
    ) -> StoreResult<Vec<Appended>> {
        let origin = &*self.origin;
        dispatch!(self.append(batch, idempotency_cutoff_ms, origin))
    }

    /// Events addressed to any of `rooms` with `after < seq <= upto`, oldest
    /// first, at most `limit`.
    pub async fn read_rooms(
        &self,
        rooms: &[String],
        after: i64,
        upto: i64,
        limit: usize,
    ) -> StoreResult<Vec<StoredEvent>> {
        if rooms.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        dispatch!(self.read_rooms(rooms, after, upto, limit))
    }

    /// How many events for `rooms` follow `after`, counting no further than `cap`.
    pub async fn count_rooms(
        &self,
        rooms: &[String],
        after: i64,
        cap: usize,
    ) -> StoreResult<usize> {
        if rooms.is_empty() {
            return Ok(0);
        }
        dispatch!(self.count_rooms(rooms, after, cap))
    }

    /// Every event with `seq > after`, oldest first, at most `limit` (the cluster tail).
    pub async fn read_after(&self, after: i64, limit: usize) -> StoreResult<Vec<StoredEvent>> {
        dispatch!(self.read_after(after, limit))
    }

    /// Deletes events created before `cutoff_ms` and idempotency keys older than
    /// `idempotency_cutoff_ms`; returns the new `pruned_through`.
    ///
    /// In steps of at most [`PRUNE_STEP`] events or keys, each in its own
    /// transaction: in one, a large backlog (a lowered `EVENT_RETENTION`, a
    /// long stop) held SQLite's write lock past the appenders' patience, or
    /// ran into PostgreSQL's statement timeout at every attempt, and the log
    /// never shrank.
    pub async fn prune(&self, cutoff_ms: i64, idempotency_cutoff_ms: i64) -> StoreResult<i64> {
        let mut pruned = self.log_meta().await?.pruned_through;
        if let Some(through) = dispatch!(self.prunable_through(cutoff_ms))? {
            while pruned < through {
                let step = through.min(pruned.saturating_add(PRUNE_STEP as i64));
                pruned = dispatch!(self.prune_through(step))?;
            }
        }
        while dispatch!(self.prune_keys(idempotency_cutoff_ms, PRUNE_STEP))? == PRUNE_STEP as u64 {}
        Ok(pruned)
    }

    /// Writes several users' marks in one transaction (`Never` is skipped).
    pub async fn set_offline_marks(
        &self,
        marks: &[(String, OfflineMark)],
        now_ms: i64,
    ) -> StoreResult<()> {
        if marks.is_empty() {
            return Ok(());
        }
        dispatch!(self.set_offline_marks(marks, now_ms))
    }

    /// Where `user_id`'s offline queue starts. Reading does not consume it:
    /// only an `Online` mark written after a completed replay does.
    pub async fn offline_mark(&self, user_id: &str) -> StoreResult<OfflineMark> {
        dispatch!(self.offline_mark(user_id))
    }

    /// The highest `seq` of an event to each user room in the log.
    pub async fn user_room_highs(&self) -> StoreResult<Vec<(String, i64)>> {
        dispatch!(self.user_room_highs())
    }

    /// Stores a chat message. A repeated `(room, sender, client_id)` stores
    /// nothing and returns the first message with `false`.
    pub async fn insert_message(&self, message: &NewMessage) -> StoreResult<(StoredMessage, bool)> {
        dispatch!(self.insert_message(message))
    }

    /// A room's messages older than message `before` (or the newest), less
    /// the `skip` newest of those, newest last, at most `limit`, with their
    /// read receipts.
    pub async fn history(
        &self,
        room: &str,
        before: Option<i64>,
        skip: usize,
        limit: usize,
    ) -> StoreResult<Vec<StoredMessage>> {
        dispatch!(self.history(room, before, skip, limit))
    }

    /// Records that `user_id` read these messages of `room`; returns the ids
    /// that exist in that room.
    pub async fn mark_read(
        &self,
        room: &str,
        user_id: &str,
        ids: &[i64],
        at_ms: i64,
    ) -> StoreResult<Vec<i64>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        dispatch!(self.mark_read(room, user_id, ids, at_ms))
    }

    /// Messages matching `query`, newest first, in `room` or in any room.
    pub async fn search(
        &self,
        query: &SearchQuery,
        room: Option<&str>,
        before: Option<i64>,
        limit: usize,
    ) -> StoreResult<Vec<StoredMessage>> {
        let empty = match query {
            SearchQuery::Words(w) => w.is_empty(),
            SearchQuery::Tokens(t) => t.is_empty(),
        };
        if empty {
            return Ok(Vec::new());
        }
        dispatch!(self.search(query, room, before, limit))
    }

    /// The rooms `user_id` wrote chat messages in, at most `limit`.
    pub async fn rooms_written_by(&self, user_id: &str, limit: usize) -> StoreResult<Vec<String>> {
        let limit = limit as i64;
        Ok(match &self.backend {
            Backend::Sqlite(b) => {
                sqlx::query_scalar(
                    "SELECT DISTINCT room FROM messages WHERE sender_id = ? ORDER BY room LIMIT ?",
                )
                .bind(user_id)
                .bind(limit)
                .fetch_all(&b.pool)
                .await?
            }
            Backend::Postgres(b) => sqlx::query_scalar(
                "SELECT DISTINCT room FROM messages WHERE sender_id = $1 ORDER BY room LIMIT $2",
            )
            .bind(user_id)
            .bind(limit)
            .fetch_all(&b.pool)
            .await?,
        })
    }

    /// The `content` column of every message exactly as stored, oldest first —
    /// for tests that check what is at rest.
    #[doc(hidden)]
    pub async fn debug_raw_message_contents(&self) -> StoreResult<Vec<String>> {
        let sql = "SELECT content FROM messages ORDER BY id";
        Ok(match &self.backend {
            Backend::Sqlite(b) => sqlx::query_scalar(sql).fetch_all(&b.pool).await?,
            Backend::Postgres(b) => sqlx::query_scalar(sql).fetch_all(&b.pool).await?,
        })
    }

    /// Closes the pool, waiting for statements in flight.
    pub async fn close(&self) {
        match &self.backend {
            Backend::Sqlite(b) => b.close().await,
            Backend::Postgres(b) => b.close().await,
        }
    }
}

fn new_epoch() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..8)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// What both backings' rows can decode: the column types the log and chat use.
pub(crate) trait LogRow {
    fn text(&self, i: usize) -> Result<String, sqlx::Error>;
    fn opt_text(&self, i: usize) -> Result<Option<String>, sqlx::Error>;
    fn int(&self, i: usize) -> Result<i64, sqlx::Error>;
    fn flag(&self, i: usize) -> Result<bool, sqlx::Error>;
}

macro_rules! log_row {
    ($row:ty) => {
        impl LogRow for $row {
            fn text(&self, i: usize) -> Result<String, sqlx::Error> {
                sqlx::Row::try_get(self, i)
            }
            fn opt_text(&self, i: usize) -> Result<Option<String>, sqlx::Error> {
                sqlx::Row::try_get(self, i)
            }
            fn int(&self, i: usize) -> Result<i64, sqlx::Error> {
                sqlx::Row::try_get(self, i)
            }
            fn flag(&self, i: usize) -> Result<bool, sqlx::Error> {
                sqlx::Row::try_get(self, i)
            }
        }
    };
}
log_row!(sqlx::sqlite::SqliteRow);
log_row!(sqlx::postgres::PgRow);

/// The columns of `events` that both backings select, in this order:
/// `seq, event, payload, rooms, except_rooms, created_at`.
pub(crate) fn stored_event(row: &impl LogRow) -> StoreResult<StoredEvent> {
    Ok(StoredEvent {
        seq: row.int(0)?,
        event: row.text(1)?,
        payload: row.text(2)?,
        rooms: rooms_from_json(Some(&row.text(3)?))?,
        except: rooms_from_json(row.opt_text(4)?.as_deref())?,
        created_at_ms: row.int(5)?,
    })
}

/// The columns of [`chat::MESSAGE_COLUMNS`], in that order.
pub(crate) fn message_row(row: &impl LogRow) -> StoreResult<StoredMessage> {
    Ok(StoredMessage {
        id: row.int(0)?,
        room: row.text(1)?,
        sender_id: row.text(2)?,
        sender_name: row.opt_text(3)?,
        content: row.text(4)?,
        encrypted: row.flag(5)?,
        message_type: row.text(6)?,
        client_id: row.opt_text(7)?,
        created_at_ms: row.int(8)?,
        read_by: Vec::new(),
    })
}

pub(crate) fn rooms_to_json(rooms: &[String]) -> String {
    serde_json::to_string(rooms).expect("a list of strings serialises")
}

pub(crate) fn rooms_from_json(json: Option<&str>) -> StoreResult<Vec<String>> {
    match json {
        None => Ok(Vec::new()),
        Some(s) => serde_json::from_str(s).map_err(|e| StoreError::Corrupt(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_lengths(n: usize) -> Vec<usize> {
        let rows: Vec<usize> = (0..n).collect();
        cached_runs(&rows).map(<[usize]>::len).collect()
    }

    #[test]
    fn batches_are_written_in_runs_of_a_few_lengths_keeping_every_row_in_order() {
        assert!(run_lengths(0).is_empty());
        assert_eq!(run_lengths(1), [1]);
        assert_eq!(run_lengths(77), [64, 8, 4, 1]);
        assert_eq!(run_lengths(130), [64, 64, 2]);
        let mut lengths = std::collections::BTreeSet::new();
        for n in 0..2000 {
            let rows: Vec<usize> = (0..n).collect();
            let joined: Vec<usize> = cached_runs(&rows).flatten().copied().collect();
            assert_eq!(joined, rows, "{n} rows");
            lengths.extend(run_lengths(n));
        }
        assert_eq!(
            lengths.into_iter().collect::<Vec<_>>(),
            [1, 2, 4, 8, 16, 32, 64]
        );
    }
}
