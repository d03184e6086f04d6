//! One clock for "sent at" and "received at".
//!
//! Publish→receive latency compares a timestamp the controller puts in the
//! event with the time a socket reads it, both in this process. Both come from
//! the monotonic clock, mapped once onto Unix time, so a wall-clock step (NTP)
//! during a run cannot produce negative or inflated latencies, while the value
//! in the payload still reads as an ordinary nanosecond timestamp.

use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

struct Anchor {
    instant: Instant,
    unix_ns: u64,
}

fn anchor() -> &'static Anchor {
    static ANCHOR: OnceLock<Anchor> = OnceLock::new();
    ANCHOR.get_or_init(|| Anchor {
        instant: Instant::now(),
        unix_ns: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0),
    })
}

/// Unix nanoseconds of a monotonic instant (taken after the anchor).
pub fn unix_ns_at(t: Instant) -> u64 {
    let a = anchor();
    a.unix_ns + t.saturating_duration_since(a.instant).as_nanos() as u64
}

/// Unix nanoseconds now.
pub fn now_ns() -> u64 {
    unix_ns_at(Instant::now())
}

/// Fixes the anchor; call before any instant that [`unix_ns_at`] will see.
pub fn init() {
    anchor();
}
