//! Presence shared by a cluster, in Redis, with per-entry expiry.
//!
//! Every socket's presence is an entry whose score is its expiry time. Each
//! node refreshes its own entries with a heartbeat; a node that dies stops
//! refreshing, and its entries lapse within [`ENTRY_TTL`]. A reaper on every
//! node removes lapsed entries and reports the users that are gone — each one
//! by exactly one node, the one whose removal took effect — so the room hears
//! `user:disconnected` once. Counting never asks other nodes: it is one sorted
//! set lookup.
//!
//! Layout (the `{room}` / `{user}` hash tags keep a script's keys together):
//!
//! | key | type | holds |
//! |---|---|---|
//! | `<cluster>:pv:{room}:u` | zset | users viewing → latest expiry of their sockets |
//! | `<cluster>:pv:{room}:s:<user>` | zset | that user's sockets `sid@node` → expiry |
//! | `<cluster>:pv:{room}:n` | hash | user → `sid␟name` for the viewer list |
//! | `<cluster>:pv:rooms` | zset | rooms with presence → last refresh (for the reaper) |
//! | `<cluster>:on:u` | zset | users connected anywhere → expiry |
//! | `<cluster>:on:{<user>}:s` | zset | the user's sockets → expiry |
//! | `<cluster>:on:info` | hash | user → `branch␟name␟seq` (for the offline queue and status) |
//!
//! `<cluster>` is `CLUSTER_NAME` (default `livehub`).
//!
//! When Redis does not answer, the node keeps serving from its own sockets (the
//! local mirror) and says so in `/health`; the next heartbeat after Redis
//! returns writes every local entry back.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::Script;
use redis::aio::ConnectionManager;
use tokio::sync::mpsc;

use super::memory::MemoryPresence;
use super::{Change, Order, UserChange, Viewer};
use crate::cluster::driver::REDIS_TIMEOUT;

/// How long an entry lives without a heartbeat.
pub const ENTRY_TTL: Duration = Duration::from_secs(15);
/// How often a node refreshes its entries and reaps lapsed ones.
pub const HEARTBEAT: Duration = Duration::from_secs(5);

const SEP: char = '\u{1f}';

/// A user whose presence lapsed on a node that stopped heartbeating.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lapsed {
    /// Stopped viewing `room`.
    Viewer {
        /// Room.
        room: String,
        /// User id.
        user: String,
        /// Display name.
        name: String,
        /// The socket last seen.
        socket_id: String,
        /// Viewers left.
        viewers: usize,
    },
    /// Has no connection anywhere any more.
    User {
        /// User id.
        user: String,
        /// Their branch, for the `offline` status.
        branch: Option<String>,
        /// Display name.
        name: String,
        /// The log position at their last heartbeat (the offline queue's start).
        seq: i64,
    },
}

/// What the heartbeat needs to know about this node.
pub trait NodeState: Send + Sync + 'static {
    /// The log position delivered on this node.
    fn position(&self) -> i64;
}

/// Presence in Redis.
#[derive(Clone)]
pub struct RedisPresence {
    inner: Arc<Inner>,
}

struct Inner {
    conn: ConnectionManager,
    keys: Keys,
    node: String,
    local: MemoryPresence,
    /// Local users' branch and name, for the info hash.
    user_info: dashmap::DashMap<String, (Option<String>, String)>,
    healthy: AtomicBool,
    scripts: Scripts,
}

struct Scripts {
    join: Script,
    leave: Script,
    reap: Script,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Key names, under the cluster's prefix.
struct Keys {
    prefix: String,
}

impl Keys {
    fn room(&self, room: &str, user: &str) -> [String; 3] {
        let p = &self.prefix;
        [
            format!("{p}:pv:{{{room}}}:s:{user}"),
            format!("{p}:pv:{{{room}}}:u"),
            format!("{p}:pv:{{{room}}}:n"),
        ]
    }

    fn room_sockets_prefix(&self, room: &str) -> String {
        format!("{}:pv:{{{room}}}:s:", self.prefix)
    }

    fn user(&self, user: &str) -> [String; 3] {
        let p = &self.prefix;
        [
            format!("{p}:on:{{{user}}}:s"),
            format!("{p}:on:u"),
            format!("{p}:on:info"),
        ]
    }

    /// A user's transitions: their count and when the last was made.
    fn user_transitions(&self, user: &str) -> String {
        format!("{}:on:{{{user}}}:t", self.prefix)
    }

    fn rooms_index(&self) -> String {
        format!("{}:pv:rooms", self.prefix)
    }
}

/// Numbers a user's transitions cluster-wide (KEYS[4], a hash; rooms pass no
/// fourth key): {1, count, this transition's number, when the one before was
/// made (ms)}.
const VERSIONED: &str = r"
local function versioned(count)
  if not KEYS[4] then return {1, count, 0, 0} end
  local before = tonumber(redis.call('HGET', KEYS[4], 't') or '0')
  local v = redis.call('HINCRBY', KEYS[4], 'v', 1)
  redis.call('HSET', KEYS[4], 't', ARGV[3])
  redis.call('PEXPIRE', KEYS[4], 86400000)
  return {1, count, v, before}
end
";

/// KEYS: sockets zset, users zset, info hash[, transitions hash]. ARGV: user,
/// member, now, exp, info. Adds the socket; returns {1 if the user was not
/// present, distinct users now, transition number, time of the one before}.
const JOIN: &str = r"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
local had = redis.call('ZCARD', KEYS[1])
redis.call('ZADD', KEYS[1], ARGV[4], ARGV[2])
redis.call('PEXPIREAT', KEYS[1], ARGV[4] + 60000)
redis.call('ZADD', KEYS[2], 'GT', ARGV[4], ARGV[1])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[5])
local count = redis.call('ZCOUNT', KEYS[2], ARGV[3], '+inf')
if had ~= 0 then return {0, count, 0, 0} end
return versioned(count)
";

/// KEYS: sockets zset, users zset, info hash[, transitions hash]. ARGV: user,
/// member, now. Removes the socket; returns {1 if this removed the user,
/// distinct users now, transition number, time of the one before}.
const LEAVE: &str = r"
redis.call('ZREM', KEYS[1], ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
local changed = 0
if redis.call('ZCARD', KEYS[1]) == 0 then
  redis.call('DEL', KEYS[1])
  if redis.call('ZREM', KEYS[2], ARGV[1]) == 1 then
    changed = 1
    redis.call('HDEL', KEYS[3], ARGV[1])
  end
end
local count = redis.call('ZCOUNT', KEYS[2], ARGV[3], '+inf')
if changed == 0 then return {0, count, 0, 0} end
return versioned(count)
";

/// KEYS: users zset, info hash. ARGV: now, sockets-key prefix, sockets-key suffix.
/// Removes users whose every socket lapsed; returns {user, info, …, count}.
const REAP: &str = r"
local lapsed = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1])
local gone = {}
for _, user in ipairs(lapsed) do
  local skey = ARGV[2] .. user .. ARGV[3]
  redis.call('ZREMRANGEBYSCORE', skey, '-inf', ARGV[1])
  local live = redis.call('ZRANGE', skey, -1, -1, 'WITHSCORES')
  if #live == 0 then
    redis.call('DEL', skey)
    if redis.call('ZREM', KEYS[1], user) == 1 then
      table.insert(gone, user)
      table.insert(gone, redis.call('HGET', KEYS[2], user) or '')
      redis.call('HDEL', KEYS[2], user)
    end
  else
    redis.call('ZADD', KEYS[1], live[2], user)
  end
end
table.insert(gone, tostring(redis.call('ZCOUNT', KEYS[1], ARGV[1], '+inf')))
return gone
";

async fn bounded<T>(call: impl Future<Output = redis::RedisResult<T>>) -> Option<T> {
    match tokio::time::timeout(REDIS_TIMEOUT, call).await {
        Ok(Ok(v)) => Some(v),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "presence: redis call failed");
            None
        }
        Err(_) => None,
    }
}

impl RedisPresence {
    /// Presence on `conn` for node `node` of cluster `cluster`.
    pub fn new(conn: ConnectionManager, cluster: &str, node: &str) -> RedisPresence {
        RedisPresence {
            inner: Arc::new(Inner {
                conn,
                keys: Keys {
                    prefix: cluster.to_string(),
                },
                node: node.to_string(),
                local: MemoryPresence::default(),
                user_info: dashmap::DashMap::new(),
                healthy: AtomicBool::new(true),
                scripts: Scripts {
                    join: Script::new(&format!("{VERSIONED}{JOIN}")),
                    leave: Script::new(&format!("{VERSIONED}{LEAVE}")),
                    reap: Script::new(REAP),
                },
            }),
        }
    }

    /// Whether Redis answered the last call.
    pub fn is_healthy(&self) -> bool {
        self.inner.healthy.load(Ordering::Relaxed)
    }

    fn record<T>(&self, result: Option<T>) -> Option<T> {
        let ok = result.is_some();
        if self.inner.healthy.swap(ok, Ordering::Relaxed) != ok {
            if ok {
                tracing::info!("redis is reachable again: cluster presence restored");
            } else {
                tracing::warn!("redis is not answering: serving presence from this node only");
            }
        }
        result
    }

    fn member(&self, sid: &str) -> String {
        format!("{sid}@{}", self.inner.node)
    }

    /// Remembers a user's branch and name for the cluster (before `connect_user`).
    pub(super) fn describe_user(&self, user: &str, branch: Option<&str>, name: &str) {
        self.inner.user_info.insert(
            user.to_string(),
            (branch.map(String::from), name.to_string()),
        );
    }

    fn user_info(&self, user: &str, seq: i64) -> String {
        let (branch, name) = self
            .inner
            .user_info
            .get(user)
            .map(|e| e.clone())
            .unwrap_or_default();
        format!("{}{SEP}{name}{SEP}{seq}", branch.unwrap_or_default())
    }

    /// Runs the join script (add a socket) or the leave script (remove one) on
    /// one of the two presence sets; `None` when Redis did not answer.
    async fn transition(
        &self,
        keys: [String; 3],
        user: &str,
        sid: &str,
        joining: Option<String>,
    ) -> Option<(bool, usize)> {
        self.numbered_transition(keys, None, user, sid, joining)
            .await
            .map(|(changed, count, _)| (changed, count))
    }

    /// [`Self::transition`], numbering the user's transitions in `numbered`
    /// (a user's connects and disconnects, not their room views): also the
    /// order it returns.
    async fn numbered_transition(
        &self,
        keys: [String; 3],
        numbered: Option<String>,
        user: &str,
        sid: &str,
        joining: Option<String>,
    ) -> Option<(bool, usize, Option<Order>)> {
        let now = now_ms();
        let mut conn = self.inner.conn.clone();
        let script = if joining.is_some() {
            &self.inner.scripts.join
        } else {
            &self.inner.scripts.leave
        };
        let mut call = script.prepare_invoke();
        call.key(&keys[0]).key(&keys[1]).key(&keys[2]);
        if let Some(key) = &numbered {
            call.key(key);
        }
        call.arg(user).arg(self.member(sid)).arg(now);
        if let Some(info) = joining {
            call.arg(now + ENTRY_TTL.as_millis() as i64).arg(info);
        }
        let reply = bounded(call.invoke_async::<(i64, i64, i64, i64)>(&mut conn)).await;
        let (changed, count, number, before) = self.record(reply)?;
        let order = (number > 0).then_some(Order {
            number,
            after_ms: now.saturating_sub(before),
        });
        Some((changed == 1, count as usize, order))
    }

    /// The number of `user`'s latest transition, cluster-wide.
    pub(super) async fn transition_number(&self, user: &str) -> Option<i64> {
        let mut conn = self.inner.conn.clone();
        let mut get = redis::cmd("HGET");
        get.arg(self.inner.keys.user_transitions(user)).arg("v");
        bounded(get.query_async::<Option<i64>>(&mut conn)).await?
    }

    pub(super) async fn join(&self, room: &str, user: &str, name: &str, sid: &str) -> Change {
        let local = self.inner.local.join(room, user, name, sid).await;
        let keys = self.inner.keys.room(room, user);
        let shared = self
            .transition(keys, user, sid, Some(format!("{sid}{SEP}{name}")))
            .await;
        let mut conn = self.inner.conn.clone();
        let exp = now_ms() + ENTRY_TTL.as_millis() as i64;
        let mut index = redis::cmd("ZADD");
        index.arg(self.inner.keys.rooms_index()).arg(exp).arg(room);
        let _ = bounded(index.query_async::<()>(&mut conn)).await;
        match shared {
            Some((user_changed, viewers)) => Change {
                user_changed,
                viewers,
            },
            None => local,
        }
    }

    pub(super) async fn leave(&self, room: &str, user: &str, sid: &str) -> Change {
        let local = self.inner.local.leave(room, user, sid).await;
        let keys = self.inner.keys.room(room, user);
        match self.transition(keys, user, sid, None).await {
            Some((user_changed, viewers)) => Change {
                user_changed,
                viewers,
            },
            None => local,
        }
    }

    pub(super) async fn viewers(&self, room: &str, limit: usize) -> (Vec<Viewer>, usize) {
        let keys = self.inner.keys.room(room, "");
        let mut conn = self.inner.conn.clone();
        let now = now_ms();
        let mut pipe = redis::pipe();
        pipe.cmd("ZCOUNT").arg(&keys[1]).arg(now).arg("+inf");
        pipe.cmd("ZRANGEBYSCORE")
            .arg(&keys[1])
            .arg(now)
            .arg("+inf")
            .arg("LIMIT")
            .arg(0)
            .arg(limit);
        let answer: Option<(usize, Vec<String>)> = bounded(pipe.query_async(&mut conn)).await;
        let Some((total, users)) = self.record(answer) else {
            return self.inner.local.viewers(room, limit).await;
        };
        if users.is_empty() {
            return (Vec::new(), total);
        }
        let infos: Vec<Option<String>> = bounded(
            redis::cmd("HMGET")
                .arg(&keys[2])
                .arg(&users)
                .query_async(&mut conn),
        )
        .await
        .unwrap_or_else(|| vec![None; users.len()]);
        let mut viewers: Vec<Viewer> = users
            .into_iter()
            .zip(infos)
            .map(|(user_id, info)| {
                let info = info.unwrap_or_default();
                let (socket_id, name) = info.split_once(SEP).unwrap_or(("", ""));
                Viewer {
                    name: if name.is_empty() {
                        user_id.clone()
                    } else {
                        name.to_string()
                    },
                    socket_id: socket_id.to_string(),
                    user_id,
                }
            })
            .collect();
        viewers.sort_by(|a, b| a.user_id.cmp(&b.user_id));
        (viewers, total)
    }

    pub(super) async fn count(&self, room: &str) -> usize {
        let keys = self.inner.keys.room(room, "");
        let mut conn = self.inner.conn.clone();
        let count: Option<usize> = bounded(
            redis::cmd("ZCOUNT")
                .arg(&keys[1])
                .arg(now_ms())
                .arg("+inf")
                .query_async(&mut conn),
        )
        .await;
        match self.record(count) {
            Some(c) => c,
            None => self.inner.local.count(room).await,
        }
    }

    pub(super) async fn connect_user(&self, user: &str, sid: &str, position: i64) -> UserChange {
        let local_first = self.inner.local.connect_user(user, sid).await;
        let keys = self.inner.keys.user(user);
        // The position the user is owed from should this node die before its
        // next heartbeat (not 0: that would replay their whole retained history).
        let info = self.user_info(user, position);
        let numbered = Some(self.inner.keys.user_transitions(user));
        match self
            .numbered_transition(keys, numbered, user, sid, Some(info))
            .await
        {
            Some((first, _, order)) => UserChange::ordered(first, order),
            None => UserChange::ordered(local_first, None),
        }
    }

    pub(super) async fn disconnect_user(&self, user: &str, sid: &str) -> UserChange {
        let local_last = self.inner.local.disconnect_user(user, sid).await;
        if local_last {
            self.inner.user_info.remove(user);
            crate::memory::give_back_shared_room(&self.inner.user_info);
        }
        let keys = self.inner.keys.user(user);
        let numbered = Some(self.inner.keys.user_transitions(user));
        match self
            .numbered_transition(keys, numbered, user, sid, None)
            .await
        {
            Some((last, _, order)) => UserChange::ordered(last, order),
            None => UserChange::ordered(local_last, None),
        }
    }

    pub(super) async fn users_online(&self) -> usize {
        let mut conn = self.inner.conn.clone();
        let online = &self.inner.keys.user("")[1];
        let count: Option<usize> = bounded(
            redis::cmd("ZCOUNT")
                .arg(online)
                .arg(now_ms())
                .arg("+inf")
                .query_async(&mut conn),
        )
        .await;
        match self.record(count) {
            Some(c) => c,
            None => self.inner.local.users_online().await,
        }
    }

    /// Starts the heartbeat and the reaper, each on its own task. Lapsed users
    /// are sent to `lapsed`.
    ///
    /// Apart, because reaping can take long: after a large node's death, one
    /// script call per room, and a wait for each lapsed user to be taken. A
    /// heartbeat behind it would let this node's own entries lapse in turn,
    /// and another node would reap users who are still here.
    pub fn start(&self, state: Arc<dyn NodeState>, lapsed: mpsc::Sender<Lapsed>) {
        self.every_heartbeat(move |presence| {
            let state = state.clone();
            async move { presence.heartbeat(&*state).await }
        });
        self.every_heartbeat(move |presence| {
            let lapsed = lapsed.clone();
            async move { presence.reap(&lapsed).await }
        });
    }

    /// Runs `work` every [`HEARTBEAT`] (a late one delays the next) for as
    /// long as the presence lives.
    fn every_heartbeat<F, W>(&self, work: W)
    where
        W: Fn(RedisPresence) -> F + Send + 'static,
        F: std::future::Future<Output = ()> + Send,
    {
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(HEARTBEAT);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                work(RedisPresence { inner }).await;
            }
        });
    }

    /// Refreshes every entry of this node's sockets (and writes them back after an outage).
    async fn heartbeat(&self, state: &dyn NodeState) {
        let now = now_ms();
        let exp = now + ENTRY_TTL.as_millis() as i64;
        let seq = state.position();
        let mut pipe = redis::pipe();
        for (room, user, name, sid) in self.inner.local.room_entries() {
            let keys = self.inner.keys.room(&room, &user);
            self.refresh(
                &mut pipe,
                &keys,
                &user,
                &sid,
                exp,
                format!("{sid}{SEP}{name}"),
            );
            pipe.zadd(self.inner.keys.rooms_index(), &room, exp)
                .ignore();
        }
        for (user, sid) in self.inner.local.user_entries() {
            let keys = self.inner.keys.user(&user);
            self.refresh(
                &mut pipe,
                &keys,
                &user,
                &sid,
                exp,
                self.user_info(&user, seq),
            );
        }
        pipe.cmd("ZREMRANGEBYSCORE")
            .arg(self.inner.keys.rooms_index())
            .arg("-inf")
            .arg(now - 2 * ENTRY_TTL.as_millis() as i64)
            .ignore();
        let mut conn = self.inner.conn.clone();
        self.record(bounded(pipe.query_async::<()>(&mut conn)).await);
    }

    /// Queues the refresh of one socket's entry: what the join script does,
    /// without the answer.
    fn refresh(
        &self,
        pipe: &mut redis::Pipeline,
        keys: &[String; 3],
        user: &str,
        sid: &str,
        exp: i64,
        info: String,
    ) {
        pipe.zadd(&keys[0], self.member(sid), exp).ignore();
        pipe.cmd("PEXPIREAT")
            .arg(&keys[0])
            .arg(exp + 60_000)
            .ignore();
        pipe.cmd("ZADD")
            .arg(&keys[1])
            .arg("GT")
            .arg(exp)
            .arg(user)
            .ignore();
        pipe.hset(&keys[2], user, info).ignore();
    }

    /// Removes lapsed entries everywhere and reports the users that are gone.
    async fn reap(&self, lapsed: &mpsc::Sender<Lapsed>) {
        let now = now_ms();
        let mut conn = self.inner.conn.clone();
        let rooms: Option<Vec<String>> = bounded(
            redis::cmd("ZRANGEBYSCORE")
                .arg(self.inner.keys.rooms_index())
                .arg("-inf")
                .arg("+inf")
                .query_async(&mut conn),
        )
        .await;
        for room in rooms.unwrap_or_default() {
            let keys = self.inner.keys.room(&room, "");
            let mut call = self.inner.scripts.reap.prepare_invoke();
            call.key(&keys[1]).key(&keys[2]);
            call.arg(now)
                .arg(self.inner.keys.room_sockets_prefix(&room))
                .arg("");
            let Some(mut gone) = bounded(call.invoke_async::<Vec<String>>(&mut conn)).await else {
                return;
            };
            let viewers = gone.pop().and_then(|c| c.parse().ok()).unwrap_or(0);
            for pair in gone.chunks(2) {
                let (socket_id, name) = pair[1].split_once(SEP).unwrap_or(("", ""));
                let _ = lapsed
                    .send(Lapsed::Viewer {
                        room: room.clone(),
                        user: pair[0].clone(),
                        name: if name.is_empty() {
                            pair[0].clone()
                        } else {
                            name.to_string()
                        },
                        socket_id: socket_id.to_string(),
                        viewers,
                    })
                    .await;
            }
        }
        let user_keys = self.inner.keys.user("");
        let mut call = self.inner.scripts.reap.prepare_invoke();
        call.key(&user_keys[1]).key(&user_keys[2]);
        call.arg(now)
            .arg(format!("{}:on:{{", self.inner.keys.prefix))
            .arg("}:s");
        if let Some(mut gone) = bounded(call.invoke_async::<Vec<String>>(&mut conn)).await {
            gone.pop();
            for pair in gone.chunks(2) {
                let mut info = pair[1].split(SEP);
                let branch = info.next().filter(|b| !b.is_empty()).map(String::from);
                let name = info.next().unwrap_or_default().to_string();
                let seq = info.next().and_then(|s| s.parse().ok()).unwrap_or(0);
                let _ = lapsed
                    .send(Lapsed::User {
                        user: pair[0].clone(),
                        branch,
                        name,
                        seq,
                    })
                    .await;
            }
        }
    }
}
