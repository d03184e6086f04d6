//! Turns a run's JSON results into the Markdown report.
//!
//! Every result file carries tags from bench/run.sh: `case` (which
//! measurement, e.g. `fanout-search`), `label` (its human name), `server`
//! (`livehub-sqlite`, `livehub-pg`, `livehub-nolog`, `node`) and `round`.
//! Each table cell is the median over rounds with the min–max spread; the
//! targets are checked against medians and printed, never enforced.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Context;
use serde_json::Value;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The run's directory of result files.
    #[arg(long)]
    pub dir: PathBuf,
    /// Machine and versions (from `loadgen meta`); default DIR/meta.json.
    #[arg(long)]
    pub meta: Option<PathBuf>,
    /// Where to write the Markdown.
    #[arg(long)]
    pub out: PathBuf,
}

/// Servers in the order the tables list them.
const SERVERS: [(&str, &str); 8] = [
    ("livehub-sqlite", "livehub (SQLite log)"),
    ("livehub-normal", "livehub (SQLite log, synchronous=normal)"),
    ("livehub-plain", "livehub, plain WebSocket /ws (SQLite log)"),
    ("livehub-pg", "livehub (PostgreSQL log)"),
    ("livehub-nolog", "livehub (EVENT_LOG=off)"),
    (
        "livehub-nopresence",
        "livehub without automatic presence (PRESENCE_BROADCAST_LIMIT=0)",
    ),
    ("floor", "floor: bare socketioxide + axum"),
    ("node", "Node socket.io"),
];

/// One figure read from each result of a scenario.
struct Metric {
    label: &'static str,
    /// JSON pointer into `result`.
    path: &'static str,
    decimals: usize,
}

/// Where a search says its bound was never failed: the figure is then only a
/// lower bound (the server held the highest rate tried) and shows as `≥ x`.
fn ceiling_flag(path: &str) -> Option<&'static str> {
    match path {
        "/best_rate_p99_lt_100ms" => Some("/best/1/ceiling_not_reached"),
        "/best_rate_p99_lt_50ms" => Some("/best/0/ceiling_not_reached"),
        _ => None,
    }
}

macro_rules! m {
    ($label:expr, $path:expr, $decimals:expr) => {
        Metric {
            label: $label,
            path: $path,
            decimals: $decimals,
        }
    };
}

fn metrics(scenario: &str) -> &'static [Metric] {
    match scenario {
        "fanout-search" => &[
            m!(
                "max emits/s, p99 < 100 ms, no loss",
                "/best_rate_p99_lt_100ms",
                0
            ),
            m!(
                "max emits/s, p99 < 50 ms, no loss",
                "/best_rate_p99_lt_50ms",
                0
            ),
            m!("sockets", "/setup/connected", 0),
        ],
        "fanout" => &[
            m!("deliveries/s", "/trial/deliveries/per_s", 0),
            m!("lost", "/trial/deliveries/lost", 0),
            m!("p50 ms", "/trial/latency/p50_ms", 1),
            m!("p99 ms", "/trial/latency/p99_ms", 1),
            m!("max ms", "/trial/latency/max_ms", 1),
            m!(
                "server CPU µs / delivery",
                "/trial/server_cpu_us_per_delivery",
                3
            ),
            m!("sockets", "/setup/connected", 0),
        ],
        "idle" => &[
            m!("server KiB / connection", "/server_kib_per_connection", 2),
            m!("connections held", "/connections_held", 0),
            m!("server RSS after, MiB", "/server_rss_kib/after", 0),
        ],
        "connect-storm" => &[
            m!("handshakes/s", "/handshakes_per_s", 0),
            m!("p50 ms", "/latency/p50_ms", 2),
            m!("p99 ms", "/latency/p99_ms", 2),
            m!("failed + refused", "/errors", 0),
        ],
        "emit-api" => &[
            m!("accepted emits/s", "/emits_per_s", 0),
            m!("p50 ms", "/latency/p50_ms", 2),
            m!("p99 ms", "/latency/p99_ms", 2),
            m!("rejected + failed", "/errors", 0),
        ],
        "replay" => &[
            m!("ms to the last event", "/replay_ms", 1),
            m!("events/s", "/events_per_s", 0),
            m!("batch emit ms", "/batch_emit_ms", 0),
            m!("complete, in order", "/complete", 0),
        ],
        "reconnect-storm" => &[
            m!("ms until all caught up", "/all_caught_up_ms", 0),
            m!("catch-up p50 ms", "/catch_up_latency/p50_ms", 0),
            m!("catch-up p99 ms", "/catch_up_latency/p99_ms", 0),
            m!("ms until all reconnected", "/all_reconnected_ms", 0),
            m!("missing", "/missing_total", 0),
            m!("duplicates", "/duplicates_total", 0),
            m!("failed reconnects", "/failed_reconnects_total", 0),
            m!("emit p99 ms", "/emits/latency/p99_ms", 0),
        ],
        _ => &[],
    }
}

/// A result's figure; booleans count as 1/0, and a few sums are derived.
fn figure(result: &Value, path: &str) -> Option<f64> {
    let n = |p: &str| result.pointer(p).and_then(Value::as_f64).unwrap_or(0.0);
    match path {
        "/errors" => Some(n("/failed") + n("/refused") + n("/rejected")),
        "/server_rss_kib/after" => result.pointer(path)?.as_f64().map(|k| k / 1024.0),
        _ => match result.pointer(path)? {
            Value::Bool(b) => Some(*b as u8 as f64),
            v => v.as_f64(),
        },
    }
}

/// The results of one case on one server, over rounds.
#[derive(Default)]
struct Cell {
    results: Vec<Value>,
}

impl Cell {
    fn values(&self, path: &str) -> Vec<f64> {
        let mut v: Vec<f64> = self
            .results
            .iter()
            .filter_map(|r| figure(r, path))
            .collect();
        v.sort_by(f64::total_cmp);
        v
    }

    fn median(&self, path: &str) -> Option<f64> {
        median(&self.values(path))
    }

    fn max(&self, path: &str) -> Option<f64> {
        self.values(path).last().copied()
    }

    /// "≥ " when some round never found this figure's ceiling.
    fn bound_prefix(&self, path: &str) -> &'static str {
        let hit = ceiling_flag(path).is_some_and(|flag| {
            self.results
                .iter()
                .any(|r| r.pointer(flag) == Some(&Value::Bool(true)))
        });
        if hit { "≥ " } else { "" }
    }
}

fn median(v: &[f64]) -> Option<f64> {
    match v.len() {
        0 => None,
        n if n % 2 == 1 => Some(v[n / 2]),
        n => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

fn fmt(x: f64, decimals: usize) -> String {
    let s = format!("{x:.decimals$}");
    // Thousands separators on the integer part, for readable rates.
    let (int, frac) = s
        .split_once('.')
        .map_or((s.as_str(), None), |(i, f)| (i, Some(f)));
    let (sign, digits) = int.strip_prefix('-').map_or(("", int), |d| ("-", d));
    let mut grouped = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    match frac {
        Some(f) => format!("{sign}{grouped}.{f}"),
        None => format!("{sign}{grouped}"),
    }
}

struct Case {
    scenario: String,
    label: String,
    cells: BTreeMap<String, Cell>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let meta_path = args
        .meta
        .clone()
        .unwrap_or_else(|| args.dir.join("meta.json"));
    let meta: Value = serde_json::from_str(
        &std::fs::read_to_string(&meta_path).with_context(|| format!("{}", meta_path.display()))?,
    )?;
    let meta = meta.get("result").cloned().unwrap_or(meta);

    let mut cases: BTreeMap<String, Case> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&args.dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json") && !p.ends_with("meta.json"))
        .collect();
    files.sort();
    for path in files {
        let doc: Value = match std::fs::read_to_string(&path)
            .ok()
            .and_then(|s| serde_json::from_str(&s).ok())
        {
            Some(d) => d,
            None => {
                eprintln!("report: skipping unreadable {}", path.display());
                continue;
            }
        };
        let tag = |k: &str| doc["tags"][k].as_str().unwrap_or("").to_string();
        let (case, server) = (tag("case"), tag("server"));
        if case.is_empty() || server.is_empty() {
            continue;
        }
        if !cases.contains_key(&case) {
            order.push(case.clone());
        }
        let entry = cases.entry(case.clone()).or_insert_with(|| Case {
            scenario: doc["scenario"].as_str().unwrap_or("").to_string(),
            label: if tag("label").is_empty() {
                case.clone()
            } else {
                tag("label")
            },
            cells: BTreeMap::new(),
        });
        entry
            .cells
            .entry(server)
            .or_default()
            .results
            .push(doc["result"].clone());
    }

    let mut md = String::new();
    header(&mut md, &meta);
    targets(&mut md, &cases);
    let _ = writeln!(md, "## Results\n");
    let _ = writeln!(
        md,
        "Each cell: median over rounds, then (min–max). A `[k/n]` suffix means only k of n \
         rounds produced the figure (e.g. no rate passed, or the replay timed out); `≥ x`: the \
         server still passed at the highest rate the search tried, so x is a lower bound.\n"
    );
    for name in &order {
        table(&mut md, &cases[name]);
    }
    method(&mut md);
    if let Some(parent) = args.out.parent() {
        std::fs::create_dir_all(parent).ok();
    }
    std::fs::write(&args.out, md).with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!("report: wrote {}", args.out.display());
    Ok(())
}

fn header(md: &mut String, meta: &Value) {
    let s = |p: &str| {
        meta.pointer(p)
            .map(|v| v.to_string().trim_matches('"').to_string())
    };
    let s = |p: &str| s(p).unwrap_or_else(|| "unknown".into());
    let _ = writeln!(md, "# livehub performance\n");
    let _ = writeln!(
        md,
        "Generated by `bench/run.sh` — livehub, the Node socket.io peer (`bench/node-peer/`) and \
         the floor (`bench/floor/`: bare socketioxide + axum with the same JWT check and emit \
         route, nothing else) measured in the same run, alternating, each server started fresh \
         for every measurement. \
         Re-run it with:\n\n```sh\n{}\n```\n",
        s("/command")
    );
    if meta["quick"] == Value::Bool(true) {
        let _ = writeln!(
            md,
            "> **Quick smoke run**: small counts and short durations. These numbers only show \
             that the tooling works; they are not the benchmark.\n"
        );
    }
    let _ = writeln!(md, "| | |\n|---|---|");
    for (k, p) in [
        ("date", "/date"),
        ("rounds", "/rounds"),
        ("cores (nproc)", "/machine/nproc"),
        ("CPU", "/machine/cpu"),
        ("RAM", "/machine/ram_gib"),
        ("kernel", "/machine/kernel"),
        ("livehub commit", "/versions/livehub"),
        ("rustc", "/versions/rustc"),
        ("Node.js", "/versions/node"),
        ("socket.io (npm)", "/versions/socket.io"),
        ("PostgreSQL", "/versions/postgresql"),
    ] {
        let v = s(p);
        let v = if k == "RAM" { format!("{v} GiB") } else { v };
        let _ = writeln!(md, "| {k} | {v} |");
    }
    let _ = writeln!(
        md,
        "\nThe load generator runs on the same machine as the server and shares its cores, \
         so every figure is a lower bound of what the server alone would do.\n"
    );
}

/// Whether a target was met; `Open` when a lower bound fell short of it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Met,
    NotMet,
    Open,
}

impl From<bool> for Verdict {
    fn from(met: bool) -> Verdict {
        if met { Verdict::Met } else { Verdict::NotMet }
    }
}

/// A target: what it asks, what was measured, whether it is met.
fn target_row(md: &mut String, what: &str, measured: Option<(String, impl Into<Verdict>)>) {
    let (text, verdict) = match measured.map(|(t, v)| (t, v.into())) {
        Some((t, Verdict::Met)) => (t, "met"),
        Some((t, Verdict::NotMet)) => (t, "**not met**"),
        Some((t, Verdict::Open)) => (t, "open: livehub's ceiling was not reached"),
        None => ("not measured in this run".into(), "—"),
    };
    let _ = writeln!(md, "| {what} | {text} | {verdict} |");
}

fn targets(md: &mut String, cases: &BTreeMap<String, Case>) {
    let cell = |case: &str, server: &str| cases.get(case).and_then(|c| c.cells.get(server));
    let med =
        |case: &str, server: &str, path: &str| cell(case, server).and_then(|c| c.median(path));
    let label = |case: &str| {
        cases
            .get(case)
            .map_or(case.to_string(), |c| c.label.clone())
    };
    let prefix = |case: &str, server: &str, path: &str| {
        cell(case, server).map_or("", |c| c.bound_prefix(path))
    };
    let ratio = |case: &str, path: &str, unit: &str| {
        let lh = med(case, "livehub-sqlite", path)?;
        let node = med(case, "node", path)?;
        let r = if node > 0.0 { lh / node } else { f64::INFINITY };
        let (pl, pn) = (
            prefix(case, "livehub-sqlite", path),
            prefix(case, "node", path),
        );
        let verdict = match (r >= 5.0, pl.is_empty()) {
            (true, _) => Verdict::Met,
            (false, true) => Verdict::NotMet,
            (false, false) => Verdict::Open,
        };
        Some((
            format!("{pl}{} vs {pn}{} {unit}: {r:.1}×", fmt(lh, 0), fmt(node, 0)),
            verdict,
        ))
    };

    let _ = writeln!(md, "## Targets\n");
    let _ = writeln!(
        md,
        "Checked on medians (livehub with its default SQLite log unless said otherwise).\n"
    );
    let _ = writeln!(md, "| target | measured | |\n|---|---|---|");
    target_row(
        md,
        &format!(
            "{}: highest rate with p99 < 100 ms and no loss ≥ 5× Node",
            label("fanout-search")
        ),
        ratio("fanout-search", "/best_rate_p99_lt_100ms", "emits/s"),
    );
    let fixed = "fanout-fixed";
    target_row(
        md,
        &format!(
            "{}: no loss, p99 at or below the floor's (bare socketioxide)",
            label(fixed)
        ),
        (|| {
            let c = cell(fixed, "livehub-sqlite")?;
            let lost = c.max("/trial/deliveries/lost")?;
            let p99 = c.median("/trial/latency/p99_ms")?;
            let floor = med(fixed, "floor", "/trial/latency/p99_ms")?;
            Some((
                format!(
                    "lost {} (worst round), p99 {p99:.1} vs {floor:.1} ms: {:.2}× the floor",
                    fmt(lost, 0),
                    p99 / floor
                ),
                lost == 0.0 && p99 <= floor,
            ))
        })(),
    );
    target_row(
        md,
        &format!("{} (stretch): p99 < 100 ms", label(fixed)),
        med(fixed, "livehub-sqlite", "/trial/latency/p99_ms")
            .map(|p99| (format!("p99 {p99:.1} ms"), p99 < 100.0)),
    );
    let kib = "/server_kib_per_connection";
    target_row(
        md,
        &format!(
            "{}: RSS per Socket.IO websocket at or below Node's",
            label("idle")
        ),
        (|| {
            let (lh, node) = (
                med("idle", "livehub-sqlite", kib)?,
                med("idle", "node", kib)?,
            );
            Some((format!("{lh:.2} vs {node:.2} KiB"), lh <= node))
        })(),
    );
    target_row(
        md,
        &format!("{}: RSS per plain WebSocket ≤ 8 KiB", label("idle")),
        med("idle", "livehub-plain", kib).map(|k| (format!("{k:.2} KiB"), k <= 8.0)),
    );
    target_row(
        md,
        &format!("{}: handshakes/s ≥ 5× Node", label("connect-storm")),
        ratio("connect-storm", "/handshakes_per_s", "handshakes/s"),
    );
    target_row(
        md,
        &format!("{}: handshakes/s ≥ 0.75× the floor", label("connect-storm")),
        (|| {
            let p = "/handshakes_per_s";
            let (lh, floor) = (
                med("connect-storm", "livehub-sqlite", p)?,
                med("connect-storm", "floor", p)?,
            );
            let r = lh / floor;
            Some((
                format!("{} vs {} handshakes/s: {r:.2}×", fmt(lh, 0), fmt(floor, 0)),
                r >= 0.75,
            ))
        })(),
    );
    target_row(
        md,
        "durable log costs ≤ 15 % of fan-out throughput (vs EVENT_LOG=off)",
        (|| {
            let p = "/best_rate_p99_lt_100ms";
            let on = med("fanout-search", "livehub-sqlite", p)?;
            let off = med("fanout-search", "livehub-nolog", p)?;
            let cost = if off > 0.0 {
                (1.0 - on / off) * 100.0
            } else {
                0.0
            };
            let (pon, poff) = (
                prefix("fanout-search", "livehub-sqlite", p),
                prefix("fanout-search", "livehub-nolog", p),
            );
            // Both at the search's ceiling says nothing about the log's cost.
            let note = if !poff.is_empty() {
                " (EVENT_LOG=off reached the search's ceiling)"
            } else {
                ""
            };
            // With EVENT_LOG=off only a lower bound, the true cost may be higher.
            let verdict = match (cost <= 15.0, poff.is_empty()) {
                (false, _) => Verdict::NotMet,
                (true, true) => Verdict::Met,
                (true, false) => Verdict::Open,
            };
            Some((
                format!(
                    "{pon}{} vs {poff}{} emits/s: {cost:.1} %{note}",
                    fmt(on, 0),
                    fmt(off, 0)
                ),
                verdict,
            ))
        })(),
    );
    target_row(
        md,
        &format!(
            "durable log costs ≤ 15 % of fan-out throughput, by server CPU per delivery ({})",
            label("log-cost")
        ),
        (|| {
            let p = "/trial/server_cpu_us_per_delivery";
            let on = med("log-cost", "livehub-sqlite", p)?;
            let off = med("log-cost", "livehub-nolog", p)?;
            // With the cores saturated, throughput falls as CPU per delivery
            // grows: the log's share of the CPU is the throughput it costs.
            let cost = (1.0 - off / on) * 100.0;
            Some((
                format!("{} vs {} µs: {cost:.1} %", fmt(on, 3), fmt(off, 3)),
                cost <= 15.0,
            ))
        })(),
    );
    for (case, server) in [
        ("replay-user", "livehub-sqlite"),
        ("replay-user", "livehub-pg"),
    ] {
        if server == "livehub-pg" && cell(case, server).is_none() {
            continue;
        }
        let name = SERVERS
            .iter()
            .find(|s| s.0 == server)
            .map_or(server, |s| s.1);
        target_row(
            md,
            &format!("{} on {name}: < 1 s", label(case)),
            (|| {
                let c = cell(case, server)?;
                let ms = c.median("/replay_ms")?;
                let complete = c.values("/complete").iter().all(|&v| v == 1.0);
                let note = if complete {
                    ""
                } else {
                    ", some rounds incomplete"
                };
                Some((format!("{ms:.0} ms{note}"), ms < 1000.0 && complete))
            })(),
        );
    }
    target_row(
        md,
        &format!(
            "{}: every client caught up, nothing missing or twice",
            label("reconnect-storm")
        ),
        (|| {
            let c = cell("reconnect-storm", "livehub-sqlite")?;
            let ms = c.max("/all_caught_up_ms");
            let ok = c.values("/ok").iter().all(|&v| v == 1.0) && ms.is_some();
            let text = match ms {
                Some(ms) => format!(
                    "all caught up {} s after the drop (slowest round)",
                    fmt(ms / 1000.0, 1)
                ),
                None => "some clients never caught up".to_string(),
            };
            let text = if ok {
                text
            } else {
                format!("{text}; events missing or twice")
            };
            Some((text, ok))
        })(),
    );
    let _ = writeln!(md);
}

fn table(md: &mut String, case: &Case) {
    let metrics = metrics(&case.scenario);
    let _ = writeln!(md, "### {}\n", case.label);
    let _ = write!(md, "| server |");
    for m in metrics {
        let _ = write!(md, " {} |", m.label);
    }
    let _ = write!(md, "\n|---|");
    for _ in metrics {
        let _ = write!(md, "---:|");
    }
    let _ = writeln!(md);
    let known: Vec<&str> = SERVERS.iter().map(|s| s.0).collect();
    let mut servers: Vec<(&str, &str)> = SERVERS
        .iter()
        .filter(|(k, _)| case.cells.contains_key(*k))
        .copied()
        .collect();
    servers.extend(
        case.cells
            .keys()
            .filter(|k| !known.contains(&k.as_str()))
            .map(|k| (k.as_str(), k.as_str())),
    );
    for (key, name) in servers {
        let cell = &case.cells[key];
        let rounds = cell.results.len();
        let _ = write!(md, "| {name} |");
        for m in metrics {
            let v = cell.values(m.path);
            let text = match median(&v) {
                None => "—".to_string(),
                Some(med) => {
                    let (lo, hi) = (v[0], v[v.len() - 1]);
                    let mut t = format!("{}{}", cell.bound_prefix(m.path), fmt(med, m.decimals));
                    if rounds > 1 {
                        let _ = write!(t, " ({}–{})", fmt(lo, m.decimals), fmt(hi, m.decimals));
                    }
                    if v.len() < rounds {
                        let _ = write!(t, " [{}/{rounds}]", v.len());
                    }
                    t
                }
            };
            let _ = write!(md, " {text} |");
        }
        let _ = writeln!(md);
    }
    let _ = writeln!(md);
}

fn method(md: &mut String) {
    md.push_str(
        "## How each figure is measured\n\n\
All load comes from `bench/loadgen`, a Rust program that speaks Engine.IO v4 / Socket.IO v5 \
over websocket itself (no JS client, which would be the bottleneck), on 127.0.0.1. User tokens \
are HS256 JWTs sent as `auth.token`; the controller uses `POST /api/v1/emit` with a Bearer API \
key over a pool of keep-alive HTTP/1.1 connections.\n\n\
- **Fan-out search**: N sockets join `shipment:BENCH` (`join:shipment`, with ack). The \
controller emits `shipment:updated {shipmentId, trial, seq, sentAt}` at a fixed rate for a fixed \
time, open loop: emit *i* is due at *start + i/R* whatever happened to earlier ones, and `sentAt` \
is that scheduled time, so queueing anywhere counts as latency. Every socket counts each `seq` \
it receives and records now − `sentAt`. A trial passes when every emit was accepted, every \
socket got every `seq` (checked per `seq`) and no socket dropped, with p99 under the bound. The \
rate doubles until a trial fails, then the bracket is bisected (to within 5 % in a full run), first for \
100 ms, then for 50 ms, within a fixed number of trials.\n\
- **Fan-out at a fixed rate**: the same, one warm-up trial then one measured trial. The \
server's CPU time (user + system, all threads, from `/proc/<pid>/stat`) over the measured trial, \
divided by the deliveries, is its CPU per delivery.\n\
- **Log cost at a fixed load**: the fixed-rate fan-out at a load both settings carry, livehub \
with its SQLite log and with `EVENT_LOG=off`; the log's cost is the share of CPU per delivery \
it adds (1 − off/on). On a machine the server and the load generator saturate together, that \
share is the throughput the log costs, and it varies far less from run to run than the \
search's highest rate, which is a latency bound.\n\
- **Idle**: N sockets connect and authenticate, then stay silent (answering heartbeats). \
Server RSS (`VmRSS` from `/proc/<pid>/status`) is read before and after; the difference over N \
is the cost per connection. A warm-up batch is opened and closed first.\n\
- **Connect storm**: C workers loop TCP connect → websocket upgrade → `40{token}` → server's \
`40` → `41` and close, each with a new token (a new `sub`, with a `branchId`, so livehub also \
joins the branch room and records `online` and `offline` for the other workers' sockets in it; \
livehub holds a status 50 ms and a user who came and went within that is never announced, so \
few of these go out); completed handshakes per second. livehub runs once more with \
`PRESENCE_BROADCAST_LIMIT=0`, which turns the automatic statuses off, to show what they cost.\n\
- **Emit API**: C keep-alive clients post `shipment:updated` back to back (closed loop) to rooms \
with no members: accepted emits per second and request latency. With the SQLite log, the \
PostgreSQL log, and `EVENT_LOG=off`.\n\
- **Replay** (livehub only: the Node peer has no durable log, so nothing to replay): a client \
connects, learns its offset from an event, leaves; the controller emits N events to `user:{sub}` \
through `POST /api/v1/emit/batch` (1,000 per request); the client reconnects with \
`auth.offset` and the clock runs from the TCP connect to the N-th event, which must all be \
marked `replayed: true` and arrive in order.\n\
- **Reconnect storm** (livehub only, for the same reason): N users of one branch are connected \
with `auth.offset` while the controller emits numbered `dashboard:refresh` events to the branch \
at a steady rate. After a warm-up every TCP connection closes at the same moment, without a \
goodbye; each client waits as socket.io-client's default reconnection does (1 s ± 50 %, \
doubling up to 5 s after a failed attempt) and reconnects with the offset of the last event it \
saw, while the emits go on. A client has caught up when it holds, with no gap, every event due \
before its reconnect was answered; the figure is the time from the drop to the last client \
caught up. At the end every client's `seq`s are checked against every emit: missing and \
duplicates must be 0. The emit p99 is the controller's: scheduled time to `202`, over the whole \
run, storm included.\n\n\
The Node peer is one Node.js process (how a Node team runs socket.io without a Redis adapter and \
sticky sessions) with `socket.io` 4.x, `jsonwebtoken` in an `io.use` middleware, and plain \
`node:http` for the emit route. It implements only the slice the scenarios use: no presence \
events, no event log.\n\n\
Raw results of every run stay in `bench/results/<run>/` (not committed).\n",
    );
}
