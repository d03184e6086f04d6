//! Soak: many clients for a long time, with churn, under a steady emit rate —
//! does every client end with every event, exactly once?
//!
//! Every client is a user of one branch. A controller emits numbered
//! `dashboard:refresh` events to the branch room at a steady rate. Now and
//! then (exponentially distributed, `--churn` drops per second across the
//! swarm) a client loses its connection the way a flaky network loses it — the
//! TCP connection just goes — waits a moment, and reconnects with the offset
//! of the last event it saw, as socket.io-client does with `auth` as a
//! function. The server replays what it missed. At the end each client's
//! received sequence numbers are checked against everything emitted.
//!
//! Not part of CI: run it by hand (`loadgen soak --help`).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::task::JoinSet;

use super::Common;
use crate::sio::{Client, Packet};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Clients (each a user of the soak branch).
    #[arg(long, default_value_t = 5_000)]
    pub sockets: usize,
    /// Events emitted per second to the branch.
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
    /// How long the controller emits, in seconds.
    #[arg(long, default_value_t = 600.0)]
    pub duration: f64,
    /// Connection drops per second across all clients.
    #[arg(long, default_value_t = 10.0)]
    pub churn: f64,
    /// Connections being set up at once.
    #[arg(long, default_value_t = 64)]
    pub connect_concurrency: usize,
    /// Seconds to wait after the last emit for replays to finish.
    #[arg(long, default_value_t = 15.0)]
    pub drain: f64,
}

/// What one client saw.
#[derive(Default)]
struct Seen {
    seqs: HashSet<u64>,
    duplicates: u64,
    reconnects: u64,
    replayed: u64,
    failed_connects: u64,
    /// `replay:reset` signals: the server could not replay from the offset.
    resets: u64,
    /// Per connection: (seq of the offset sent, first seq received, last seq received).
    history: Vec<(Option<u64>, Option<u64>, Option<u64>)>,
}

/// Swarm-wide progress counters, for the periodic line on stderr.
#[derive(Default)]
struct Progress {
    received: AtomicU64,
    reconnects: AtomicU64,
    connected: AtomicU64,
}

const BRANCH: &str = "soak";

pub async fn run(common: &Common, args: Args) -> anyhow::Result<Value> {
    let stop = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(Progress::default());
    let gate = Arc::new(tokio::sync::Semaphore::new(args.connect_concurrency));
    // Each client drops on average once every `sockets / churn` seconds.
    let mean_life = Duration::from_secs_f64(args.sockets as f64 / args.churn.max(1e-9));

    // Like an app that loads its state and then connects with the offset that
    // state is at (so nothing emitted in between is owed to nobody): every
    // client starts from the log position before the first emit.
    let start_offset = super::log_position(common).await?;

    let mut clients = JoinSet::new();
    for i in 0..args.sockets {
        let (ep, minter) = (common.endpoint(), common.minter());
        let (stop, progress, gate) = (stop.clone(), progress.clone(), gate.clone());
        let ttl = (args.duration + args.drain + 3600.0) as u64;
        let start_offset = start_offset.clone();
        clients.spawn(async move {
            let token = minter.token(&format!("soak-{i}"), Some(BRANCH), ttl);
            client_loop(ep, token, start_offset, mean_life, stop, progress, gate).await
        });
    }
    // Everyone is in before the first emit, so every event is owed to everyone.
    let setup_s = super::all_connected(&progress.connected, args.sockets).await?;
    eprintln!("soak: {} clients connected in {setup_s:.1}s", args.sockets);

    let reporter = {
        let (progress, stop) = (progress.clone(), stop.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            while !stop.load(Relaxed) {
                tokio::time::sleep(Duration::from_secs(30)).await;
                eprintln!(
                    "soak: {:>4.0}s  received {}  reconnects {}",
                    started.elapsed().as_secs_f64(),
                    progress.received.load(Relaxed),
                    progress.reconnects.load(Relaxed)
                );
            }
        })
    };

    let pool = Arc::new(common.pool(16));
    let outcome = super::refresh_to_branch(pool, BRANCH, args.rate, args.duration).await;
    tokio::time::sleep(Duration::from_secs_f64(args.drain)).await;
    stop.store(true, Relaxed);
    reporter.abort();

    let emitted = outcome.scheduled;
    let mut per_client = Vec::with_capacity(args.sockets);
    while let Some(seen) = clients.join_next().await {
        per_client.push(seen?);
    }
    let missing: Vec<u64> = per_client
        .iter()
        .map(|s| (0..emitted).filter(|q| !s.seqs.contains(q)).count() as u64)
        .collect();
    let complete = missing.iter().filter(|m| **m == 0).count();
    let sum = |f: fn(&Seen) -> u64| per_client.iter().map(f).sum::<u64>();
    Ok(json!({
        "clients": args.sockets,
        "rate": args.rate,
        "duration_s": args.duration,
        "churn_per_s": args.churn,
        "emits": outcome.summary(),
        "expected_per_client": emitted,
        "expected_total": emitted * args.sockets as u64,
        "delivered_total": sum(|s| s.seqs.len() as u64),
        "clients_complete": complete,
        "clients_missing_events": args.sockets - complete,
        "missing_total": missing.iter().sum::<u64>(),
        "missing_max_per_client": missing.iter().max().copied().unwrap_or(0),
        "duplicates_total": sum(|s| s.duplicates),
        "reconnects_total": sum(|s| s.reconnects),
        "replayed_total": sum(|s| s.replayed),
        "failed_connects_total": sum(|s| s.failed_connects),
        "replay_resets_total": sum(|s| s.resets),
        // What went wrong for the first clients that missed events: which
        // seqs, and each of their connections (offset sent, first and last seq seen).
        "incomplete_examples": per_client
            .iter()
            .enumerate()
            .filter(|(i, _)| missing[*i] > 0)
            .take(5)
            .map(|(i, s)| json!({
                "client": i,
                "missing": (0..emitted).filter(|q| !s.seqs.contains(q)).take(40).collect::<Vec<_>>(),
                "connections": s.history.iter().rev().take(30).rev().collect::<Vec<_>>(),
            }))
            .collect::<Vec<_>>(),
    }))
}

/// One client: connect, read, drop now and then, reconnect from its offset.
async fn client_loop(
    ep: crate::sio::Endpoint,
    token: String,
    start_offset: Option<String>,
    mean_life: Duration,
    stop: Arc<AtomicBool>,
    progress: Arc<Progress>,
    gate: Arc<tokio::sync::Semaphore>,
) -> Seen {
    let mut seen = Seen::default();
    let mut offset: Option<String> = start_offset;
    let mut offset_seq: Option<u64> = None;
    let mut first = true;
    while !stop.load(Relaxed) {
        let auth = match &offset {
            Some(o) => json!({ "token": token, "offset": o }),
            None => json!({ "token": token }),
        };
        let sent_offset_seq = offset_seq;
        let connected = {
            let _permit = gate.acquire().await;
            Client::connect(&ep, &auth).await
        };
        let mut client = match connected {
            Ok(c) => c,
            Err(_) => {
                seen.failed_connects += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        if first {
            progress.connected.fetch_add(1, Relaxed);
            first = false;
        } else {
            seen.reconnects += 1;
            progress.reconnects.fetch_add(1, Relaxed);
        }
        // Exponential lifetime: a memoryless network.
        let u: f64 = rand::random_range(f64::EPSILON..1.0);
        let life = mean_life.mul_f64(-u.ln());
        let dropped_at = tokio::time::Instant::now() + life;
        let (mut first_seq, mut last_seq) = (None, None);
        loop {
            tokio::select! {
                packet = client.next() => match packet {
                    Ok(Some(Packet::Event { args })) => {
                        if args.as_str().starts_with("[\"replay:reset\"") {
                            seen.resets += 1;
                        }
                        if let Some((seq, off, replayed)) = super::parse_refresh(args.as_str()) {
                            first_seq.get_or_insert(seq);
                            last_seq = Some(seq);
                            offset_seq = Some(seq);
                            if !seen.seqs.insert(seq) {
                                seen.duplicates += 1;
                            }
                            seen.replayed += u64::from(replayed);
                            offset = Some(off);
                            progress.received.fetch_add(1, Relaxed);
                        }
                    }
                    Ok(Some(Packet::Disconnect)) | Ok(None) | Err(_) => break,
                    Ok(Some(_)) => {}
                },
                _ = tokio::time::sleep_until(dropped_at) => break,
                // Look at the stop flag at least twice a second, even when nothing arrives.
                _ = tokio::time::sleep(Duration::from_millis(500)) => {
                    if stop.load(Relaxed) {
                        seen.history.push((sent_offset_seq, first_seq, last_seq));
                        drop(client);
                        return seen;
                    }
                }
            }
        }
        seen.history.push((sent_offset_seq, first_seq, last_seq));
        // The network went: no goodbye, the TCP connection just closes.
        drop(client);
        tokio::time::sleep(Duration::from_millis(rand::random_range(50..1000))).await;
    }
    seen
}
