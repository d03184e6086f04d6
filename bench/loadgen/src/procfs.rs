//! Memory and CPU time of a process, from /proc (Linux only, like the benchmark).

use anyhow::{Context, bail};

/// Resident set size of `pid` in KiB (`VmRSS` in /proc/<pid>/status).
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status (is the server running?)"))?;
    for line in status.lines() {
        if let Some(rest) = line.strip_prefix("VmRSS:") {
            let kib = rest.trim().trim_end_matches("kB").trim();
            return kib.parse().with_context(|| format!("VmRSS value {kib:?}"));
        }
    }
    bail!("no VmRSS in /proc/{pid}/status")
}

/// This process's own RSS in KiB (0 if unreadable: informational only).
pub fn own_rss_kib() -> u64 {
    rss_kib(std::process::id()).unwrap_or(0)
}

/// CPU time `pid` has used so far, user and system, all its threads (dead
/// ones included), in seconds: `utime + stime` of /proc/<pid>/stat, in the
/// kernel's USER_HZ ticks (100 per second on Linux, whatever the kernel's HZ).
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    const USER_HZ: f64 = 100.0;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat (is the server running?)"))?;
    // The command name may hold spaces and parentheses: fields count from the last ')'.
    let after_name = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // After the name: state is field 3 of the man page, utime 14, stime 15.
    let tick = |field: usize| -> anyhow::Result<f64> {
        let v = fields
            .get(field - 3)
            .with_context(|| format!("field {field} of /proc/{pid}/stat"))?;
        Ok(v.parse::<u64>()
            .with_context(|| format!("field {field} value {v:?}"))? as f64)
    };
    Ok((tick(14)? + tick(15)?) / USER_HZ)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_cpu_time_is_read_and_grows_with_work() {
        // Spins until the reading moves (not for a fixed time: on a busy
        // machine 300 ms of wall time can be little CPU time).
        let me = std::process::id();
        let before = cpu_seconds(me).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let mut x = 0u64;
        let mut after = before;
        while after - before < 0.1 && std::time::Instant::now() < deadline {
            for _ in 0..1_000_000 {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            }
            after = cpu_seconds(me).unwrap();
        }
        std::hint::black_box(x);
        assert!(
            after - before >= 0.1,
            "{before} -> {after} after 20 s of spinning"
        );
    }
}
