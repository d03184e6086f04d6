//! Rate-paced emits through `POST /api/v1/emit`.
//!
//! Emit `i` is due at `start + i / rate`, whatever happened to earlier ones:
//! the schedule is open-loop, so a slow server builds a queue instead of
//! silently lowering the offered rate (a closed loop would hide exactly the
//! overload the benchmark looks for). The timestamp put in the payload is the
//! *scheduled* time, so publish→receive latency includes any wait for a free
//! HTTP connection and the server's own queueing ("coordinated omission").

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::clock;
use crate::histogram::Histogram;
use crate::http::Pool;

/// What happened to a paced run's emits.
#[derive(Default)]
pub struct Outcome {
    pub scheduled: u64,
    pub accepted: AtomicU64,
    pub rejected: AtomicU64,
    pub failed: AtomicU64,
    /// Scheduled time → HTTP response.
    pub latency: Histogram,
    /// How late the pacer itself woke up, worst case: when this is large
    /// the load generator, not the server, was the bottleneck.
    pub max_pacer_lag: Duration,
}

impl Outcome {
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Relaxed)
    }

    pub fn all_accepted(&self) -> bool {
        self.accepted() == self.scheduled
    }

    pub fn summary(&self) -> Value {
        json!({
            "scheduled": self.scheduled,
            "accepted": self.accepted(),
            "rejected": self.rejected.load(Relaxed),
            "failed": self.failed.load(Relaxed),
            "latency": self.latency.summary(),
            "max_pacer_lag_ms": self.max_pacer_lag.as_secs_f64() * 1000.0,
        })
    }
}

/// Emits `ceil(rate × duration)` events at `rate` per second; `body(seq,
/// sent_at_ns)` builds each request. Returns once every emit has an answer.
pub async fn paced(
    pool: Arc<Pool>,
    rate: f64,
    duration: Duration,
    body: impl Fn(u64, u64) -> Bytes,
) -> Outcome {
    let total = (rate * duration.as_secs_f64()).ceil().max(1.0) as u64;
    let outcome = Arc::new(Outcome {
        scheduled: total,
        ..Outcome::default()
    });
    let interval = Duration::from_secs_f64(1.0 / rate);
    let start = Instant::now();
    let mut lag = Duration::ZERO;
    let mut tasks = JoinSet::new();
    for seq in 0..total {
        let due = start + interval.mul_f64(seq as f64);
        tokio::time::sleep_until(due.into()).await;
        lag = lag.max(due.elapsed());
        let request = body(seq, clock::unix_ns_at(due));
        let (pool, outcome) = (pool.clone(), outcome.clone());
        tasks.spawn(async move {
            match pool.post_json("/api/v1/emit", request).await {
                Ok(reply) if reply.status.is_success() => {
                    outcome.accepted.fetch_add(1, Relaxed);
                }
                Ok(reply) => {
                    if outcome.rejected.fetch_add(1, Relaxed) == 0 {
                        eprintln!(
                            "emit rejected: {} {}",
                            reply.status,
                            String::from_utf8_lossy(&reply.body)
                        );
                    }
                }
                Err(e) => {
                    if outcome.failed.fetch_add(1, Relaxed) == 0 {
                        eprintln!("emit failed: {e:#}");
                    }
                }
            }
            outcome.latency.record(due.elapsed());
        });
        // Reap finished tasks as we go so the set stays small at high rates.
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let mut outcome = Arc::into_inner(outcome).expect("all emit tasks are done");
    outcome.max_pacer_lag = lag;
    outcome
}
