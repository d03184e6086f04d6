//! Which users provably have nothing in their offline queue.
//!
//! A user's offline queue is the events to `user:{id}` after their mark. Finding
//! out costs database reads on every connect: the mark, a count, then the
//! events. In a connect storm of users who are sent nothing, those reads were
//! most of the work, and connections waiting on them piled up in memory (a
//! 20 s storm grew the server to 1.5 GiB with the log on, 36 MiB with it off).
//!
//! So the hub keeps, for every user room, the highest `seq` of an event to it,
//! folded into a fixed table of buckets by a hash of the room. Several rooms
//! share a bucket, so a bucket errs high, never low: "nothing after `seq`"
//! is only ever said when it is true, and a wrong "maybe" only costs the reads
//! it saves otherwise. The table is filled from the log at start-up and kept
//! up by the deliverer, which sees every event (other nodes' too, with a
//! shared log) before its position passes it.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use crate::rooms::USER_PREFIX;

/// Buckets in the table: 1 MiB of address space, touched only where users are.
const BUCKETS: usize = 1 << 17;

pub(crate) struct QuietUsers {
    highs: Box<[AtomicI64]>,
    /// Filled from the log; until then every answer is "maybe".
    ready: AtomicBool,
}

impl Default for QuietUsers {
    fn default() -> Self {
        QuietUsers {
            highs: (0..BUCKETS).map(|_| AtomicI64::new(0)).collect(),
            ready: AtomicBool::new(false),
        }
    }
}

impl QuietUsers {
    /// Records an event at `seq` to `rooms` (the user rooms among them).
    pub(crate) fn record(&self, rooms: &[String], seq: i64) {
        for room in rooms.iter().filter(|r| r.starts_with(USER_PREFIX)) {
            self.highs[bucket(room)].fetch_max(seq, Ordering::Relaxed);
        }
    }

    /// Takes the log's highest `seq` per user room, and starts answering.
    pub(crate) fn fill(&self, highs: impl IntoIterator<Item = (String, i64)>) {
        for (room, seq) in highs {
            self.highs[bucket(&room)].fetch_max(seq, Ordering::Relaxed);
        }
        self.ready.store(true, Ordering::Release);
    }

    /// Whether the log may hold an event to `user_room` after `seq`. Sound for
    /// every event at or before a position read before this call: the
    /// deliverer records an event before its position passes it.
    pub(crate) fn may_have_after(&self, user_room: &str, seq: i64) -> bool {
        !self.ready.load(Ordering::Acquire)
            || self.highs[bucket(user_room)].load(Ordering::Relaxed) > seq
    }
}

/// FNV-1a: stable, fast on short ids, spread well enough for buckets.
fn bucket(room: &str) -> usize {
    let hash = room.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    (hash as usize) & (BUCKETS - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn says_nothing_after_only_when_true() {
        let quiet = QuietUsers::default();
        assert!(
            quiet.may_have_after("user:a", i64::MAX - 1),
            "not filled yet: maybe"
        );
        quiet.fill([("user:a".to_string(), 7)]);
        assert!(quiet.may_have_after("user:a", 6));
        assert!(!quiet.may_have_after("user:a", 7));
        assert!(!quiet.may_have_after("user:never", 0));
        quiet.record(&["branch:1".into(), "user:b".into()], 9);
        assert!(quiet.may_have_after("user:b", 8));
        assert!(!quiet.may_have_after("user:b", 9));
        assert!(
            !quiet.may_have_after("branch:1", 0),
            "only user rooms are kept"
        );
    }

    #[test]
    fn rooms_that_share_a_bucket_err_high() {
        let quiet = QuietUsers::default();
        quiet.fill([]);
        let a = "user:a".to_string();
        let twin = (0..)
            .map(|i| format!("user:{i}"))
            .find(|r| bucket(r) == bucket(&a))
            .unwrap();
        quiet.record(&[twin], 50);
        assert!(quiet.may_have_after(&a, 10), "a maybe, never a wrong no");
    }
}
