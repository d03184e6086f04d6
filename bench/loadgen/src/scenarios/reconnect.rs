//! Reconnect storm: every client loses its connection at the same moment (a
//! load balancer restarts, a site's Wi-Fi drops) and comes back with its
//! offset, while the controller keeps emitting.
//!
//! Every client is a user of one branch; the controller emits numbered
//! `dashboard:refresh` events to the branch at a steady rate. After a warm-up
//! every TCP connection goes at once, without a goodbye. Each client waits as
//! socket.io-client's default reconnection does (1 s ± 50 %, doubling up to
//! 5 s after a failed attempt) and reconnects with `auth.offset` set to the
//! last event it saw. A client has *caught up* when it holds every event that
//! was due before its reconnect was answered, with no gap: the replay of what
//! it missed has arrived. The figure is the time from the drop until the last
//! client has caught up. At the end every client's sequence numbers are
//! checked against everything emitted: nothing missing, nothing twice.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use super::Common;
use crate::emitter;
use crate::histogram::Histogram;
use crate::sio::{Client, Endpoint, Packet};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Clients (each a user of the storm's branch).
    #[arg(long, default_value_t = 5_000)]
    pub sockets: usize,
    /// Events emitted per second to the branch, before, during and after the drop.
    #[arg(long, default_value_t = 20.0)]
    pub rate: f64,
    /// Seconds of emits before every connection drops.
    #[arg(long, default_value_t = 5.0)]
    pub warmup: f64,
    /// Seconds the controller emits in all (the drop comes after `--warmup`).
    #[arg(long, default_value_t = 20.0)]
    pub duration: f64,
    /// Connections being set up at once before the drop (the storm itself is
    /// not throttled: every client comes back on its own timer).
    #[arg(long, default_value_t = 64)]
    pub connect_concurrency: usize,
    /// Seconds to wait after the last emit for the last replays.
    #[arg(long, default_value_t = 10.0)]
    pub drain: f64,
}

/// What one client saw.
#[derive(Default)]
struct Seen {
    seqs: HashSet<u64>,
    duplicates: u64,
    replayed: u64,
    resets: u64,
    failed_reconnects: u64,
    /// Drop → reconnect answered.
    reconnected_after: Option<Duration>,
    /// Drop → every event due before the reconnect was answered is here.
    caught_up_after: Option<Duration>,
}

/// Shared between the clients and the scenario.
struct Shared {
    endpoint: Endpoint,
    gate: Semaphore,
    /// Set when every client drops its connection.
    dropped: watch::Receiver<Option<Outage>>,
    /// Flips to true when the run is over.
    stop: watch::Receiver<bool>,
    connected: AtomicU64,
}

/// The moment every connection went, and the emit schedule around it.
#[derive(Clone, Copy)]
struct Outage {
    at: Instant,
    /// Emit `i` is due at `t0 + i / rate`.
    t0: Instant,
    rate: f64,
}

impl Outage {
    /// How many emits were due before `t`.
    fn due_before(&self, t: Instant) -> u64 {
        (t.saturating_duration_since(self.t0).as_secs_f64() * self.rate).ceil() as u64
    }
}

const BRANCH: &str = "reconnect-storm";

pub async fn run(common: &Common, args: Args) -> anyhow::Result<Value> {
    anyhow::ensure!(!common.plain, "the reconnect storm speaks Socket.IO only");
    anyhow::ensure!(
        args.warmup < args.duration,
        "--warmup must be shorter than --duration"
    );
    // Like an app that loads its state and then connects with the offset that
    // state is at: every client starts from the log position before emit 0.
    let start_offset = super::log_position(common).await?;

    let (drop_tx, dropped) = watch::channel(None);
    let (stop_tx, stop) = watch::channel(false);
    let shared = Arc::new(Shared {
        endpoint: common.endpoint(),
        gate: Semaphore::new(args.connect_concurrency.max(1)),
        dropped,
        stop,
        connected: AtomicU64::new(0),
    });
    let ttl = (args.duration + args.drain + 3600.0) as u64;
    let mut clients = JoinSet::new();
    for i in 0..args.sockets {
        let token = common
            .minter()
            .token(&format!("storm-{i}"), Some(BRANCH), ttl);
        let (shared, offset) = (shared.clone(), start_offset.clone());
        clients.spawn(client(shared, token, offset));
    }
    let setup_s = super::all_connected(&shared.connected, args.sockets).await?;
    eprintln!(
        "reconnect-storm: {} clients connected in {setup_s:.1}s",
        args.sockets
    );

    let pool = Arc::new(common.pool(16));
    let t0 = Instant::now();
    let dropper = {
        let (at, rate) = (t0 + Duration::from_secs_f64(args.warmup), args.rate);
        tokio::spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            let _ = drop_tx.send(Some(Outage {
                at: Instant::now(),
                t0,
                rate,
            }));
            drop_tx
        })
    };
    let outcome = super::refresh_to_branch(pool, BRANCH, args.rate, args.duration).await;
    let _drop_tx = dropper.await?;
    tokio::time::sleep(Duration::from_secs_f64(args.drain)).await;
    let _ = stop_tx.send(true);

    let mut seen = Vec::with_capacity(args.sockets);
    while let Some(s) = clients.join_next().await {
        seen.push(s?);
    }
    Ok(summary(&args, setup_s, &outcome, &seen))
}

fn summary(args: &Args, setup_s: f64, outcome: &emitter::Outcome, seen: &[Seen]) -> Value {
    let emitted = outcome.scheduled;
    let missing: Vec<u64> = seen
        .iter()
        .map(|s| (0..emitted).filter(|q| !s.seqs.contains(q)).count() as u64)
        .collect();
    let complete = missing.iter().filter(|m| **m == 0).count();
    let sum = |f: fn(&Seen) -> u64| seen.iter().map(f).sum::<u64>();
    let histogram = |f: fn(&Seen) -> Option<Duration>| {
        let h = Histogram::default();
        seen.iter().filter_map(f).for_each(|d| h.record(d));
        h
    };
    let reconnected = histogram(|s| s.reconnected_after);
    let caught_up = histogram(|s| s.caught_up_after);
    let last_ms = |f: fn(&Seen) -> Option<Duration>| {
        let all = seen.iter().map(f).collect::<Option<Vec<_>>>();
        all.and_then(|v| v.into_iter().max())
            .map(|d| d.as_secs_f64() * 1000.0)
    };
    json!({
        "clients": args.sockets,
        "rate": args.rate,
        "setup_s": setup_s,
        "emits": outcome.summary(),
        "expected_per_client": emitted,
        "clients_complete": complete,
        "missing_total": missing.iter().sum::<u64>(),
        "duplicates_total": sum(|s| s.duplicates),
        "replayed_total": sum(|s| s.replayed),
        "replay_resets_total": sum(|s| s.resets),
        "failed_reconnects_total": sum(|s| s.failed_reconnects),
        "reconnected": reconnected.count(),
        "caught_up": caught_up.count(),
        // Null unless every client got there.
        "all_reconnected_ms": last_ms(|s| s.reconnected_after),
        "all_caught_up_ms": last_ms(|s| s.caught_up_after),
        "reconnect_latency": reconnected.summary(),
        "catch_up_latency": caught_up.summary(),
        "ok": complete == seen.len()
            && sum(|s| s.duplicates) == 0
            && caught_up.count() == seen.len() as u64,
    })
}

/// One client: connect, read until the drop, come back with its offset, read
/// until the end.
async fn client(shared: Arc<Shared>, token: String, offset: Option<String>) -> Seen {
    let mut seen = Seen::default();
    let mut offset = offset;
    // Until it is in: the set-up loop gives up (and says so) after a while.
    let mut conn = loop {
        let _permit = shared.gate.acquire().await;
        if let Some(c) = connect(&shared.endpoint, &token, &offset).await {
            break c;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    shared.connected.fetch_add(1, Relaxed);
    let mut dropped = shared.dropped.clone();
    loop {
        tokio::select! {
            packet = conn.next() => match packet {
                Ok(Some(Packet::Event { args })) => receive(&mut seen, &mut offset, args.as_str()),
                Ok(Some(_)) => {}
                // Lost before the drop: the storm is about everyone at once, so
                // this client just stops counting (its missing events show).
                Ok(None) | Err(_) => return seen,
            },
            _ = dropped.wait_for(Option::is_some) => break,
        }
    }
    // The network goes: no goodbye, the TCP connection just closes.
    drop(conn);
    let outage = shared.dropped.borrow().expect("the drop has happened");
    let drop_at = outage.at;
    let mut delay = Duration::from_millis(1000);
    let mut conn = loop {
        // socket.io-client: reconnectionDelay 1000, randomizationFactor 0.5, max 5000.
        tokio::time::sleep(delay.mul_f64(rand::random_range(0.5..1.5))).await;
        if let Some(c) = connect(&shared.endpoint, &token, &offset).await {
            break c;
        }
        seen.failed_reconnects += 1;
        delay = (delay * 2).min(Duration::from_secs(5));
        if *shared.stop.borrow() {
            return seen;
        }
    };
    let answered = Instant::now();
    seen.reconnected_after = Some(answered - drop_at);
    let owed = outage.due_before(answered);
    let mut stop = shared.stop.clone();
    let mut next_missing = 0u64;
    loop {
        while seen.seqs.contains(&next_missing) {
            next_missing += 1;
        }
        if seen.caught_up_after.is_none() && next_missing >= owed {
            seen.caught_up_after = Some(drop_at.elapsed());
        }
        tokio::select! {
            packet = conn.next() => match packet {
                Ok(Some(Packet::Event { args })) => receive(&mut seen, &mut offset, args.as_str()),
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return seen,
            },
            _ = stop.wait_for(|s| *s) => return seen,
        }
    }
}

async fn connect(ep: &Endpoint, token: &str, offset: &Option<String>) -> Option<Client> {
    let auth = match offset {
        Some(o) => json!({ "token": token, "offset": o }),
        None => json!({ "token": token }),
    };
    Client::connect(ep, &auth).await.ok()
}

fn receive(seen: &mut Seen, offset: &mut Option<String>, args: &str) {
    if args.starts_with("[\"replay:reset\"") {
        seen.resets += 1;
    }
    let Some((seq, off, replayed)) = super::parse_refresh(args) else {
        return;
    };
    if !seen.seqs.insert(seq) {
        seen.duplicates += 1;
    }
    seen.replayed += u64::from(replayed);
    *offset = Some(off);
}
