//! The machine and versions a run measured, for the report's header.

use std::path::PathBuf;
use std::process::Command;

use serde_json::{Value, json};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The livehub checkout under test.
    #[arg(long)]
    pub repo: PathBuf,
    /// The Node peer's directory (its installed socket.io is reported).
    #[arg(long)]
    pub node_peer: PathBuf,
    /// The command line that started the run, as typed.
    #[arg(long)]
    pub command: String,
    #[arg(long)]
    pub rounds: u32,
    #[arg(long)]
    pub quick: bool,
    /// The PostgreSQL server's version, or why it was not measured.
    #[arg(long, default_value = "not used")]
    pub postgres: String,
}

fn output(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

fn proc_field(file: &str, key: &str) -> String {
    std::fs::read_to_string(file)
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

pub fn collect(a: Args) -> anyhow::Result<Value> {
    let repo = a.repo.to_string_lossy().to_string();
    let mut commit = output("git", &["-C", &repo, "rev-parse", "--short=12", "HEAD"]);
    // Uncommitted changes outside bench/ change what was measured: say so.
    let dirty = output(
        "git",
        &[
            "-C",
            &repo,
            "status",
            "--porcelain",
            "--untracked-files=no",
            "--",
            ".",
            ":!bench",
        ],
    );
    if !dirty.is_empty() && dirty != "unknown" {
        commit.push_str(" (with uncommitted changes)");
    }
    let socket_io =
        std::fs::read_to_string(a.node_peer.join("node_modules/socket.io/package.json"))
            .ok()
            .and_then(|s| serde_json::from_str::<Value>(&s).ok())
            .and_then(|v| v["version"].as_str().map(String::from))
            .unwrap_or_else(|| "unknown".into());
    let mem_kib: f64 = proc_field("/proc/meminfo", "MemTotal")
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap_or(0.0);
    Ok(json!({
        "date": output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        "command": a.command,
        "rounds": a.rounds,
        "quick": a.quick,
        "machine": {
            "nproc": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "cpu": proc_field("/proc/cpuinfo", "model name"),
            "ram_gib": (mem_kib / 1024.0 / 1024.0 * 10.0).round() / 10.0,
            "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
        },
        "versions": {
            "livehub": commit,
            "rustc": output("rustc", &["--version"]),
            "node": output("node", &["--version"]),
            "socket.io": socket_io,
            "postgresql": a.postgres,
        },
    }))
}
