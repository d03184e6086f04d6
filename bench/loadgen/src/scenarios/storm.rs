//! Connect storm: how many JWT handshakes per second the server completes.
//!
//! C workers each loop: TCP connect, websocket upgrade, Engine.IO open,
//! CONNECT with a freshly minted token, wait for the server's answer, then
//! leave as a client does (DISCONNECT, close). Every worker uses a distinct
//! user, so the server cannot shortcut repeated tokens.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::task::JoinSet;

use super::{Common, Tally};
use crate::sio::{Client, ConnectError};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Concurrent workers.
    #[arg(long, default_value_t = 64)]
    pub workers: usize,
    /// Seconds that count.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds of the same load before, not counted.
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
}

pub async fn run(common: &Common, args: Args) -> anyhow::Result<Value> {
    let warm = Arc::new(Tally::default());
    let counted = Arc::new(Tally::default());
    let start = Instant::now();
    let warm_end = start + Duration::from_secs_f64(args.warmup);
    let end = warm_end + Duration::from_secs_f64(args.duration);
    let mut workers = JoinSet::new();
    for w in 0..args.workers {
        let (ep, minter) = (common.endpoint(), common.minter());
        let (warm, counted) = (warm.clone(), counted.clone());
        workers.spawn(async move {
            let mut n = 0u64;
            while Instant::now() < end {
                let token = minter.token(&format!("storm-{w}-{n}"), Some("bench"), 3600);
                n += 1;
                let began = Instant::now();
                let tally = if began < warm_end { &warm } else { &counted };
                let attempt = tokio::time::timeout(
                    Duration::from_secs(10),
                    Client::connect(&ep, &json!({ "token": token })),
                )
                .await;
                match attempt {
                    Ok(Ok(client)) => {
                        // Counted once the server has said yes; closing is the client's business.
                        tally.succeeded(began.elapsed());
                        client.close().await;
                    }
                    Ok(Err(ConnectError::Refused(m))) => tally.refused(m),
                    Ok(Err(e)) => tally.failed(e.to_string()),
                    Err(_) => tally.failed("handshake timed out".into()),
                }
            }
        });
    }
    while workers.join_next().await.is_some() {}
    // Workers finish their last attempt after `end`; the window is what was measured.
    let window = Instant::now()
        .saturating_duration_since(warm_end)
        .as_secs_f64();
    let ok = counted.ok.load(Relaxed);
    Ok(json!({
        "workers": args.workers,
        "duration_s": window,
        "handshakes": ok,
        "handshakes_per_s": ok as f64 / window,
        "refused": counted.refused.load(Relaxed),
        "failed": counted.failed.load(Relaxed),
        "first_error": counted.first_error(),
        "latency": counted.latency.summary(),
    }))
}
