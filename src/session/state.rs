//! What livehub keeps per socket, and the queue that runs its events in order.
//!
//! socketioxide spawns a task per incoming event, so two events from one socket
//! can run out of order. The contract wants them in order (a `join` then a
//! `chat:send` to that room must work), so each socket has a queue: the
//! dispatcher appends to it on socketioxide's receive path, which runs in the
//! order the client sent, and one drain task at a time works through it. The
//! task exists only while there is work: an idle socket costs no task.

use std::collections::VecDeque;
use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::{Map, Value};
use socketioxide::socket::Sid;

use super::limits::{ConnectionSlot, CountsByKey, EventLimiter};
use crate::auth::Claims;
use crate::commands::Command;
use crate::error::Rejection;
use crate::hub::Membership;

/// What a command answered: the fields of a successful reply, or a refusal.
pub(crate) type Outcome = Result<Map<String, Value>, Rejection>;

/// Sends a command's outcome back the way its front answers (an ack, a frame).
pub(crate) type Reply = Box<dyn FnOnce(Outcome) + Send>;

/// One unit of work for a connection.
pub(crate) enum Job {
    /// Join the automatic rooms, with replay; always first.
    Connect,
    /// A client request, decoded (or why it could not be).
    Command {
        /// The command, or why the request is not one.
        command: Result<Command, Rejection>,
        /// Where its outcome goes; `None` when the client wants no answer.
        reply: Option<Reply>,
    },
}

struct Queue {
    jobs: VecDeque<Job>,
    /// Whether a drain task owns the queue right now.
    draining: bool,
}

/// A socket's entries in the presence store.
#[derive(Debug, Default)]
pub(crate) struct PresenceState {
    /// The socket is gone and cleaned up: add nothing more.
    pub gone: bool,
    /// The socket is counted among its user's connections.
    pub user_online: bool,
    /// The branch it is counted in (the claims' at connect: `auth:refresh`
    /// may bring another).
    pub counted_branch: Option<String>,
    /// Rooms it views (joined with `join:*` / `subscribe`).
    pub viewing: Vec<String>,
    /// Where it stands with its user's offline queue.
    pub owed: Owed,
}

/// Where a socket stands with its user's offline queue: what its departure,
/// when it is the user's last socket, writes as the user's mark.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum Owed {
    /// Nothing, or all of it taken: the departure marks the user offline from
    /// the log's position then.
    #[default]
    Nothing,
    /// Its replay of the queue from here is under way: the departure keeps
    /// the queue owed from there.
    From(i64),
    /// Its connect could not learn what the user is owed (the database did
    /// not answer) and sent it nothing: the departure leaves the mark as it is.
    Unknown,
}

/// Serialises the user-level half of connects and disconnects on this node.
///
/// Two sockets of one user can connect and disconnect at the same moment (a
/// page reload: the old tab's socket goes as the new one comes). The user's
/// transition in the presence store, its `presence` status and the offline
/// queue mark must then happen in one order, or the branch is told `offline`
/// after `online` for a user who is there, or a fresh connect misses the mark
/// its predecessor was still writing. Locks are striped by user id: a fixed
/// set, no per-user allocation, and unrelated users rarely share one.
pub(crate) struct UserLocks {
    stripes: Box<[tokio::sync::Mutex<()>]>,
}

impl Default for UserLocks {
    fn default() -> Self {
        UserLocks {
            stripes: (0..256).map(|_| tokio::sync::Mutex::new(())).collect(),
        }
    }
}

impl UserLocks {
    /// Holds `user`'s stripe until the guard is dropped.
    pub async fn lock(&self, user: &str) -> tokio::sync::MutexGuard<'_, ()> {
        use std::hash::{BuildHasher, BuildHasherDefault};
        let hash = BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default()
            .hash_one(user);
        self.stripes[(hash as usize) % self.stripes.len()]
            .lock()
            .await
    }
}

/// Sockets connected on this node per branch, to keep automatic `online` /
/// `offline` statuses from growing quadratically: like viewers' join and leave
/// events above `PRESENCE_BROADCAST_LIMIT`, they stop in a branch with more
/// sockets than that (5,000 users of one branch connecting would be 25 million
/// frames). Counted per node, by sockets: exact, cheap, and never drifting when
/// a user's first and last sockets are on different nodes. `presence:set`
/// statuses are always announced.
#[derive(Default)]
pub(crate) struct BranchSockets(CountsByKey<String>);

impl BranchSockets {
    /// A socket of `branch` connected: the branch's count after it (0 for none).
    pub fn arrived(&self, branch: Option<&str>) -> usize {
        branch.map_or(0, |b| self.0.increment(b.to_string(), 0).unwrap_or(0))
    }

    /// A socket of `branch` went: the branch's count after it.
    pub fn departed(&self, branch: Option<&str>) -> usize {
        branch.map_or(0, |b| self.0.decrement(&b.to_string()))
    }
}

/// Most jobs a socket may have waiting; more are refused with `rate_limited`.
pub(crate) const MAX_QUEUED: usize = 256;

/// A connected socket's state.
pub(crate) struct Session {
    /// The socket.
    pub sid: Sid,
    /// The verified token.
    pub claims: Mutex<Arc<Claims>>,
    /// Rooms joined through the hub, with their join positions.
    pub membership: Arc<Membership>,
    /// Log position when the socket connected: events after it are owed to it.
    pub connected_at: i64,
    /// When it connected (shown in the Admin UI).
    pub since: std::time::SystemTime,
    /// `auth.offset` from the handshake.
    pub auth_offset: Option<String>,
    /// Rate limit on client events.
    pub limiter: Option<EventLimiter>,
    /// The socket's place in its address's connection count (none in tests).
    pub connection: Option<ConnectionSlot>,
    /// What this socket put in the presence store. An async lock: presence
    /// calls happen under it, so a disconnect that races a connect or a join
    /// can neither miss what they add nor let them add after it cleaned up.
    pub presence: tokio::sync::Mutex<PresenceState>,
    /// How the front proves the client read its replay (see [`super::ReceiptProbe`]).
    pub probe: std::sync::OnceLock<std::sync::Weak<dyn super::ReceiptProbe>>,
    queue: Mutex<Queue>,
}

impl Session {
    /// A session whose queue starts with [`Job::Connect`]. The queue is marked
    /// as draining so events that arrive before the connect handler runs wait
    /// behind the connect job instead of starting a drain of their own.
    pub fn new(
        sid: Sid,
        claims: Claims,
        connected_at: i64,
        auth_offset: Option<String>,
        limiter: Option<EventLimiter>,
        connection: Option<ConnectionSlot>,
    ) -> Session {
        Session {
            sid,
            claims: Mutex::new(Arc::new(claims)),
            membership: Arc::new(Membership::default()),
            connected_at,
            since: std::time::SystemTime::now(),
            auth_offset,
            limiter,
            connection,
            presence: tokio::sync::Mutex::new(PresenceState::default()),
            probe: std::sync::OnceLock::new(),
            queue: Mutex::new(Queue {
                jobs: VecDeque::from([Job::Connect]),
                draining: true,
            }),
        }
    }

    /// The current claims (replaced by `auth:refresh`).
    pub fn claims(&self) -> Arc<Claims> {
        self.claims.lock().clone()
    }

    /// Queues a job. Returns `Ok(true)` when the caller must start a drain task,
    /// `Err(job)` when the queue is full.
    pub fn enqueue(&self, job: Job) -> Result<bool, Job> {
        let mut q = self.queue.lock();
        if q.jobs.len() >= MAX_QUEUED {
            return Err(job);
        }
        q.jobs.push_back(job);
        if q.draining {
            Ok(false)
        } else {
            q.draining = true;
            Ok(true)
        }
    }

    /// The next job, or `None` — and then the drain task must stop, because the
    /// next `enqueue` will start a new one.
    pub fn next_job(&self) -> Option<Job> {
        let mut q = self.queue.lock();
        let job = q.jobs.pop_front();
        if job.is_none() {
            q.draining = false;
        }
        job
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> Session {
        Session::new(
            Sid::new(),
            Claims::from_json(serde_json::json!({"sub": "u", "exp": 1})).unwrap(),
            0,
            None,
            None,
            None,
        )
    }

    fn event(n: usize) -> Job {
        Job::Command {
            command: Err(Rejection::bad_request(format!("e{n}"))),
            reply: None,
        }
    }

    #[test]
    fn connect_job_runs_first_and_no_second_drain_starts() {
        let s = session();
        assert_eq!(
            s.enqueue(event(1)).ok(),
            Some(false),
            "the connect drain owns the queue"
        );
        assert!(matches!(s.next_job(), Some(Job::Connect)));
        assert!(
            matches!(s.next_job(), Some(Job::Command { command: Err(r), .. }) if r.message == "e1")
        );
        assert!(s.next_job().is_none());
        assert_eq!(
            s.enqueue(event(2)).ok(),
            Some(true),
            "an idle queue needs a new drain"
        );
        assert_eq!(s.enqueue(event(3)).ok(), Some(false));
    }

    #[test]
    fn branch_sockets_count_sockets_with_a_branch() {
        let b = BranchSockets::default();
        assert_eq!(b.arrived(Some("x")), 1);
        assert_eq!(b.arrived(Some("x")), 2);
        assert_eq!(b.arrived(None), 0, "no branch, nothing counted");
        assert_eq!(b.departed(Some("x")), 1);
        assert_eq!(b.departed(Some("x")), 0);
        assert_eq!(b.departed(Some("x")), 0, "never below zero");
        assert!(b.0.is_empty(), "an empty branch is forgotten");
    }

    #[test]
    fn a_full_queue_refuses() {
        let s = session();
        for i in 0..MAX_QUEUED - 1 {
            assert!(s.enqueue(event(i)).is_ok());
        }
        assert!(s.enqueue(event(999)).is_err());
    }
}
