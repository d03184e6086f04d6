//! Fan-out: N sockets in one room, a controller emitting to it at a fixed rate.
//!
//! Every socket joins `shipment:{id}`; the controller posts `shipment:updated
//! {shipmentId, trial, seq, sentAt}` at R per second for T seconds. Each
//! delivery is counted per `seq` (so loss is visible per emit, not only in
//! total) and its publish→receive latency recorded. `search` repeats such
//! trials on the same sockets to find the highest rate the server holds.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::{Value, json};

use super::Common;
use crate::clock;
use crate::emitter;
use crate::histogram::Histogram;
use crate::http::Pool;
use crate::swarm::{Plan, Swarm};

/// Settings shared by a fixed run and a search.
#[derive(clap::Args, Debug, Clone)]
pub struct Setup {
    /// Sockets in the room.
    #[arg(long, default_value_t = 1000)]
    pub sockets: usize,
    /// The shipment whose room they join.
    #[arg(long, default_value = "BENCH")]
    pub shipment: String,
    /// Connections being set up at once.
    #[arg(long, default_value_t = 64)]
    pub connect_concurrency: usize,
    /// Keep-alive HTTP connections the controller may use.
    #[arg(long, default_value_t = 32)]
    pub http_connections: usize,
    /// Seconds to wait after the last emit for deliveries still in flight.
    #[arg(long, default_value_t = 3.0)]
    pub drain: f64,
    /// Seconds of quiet between trials.
    #[arg(long, default_value_t = 1.0)]
    pub settle: f64,
    /// Emit through this server instead (loopback only): another node of the
    /// same cluster, to measure cross-node delivery.
    #[arg(long)]
    pub emit_server: Option<std::net::SocketAddr>,
    /// The server's pid: each trial then reports the server's CPU time while
    /// it ran (the emits and the drain), per delivery and per emit.
    #[arg(long)]
    pub server_pid: Option<u32>,
}

/// `fanout`: one rate, one duration.
#[derive(clap::Args, Debug)]
pub struct Fixed {
    #[command(flatten)]
    pub setup: Setup,
    /// Emits per second.
    #[arg(long, default_value_t = 50.0)]
    pub rate: f64,
    /// Seconds of emitting that count.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds of emitting at the same rate before, not counted.
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
}

/// `fanout-search`: the highest rate with no loss and p99 under each bound.
#[derive(clap::Args, Debug)]
pub struct Search {
    #[command(flatten)]
    pub setup: Setup,
    /// Seconds per trial.
    #[arg(long, default_value_t = 5.0)]
    pub trial: f64,
    /// First rate tried; doubled until a trial fails.
    #[arg(long, default_value_t = 50.0)]
    pub start_rate: f64,
    /// Never offered above this (emits/s).
    #[arg(long, default_value_t = 20000.0)]
    pub max_rate: f64,
    /// Never searched below this (emits/s).
    #[arg(long, default_value_t = 1.0)]
    pub min_rate: f64,
    /// Stop bisecting when the bracket is this tight (0.1 = within 10 %).
    #[arg(long, default_value_t = 0.1)]
    pub tolerance: f64,
    /// Most trials in all, which bounds the total time.
    #[arg(long, default_value_t = 14)]
    pub max_trials: usize,
    /// Seconds at the start rate before the first trial, not counted (JITs,
    /// lazily grown buffers and caches warm up here, not in a trial).
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
}

/// p99 bounds the search reports a rate for.
const BOUNDS_MS: [f64; 2] = [50.0, 100.0];

/// The counters of one trial.
struct Trial {
    id: u32,
    sockets: u32,
    per_seq: Box<[AtomicU32]>,
    latency: Histogram,
}

/// What every socket's event handler records into.
#[derive(Default)]
struct Recorder {
    current: RwLock<Option<Arc<Trial>>>,
    /// Deliveries of no current trial (late, or from an earlier one).
    stray: AtomicU64,
}

/// The fields the benchmark puts in its events; the rest is ignored.
#[derive(Deserialize)]
struct Stamp {
    trial: u32,
    seq: u64,
    #[serde(rename = "sentAt")]
    sent_at: u64,
}

impl Recorder {
    fn on_event(&self, args: &str) {
        // Presence and other events share the socket; skip them unparsed.
        if !args.starts_with("[\"shipment:updated\"") {
            return;
        }
        let now = clock::now_ns();
        let Ok((_, stamp)) = serde_json::from_str::<(IgnoredAny, Stamp)>(args) else {
            self.stray.fetch_add(1, Relaxed);
            return;
        };
        let current = self.current.read().expect("recorder lock");
        match current.as_deref() {
            Some(t) if t.id == stamp.trial && (stamp.seq as usize) < t.per_seq.len() => {
                t.per_seq[stamp.seq as usize].fetch_add(1, Relaxed);
                t.latency
                    .record_us(now.saturating_sub(stamp.sent_at) / 1000);
            }
            _ => {
                self.stray.fetch_add(1, Relaxed);
            }
        }
    }
}

/// The sockets and the controller, set up once for any number of trials.
struct Bench {
    swarm: Swarm,
    recorder: Arc<Recorder>,
    pool: Arc<Pool>,
    setup: Setup,
    next_trial: u32,
}

/// One trial's figures.
struct TrialResult {
    rate: f64,
    pass: [bool; 2],
    json: Value,
}

impl Bench {
    async fn start(common: &Common, setup: Setup) -> anyhow::Result<Bench> {
        let recorder = Arc::new(Recorder::default());
        let on_event = {
            let r = recorder.clone();
            Arc::new(move |args: &str| r.on_event(args))
        };
        let swarm = Swarm::connect(Plan {
            endpoint: common.endpoint(),
            minter: common.minter(),
            sockets: setup.sockets,
            concurrency: setup.connect_concurrency,
            join_shipment: Some(setup.shipment.clone()),
            on_event,
        })
        .await;
        if swarm.connected == 0 {
            anyhow::bail!("no socket could connect and join: {:?}", swarm.errors);
        }
        eprintln!(
            "fanout: {} sockets joined in {:.1}s ({} failed)",
            swarm.connected,
            swarm.setup_time.as_secs_f64(),
            swarm.failed
        );
        let pool = Arc::new(match setup.emit_server {
            Some(addr) if addr.ip().is_loopback() => {
                Pool::new(addr, &common.api_key, setup.http_connections)
            }
            Some(addr) => {
                anyhow::bail!("refusing to emit through {addr}: benchmarks target loopback only")
            }
            None => common.pool(setup.http_connections),
        });
        Ok(Bench {
            swarm,
            recorder,
            pool,
            setup,
            next_trial: 0,
        })
    }

    /// Emits at `rate` for `secs`, waits for stragglers, and scores the trial.
    async fn trial(&mut self, rate: f64, secs: f64) -> TrialResult {
        let id = self.next_trial;
        self.next_trial += 1;
        let emits = (rate * secs).ceil().max(1.0) as usize;
        let sockets = self.swarm.connected as u32;
        let trial = Arc::new(Trial {
            id,
            sockets,
            per_seq: (0..emits).map(|_| AtomicU32::new(0)).collect(),
            latency: Histogram::default(),
        });
        *self.recorder.current.write().expect("recorder lock") = Some(trial.clone());
        let lost_before = self.swarm.lost();
        let stray_before = self.recorder.stray.load(Relaxed);

        let shipment = self.setup.shipment.clone();
        let cpu_before = self.server_cpu();
        let started = Instant::now();
        let outcome = emitter::paced(
            self.pool.clone(),
            rate,
            Duration::from_secs_f64(secs),
            |seq, sent_at| {
                Bytes::from(format!(
                    r#"{{"event":"shipment:updated","data":{{"shipmentId":"{shipment}","trial":{id},"seq":{seq},"sentAt":{sent_at}}}}}"#
                ))
            },
        )
        .await;
        let emitting = started.elapsed();

        // Stragglers: wait until everything accepted has arrived, or the drain ends.
        let expected = outcome.accepted() * sockets as u64;
        let drain_end = Instant::now() + Duration::from_secs_f64(self.setup.drain);
        while delivered(&trial) < expected && Instant::now() < drain_end {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        *self.recorder.current.write().expect("recorder lock") = None;
        let cpu = self
            .server_cpu()
            .zip(cpu_before)
            .map(|(after, before)| after - before);

        let mut json = score(&trial, &outcome, rate, secs, emitting);
        if let Some(cpu_s) = cpu {
            add_cpu(&mut json, cpu_s, delivered(&trial), outcome.accepted());
        }
        let lost = self.swarm.lost() - lost_before;
        let loss = json["deliveries"]["lost"].as_u64().unwrap_or(u64::MAX);
        let p99 = trial.latency.p99_ms();
        let clean = loss == 0 && outcome.all_accepted() && lost == 0;
        let pass = BOUNDS_MS.map(|b| clean && p99 < b);
        json["sockets_lost"] = lost.into();
        json["stray_deliveries"] = (self.recorder.stray.load(Relaxed) - stray_before).into();
        json["pass_p99_lt_50ms"] = pass[0].into();
        json["pass_p99_lt_100ms"] = pass[1].into();
        eprintln!(
            "fanout: {rate:>8.1} emits/s × {sockets} sockets: p99 {p99:.1} ms, lost {loss}, {}",
            if pass[1] { "pass" } else { "FAIL" }
        );
        tokio::time::sleep(Duration::from_secs_f64(self.setup.settle)).await;
        self.wait_for_quiet().await;
        TrialResult { rate, pass, json }
    }

    /// The server's CPU time so far, when its pid was given and is readable.
    fn server_cpu(&self) -> Option<f64> {
        let pid = self.setup.server_pid?;
        crate::procfs::cpu_seconds(pid)
            .map_err(|e| eprintln!("fanout: no CPU time for pid {pid}: {e:#}"))
            .ok()
    }

    /// After an overloaded trial the server may still be flushing its backlog;
    /// the next trial must not start against it. Waits (at most 15 s) until no
    /// late delivery has arrived for half a second.
    async fn wait_for_quiet(&self) {
        let give_up = Instant::now() + Duration::from_secs(15);
        loop {
            let before = self.recorder.stray.load(Relaxed);
            tokio::time::sleep(Duration::from_millis(500)).await;
            if self.recorder.stray.load(Relaxed) == before || Instant::now() > give_up {
                return;
            }
        }
    }
}

/// Deliveries so far, each (seq, socket) pair counted once.
fn delivered(t: &Trial) -> u64 {
    t.per_seq
        .iter()
        .map(|c| c.load(Relaxed).min(t.sockets) as u64)
        .sum()
}

/// The server's CPU time over a trial, in all and per delivery and emit.
fn add_cpu(json: &mut Value, cpu_s: f64, delivered: u64, accepted: u64) {
    json["server_cpu_s"] = cpu_s.into();
    if delivered > 0 {
        json["server_cpu_us_per_delivery"] = (cpu_s * 1e6 / delivered as f64).into();
    }
    if accepted > 0 {
        json["server_cpu_ms_per_emit"] = (cpu_s * 1e3 / accepted as f64).into();
    }
}

fn score(t: &Trial, outcome: &emitter::Outcome, rate: f64, secs: f64, emitting: Duration) -> Value {
    let n = t.sockets as u64;
    let expected = outcome.scheduled * n;
    let received = delivered(t);
    let mut duplicates = 0u64;
    let mut complete = 0u64;
    let mut worst = u32::MAX;
    for c in t.per_seq.iter().map(|c| c.load(Relaxed)) {
        duplicates += c.saturating_sub(t.sockets) as u64;
        complete += (c >= t.sockets) as u64;
        worst = worst.min(c);
    }
    json!({
        "rate": rate,
        "duration_s": secs,
        "sockets": n,
        "emits": outcome.summary(),
        "deliveries": {
            "expected": expected,
            "received": received,
            "lost": expected - received,
            "loss_pct": if expected == 0 { 0.0 } else { (expected - received) as f64 * 100.0 / expected as f64 },
            "duplicates": duplicates,
            "complete_seqs": complete,
            "min_sockets_per_seq": worst,
            "per_s": received as f64 / emitting.as_secs_f64(),
            "offered_per_s": rate * n as f64,
        },
        "latency": t.latency.summary(),
    })
}

/// `fanout`: warm-up, then one measured trial.
pub async fn fixed(common: &Common, args: Fixed) -> anyhow::Result<Value> {
    let mut bench = Bench::start(common, args.setup.clone()).await?;
    if args.warmup > 0.0 {
        eprintln!("fanout: warm-up trial, not counted");
        bench.trial(args.rate, args.warmup).await;
    }
    let trial = bench.trial(args.rate, args.duration).await;
    let setup = bench.swarm.summary();
    bench.swarm.shutdown().await;
    Ok(json!({ "setup": setup, "trial": trial.json }))
}

/// `fanout-search`: double the rate until a trial fails the 100 ms bound,
/// then bisect each bound's bracket, within `max_trials` trials in all.
pub async fn search(common: &Common, args: Search) -> anyhow::Result<Value> {
    let mut bench = Bench::start(common, args.setup.clone()).await?;
    let mut trials: Vec<TrialResult> = Vec::new();
    let started = Instant::now();
    if args.warmup > 0.0 {
        eprintln!("fanout: warm-up trial, not counted");
        bench.trial(args.start_rate, args.warmup).await;
    }

    // Expand: up while passing; if the first rate already fails, down instead.
    let mut rate = args.start_rate.clamp(args.min_rate, args.max_rate);
    while trials.len() < args.max_trials {
        let t = bench.trial(rate, args.trial).await;
        let passed = t.pass[1];
        trials.push(t);
        let next = if passed { rate * 2.0 } else { rate / 2.0 };
        let seen_both = trials.iter().any(|t| t.pass[1]) && trials.iter().any(|t| !t.pass[1]);
        if seen_both || next > args.max_rate || next < args.min_rate {
            break;
        }
        rate = next.round().max(1.0);
    }

    // Bisect, the loosest bound first (its bracket also narrows the tighter one's).
    for b in (0..BOUNDS_MS.len()).rev() {
        while trials.len() < args.max_trials {
            let (lo, hi) = bracket(&trials, b);
            let next = match (lo, hi) {
                (Some(lo), Some(hi)) if hi / lo > 1.0 + args.tolerance => ((lo + hi) / 2.0).round(),
                (None, Some(hi)) if hi / 2.0 >= args.min_rate => (hi / 2.0).round(),
                _ => break,
            };
            if trials.iter().any(|t| t.rate == next) {
                break; // rounding reached a rate already measured
            }
            let t = bench.trial(next, args.trial).await;
            trials.push(t);
        }
    }

    let best: Vec<Value> = (0..BOUNDS_MS.len())
        .map(|b| {
            let (lo, hi) = bracket(&trials, b);
            json!({
                "p99_below_ms": BOUNDS_MS[b],
                "best_rate": lo,
                "first_failing_rate": hi,
                "ceiling_not_reached": hi.is_none(),
            })
        })
        .collect();
    let setup = bench.swarm.summary();
    bench.swarm.shutdown().await;
    Ok(json!({
        "setup": setup,
        "best_rate_p99_lt_50ms": best[0]["best_rate"],
        "best_rate_p99_lt_100ms": best[1]["best_rate"],
        "best": best,
        "search_s": started.elapsed().as_secs_f64(),
        "trials": trials.into_iter().map(|t| t.json).collect::<Vec<_>>(),
    }))
}

/// For bound `b`: the lowest failing rate, and the highest passing rate below it.
fn bracket(trials: &[TrialResult], b: usize) -> (Option<f64>, Option<f64>) {
    let hi = trials
        .iter()
        .filter(|t| !t.pass[b])
        .map(|t| t.rate)
        .reduce(f64::min);
    let lo = trials
        .iter()
        .filter(|t| t.pass[b] && hi.is_none_or(|h| t.rate < h))
        .map(|t| t.rate)
        .reduce(f64::max);
    (lo, hi)
}
