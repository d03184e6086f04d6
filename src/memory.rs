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
//!
//! Hash tables keep the room of their busiest moment: livehub's maps of
//! connections, users and rooms give it back once they are under a quarter
//! full ([`give_back_room`]).
//!
//! Last, an object that outlives a burst keeps its whole allocator page
//! (64 KiB) resident once the burst's short-lived objects around it are
//! freed. So what livehub keeps for long is allocated away from the fan-out:
//! the recent events on the log writer's thread (`hub::log::kept`). And SQLite,
//! which allocates in the C library's heap, gives its page caches back when
//! the log is quiet ([`give_back_c_heap`]). docs/memory-profile.md has what
//! stays: mostly socketioxide's maps, which it never shrinks.

use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hash};
use std::time::{Duration, Instant};

use dashmap::DashMap;

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
    give_back_c_heap();
}

#[cfg(not(any(feature = "mimalloc", all(target_os = "linux", target_env = "gnu"))))]
fn tidy() {}

/// Returns the C heap's free memory to the system. SQLite allocates there
/// (the system `malloc`) even when Rust's allocator is mimalloc, and glibc
/// keeps what SQLite frees until it is trimmed.
pub(crate) fn give_back_c_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own arenas.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Turns transparent huge pages off for this process (Linux; elsewhere
/// nothing). Call first thing, so that no arena gets them.
pub(crate) fn no_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE only sets a flag of this process; it takes no pointers.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

/// A hash table that can be asked to give back room it no longer needs.
///
/// Hash tables keep the capacity of their busiest moment: once 5,000 clients
/// have come and gone, every map sized for them would keep its table for good
/// (measured after `bench/memory-back.sh`: about a megabyte in livehub's own
/// maps, beside what socketioxide's room maps keep). Maps of connections,
/// users and rooms call [`give_back_room`] where entries leave.
pub(crate) trait Sparse {
    /// Entries held.
    fn held(&self) -> usize;
    /// Entries there is room for without growing.
    fn room(&self) -> usize;
    /// Shrinks to what the entries need.
    fn shrink(&mut self);
}

/// The standard tables, both the same way.
macro_rules! sparse_tables {
    ($($table:ident<$($param:ident),+>),+) => {$(
        impl<$($param),+> Sparse for $table<$($param),+>
        where
            K: Eq + Hash,
            S: BuildHasher,
        {
            fn held(&self) -> usize {
                self.len()
            }
            fn room(&self) -> usize {
                self.capacity()
            }
            fn shrink(&mut self) {
                self.shrink_to_fit();
            }
        }
    )+};
}
sparse_tables!(HashMap<K, V, S>, HashSet<K, S>);

/// Shrinks `table` once it holds under a quarter of its room. The quarter
/// leaves a shrunk table room to grow before its next resize, so a table whose
/// size hovers does not shrink and regrow back and forth.
pub(crate) fn give_back_room(table: &mut impl Sparse) {
    if is_sparse(table.held(), table.room()) {
        table.shrink();
    }
}

/// [`give_back_room`] for a map shared between threads (each of its shards
/// is locked in turn, never all at once).
pub(crate) fn give_back_shared_room<K, V, S>(map: &DashMap<K, V, S>)
where
    K: Eq + Hash,
    S: BuildHasher + Clone,
{
    if is_sparse(map.len(), map.capacity()) {
        map.shrink_to_fit();
    }
}

/// Tables with room for fewer entries than this keep it: regrowing them would
/// cost more than they hold.
const KEEP_ROOM_FOR: usize = 256;

fn is_sparse(held: usize, room: usize) -> bool {
    room > KEEP_ROOM_FOR && held * 4 < room
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_that_emptied_gives_its_room_back() {
        let mut map: HashMap<u32, u64> = (0..10_000).map(|i| (i, 0)).collect();
        map.retain(|k, _| *k < 100);
        give_back_room(&mut map);
        assert!(map.capacity() < 1_000, "room for {}", map.capacity());
        assert_eq!(map.len(), 100, "entries stay");

        let shared: DashMap<u32, u64> = (0..10_000).map(|i| (i, 0)).collect();
        shared.retain(|k, _| *k < 10);
        give_back_shared_room(&shared);
        assert!(shared.capacity() < 1_000, "room for {}", shared.capacity());
        assert_eq!(shared.len(), 10);
    }

    #[test]
    fn a_table_still_a_quarter_full_or_small_keeps_its_room() {
        let mut busy: HashSet<u32> = (0..10_000).collect();
        busy.retain(|k| *k < 4_000);
        give_back_room(&mut busy);
        // Shrunk, it would have room for about 7,000 (a table of 8,192).
        assert!(busy.capacity() > 10_000, "over a quarter full: no resize");

        let mut small: HashSet<u32> = (0..200).collect();
        let room = small.capacity();
        small.clear();
        give_back_room(&mut small);
        assert_eq!(small.capacity(), room, "too small to be worth a resize");
    }
}
