//! The HTTP emit API alone: no sockets, C controllers posting back to back.
//!
//! Each client owns one keep-alive connection and sends its next emit as soon
//! as the previous one is answered (closed loop: this measures capacity, the
//! fan-out scenario measures behaviour at a given rate). The room has no
//! members, so the figure is the cost of accepting, validating and (unless
//! `EVENT_LOG=off`) durably logging an event.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::task::JoinSet;

use super::{Common, Tally};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Concurrent keep-alive clients.
    #[arg(long, default_value_t = 32)]
    pub clients: usize,
    /// Seconds that count.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds of the same load before, not counted.
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
}

pub async fn run(common: &Common, args: Args) -> anyhow::Result<Value> {
    let pool = Arc::new(common.pool(args.clients));
    let tally = Arc::new(Tally::default());
    let warm_end = Instant::now() + Duration::from_secs_f64(args.warmup);
    let end = warm_end + Duration::from_secs_f64(args.duration);
    let mut clients = JoinSet::new();
    for c in 0..args.clients {
        let (pool, tally) = (pool.clone(), tally.clone());
        clients.spawn(async move {
            let mut n = 0u64;
            while Instant::now() < end {
                let body = Bytes::from(format!(
                    r#"{{"event":"shipment:updated","data":{{"shipmentId":"BENCH-API-{c}","status":"in_transit","seq":{n}}}}}"#
                ));
                n += 1;
                let began = Instant::now();
                let counted = began >= warm_end;
                let result = pool.post_json("/api/v1/emit", body).await;
                if !counted {
                    continue;
                }
                match result {
                    Ok(r) if r.status.is_success() => tally.succeeded(began.elapsed()),
                    Ok(r) => tally.refused(format!("{} {}", r.status, String::from_utf8_lossy(&r.body))),
                    Err(e) => tally.failed(format!("{e:#}")),
                }
            }
        });
    }
    while clients.join_next().await.is_some() {}
    let window = Instant::now()
        .saturating_duration_since(warm_end)
        .as_secs_f64();
    let accepted = tally.ok.load(Relaxed);
    Ok(json!({
        "clients": args.clients,
        "duration_s": window,
        "accepted": accepted,
        "emits_per_s": accepted as f64 / window,
        "rejected": tally.refused.load(Relaxed),
        "failed": tally.failed.load(Relaxed),
        "first_error": tally.first_error(),
        "latency": tally.latency.summary(),
    }))
}
