//! `loadgen`: the load generator behind `bench/run.sh`.
//!
//! Each scenario subcommand drives one server (livehub or the Node peer) on
//! loopback and prints one JSON document of figures; `report` turns a run's
//! documents into docs/performance.md. See bench/README.md.

mod clock;
mod emitter;
mod histogram;
mod http;
mod meta;
mod procfs;
mod report;
mod scenarios;
mod sio;
mod swarm;
mod token;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use serde_json::{Map, Value, json};

use scenarios::Common;

#[derive(Parser)]
#[command(about = "Load generator for livehub and its Node socket.io peer (loopback only)")]
struct Cli {
    #[command(flatten)]
    common: Common,
    /// `key=value` labels copied into the results (case, server, round …).
    #[arg(long = "tag", global = true, value_parser = parse_tag)]
    tags: Vec<(String, String)>,
    /// Write the JSON results here instead of standard output.
    #[arg(long, global = true)]
    out: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// N sockets in one room, emits at a fixed rate: deliveries, loss, latency.
    Fanout(scenarios::fanout::Fixed),
    /// The highest emit rate held with no loss and p99 under 50 / 100 ms.
    FanoutSearch(scenarios::fanout::Search),
    /// N idle authenticated connections: server RSS per connection.
    Idle(scenarios::idle::Args),
    /// Connect + JWT auth + close in a loop: handshakes per second.
    ConnectStorm(scenarios::storm::Args),
    /// POST /api/v1/emit alone, closed loop: accepted emits per second.
    EmitApi(scenarios::emit_api::Args),
    /// Reconnect from an offset after N missed events: time to the last one.
    Replay(scenarios::replay::Args),
    /// Every client drops at once and comes back with its offset while
    /// emits flow: time until all have caught up, loss, duplicates.
    ReconnectStorm(scenarios::reconnect::Args),
    /// Thousands of clients for minutes, with churn and a steady emit rate:
    /// delivered vs expected per client (not part of bench/run.sh).
    Soak(scenarios::soak::Args),
    /// Prints a free TCP port on 127.0.0.1.
    FreePort,
    /// Waits until GET /health answers 200.
    WaitReady {
        #[arg(long, default_value_t = 60.0)]
        timeout: f64,
        /// The server's pid: give up as soon as it has exited.
        #[arg(long)]
        pid: Option<u32>,
    },
    /// Describes the machine and the versions under test, as JSON.
    Meta(meta::Args),
    /// Writes the Markdown report from a run's JSON results.
    Report(report::Args),
}

fn parse_tag(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected key=value, got {s:?}"))
}

fn main() {
    clock::init();
    let cli = Cli::parse();
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")
        .and_then(|rt| rt.block_on(run(cli)));
    if let Err(e) = result {
        eprintln!("loadgen: {e:#}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let common = &cli.common;
    let (scenario, result) = match cli.command {
        Command::FreePort => {
            let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
            println!("{}", listener.local_addr()?.port());
            return Ok(());
        }
        Command::WaitReady { timeout, pid } => return wait_ready(common, timeout, pid).await,
        Command::Report(args) => return report::run(args),
        Command::Meta(args) => ("meta", meta::collect(args)?),
        command => {
            // Load goes to this machine only, whatever address was passed.
            if !common.server.ip().is_loopback() {
                bail!(
                    "refusing to load {}: benchmarks target loopback only",
                    common.server
                );
            }
            match command {
                Command::Fanout(a) => ("fanout", scenarios::fanout::fixed(common, a).await?),
                Command::FanoutSearch(a) => {
                    ("fanout-search", scenarios::fanout::search(common, a).await?)
                }
                Command::Idle(a) => ("idle", scenarios::idle::run(common, a).await?),
                Command::ConnectStorm(a) => {
                    ("connect-storm", scenarios::storm::run(common, a).await?)
                }
                Command::EmitApi(a) => ("emit-api", scenarios::emit_api::run(common, a).await?),
                Command::Replay(a) => ("replay", scenarios::replay::run(common, a).await?),
                Command::ReconnectStorm(a) => (
                    "reconnect-storm",
                    scenarios::reconnect::run(common, a).await?,
                ),
                Command::Soak(a) => ("soak", scenarios::soak::run(common, a).await?),
                _ => unreachable!("handled above"),
            }
        }
    };
    let tags: Map<String, Value> = cli.tags.into_iter().map(|(k, v)| (k, v.into())).collect();
    let doc = json!({
        "scenario": scenario,
        "tags": tags,
        "argv": std::env::args().collect::<Vec<_>>(),
        "finished_at_unix": clock::now_ns() / 1_000_000_000,
        "loadgen_peak_rss_kib": procfs::own_rss_kib(),
        "result": result,
    });
    let text = serde_json::to_string_pretty(&doc)?;
    match cli.out {
        Some(path) => std::fs::write(&path, text + "\n")
            .with_context(|| format!("writing {}", path.display()))?,
        None => println!("{text}"),
    }
    Ok(())
}

async fn wait_ready(common: &Common, timeout: f64, pid: Option<u32>) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(timeout);
    loop {
        if let Some(pid) = pid
            && !std::path::Path::new(&format!("/proc/{pid}")).exists()
        {
            bail!("the server (pid {pid}) exited before it was ready");
        }
        match http::get(common.server, "/health", Duration::from_secs(2)).await {
            Ok(r) if r.status.is_success() => return Ok(()),
            _ if tokio::time::Instant::now() >= deadline => {
                bail!("{} not healthy after {timeout}s", common.server)
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}
