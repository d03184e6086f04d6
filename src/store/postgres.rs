//! The PostgreSQL backing, for production and for clusters.
//!
//! Appends lock the `log_meta` row (`SELECT … FOR UPDATE`) for the length of
//! their transaction. That serialises appenders across every node for one short
//! transaction per *batch*, and it is what makes offsets commit in order: the
//! transaction holding `seq = n` commits before the one that allocates `n + 1`
//! can read the counter.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Row};

use super::chat::{MESSAGE_COLUMNS, NewMessage, SearchQuery, StoredMessage};
use super::{
    Appended, LogMeta, NewEvent, OfflineMark, StoreError, StoreResult, StoredEvent, message_row,
    rooms_from_json, rooms_to_json, stored_event,
};

#[derive(Clone)]
pub(super) struct PgStore {
    pub(super) pool: PgPool,
    /// The log writer's own connection: appends do not queue behind reads
    /// for a connection from `pool` (see the SQLite store's `appender`).
    appender: PgPool,
}

impl PgStore {
    pub(super) async fn open(url: &str) -> StoreResult<PgStore> {
        Self::connect(PgConnectOptions::from_str(url)?).await
    }

    pub(super) async fn open_in_schema(url: &str, schema: &str) -> StoreResult<PgStore> {
        let base = PgConnectOptions::from_str(url)?;
        let admin = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(base.clone())
            .await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE SCHEMA IF NOT EXISTS \"{}\"",
            schema.replace('"', "")
        )))
        .execute(&admin)
        .await?;
        admin.close().await;
        Self::connect(base.options([("search_path", schema)])).await
    }

    async fn connect(options: PgConnectOptions) -> StoreResult<PgStore> {
        // Bounds on the server side of every session. A node cut off from the
        // network while it holds the `log_meta` row lock would otherwise block
        // every node's appends until TCP gives up (up to two hours): the server
        // probes the silent client within ~25 s and ends its session, and a
        // transaction left idle is ended after 15 s, releasing the lock.
        let options = options.options([
            ("statement_timeout", "30s"),
            ("lock_timeout", "10s"),
            ("idle_in_transaction_session_timeout", "15s"),
            ("tcp_keepalives_idle", "10"),
            ("tcp_keepalives_interval", "5"),
            ("tcp_keepalives_count", "3"),
        ]);
        let connections = |max| {
            PgPoolOptions::new()
                .max_connections(max)
                .min_connections(1)
                .acquire_timeout(Duration::from_secs(10))
        };
        let pool = connections(16).connect_with(options.clone()).await?;
        let appender = connections(1).connect_with(options).await?;
        Ok(PgStore { pool, appender })
    }

    pub(super) async fn migrate(&self, epoch: &str) -> StoreResult<()> {
        sqlx::migrate!("./migrations/postgres")
            .run(&self.pool)
            .await?;
        sqlx::query(
            "INSERT INTO log_meta (id, epoch, last_seq, pruned_through) VALUES (1, $1, 0, 0)
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(epoch)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub(super) async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub(super) async fn close(&self) {
        self.appender.close().await;
        self.pool.close().await;
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
        origin: &str,
    ) -> StoreResult<Vec<Appended>> {
        let mut tx = self.appender.begin().await?;
        let mut next: i64 =
            sqlx::query_scalar("SELECT last_seq FROM log_meta WHERE id = 1 FOR UPDATE")
                .fetch_one(&mut *tx)
                .await?;
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut rows = EventRows::with_capacity(batch.len());
        for ev in batch {
            let seq = next + 1;
            if let Some(key) = &ev.idempotency_key
                && let Some(first) = claim_key(&mut tx, key, seq, ev, idempotency_cutoff_ms).await?
            {
                outcomes.push(first);
                continue;
            }
            next = seq;
            rows.push(ev, seq);
            outcomes.push(Appended::New { seq });
        }
        if !rows.seqs.is_empty() {
            rows.insert(&mut tx).await?;
            sqlx::query("UPDATE log_meta SET last_seq = $1 WHERE id = 1")
                .bind(next)
                .execute(&mut *tx)
                .await?;
            // Wakes the other nodes' tails; delivered at commit, in commit order.
            sqlx::query("SELECT pg_notify('livehub_log', $1)")
                .bind(format!("{origin}:{next}"))
                .execute(&mut *tx)
                .await?;
        }
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
        let rows = sqlx::query(
            "SELECT seq, event, payload, rooms, except_rooms, created_at FROM events WHERE seq IN
               (SELECT DISTINCT seq FROM event_rooms WHERE seq > $1 AND seq <= $4 AND room = ANY($2)
                ORDER BY seq LIMIT $3)
             ORDER BY seq",
        )
        .bind(after)
        .bind(rooms)
        .bind(limit as i64)
        .bind(upto)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(stored_event).collect()
    }

    pub(super) async fn count_rooms(
        &self,
        rooms: &[String],
        after: i64,
        cap: usize,
    ) -> StoreResult<usize> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM (SELECT DISTINCT seq FROM event_rooms
               WHERE seq > $1 AND room = ANY($2) LIMIT $3) AS capped",
        )
        .bind(after)
        .bind(rooms)
        .bind(cap as i64)
        .fetch_one(&self.pool)
        .await?;
        Ok(n as usize)
    }

    pub(super) async fn read_after(
        &self,
        after: i64,
        limit: usize,
    ) -> StoreResult<Vec<StoredEvent>> {
        let rows = sqlx::query(
            "SELECT seq, event, payload, rooms, except_rooms, created_at FROM events
             WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(after)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(stored_event).collect()
    }

    pub(super) async fn prunable_through(&self, cutoff_ms: i64) -> StoreResult<Option<i64>> {
        Ok(
            sqlx::query_scalar("SELECT MAX(seq) FROM events WHERE created_at < $1")
                .bind(cutoff_ms)
                .fetch_one(&self.pool)
                .await?,
        )
    }

    pub(super) async fn prune_through(&self, through: i64) -> StoreResult<i64> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM event_rooms WHERE seq <= $1")
            .bind(through)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM events WHERE seq <= $1")
            .bind(through)
            .execute(&mut *tx)
            .await?;
        let pruned: i64 = sqlx::query_scalar(
            "UPDATE log_meta SET pruned_through = GREATEST(pruned_through, $1) WHERE id = 1
             RETURNING pruned_through",
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
               (SELECT key FROM idempotency WHERE created_at < $1 LIMIT $2)",
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
        // One statement for the whole batch, not one per user (each is a
        // round trip, and a connect storm writes thousands of marks a second),
        // and always the same text, so it is prepared once: the rows go in as
        // three arrays.
        let rows = super::mark_rows(marks);
        let users: Vec<&str> = rows.iter().map(|r| r.0).collect();
        let seqs: Vec<i64> = rows.iter().map(|r| r.1).collect();
        let online: Vec<i64> = rows.iter().map(|r| r.2).collect();
        sqlx::query(
            "INSERT INTO offline_users (user_id, since_seq, online, updated_at)
             SELECT u, s, o, $4 FROM unnest($1::text[], $2::int8[], $3::int8[]) AS r(u, s, o)
             ON CONFLICT (user_id) DO UPDATE
               SET since_seq = excluded.since_seq, online = excluded.online,
                   updated_at = excluded.updated_at",
        )
        .bind(users)
        .bind(seqs)
        .bind(online)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub(super) async fn offline_mark(&self, user_id: &str) -> StoreResult<OfflineMark> {
        let row: Option<(i64, i64)> =
            sqlx::query_as("SELECT since_seq, online FROM offline_users WHERE user_id = $1")
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

impl PgStore {
    pub(super) async fn insert_message(
        &self,
        m: &NewMessage,
    ) -> StoreResult<(StoredMessage, bool)> {
        let mut tx = self.pool.begin().await?;
        let id: Option<i64> = sqlx::query_scalar(
            "INSERT INTO messages (room, sender_id, sender_name, content, encrypted, message_type, client_id, created_at, search)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, CASE WHEN $9::text IS NULL THEN NULL ELSE to_tsvector('simple', $9::text) END)
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
        .bind(&m.search_text)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(id) = id else {
            let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                "{MESSAGE_COLUMNS} FROM messages WHERE room = $1 AND sender_id = $2 AND client_id = $3"
            )))
            .bind(&m.room)
            .bind(&m.sender_id)
            .bind(&m.client_id)
            .fetch_one(&mut *tx)
            .await?;
            tx.commit().await?;
            return Ok((message_row(&row)?, false));
        };
        if !m.tokens.is_empty() {
            sqlx::query(
                "INSERT INTO message_tokens (token, message_id) SELECT t, $2 FROM UNNEST($1::text[]) AS t
                 ON CONFLICT DO NOTHING",
            )
            .bind(&m.tokens)
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
            "{MESSAGE_COLUMNS} FROM messages WHERE room = $1 AND id < $2 ORDER BY id DESC LIMIT $3 OFFSET $4"
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
        if !messages.is_empty() {
            let ids: Vec<i64> = messages.iter().map(|m| m.id).collect();
            let reads = sqlx::query(
                "SELECT message_id, user_id, read_at FROM message_reads WHERE message_id = ANY($1) ORDER BY read_at, user_id",
            )
            .bind(&ids)
            .fetch_all(&self.pool)
            .await?;
            for row in reads {
                let id: i64 = row.try_get(0)?;
                if let Some(m) = messages.iter_mut().find(|m| m.id == id) {
                    m.read_by.push((row.try_get(1)?, row.try_get(2)?));
                }
            }
        }
        Ok(messages)
    }

    pub(super) async fn mark_read(
        &self,
        room: &str,
        user_id: &str,
        ids: &[i64],
        at_ms: i64,
    ) -> StoreResult<Vec<i64>> {
        let found: Vec<i64> = sqlx::query_scalar(
            "WITH found AS (SELECT id FROM messages WHERE room = $1 AND id = ANY($2)),
                  ins AS (INSERT INTO message_reads (message_id, user_id, read_at)
                          SELECT id, $3, $4 FROM found ON CONFLICT DO NOTHING)
             SELECT id FROM found ORDER BY id",
        )
        .bind(room)
        .bind(ids)
        .bind(user_id)
        .bind(at_ms)
        .fetch_all(&self.pool)
        .await?;
        Ok(found)
    }

    pub(super) async fn search(
        &self,
        query: &SearchQuery,
        room: Option<&str>,
        before: Option<i64>,
        limit: usize,
    ) -> StoreResult<Vec<StoredMessage>> {
        let rows = match query {
            SearchQuery::Words(words) => {
                // Prefix match on every word; words are letters and digits only.
                let tsquery = words
                    .iter()
                    .map(|w| format!("{w}:*"))
                    .collect::<Vec<_>>()
                    .join(" & ");
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "{MESSAGE_COLUMNS} FROM messages WHERE search @@ to_tsquery('simple', $1)
                     AND ($2::text IS NULL OR room = $2) AND id < $3 ORDER BY id DESC LIMIT $4"
                )))
                .bind(tsquery)
                .bind(room)
                .bind(before.unwrap_or(i64::MAX))
                .bind(limit as i64)
                .fetch_all(&self.pool)
                .await?
            }
            SearchQuery::Tokens(tokens) => {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "{MESSAGE_COLUMNS} FROM messages WHERE id IN
                       (SELECT message_id FROM message_tokens WHERE token = ANY($1)
                        GROUP BY message_id HAVING COUNT(DISTINCT token) = $2)
                     AND ($3::text IS NULL OR room = $3) AND id < $4 ORDER BY id DESC LIMIT $5"
                )))
                .bind(tokens)
                .bind(tokens.len() as i64)
                .bind(room)
                .bind(before.unwrap_or(i64::MAX))
                .bind(limit as i64)
                .fetch_all(&self.pool)
                .await?
            }
        };
        rows.iter().map(message_row).collect()
    }
}

/// LISTEN on the log's commit channel.
pub(super) struct PgLogListener {
    listener: sqlx::postgres::PgListener,
}

impl PgStore {
    pub(super) async fn listener(&self) -> StoreResult<PgLogListener> {
        let mut listener = sqlx::postgres::PgListener::connect_with(&self.pool).await?;
        listener.listen(LOG_CHANNEL).await?;
        Ok(PgLogListener { listener })
    }
}

/// The NOTIFY channel of commits; the payload is `origin:last_seq`.
const LOG_CHANNEL: &str = "livehub_log";

impl PgLogListener {
    pub(super) async fn next(&mut self) -> StoreResult<Option<(String, i64)>> {
        match self.listener.try_recv().await? {
            None => Ok(None),
            Some(n) => {
                let (origin, seq) = n.payload().rsplit_once(':').unwrap_or(("", n.payload()));
                let seq = seq.parse().map_err(|_| {
                    StoreError::Corrupt(format!("commit notification {:?}", n.payload()))
                })?;
                Ok(Some((origin.to_string(), seq)))
            }
        }
    }
}

type PgTx = sqlx::Transaction<'static, sqlx::Postgres>;

/// Claims an idempotency key for the event about to take `seq`. `None`: the
/// key is free (or expired) and now points at `seq`. Otherwise the receipt of
/// the first emit with this key, and nothing is to be stored.
async fn claim_key(
    tx: &mut PgTx,
    key: &str,
    seq: i64,
    ev: &NewEvent,
    cutoff_ms: i64,
) -> StoreResult<Option<Appended>> {
    let claimed = sqlx::query(
        "INSERT INTO idempotency (key, seq, rooms, created_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (key) DO UPDATE
           SET seq = excluded.seq, rooms = excluded.rooms, created_at = excluded.created_at
           WHERE idempotency.created_at < $5",
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
    let row = sqlx::query("SELECT seq, rooms FROM idempotency WHERE key = $1")
        .bind(key)
        .fetch_one(&mut **tx)
        .await?;
    Ok(Some(Appended::Duplicate {
        seq: row.get(0),
        rooms: rooms_from_json(Some(row.get(1)))?,
    }))
}

/// A batch's new events as columns, inserted with one `UNNEST` per table.
struct EventRows<'a> {
    seqs: Vec<i64>,
    names: Vec<&'a str>,
    payloads: Vec<&'a str>,
    rooms: Vec<String>,
    except: Vec<Option<String>>,
    created: Vec<i64>,
    room_names: Vec<&'a str>,
    room_seqs: Vec<i64>,
}

impl<'a> EventRows<'a> {
    fn with_capacity(n: usize) -> Self {
        EventRows {
            seqs: Vec::with_capacity(n),
            names: Vec::with_capacity(n),
            payloads: Vec::with_capacity(n),
            rooms: Vec::with_capacity(n),
            except: Vec::with_capacity(n),
            created: Vec::with_capacity(n),
            room_names: Vec::new(),
            room_seqs: Vec::new(),
        }
    }

    fn push(&mut self, ev: &'a NewEvent, seq: i64) {
        self.seqs.push(seq);
        self.names.push(ev.event.as_str());
        self.payloads.push(ev.payload.as_str());
        self.rooms.push(rooms_to_json(&ev.rooms));
        self.except
            .push((!ev.except.is_empty()).then(|| rooms_to_json(&ev.except)));
        self.created.push(ev.created_at_ms);
        for room in &ev.rooms {
            self.room_names.push(room);
            self.room_seqs.push(seq);
        }
    }

    async fn insert(&self, tx: &mut PgTx) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO events (seq, event, payload, rooms, except_rooms, created_at)
             SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[])",
        )
        .bind(&self.seqs)
        .bind(&self.names)
        .bind(&self.payloads)
        .bind(&self.rooms)
        .bind(&self.except)
        .bind(&self.created)
        .execute(&mut **tx)
        .await?;
        sqlx::query(
            "INSERT INTO event_rooms (room, seq) SELECT * FROM UNNEST($1::text[], $2::bigint[])",
        )
        .bind(&self.room_names)
        .bind(&self.room_seqs)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }
}
