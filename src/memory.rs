//! Giving memory back to the system after a burst.
//!
//! When thousands of clients leave, what they used is free, but the allocator
//! keeps it. mimalloc tidies a thread's heap (blocks other threads freed,
//! pages left empty) only when that thread allocates again, and an idle server's
//! workers do not. glibc keeps freed memory in its arenas until it is trimmed.
//! Measured with `bench/memory-back.sh`: 27 MiB before 5,000 sockets came and
//! went, about 290 MiB 30 s after, under either allocator.
//!
//! So every runtime worker, when it runs out of work, asks the allocator to
//! return what it does not use, at most once per [`TIDY_EVERY`]. Under load a
//! worker parks often, and the interval keeps that to a few calls per minute.
//!
//! And livehub runs without transparent huge pages: mimalloc is built not to
//! ask for them on its arenas (its `no_thp` feature), and [`no_huge_pages`]
//! turns them off where the kernel would give them unasked. With them, one
//! live object keeps a whole 2 MiB page resident where 4 KiB would do: the
//! same run came back to 59 MiB from a 29 MiB start with them, 30 MiB from
//! 17 MiB without.

use std::cell::Cell;
use std::time::{Duration, Instant};

/// The least time between two tidy-ups of one worker's heap.
const TIDY_EVERY: Duration = Duration::from_secs(2);

thread_local! {
    static LAST_TIDY: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Called by the runtime when a worker thread parks.
pub(crate) fn worker_parked() {
    let now = Instant::now();
    let due = LAST_TIDY.with(|last| {
        let due = last
            .get()
            .is_none_or(|at| now.duration_since(at) >= TIDY_EVERY);
        if due {
            last.set(Some(now));
        }
        due
    });
    if due {
        tidy();
    }
}

/// Returns the calling thread's free memory to the system.
#[cfg(feature = "mimalloc")]
fn tidy() {
    // SAFETY: mimalloc's own collection entry point, on the calling thread's heap.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

/// Returns free memory of every arena to the system (glibc).
#[cfg(all(not(feature = "mimalloc"), target_os = "linux", target_env = "gnu"))]
fn tidy() {
    // SAFETY: malloc_trim only walks glibc's own arenas.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(any(feature = "mimalloc", all(target_os = "linux", target_env = "gnu"))))]
fn tidy() {}

/// Turns transparent huge pages off for this process (Linux; elsewhere
/// nothing). Call first thing, so that no arena gets them.
pub(crate) fn no_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE only sets a flag of this process; it takes no pointers.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}
