//! Many long-lived Socket.IO connections, one small task each.
//!
//! Used by the fan-out scenario (every socket joins a room and records what it
//! receives) and the idle scenario (connect, authenticate, then nothing).
//! Connecting is bounded to a few dozen at a time, like real clients coming
//! back over a few seconds, so the setup measures no handshake storm.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;

use crate::sio::{Client, Endpoint, Packet};
use crate::token::Minter;

/// How the swarm's sockets are made.
pub struct Plan {
    pub endpoint: Endpoint,
    pub minter: Minter,
    pub sockets: usize,
    /// Connections being set up at once.
    pub concurrency: usize,
    /// After connecting, join `shipment:{id}` (with ack) when set.
    pub join_shipment: Option<String>,
    /// Called with the JSON array of every event a socket receives.
    pub on_event: Arc<dyn Fn(&str) + Send + Sync>,
}

/// The connected sockets, until [`Swarm::shutdown`].
pub struct Swarm {
    pub connected: usize,
    pub failed: usize,
    /// The first few set-up errors, for the report.
    pub errors: Vec<String>,
    pub setup_time: Duration,
    /// Sockets that lost their connection after set-up.
    lost: Arc<AtomicU64>,
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

const SETUP_TIMEOUT: Duration = Duration::from_secs(30);

impl Swarm {
    /// Connects every socket (or gives up on it); returns when all are settled.
    pub async fn connect(plan: Plan) -> Swarm {
        let start = Instant::now();
        let (stop, stop_rx) = watch::channel(false);
        let (ready_tx, mut ready_rx) = mpsc::unbounded_channel::<Result<(), String>>();
        let gate = Arc::new(Semaphore::new(plan.concurrency.max(1)));
        let lost = Arc::new(AtomicU64::new(0));
        let plan = Arc::new(plan);
        let mut tasks = JoinSet::new();
        for i in 0..plan.sockets {
            let (plan, gate, ready, stop, lost) = (
                plan.clone(),
                gate.clone(),
                ready_tx.clone(),
                stop_rx.clone(),
                lost.clone(),
            );
            tasks.spawn(async move {
                let permit = gate.acquire_owned().await.expect("never closed");
                let client = match tokio::time::timeout(SETUP_TIMEOUT, set_up(&plan, i)).await {
                    Ok(Ok(c)) => c,
                    Ok(Err(e)) => return drop(ready.send(Err(e))),
                    Err(_) => return drop(ready.send(Err("set-up timed out".into()))),
                };
                drop(permit);
                let _ = ready.send(Ok(()));
                hold(client, &*plan.on_event, stop, &lost).await;
            });
        }
        drop(ready_tx);
        let (mut connected, mut failed, mut errors) = (0, 0, Vec::new());
        while let Some(r) = ready_rx.recv().await {
            match r {
                Ok(()) => connected += 1,
                Err(e) => {
                    failed += 1;
                    if errors.len() < 5 {
                        errors.push(e);
                    }
                }
            }
            if connected + failed == plan.sockets {
                break;
            }
        }
        Swarm {
            connected,
            failed,
            errors,
            setup_time: start.elapsed(),
            lost,
            stop,
            tasks,
        }
    }

    /// Sockets whose connection dropped since set-up.
    pub fn lost(&self) -> u64 {
        self.lost.load(Relaxed)
    }

    /// Set-up figures for the JSON results.
    pub fn summary(&self) -> Value {
        json!({
            "connected": self.connected,
            "failed": self.failed,
            "errors": self.errors,
            "setup_s": self.setup_time.as_secs_f64(),
            "lost_after_setup": self.lost(),
        })
    }

    /// Closes every socket and waits for the tasks to end.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(30), async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        self.tasks.abort_all();
    }
}

async fn set_up(plan: &Plan, i: usize) -> Result<Client, String> {
    let token = plan.minter.token(&format!("bench-{i}"), None, 6 * 3600);
    let mut client = Client::connect(&plan.endpoint, &json!({ "token": token }))
        .await
        .map_err(|e| e.to_string())?;
    if let Some(id) = &plan.join_shipment {
        let on_event = &*plan.on_event;
        let ack = client
            .call("join:shipment", &json!({ "shipmentId": id }), on_event)
            .await
            .map_err(|e| format!("{e:#}"))?;
        if ack[0]["ok"] != Value::Bool(true) {
            return Err(format!("join:shipment refused: {ack}"));
        }
    }
    Ok(client)
}

/// Reads until told to stop, handing events to `on_event`.
async fn hold(
    mut client: Client,
    on_event: &(dyn Fn(&str) + Send + Sync),
    mut stop: watch::Receiver<bool>,
    lost: &AtomicU64,
) {
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            packet = client.next() => match packet {
                Ok(Some(Packet::Event { args, .. })) => on_event(args.as_str()),
                Ok(Some(Packet::Disconnect)) | Ok(None) | Err(_) => {
                    lost.fetch_add(1, Relaxed);
                    return;
                }
                Ok(Some(_)) => {}
            },
        }
    }
    client.close().await;
}
