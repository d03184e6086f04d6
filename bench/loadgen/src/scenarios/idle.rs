//! Idle connections: what one authenticated, silent websocket costs the server.
//!
//! The server's RSS is read from /proc before and after N sockets connect and
//! authenticate; the difference over N is the per-connection memory. A short
//! warm-up first opens and closes a few connections so that one-time costs
//! (lazily started pools, first-use allocations) are not charged to them.

use std::time::Duration;

use serde_json::{Value, json};

use super::Common;
use crate::procfs;
use crate::swarm::{Plan, Swarm};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Connections to hold.
    #[arg(long, default_value_t = 10_000)]
    pub connections: usize,
    /// The server's process id (its RSS is measured).
    #[arg(long)]
    pub server_pid: u32,
    /// Connections being set up at once.
    #[arg(long, default_value_t = 64)]
    pub connect_concurrency: usize,
    /// Seconds to wait before each RSS reading, for the server to settle.
    #[arg(long, default_value_t = 3.0)]
    pub settle: f64,
    /// Connections opened and closed before the baseline reading.
    #[arg(long, default_value_t = 100)]
    pub warmup: usize,
}

pub async fn run(common: &Common, args: Args) -> anyhow::Result<Value> {
    let settle = Duration::from_secs_f64(args.settle);
    let plan = |sockets| Plan {
        endpoint: common.endpoint(),
        minter: common.minter(),
        sockets,
        concurrency: args.connect_concurrency,
        join_shipment: None,
        on_event: std::sync::Arc::new(|_: &str| {}),
    };
    if args.warmup > 0 {
        Swarm::connect(plan(args.warmup)).await.shutdown().await;
        tokio::time::sleep(settle).await;
    }

    let before = procfs::rss_kib(args.server_pid)?;
    let own_before = procfs::own_rss_kib();
    let swarm = Swarm::connect(plan(args.connections)).await;
    eprintln!(
        "idle: {} connections up in {:.1}s ({} failed)",
        swarm.connected,
        swarm.setup_time.as_secs_f64(),
        swarm.failed
    );
    tokio::time::sleep(settle).await;
    let after = procfs::rss_kib(args.server_pid)?;
    let own_after = procfs::own_rss_kib();
    let held = swarm.connected.saturating_sub(swarm.lost() as usize);
    let setup = swarm.summary();
    swarm.shutdown().await;
    tokio::time::sleep(settle).await;
    let after_close = procfs::rss_kib(args.server_pid).ok();

    let per_conn = |delta_kib: u64| {
        if held == 0 {
            0.0
        } else {
            delta_kib as f64 * 1024.0 / held as f64
        }
    };
    Ok(json!({
        "setup": setup,
        "connections_held": held,
        "server_rss_kib": { "before": before, "after": after, "after_close": after_close },
        "server_bytes_per_connection": per_conn(after.saturating_sub(before)),
        "server_kib_per_connection": per_conn(after.saturating_sub(before)) / 1024.0,
        "loadgen_bytes_per_connection": per_conn(own_after.saturating_sub(own_before)),
    }))
}
