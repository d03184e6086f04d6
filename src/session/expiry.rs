//! Token lifetime of live sockets: at `exp`, `auth:expired` and a disconnect.
//!
//! One task watches every socket's deadline (a sorted set, sleeping until the
//! earliest one), so a connection costs a map entry rather than a timer task.
//! `auth:refresh` with a valid later token for the same user moves the deadline.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use serde_json::json;
use socketioxide::socket::Sid;
use tokio::sync::Notify;

use crate::hub::Hub;

/// Every watched socket's deadline, by time and by socket.
#[derive(Default)]
struct Deadlines {
    by_time: BTreeSet<(u64, Sid)>,
    by_socket: HashMap<Sid, u64>,
}

/// What the handles share. The watcher holds it weakly, so that it ends (and
/// lets go of the hub) once every handle is gone: the last one wakes it.
struct Shared {
    deadlines: Mutex<Deadlines>,
    wake: Arc<Notify>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.wake.notify_one();
    }
}

/// Disconnects sockets whose token expired. Watching and forgetting change a
/// shared set in place (no queue that could grow); the watcher is woken when
/// the earliest deadline moves.
#[derive(Clone)]
pub struct Expiry {
    shared: Arc<Shared>,
}

impl Expiry {
    /// Starts the watcher; it stops when every handle is dropped.
    pub fn start(hub: Hub) -> Expiry {
        let wake = Arc::new(Notify::new());
        let shared = Arc::new(Shared {
            deadlines: Mutex::new(Deadlines::default()),
            wake: wake.clone(),
        });
        tokio::spawn(run(Arc::downgrade(&shared), wake, hub));
        Expiry { shared }
    }

    /// Watches `sid` until `exp` (seconds since the epoch), replacing any earlier deadline.
    pub fn watch(&self, sid: Sid, exp: u64) {
        let mut d = self.shared.deadlines.lock();
        if let Some(old) = d.by_socket.insert(sid, exp) {
            d.by_time.remove(&(old, sid));
        }
        d.by_time.insert((exp, sid));
        let earliest = d.by_time.first() == Some(&(exp, sid));
        drop(d);
        if earliest {
            self.shared.wake.notify_one();
        }
    }

    /// Stops watching `sid` (it disconnected).
    pub fn forget(&self, sid: Sid) {
        let mut d = self.shared.deadlines.lock();
        if let Some(old) = d.by_socket.remove(&sid) {
            d.by_time.remove(&(old, sid));
        }
        crate::memory::give_back_room(&mut d.by_socket);
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

async fn run(shared: std::sync::Weak<Shared>, wake: Arc<Notify>, hub: Hub) {
    loop {
        // Sleep until the earliest deadline (a token valid until `exp` is valid
        // during that second, so it ends when the clock passes it).
        let wait = {
            let Some(state) = shared.upgrade() else {
                return;
            };
            let d = state.deadlines.lock();
            d.by_time
                .first()
                .map(|(exp, _)| Duration::from_secs(exp.saturating_sub(now_secs()) + 1))
                .unwrap_or(Duration::from_secs(3600))
        };
        tokio::select! {
            _ = wake.notified() => continue,
            _ = tokio::time::sleep(wait) => {}
        }
        let Some(state) = shared.upgrade() else {
            return;
        };
        let now = now_secs();
        let mut due = Vec::new();
        {
            let mut d = state.deadlines.lock();
            while let Some(&(exp, sid)) = d.by_time.first() {
                if exp >= now {
                    break;
                }
                d.by_time.pop_first();
                d.by_socket.remove(&sid);
                due.push((exp, sid));
            }
            crate::memory::give_back_room(&mut d.by_socket);
        }
        drop(state);
        for (exp, sid) in due {
            tracing::debug!(%sid, "token expired; disconnecting");
            hub.send_to(
                sid,
                "auth:expired",
                &json!({ "exp": exp, "message": "unauthorized: token expired" }),
            );
            hub.disconnect_socket(sid);
        }
    }
}
