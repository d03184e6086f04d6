//! Token lifetime of live sockets: at `exp`, `auth:expired` and a disconnect.
//!
//! One task watches every socket's deadline (a sorted set, sleeping until the
//! earliest one), so a connection costs a map entry rather than a timer task.
//! `auth:refresh` with a valid later token for the same user moves the deadline.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;
use socketioxide::socket::Sid;
use tokio::sync::mpsc;

use crate::hub::Hub;

enum Command {
    Watch(Sid, u64),
    Forget(Sid),
}

/// Disconnects sockets whose token expired.
#[derive(Clone)]
pub struct Expiry {
    tx: mpsc::UnboundedSender<Command>,
}

impl Expiry {
    /// Starts the watcher; it stops when every handle is dropped.
    pub fn start(hub: Hub) -> Expiry {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(rx, hub));
        Expiry { tx }
    }

    /// Watches `sid` until `exp` (seconds since the epoch), replacing any earlier deadline.
    pub fn watch(&self, sid: Sid, exp: u64) {
        let _ = self.tx.send(Command::Watch(sid, exp));
    }

    /// Stops watching `sid` (it disconnected).
    pub fn forget(&self, sid: Sid) {
        let _ = self.tx.send(Command::Forget(sid));
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

async fn run(mut rx: mpsc::UnboundedReceiver<Command>, hub: Hub) {
    let mut deadlines: BTreeSet<(u64, Sid)> = BTreeSet::new();
    let mut by_socket: HashMap<Sid, u64> = HashMap::new();
    loop {
        // Sleep until the earliest deadline (a token valid until `exp` is valid
        // during that second, so it ends when the clock passes it).
        let wait = deadlines
            .first()
            .map(|(exp, _)| Duration::from_secs(exp.saturating_sub(now_secs()) + 1))
            .unwrap_or(Duration::from_secs(3600));
        tokio::select! {
            command = rx.recv() => match command {
                None => return,
                Some(Command::Watch(sid, exp)) => {
                    if let Some(old) = by_socket.insert(sid, exp) {
                        deadlines.remove(&(old, sid));
                    }
                    deadlines.insert((exp, sid));
                }
                Some(Command::Forget(sid)) => {
                    if let Some(old) = by_socket.remove(&sid) {
                        deadlines.remove(&(old, sid));
                    }
                }
            },
            _ = tokio::time::sleep(wait) => {
                let now = now_secs();
                while let Some(&(exp, sid)) = deadlines.first() {
                    if exp >= now {
                        break;
                    }
                    deadlines.pop_first();
                    by_socket.remove(&sid);
                    tracing::debug!(%sid, "token expired; disconnecting");
                    hub.send_to(sid, "auth:expired", &json!({ "exp": exp, "message": "unauthorized: token expired" }));
                    hub.disconnect_socket(sid);
                }
            }
        }
    }
}
