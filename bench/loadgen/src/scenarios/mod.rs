//! The benchmark scenarios. Each returns its figures as JSON.

pub mod emit_api;
pub mod fanout;
pub mod idle;
pub mod reconnect;
pub mod replay;
pub mod soak;
pub mod storm;

use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::histogram::Histogram;
use crate::http::Pool;
use crate::sio::Endpoint;
use crate::token::Minter;

/// What every scenario needs to reach the server under test.
#[derive(clap::Args, Debug, Clone)]
pub struct Common {
    /// Server address (loopback only), e.g. 127.0.0.1:3000.
    #[arg(
        long,
        env = "BENCH_SERVER",
        global = true,
        default_value = "127.0.0.1:3000"
    )]
    pub server: SocketAddr,
    /// HS256 secret the server verifies user tokens with.
    #[arg(
        long,
        env = "BENCH_JWT_SECRET",
        global = true,
        default_value = "bench-secret"
    )]
    pub jwt_secret: String,
    /// API key for the controller routes.
    #[arg(
        long,
        env = "BENCH_API_KEY",
        global = true,
        default_value = "bench-key"
    )]
    pub api_key: String,
    /// Connect over livehub's plain WebSocket endpoint (`/ws`) instead of Socket.IO.
    #[arg(long, env = "BENCH_PLAIN", global = true)]
    pub plain: bool,
}

impl Common {
    pub fn endpoint(&self) -> Endpoint {
        if self.plain {
            Endpoint::plain(self.server)
        } else {
            Endpoint::new(self.server)
        }
    }

    pub fn minter(&self) -> Minter {
        Minter::new(&self.jwt_secret)
    }

    pub fn pool(&self, max: usize) -> Pool {
        Pool::new(self.server, &self.api_key, max)
    }
}

/// Outcomes of a closed-loop scenario's attempts (emits, handshakes):
/// successes with their latency, refusals and failures, and the first
/// refusal's or failure's text, to say what went wrong.
#[derive(Default)]
pub struct Tally {
    pub ok: AtomicU64,
    pub refused: AtomicU64,
    pub failed: AtomicU64,
    pub latency: Histogram,
    first_error: Mutex<Option<String>>,
}

impl Tally {
    pub fn succeeded(&self, took: Duration) {
        self.latency.record(took);
        self.ok.fetch_add(1, Relaxed);
    }

    pub fn refused(&self, why: String) {
        self.refused.fetch_add(1, Relaxed);
        self.note(why);
    }

    pub fn failed(&self, why: String) {
        self.failed.fetch_add(1, Relaxed);
        self.note(why);
    }

    fn note(&self, why: String) {
        self.first_error.lock().expect("lock").get_or_insert(why);
    }

    pub fn first_error(&self) -> Option<String> {
        self.first_error.lock().expect("lock").clone()
    }
}

/// A `dashboard:refresh` event's `seq`, `offset` and `replayed` flag:
/// `["dashboard:refresh", {"seq": n, "offset": "…", "replayed": true?}]`.
pub fn parse_refresh(args: &str) -> Option<(u64, String, bool)> {
    let v: serde_json::Value = serde_json::from_str(args).ok()?;
    let data = v.get(1)?;
    let seq = data.get("seq")?.as_u64()?;
    let offset = data.get("offset")?.as_str()?.to_string();
    let replayed = data
        .get("replayed")
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(false);
    Some((seq, offset, replayed))
}

/// The log's position (`/health`'s `offset`) before a scenario's first emit.
/// Clients that connect with it are owed every event emitted after, like an
/// app that loads its state and then connects from the offset it is at.
pub async fn log_position(common: &Common) -> anyhow::Result<Option<String>> {
    let health = crate::http::get(common.server, "/health", Duration::from_secs(5)).await?;
    Ok(serde_json::from_slice::<serde_json::Value>(&health.body)
        .ok()
        .and_then(|h| h.get("offset")?.as_str().map(String::from)))
}

/// Emits numbered `dashboard:refresh` events (`seq` 0, 1, …) to a branch at
/// `rate` per second for `duration` seconds.
pub async fn refresh_to_branch(
    pool: std::sync::Arc<Pool>,
    branch: &str,
    rate: f64,
    duration: f64,
) -> crate::emitter::Outcome {
    crate::emitter::paced(pool, rate, Duration::from_secs_f64(duration), |seq, _| {
        bytes::Bytes::from(
            serde_json::json!({ "event": "dashboard:refresh", "data": { "branchId": branch, "seq": seq } })
                .to_string(),
        )
    })
    .await
}

/// Waits until `connected` reaches `n` (every client of a swarm is in), for
/// at most two minutes. Returns how long it took, in seconds.
pub async fn all_connected(connected: &AtomicU64, n: usize) -> anyhow::Result<f64> {
    let setup = std::time::Instant::now();
    while (connected.load(Relaxed) as usize) < n {
        if setup.elapsed() > Duration::from_secs(120) {
            anyhow::bail!("only {} of {n} clients connected", connected.load(Relaxed));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(setup.elapsed().as_secs_f64())
}
