//! The SQLite backing: one embedded file in WAL mode.
//!
//! SQLite has one writer at a time, so appends take the write lock up front
//! (`BEGIN IMMEDIATE`) instead of upgrading a read transaction, which could fail
//! with `SQLITE_BUSY` under concurrent chat writes.

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool};

use super::chat::{MESSAGE_COLUMNS, NewMessage, SearchQuery, StoredMessage};
use super::{
    Appended, LogMeta, NewEvent, OfflineMark, StoreResult, StoredEvent, message_row,
    rooms_from_json, rooms_to_json, stored_event,
};

#[derive(Clone)]
pub(super) struct SqliteStore {
    pub(super) pool: SqlitePool,
    /// The log writer's own connection. It appends one batch at a time, so
    /// one is all it uses; taking it from `pool` put every emit in the queue
    /// behind whatever reads were waiting: thousands of clients reconnecting
    /// with an offset at once held emits back by most of a second (`bench/run.sh
    /// --only reconnect-storm`, emit p99).
    appender: SqlitePool,
    /// Commits are not fsynced (`synchronous=normal`): see `migrate`.
    relaxed: bool,
    /// The log's last `seq` as this process last wrote it (see `append_script`).
    head: std::sync::Arc<tokio::sync::Mutex<Option<i64>>>,
    /// Batches appended, for the upkeep to tell when the log has gone quiet.
    appends: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// The URL without livehub's own `synchronous=` parameter, and the setting.
///
/// FULL by default: the WAL is fsynced before a commit returns, so a `202` is
/// on disk. `?synchronous=normal` trades that for speed: a power loss or an OS
/// crash (not a crash of livehub) can undo the last commits, and the next
/// events then reuse their offsets, so a client holding one would silently
/// resume past events it never saw. The log writer commits many emits per
/// fsync, which keeps FULL's cost low (see docs/performance.md).
fn durability(url: &str) -> (String, SqliteSynchronous) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_string(), SqliteSynchronous::Full);
    };
    let mut synchronous = SqliteSynchronous::Full;
    let rest: Vec<&str> = query
        .split('&')
        .filter(|pair| match pair.strip_prefix("synchronous=") {
            Some(v) => {
                if v.eq_ignore_ascii_case("normal") {
                    synchronous = SqliteSynchronous::Normal;
                }
                false
            }
            None => !pair.is_empty(),
        })
        .collect();
    let url = if rest.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    (url, synchronous)
}

/// A pool of up to `max` connections, all kept open.
fn connections(max: u32) -> SqlitePoolOptions {
    SqlitePoolOptions::new()
        .max_connections(max)
        .min_connections(1)
        .idle_timeout(None)
        .max_lifetime(None)
}

/// Seconds (upkeep ticks) without an append before the caches are given back.
const QUIET_BEFORE_SHRINK: u32 = 5;

/// Tells, tick by tick, when the log has been quiet long enough after its
/// last append to give memory back: once per quiet spell, not every tick.
#[derive(Debug, Default)]
struct Quiet {
    /// The append count at the last tick.
    seen: u64,
    /// Ticks since it last moved.
    ticks: u32,
}

impl Quiet {
    /// One tick, with the append count now: whether to shrink now.
    fn tick(&mut self, appends: u64) -> bool {
        if appends != self.seen {
            *self = Quiet {
                seen: appends,
                ticks: 0,
            };
            return false;
        }
        self.ticks = self.ticks.saturating_add(1);
        self.ticks == QUIET_BEFORE_SHRINK
    }
}

/// What the WAL file is cut back to once checkpointed (bytes).
pub const WAL_SIZE_LIMIT: u64 = 4 << 20;

impl SqliteStore {
    pub(super) async fn open(url: &str) -> StoreResult<SqliteStore> {
        let (url, synchronous) = durability(url);
        let options = SqliteConnectOptions::from_str(&url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(synchronous)
            .busy_timeout(Duration::from_secs(10))
            // SQLite checkpoints the WAL inside whichever commit crosses 1000
            // pages, fsync included — on the log writer's path, a latency spike
            // for every emit waiting on that batch. The store checkpoints in
            // the background instead (`checkpoint_forever`).
            .pragma("wal_autocheckpoint", "0")
            // The WAL file keeps its largest size unless told otherwise: a
            // burst (or a long replay pinning a snapshot) would leave tens of
            // megabytes beside a small database for good. Cut it back to this
            // when it restarts after a checkpoint.
            .pragma("journal_size_limit", WAL_SIZE_LIMIT.to_string())
            .foreign_keys(true);
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        if !in_memory {
            // Switching a new file to WAL needs an exclusive lock and does not wait
            // for it: do it on one connection before the pool opens several.
            use sqlx::{ConnectOptions, Connection};
            options.clone().connect().await?.close().await?;
        }
        // An in-memory database exists once per connection: keep exactly one,
        // and let the log writer share it.
        let pool = connections(if in_memory { 1 } else { 8 })
            .connect_with(options.clone())
            .await?;
        let appender = if in_memory {
            pool.clone()
        } else {
            connections(1).connect_with(options).await?
        };
        Ok(SqliteStore {
            pool,
            appender,
            relaxed: matches!(synchronous, SqliteSynchronous::Normal),
            head: Default::default(),
            appends: Default::default(),
        })
    }

    pub(super) async fn migrate(&self, epoch: &str) -> StoreResult<()> {
        sqlx::migrate!("./migrations/sqlite")
            .run(&self.pool)
            .await?;
        sqlx::query(
            "INSERT INTO log_meta (id, epoch, last_seq, pruned_through) VALUES (1, ?, 0, 0)
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(epoch)
        .execute(&self.pool)
        .await?;
        self.guard_epoch(epoch).await
    }

    /// With `synchronous=normal` a power cut can undo the last commits, and the
    /// next events would take their offsets again: a client holding one would
    /// resume past events it never saw. So a log that was not closed cleanly
    /// while relaxed takes a new epoch: every older offset becomes unknown, and
    /// its client is told to refetch. (A crash of livehub alone loses nothing,
    /// but cannot be told apart.) Offline marks past the log's end are clamped.
    async fn guard_epoch(&self, fresh: &str) -> StoreResult<()> {
        let unclean: i64 = sqlx::query_scalar("SELECT open_unclean FROM log_meta WHERE id = 1")
            .fetch_one(&self.pool)
            .await?;
        if unclean == 1 {
            tracing::warn!(
                "the event log was not closed cleanly while synchronous=normal: it takes a new epoch, \
                 and clients holding older offsets will be told to refetch"
            );
            sqlx::query("UPDATE log_meta SET epoch = ? WHERE id = 1")
                .bind(fresh)
                .execute(&self.pool)
                .await?;
            sqlx::query(
                "UPDATE offline_users SET since_seq = MIN(since_seq, (SELECT last_seq FROM log_meta WHERE id = 1))",
            )
            .execute(&self.pool)
            .await?;
        }
        sqlx::query("UPDATE log_meta SET open_unclean = ? WHERE id = 1")
            .bind(i64::from(self.relaxed))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub(super) async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub(super) async fn close(&self) {
        let _ = sqlx::query("UPDATE log_meta SET open_unclean = 0 WHERE id = 1")
            .execute(&self.pool)
            .await;
        let _ = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&self.pool)
            .await;
        self.appender.close().await;
        self.pool.close().await;
    }

    /// The store's upkeep, once a second, off every writer's path:
    ///
    /// - It copies the WAL into the database. PASSIVE never waits for readers
    ///   or writers: what it cannot copy now, it copies next time.
    /// - Once the log has been quiet for [`QUIET_BEFORE_SHRINK`] after a burst,
    ///   it gives back the connections' page caches. Each connection keeps up to
    ///   2 MiB of pages for good, in the C heap (SQLite allocates with the
    ///   system `malloc`, not Rust's allocator), and the C heap keeps what is
    ///   freed: after 5,000 clients came and went (`bench/memory-back.sh`) that
    ///   was about 1 MiB of the server's resident memory. Under load the caches
    ///   stay; after a quiet spell the next reads take their pages from the
    ///   operating system's file cache.
    pub(super) fn spawn_upkeep(&self) {
        let store = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut quiet = Quiet::default();
            loop {
                tick.tick().await;
                if store.pool.is_closed() {
                    return;
                }
                if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                    .execute(&store.pool)
                    .await
                {
                    tracing::debug!(error = %e, "WAL checkpoint failed; will retry");
                }
                if quiet.tick(store.appends.load(std::sync::atomic::Ordering::Relaxed)) {
                    store.shrink_caches().await;
                    crate::memory::give_back_c_heap();
                }
            }
        });
    }

    /// Frees the page caches of the log writer's connection and of every idle
    /// pooled one (a busy one is in use: it will be shrunk next time).
    async fn shrink_caches(&self) {
        let _ = sqlx::query("PRAGMA shrink_memory")
            .execute(&self.appender)
            .await;
        let mut idle = Vec::new();
        while let Some(conn) = self.pool.try_acquire() {
            idle.push(conn);
        }
        for conn in &mut idle {
            let _ = sqlx::query("PRAGMA shrink_memory")
                .execute(&mut **conn)
                .await;
        }
    }

    pub(super) async fn log_meta(&self) -> StoreResult<LogMeta> {
        let row = sqlx::query("SELECT epoch, last_seq, pruned_through FROM log_meta WHERE id = 1")
            .fetch_one(&self.pool)
            .await?;
        Ok(LogMeta {
            epoch: row.get(0),
            last_seq: row.get(1),
            pruned_through: row.get(2),
        })
    }

    pub(super) async fn append(
        &self,
        batch: &[NewEvent],
        idempotency_cutoff_ms: i64,
        _origin: &str,
    ) -> StoreResult<Vec<Appended>> {
        self.appends
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if batch.iter().all(|e| e.idempotency_key.is_none()) {
            let mut head = self.head.lock().await;
            let known = match *head {
                Some(h) => h,
                None => {
                    sqlx::query_scalar("SELECT last_seq FROM log_meta WHERE id = 1")
                        .fetch_one(&self.pool)
                        .await?
                }
            };
            match self.append_script(batch, known).await {
                Ok(appended) => {
                    *head = Some(known + batch.len() as i64);
                    return Ok(appended);
                }
                // Someone else wrote the log (or the head was stale): take the
                // careful path, which reads the head inside its transaction.
                Err(e) => {
                    tracing::debug!(error = %e, "one-round-trip append refused; appending in a transaction");
                    *head = None;
                }
            }
        }
        let appended = self
            .append_in_transaction(batch, idempotency_cutoff_ms)
            .await?;
        *self.head.lock().await = None;
        Ok(appended)
    }

    /// Appends a batch without idempotency keys as one script: a single round
    /// trip to SQLite's thread instead of one per statement, which matters when
    /// every core is busy delivering and each trip waits to be scheduled.
    ///
    /// Values are written as SQL literals. They are livehub's own: seqs and
    /// times are integers, event names and rooms passed the grammar, payloads
    /// are JSON that serde_json wrote; strings are quoted with `'` doubled,
    /// which is SQLite's only escape.
    async fn append_script(&self, batch: &[NewEvent], head: i64) -> StoreResult<Vec<Appended>> {
        use std::fmt::Write;
        fn quote(out: &mut String, text: &str) {
            out.push('\'');
            out.push_str(&text.replace('\'', "''"));
            out.push('\'');
        }
        let mut sql = String::with_capacity(batch.len() * 512 + 256);
        let mut outcomes = Vec::with_capacity(batch.len());
        sql.push_str("BEGIN IMMEDIATE;\nINSERT INTO events (seq, event, payload, rooms, except_rooms, created_at) VALUES ");
        for (i, ev) in batch.iter().enumerate() {
            let seq = head + 1 + i as i64;
            if i > 0 {
                sql.push(',');
            }
            let _ = write!(sql, "({seq},");
            quote(&mut sql, &ev.event);
            sql.push(',');
            quote(&mut sql, &ev.payload);
            sql.push(',');
            quote(&mut sql, &rooms_to_json(&ev.rooms));
            sql.push(',');
            if ev.except.is_empty() {
                sql.push_str("NULL");
            } else {
                quote(&mut sql, &rooms_to_json(&ev.except));
            }
            let _ = write!(sql, ",{})", ev.created_at_ms);
            outcomes.push(Appended::New { seq });
        }
        sql.push_str(";\nINSERT INTO event_rooms (room, seq) VALUES ");
        let mut first = true;
        for (i, ev) in batch.iter().enumerate() {
            for room in &ev.rooms {
                if !first {
                    sql.push(',');
                }
                first = false;
                sql.push('(');
                quote(&mut sql, room);
                let _ = write!(sql, ",{})", head + 1 + i as i64);
            }
        }
        let last = head + batch.len() as i64;
        let _ = write!(
            sql,
            ";\nUPDATE log_meta SET last_seq = {last} WHERE id = 1 AND last_seq = {head};\nCOMMIT;"
        );
        // A stale head (another process appended to this file) fails the script:
        // the first INSERT hits an existing seq, the primary key refuses it, and
        // the caller falls back to the transactional path.
        let mut conn = self.appender.acquire().await?;
        if let Err(e) = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut *conn)
            .await
        {
            let _ = sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await;
            return Err(e.into());
        }
        Ok(outcomes)
    }

    async fn append_in_transaction(
        &self,
        batch: &[NewEvent],
        idempotency_cutoff_ms: i64,
    ) -> StoreResult<Vec<Appended>> {
        let mut tx = self.appender.begin_with("BEGIN IMMEDIATE").await?;
        let mut next: i64 = sqlx::query_scalar("SELECT last_seq FROM log_meta WHERE id = 1")
            .fetch_one(&mut *tx)
            .await?;
        let mut outcomes = Vec::with_capacity(batch.len());
        // (event, seq) of the events to insert.
        let mut fresh: Vec<(&NewEvent, i64)> = Vec::with_capacity(batch.len());
        for ev in batch {
            let seq = next + 1;
            if let Some(key) = &ev.idempotency_key
                && let Some(first) = claim_key(&mut tx, key, seq, ev, idempotency_cutoff_ms).await?
            {
                outcomes.push(first);
                continue;
            }
            next = seq;
            outcomes.push(Appended::New { seq });
            fresh.push((ev, seq));
        }
        insert_events(&mut tx, &fresh).await?;
        sqlx::query("UPDATE log_meta SET last_seq = ? WHERE id = 1")
            .bind(next)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(outcomes)
    }

    pub(super) async fn read_rooms(
        &self,
        rooms: &[String],
        after: i64,
        upto: i64,
        limit: usize,
    ) -> StoreResult<Vec<StoredEvent>> {
        let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(
            "SELECT seq, event, payload, rooms, except_rooms, created_at FROM events WHERE seq IN \
             (SELECT DISTINCT seq FROM event_rooms WHERE seq > ",
        );
        q.push_bind(after)
            .push(" AND seq <= ")
            .push_bind(upto)
            .push(" AND room IN (");
        let mut list = q.separated(", ");
        for room in rooms {
            list.push_bind(room.as_str());
        }
        q.push(") ORDER BY seq LIMIT ")
            .push_bind(limit as i64)
            .push(") ORDER BY seq");
        let rows = q.build().fetch_all(&self.pool).await?;
        rows.iter().map(stored_event).collect()
    }

    pub(super) async fn count_rooms(
        &self,
        rooms: &[String],
        after: i64,
        cap: usize,
    ) -> StoreResult<usize> {
        let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(
            "SELECT COUNT(*) FROM (SELECT DISTINCT seq FROM event_rooms WHERE seq > ",
        );
        q.push_bind(after).push(" AND room IN (");
        let mut list = q.separated(", ");
        for room in rooms {
            list.push_bind(room.as_str());
        }
        q.push(") LIMIT ").push_bind(cap as i64).push(")");
        let n: i64 = q.build_query_scalar().fetch_one(&self.pool).await?;
        Ok(n as usize)
    }

    pub(super) async fn read_after(
        &self,
        after: i64,
        limit: usize,
    ) -> StoreResult<Vec<StoredEvent>> {
        let rows = sqlx::query(
            "SELECT seq, event, payload, rooms, except_rooms, created_at FROM events
             WHERE seq > ? ORDER BY seq LIMIT ?",
        )
        .bind(after)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(stored_event).collect()
    }

    pub(super) async fn prunable_through(&self, cutoff_ms: i64) -> StoreResult<Option<i64>> {
        Ok(
            sqlx::query_scalar("SELECT MAX(seq) FROM events WHERE created_at < ?")
                .bind(cutoff_ms)
                .fetch_one(&self.pool)
                .await?,
        )
    }

    pub(super) async fn prune_through(&self, through: i64) -> StoreResult<i64> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query("DELETE FROM event_rooms WHERE seq <= ?")
            .bind(through)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM events WHERE seq <= ?")
            .bind(through)
            .execute(&mut *tx)
            .await?;
        let pruned: i64 = sqlx::query_scalar(
            "UPDATE log_meta SET pruned_through = MAX(pruned_through, ?) WHERE id = 1 RETURNING pruned_through",
        )
        .bind(through)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(pruned)
    }

    pub(super) async fn prune_keys(&self, cutoff_ms: i64, limit: usize) -> StoreResult<u64> {
        let deleted = sqlx::query(
            "DELETE FROM idempotency WHERE key IN
               (SELECT key FROM idempotency WHERE created_at < ? LIMIT ?)",
        )
        .bind(cutoff_ms)
        .bind(limit as i64)
        .execute(&self.pool)
        .await?;
        Ok(deleted.rows_affected())
    }

    /// Writes offline marks, in one transaction (latest per user last).
    pub(super) async fn set_offline_marks(
        &self,
        marks: &[(String, OfflineMark)],
        now_ms: i64,
    ) -> StoreResult<()> {
        let rows = super::mark_rows(marks);
        // A few statements per batch, not one per user: each is a round trip,
        // and a connect storm writes thousands of marks a second.
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        for run in super::cached_runs(&rows) {
            let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(
                "INSERT INTO offline_users (user_id, since_seq, online, updated_at) ",
            );
            q.push_values(run, |mut row, (user, seq, online)| {
                row.push_bind(*user)
                    .push_bind(*seq)
                    .push_bind(*online)
                    .push_bind(now_ms);
            });
            q.push(
                " ON CONFLICT (user_id) DO UPDATE SET since_seq = excluded.since_seq, \
                 online = excluded.online, updated_at = excluded.updated_at",
            );
            q.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn offline_mark(&self, user_id: &str) -> StoreResult<OfflineMark> {
        let row: Option<(i64, i64)> =
            sqlx::query_as("SELECT since_seq, online FROM offline_users WHERE user_id = ?")
                .bind(user_id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(OfflineMark::from_row(row))
    }

    pub(super) async fn user_room_highs(&self) -> StoreResult<Vec<(String, i64)>> {
        // A range of the (room, seq) key, not LIKE: it reads the index only.
        Ok(sqlx::query_as(
            "SELECT room, MAX(seq) FROM event_rooms WHERE room >= 'user:' AND room < 'user;' GROUP BY room",
        )
        .fetch_all(&self.pool)
        .await?)
    }
}

impl SqliteStore {
    pub(super) async fn insert_message(
        &self,
        m: &NewMessage,
    ) -> StoreResult<(StoredMessage, bool)> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let id: Option<i64> = sqlx::query_scalar(
            "INSERT INTO messages (room, sender_id, sender_name, content, encrypted, message_type, client_id, created_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (room, sender_id, client_id) WHERE client_id IS NOT NULL DO NOTHING
             RETURNING id",
        )
        .bind(&m.room)
        .bind(&m.sender_id)
        .bind(&m.sender_name)
        .bind(&m.content)
        .bind(m.encrypted)
        .bind(&m.message_type)
        .bind(&m.client_id)
        .bind(m.created_at_ms)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(id) = id else {
            let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                "{MESSAGE_COLUMNS} FROM messages WHERE room = ? AND sender_id = ? AND client_id = ?"
            )))
            .bind(&m.room)
            .bind(&m.sender_id)
            .bind(&m.client_id)
            .fetch_one(&mut *tx)
            .await?;
            tx.commit().await?;
            return Ok((message_row(&row)?, false));
        };
        if let Some(text) = &m.search_text {
            sqlx::query("INSERT INTO messages_fts (rowid, content) VALUES (?, ?)")
                .bind(id)
                .bind(text)
                .execute(&mut *tx)
                .await?;
        }
        for token in &m.tokens {
            sqlx::query("INSERT OR IGNORE INTO message_tokens (token, message_id) VALUES (?, ?)")
                .bind(token)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok((m.stored(id), true))
    }

    pub(super) async fn history(
        &self,
        room: &str,
        before: Option<i64>,
        skip: usize,
        limit: usize,
    ) -> StoreResult<Vec<StoredMessage>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "{MESSAGE_COLUMNS} FROM messages WHERE room = ? AND id < ? ORDER BY id DESC LIMIT ? OFFSET ?"
        )))
        .bind(room)
        .bind(before.unwrap_or(i64::MAX))
        .bind(limit as i64)
        .bind(skip as i64)
        .fetch_all(&self.pool)
        .await?;
        let mut messages = rows
            .iter()
            .map(message_row)
            .collect::<Result<Vec<_>, _>>()?;
        messages.reverse();
        self.attach_reads(&mut messages).await?;
        Ok(messages)
    }

    async fn attach_reads(&self, messages: &mut [StoredMessage]) -> StoreResult<()> {
        if messages.is_empty() {
            return Ok(());
        }
        let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(
            "SELECT message_id, user_id, read_at FROM message_reads WHERE message_id IN (",
        );
        let mut list = q.separated(", ");
        for m in messages.iter() {
            list.push_bind(m.id);
        }
        q.push(") ORDER BY read_at, user_id");
        for row in q.build().fetch_all(&self.pool).await? {
            let id: i64 = row.try_get(0)?;
            if let Some(m) = messages.iter_mut().find(|m| m.id == id) {
                m.read_by.push((row.try_get(1)?, row.try_get(2)?));
            }
        }
        Ok(())
    }

    pub(super) async fn mark_read(
        &self,
        room: &str,
        user_id: &str,
        ids: &[i64],
        at_ms: i64,
    ) -> StoreResult<Vec<i64>> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let mut q: QueryBuilder<Sqlite> =
            QueryBuilder::new("SELECT id FROM messages WHERE room = ");
        q.push_bind(room).push(" AND id IN (");
        let mut list = q.separated(", ");
        for id in ids {
            list.push_bind(*id);
        }
        q.push(") ORDER BY id");
        let found: Vec<i64> = q.build_query_scalar().fetch_all(&mut *tx).await?;
        for id in &found {
            sqlx::query(
                "INSERT INTO message_reads (message_id, user_id, read_at) VALUES (?, ?, ?)
                 ON CONFLICT (message_id, user_id) DO NOTHING",
            )
            .bind(id)
            .bind(user_id)
            .bind(at_ms)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(found)
    }

    pub(super) async fn search(
        &self,
        query: &SearchQuery,
        room: Option<&str>,
        before: Option<i64>,
        limit: usize,
    ) -> StoreResult<Vec<StoredMessage>> {
        let mut q: QueryBuilder<Sqlite> =
            QueryBuilder::new(format!("{MESSAGE_COLUMNS} FROM messages WHERE id IN ("));
        match query {
            SearchQuery::Words(words) => {
                // Each word as a quoted prefix term, all required. Words come from
                // our tokenizer (letters and digits only), quoting is belt and braces.
                let expr = words
                    .iter()
                    .map(|w| format!("\"{}\"*", w.replace('"', "\"\"")))
                    .collect::<Vec<_>>()
                    .join(" AND ");
                q.push("SELECT rowid FROM messages_fts WHERE messages_fts MATCH ")
                    .push_bind(expr)
                    .push(")");
            }
            SearchQuery::Tokens(tokens) => {
                q.push("SELECT message_id FROM message_tokens WHERE token IN (");
                let mut list = q.separated(", ");
                for t in tokens {
                    list.push_bind(t.as_str());
                }
                q.push(") GROUP BY message_id HAVING COUNT(DISTINCT token) = ")
                    .push_bind(tokens.len() as i64)
                    .push(")");
            }
        }
        if let Some(room) = room {
            q.push(" AND room = ").push_bind(room);
        }
        q.push(" AND id < ").push_bind(before.unwrap_or(i64::MAX));
        q.push(" ORDER BY id DESC LIMIT ").push_bind(limit as i64);
        let rows = q.build().fetch_all(&self.pool).await?;
        rows.iter().map(message_row).collect()
    }
}

type SqliteTx = sqlx::Transaction<'static, Sqlite>;

/// Claims an idempotency key for the event about to take `seq`. `None`: the
/// key is free (or expired) and now points at `seq`. Otherwise the receipt of
/// the first emit with this key, and nothing is to be stored.
async fn claim_key(
    tx: &mut SqliteTx,
    key: &str,
    seq: i64,
    ev: &NewEvent,
    cutoff_ms: i64,
) -> StoreResult<Option<Appended>> {
    let claimed = sqlx::query(
        "INSERT INTO idempotency (key, seq, rooms, created_at) VALUES (?, ?, ?, ?)
         ON CONFLICT (key) DO UPDATE
           SET seq = excluded.seq, rooms = excluded.rooms, created_at = excluded.created_at
           WHERE idempotency.created_at < ?",
    )
    .bind(key)
    .bind(seq)
    .bind(rooms_to_json(&ev.rooms))
    .bind(ev.created_at_ms)
    .bind(cutoff_ms)
    .execute(&mut **tx)
    .await?
    .rows_affected()
        == 1;
    if claimed {
        return Ok(None);
    }
    let row = sqlx::query("SELECT seq, rooms FROM idempotency WHERE key = ?")
        .bind(key)
        .fetch_one(&mut **tx)
        .await?;
    Ok(Some(Appended::Duplicate {
        seq: row.get(0),
        rooms: rooms_from_json(Some(row.get(1)))?,
    }))
}

/// Inserts the new events, `(event, seq)`, and their room rows, in runs of
/// cached statements (see `cached_runs`; 6 × 64 bound values at most, far
/// under SQLite's limit).
async fn insert_events(tx: &mut SqliteTx, fresh: &[(&NewEvent, i64)]) -> StoreResult<()> {
    for chunk in super::cached_runs(fresh) {
        let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(
            "INSERT INTO events (seq, event, payload, rooms, except_rooms, created_at) ",
        );
        q.push_values(chunk, |mut row, (ev, seq)| {
            row.push_bind(*seq)
                .push_bind(ev.event.as_str())
                .push_bind(ev.payload.as_str())
                .push_bind(rooms_to_json(&ev.rooms))
                .push_bind((!ev.except.is_empty()).then(|| rooms_to_json(&ev.except)))
                .push_bind(ev.created_at_ms);
        });
        q.build().execute(&mut **tx).await?;
    }
    let room_rows: Vec<(&str, i64)> = fresh
        .iter()
        .flat_map(|(ev, seq)| ev.rooms.iter().map(move |r| (r.as_str(), *seq)))
        .collect();
    for chunk in super::cached_runs(&room_rows) {
        let mut q: QueryBuilder<Sqlite> = QueryBuilder::new("INSERT INTO event_rooms (room, seq) ");
        q.push_values(chunk, |mut row, (room, seq)| {
            row.push_bind(*room).push_bind(*seq);
        });
        q.build().execute(&mut **tx).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: i64) -> NewEvent {
        NewEvent {
            event: "order:updated".into(),
            payload: format!(r#"{{"n":{n}}}"#),
            rooms: vec!["order:1".into()],
            except: Vec::new(),
            idempotency_key: None,
            created_at_ms: n,
        }
    }

    #[tokio::test]
    async fn the_store_works_on_after_giving_its_caches_back() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("l.db").display());
        let store = SqliteStore::open(&url).await.unwrap();
        store.migrate("epoch").await.unwrap();
        store.append(&[event(1), event(2)], 0, "").await.unwrap();
        // Several pooled connections open and idle, as after a burst of reads.
        let held: Vec<_> = futures_util::future::join_all((0..3).map(|_| store.pool.acquire()))
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        drop(held);
        // A connection goes back to the pool in a task of its own.
        let all_idle = || async {
            for _ in 0..500 {
                if store.pool.num_idle() == 3 {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            false
        };
        assert!(all_idle().await, "idle before");

        store.shrink_caches().await;

        assert!(
            all_idle().await,
            "every connection shrunk went back to the pool"
        );
        store.append(&[event(3)], 0, "").await.unwrap();
        assert_eq!(store.log_meta().await.unwrap().last_seq, 3);
    }

    #[tokio::test]
    async fn an_in_memory_log_keeps_its_events_through_the_shrink() {
        // In memory, the page cache is the database: the shrink must leave it be.
        let store = SqliteStore::open("sqlite::memory:").await.unwrap();
        store.migrate("epoch").await.unwrap();
        let batch: Vec<_> = (1..=200).map(event).collect();
        store.append(&batch, 0, "").await.unwrap();

        store.shrink_caches().await;

        let events = store.read_after(0, 1000).await.unwrap();
        assert_eq!(events.len(), 200);
        assert_eq!(events[199].payload, r#"{"n":200}"#);
    }

    #[test]
    fn caches_are_given_back_once_per_quiet_spell() {
        let mut quiet = Quiet::default();
        let ticks = |quiet: &mut Quiet, appends: u64, n: u32| {
            (0..n).filter(|_| quiet.tick(appends)).count()
        };
        // Quiet from the start: once, after the wait.
        assert_eq!(ticks(&mut quiet, 0, QUIET_BEFORE_SHRINK - 1), 0);
        assert!(quiet.tick(0), "quiet long enough");
        assert_eq!(ticks(&mut quiet, 0, 100), 0, "not again in the same spell");
        // A burst: nothing while appends go on, then once more.
        for appends in 1..=50 {
            assert!(!quiet.tick(appends), "appending at tick {appends}");
        }
        assert_eq!(ticks(&mut quiet, 50, QUIET_BEFORE_SHRINK), 1);
        // A single append starts a new spell.
        assert_eq!(ticks(&mut quiet, 51, QUIET_BEFORE_SHRINK + 10), 1);
    }
}
