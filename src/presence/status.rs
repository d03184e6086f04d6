//! Telling a branch its users' statuses, without flicker.
//!
//! A status (`online` on a user's first connection, `offline` after their
//! last, or one they set) is held for [`HOLD`] before the branch hears it, and
//! a later change of the same user within that time replaces it. So a socket
//! that drops and comes straight back (its `offline`, then `online` a few
//! milliseconds later) reaches the branch as `online` alone, and a user who
//! connected and left within the hold is not announced at all. A user whose status keeps changing
//! is still told at least every [`HOLD_AT_MOST`].
//!
//! This is the same rule the viewers' announcements follow (`announce`), for
//! the same reason: a burst of connects otherwise costs every socket in the
//! branch two frames per connection.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::Serialize;
use tokio::time::Instant;

use crate::auth::Claims;
use crate::hub::Hub;

/// How long a status is held, waiting for a change that supersedes it: the
/// window viewers' events are gathered in.
pub const HOLD: Duration = super::announce::COALESCE_WINDOW;
/// The longest a user's status waits however often it changes.
pub const HOLD_AT_MOST: Duration = Duration::from_secs(1);

/// The `presence` payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub user_id: String,
    pub name: String,
    pub status: String,
    /// When the status changed (not when it was told).
    pub timestamp: String,
}

/// What tells a branch room (`branch:{id}`) a status.
type Tell = dyn Fn(&str, &Status) + Send + Sync;

/// Holds statuses and tells them to branch rooms.
#[derive(Clone)]
pub struct Statuses {
    inner: Arc<Inner>,
}

struct Inner {
    tell: Box<Tell>,
    held: Mutex<Held>,
}

/// One user's status, waiting. The payload is built only if it is told:
/// most statuses of a connect burst never are.
struct Waiting {
    name: String,
    status: String,
    /// When it changed, for the payload's `timestamp`.
    at: chrono::DateTime<chrono::Utc>,
    /// What the branch had before the first held change, when known: a
    /// user's first connection follows `offline`.
    was: Option<&'static str>,
    since: Instant,
    changed: Instant,
}

impl Waiting {
    fn due(&self) -> Instant {
        (self.changed + HOLD).min(self.since + HOLD_AT_MOST)
    }
}

/// Statuses waiting, by (branch id, user id).
#[derive(Default)]
struct Held {
    waiting: HashMap<(String, String), Waiting>,
    /// Whether a task is waiting to tell them (one at a time).
    ticking: bool,
}

impl Held {
    /// Records a change: it replaces what the user had waiting, if anything,
    /// keeping when that began and what the branch had before it.
    fn record(&mut self, key: (String, String), change: Waiting) {
        match self.waiting.entry(key) {
            Entry::Occupied(mut held) => {
                let held = held.get_mut();
                *held = Waiting {
                    was: held.was,
                    since: held.since,
                    ..change
                };
            }
            Entry::Vacant(slot) => {
                slot.insert(change);
            }
        }
    }

    /// Takes the statuses due at `now` that change what their branch knows,
    /// as `(branch room, payload)`, and returns when the next one falls due.
    fn take_due(&mut self, now: Instant) -> (Vec<(String, Status)>, Option<Instant>) {
        let due = self
            .waiting
            .extract_if(|_, held| held.due() <= now)
            // Came and went (or the reverse) within the hold: nothing to say.
            .filter(|(_, held)| held.was != Some(held.status.as_str()))
            .map(|((branch, user), held)| {
                let timestamp = crate::events::iso8601(held.at);
                let status = Status {
                    user_id: user,
                    name: held.name,
                    status: held.status,
                    timestamp,
                };
                (crate::rooms::branch_room(&branch), status)
            })
            .collect();
        let next = self.waiting.values().map(Waiting::due).min();
        crate::memory::give_back_room(&mut self.waiting);
        (due, next)
    }
}

impl Statuses {
    /// Statuses told through `tell(branch room, status)`.
    pub fn new(tell: impl Fn(&str, &Status) + Send + Sync + 'static) -> Statuses {
        Statuses {
            inner: Arc::new(Inner {
                tell: Box::new(tell),
                held: Mutex::new(Held::default()),
            }),
        }
    }

    /// Statuses signalled by `hub` as `presence` events.
    pub fn on_hub(hub: Hub) -> Statuses {
        Statuses::new(move |room, status| {
            hub.signal(&[room.to_string()], &[], "presence", status);
        })
    }

    /// The user's first connection: `online`, after `offline`.
    pub fn connected(&self, claims: &Claims) {
        self.of_claims(claims, "online", Some("offline"));
    }

    /// The user's status is now `status` (what it was before is not known).
    pub fn changed(&self, claims: &Claims, status: &str) {
        self.of_claims(claims, status, None);
    }

    /// A user of `branch` is gone with a node that died: `offline`, told by
    /// the node that noticed.
    pub fn lapsed(&self, branch: &str, user: &str, name: &str) {
        self.record(branch, user, name, "offline", None);
    }

    fn of_claims(&self, claims: &Claims, status: &str, was: Option<&'static str>) {
        if let Some(branch) = &claims.branch_id {
            self.record(branch, &claims.sub, claims.display_name(), status, was);
        } // no branch, no room to tell
    }

    fn record(
        &self,
        branch: &str,
        user: &str,
        name: &str,
        status: &str,
        was: Option<&'static str>,
    ) {
        let now = Instant::now();
        let change = Waiting {
            name: name.to_string(),
            status: status.to_string(),
            at: chrono::Utc::now(),
            was,
            since: now,
            changed: now,
        };
        let mut held = self.inner.held.lock();
        held.record((branch.to_string(), user.to_string()), change);
        if !std::mem::replace(&mut held.ticking, true) {
            let this = self.clone();
            tokio::spawn(async move { this.tick().await });
        }
    }

    /// Tells what falls due, until nothing waits.
    async fn tick(self) {
        loop {
            let next = {
                let mut held = self.inner.held.lock();
                let (due, next) = held.take_due(Instant::now());
                // Told under the lock, so that a change recorded meanwhile is
                // told after these.
                for (room, status) in &due {
                    (self.inner.tell)(room, status);
                }
                if next.is_none() {
                    held.ticking = false;
                }
                next
            };
            match next {
                Some(at) => tokio::time::sleep_until(at).await,
                None => return,
            }
        }
    }

    /// Tells every waiting status now (shutdown: the node's departures must
    /// reach the other nodes' sockets before it goes).
    pub fn flush(&self) {
        let mut held = self.inner.held.lock();
        let far = Instant::now() + HOLD_AT_MOST;
        let (due, _) = held.take_due(far);
        for (room, status) in &due {
            (self.inner.tell)(room, status);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a board told, in order: `(room, payload)`.
    type Log = Arc<Mutex<Vec<(String, Status)>>>;
    /// The part most tests look at: `(room, user, status)`.
    type Told = (String, String, String);

    fn recording() -> (Statuses, Log) {
        let told = Log::default();
        let sink = told.clone();
        let board = Statuses::new(move |room, s| sink.lock().push((room.to_string(), s.clone())));
        (board, told)
    }

    fn user(sub: &str, branch: Option<&str>) -> Claims {
        Claims {
            sub: sub.into(),
            name: Some(format!("{sub}'s name")),
            exp: 0,
            branch_id: branch.map(Into::into),
            role: None,
            rooms: None,
        }
    }

    fn told(log: &Log) -> Vec<Told> {
        std::mem::take(&mut *log.lock())
            .into_iter()
            .map(|(room, s)| (room, s.user_id, s.status))
            .collect()
    }

    fn entry(room: &str, user: &str, status: &str) -> Told {
        (room.into(), user.into(), status.into())
    }

    async fn wait(d: Duration) {
        tokio::time::sleep(d).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_status_is_told_to_the_branch_once_the_hold_is_over() {
        let (board, log) = recording();
        board.connected(&user("ann", Some("b1")));
        wait(HOLD - Duration::from_millis(1)).await;
        assert!(told(&log).is_empty(), "held for {HOLD:?}");
        wait(Duration::from_millis(2)).await;
        assert_eq!(told(&log), [entry("branch:b1", "ann", "online")]);
        board.changed(&user("ann", Some("b1")), "offline");
        wait(HOLD * 2).await;
        assert_eq!(told(&log), [entry("branch:b1", "ann", "offline")]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_user_who_came_and_went_within_the_hold_is_not_told() {
        let (board, log) = recording();
        board.connected(&user("ann", Some("b1")));
        wait(Duration::from_millis(10)).await;
        board.changed(&user("ann", Some("b1")), "offline");
        wait(HOLD_AT_MOST * 2).await;
        assert!(told(&log).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_quick_reconnect_is_told_as_online_alone() {
        let (board, log) = recording();
        let ann = user("ann", Some("b1"));
        board.changed(&ann, "offline");
        wait(Duration::from_millis(5)).await;
        board.connected(&ann);
        wait(HOLD * 2).await;
        assert_eq!(told(&log), [entry("branch:b1", "ann", "online")]);
    }

    #[tokio::test(start_paused = true)]
    async fn the_latest_of_several_changes_is_told_with_its_own_time_and_name() {
        let (board, log) = recording();
        let ann = user("ann", Some("b1"));
        board.changed(&ann, "away");
        wait(Duration::from_millis(20)).await;
        let before = crate::events::now_iso8601();
        board.changed(&ann, "busy");
        let after = crate::events::now_iso8601();
        wait(HOLD * 2).await;
        let told = log.lock();
        assert_eq!(told.len(), 1);
        let (_, s) = &told[0];
        assert_eq!((s.status.as_str(), s.name.as_str()), ("busy", "ann's name"));
        // Paused time moves tokio's clock only: the wall-clock stamp is the
        // change's, taken when `busy` was recorded.
        assert!(
            before <= s.timestamp && s.timestamp <= after,
            "{before} {} {after}",
            s.timestamp
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_user_of_a_dead_node_is_told_offline() {
        let (board, log) = recording();
        board.lapsed("b1", "ann", "Ann");
        wait(HOLD * 2).await;
        assert_eq!(told(&log), [entry("branch:b1", "ann", "offline")]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_status_that_keeps_changing_is_still_told_within_the_longest_hold() {
        let (board, log) = recording();
        let ann = user("ann", Some("b1"));
        let start = Instant::now();
        let mut statuses = ["away", "busy"].into_iter().cycle();
        while start.elapsed() < HOLD_AT_MOST + HOLD {
            board.changed(&ann, statuses.next().unwrap());
            wait(HOLD / 5).await;
        }
        let told = told(&log);
        assert!(!told.is_empty(), "told nothing in {:?}", start.elapsed());
        assert!(told.len() <= 2, "told {} times", told.len());
    }

    #[tokio::test(start_paused = true)]
    async fn users_and_branches_are_held_apart() {
        let (board, log) = recording();
        board.connected(&user("ann", Some("b1")));
        board.connected(&user("bob", Some("b2")));
        board.connected(&user("cy", None)); // no branch: nobody to tell
        wait(Duration::from_millis(10)).await;
        board.changed(&user("bob", Some("b2")), "offline");
        wait(HOLD * 2).await;
        assert_eq!(told(&log), [entry("branch:b1", "ann", "online")]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_change_after_the_hold_is_told_after_the_one_before() {
        let (board, log) = recording();
        let ann = user("ann", Some("b1"));
        for status in ["away", "busy", "online"] {
            board.changed(&ann, status);
            wait(HOLD + Duration::from_millis(1)).await;
        }
        let statuses: Vec<String> = told(&log).into_iter().map(|(_, _, s)| s).collect();
        assert_eq!(statuses, ["away", "busy", "online"]);
    }

    #[tokio::test(start_paused = true)]
    async fn flush_tells_what_waits_at_once() {
        let (board, log) = recording();
        board.changed(&user("ann", Some("b1")), "offline");
        board.connected(&user("bob", Some("b1")));
        board.changed(&user("bob", Some("b1")), "offline"); // came and went
        board.flush();
        assert_eq!(told(&log), [entry("branch:b1", "ann", "offline")]);
        wait(HOLD * 2).await;
        assert!(told(&log).is_empty(), "told once");
    }
}
