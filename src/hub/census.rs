//! This node's counts of connections and rooms, for `/health`, `/metrics` and
//! the Admin UI.
//!
//! Counting rooms means walking every socket's rooms, O(sockets × rooms): too
//! dear for routes anyone may call as often as they like. So the last count is
//! kept, and walked again only when a connection opened or closed or a join or
//! leave went through the hub since, or when it is [`MAX_AGE`] old (rooms also
//! empty as socketioxide removes a socket that left, which nothing here sees).
//! Calls that change nothing cost one comparison; the number of open
//! connections is a counter the fronts keep exact.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::fabric::Census;

/// The oldest a count may be when nothing was seen to change.
pub(crate) const MAX_AGE: Duration = Duration::from_secs(2);

/// The counts, as kept by the fronts and the hub.
#[derive(Default)]
pub(crate) struct CensusBoard {
    /// Connections of every front, counted as they open and close.
    open: AtomicUsize,
    /// Bumped by every change the walk would see.
    changes: AtomicUsize,
    /// The last walk: its result, the change count it saw, and when.
    last: Mutex<Option<(Census, usize, Instant)>>,
}

impl CensusBoard {
    /// A connection opened; it is counted until the returned guard is dropped.
    pub(crate) fn opened(self: &Arc<Self>) -> OpenConnection {
        self.open.fetch_add(1, Ordering::AcqRel);
        self.changed();
        OpenConnection(self.clone())
    }

    /// Rooms changed: the next count walks again.
    pub(crate) fn changed(&self) {
        self.changes.fetch_add(1, Ordering::AcqRel);
    }

    /// Connections open now, exactly.
    pub(crate) fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// The counts: the last walk's, or a new one's (`walk`) when something
    /// changed since or the last is [`MAX_AGE`] old. One caller walks at a
    /// time; the others wait for its result.
    pub(crate) fn current(&self, walk: impl FnOnce() -> Census) -> Census {
        let mut last = self.last.lock();
        let changes = self.changes.load(Ordering::Acquire);
        match *last {
            Some((census, seen, at)) if seen == changes && at.elapsed() < MAX_AGE => census,
            _ => {
                let census = walk();
                *last = Some((census, changes, Instant::now()));
                census
            }
        }
    }
}

/// One counted connection: dropping it counts the close.
pub(crate) struct OpenConnection(Arc<CensusBoard>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
        self.0.changed();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_connections_are_counted_until_their_guard_drops() {
        let board = Arc::new(CensusBoard::default());
        let a = board.opened();
        let b = board.opened();
        assert_eq!(board.open(), 2);
        drop(a);
        assert_eq!(board.open(), 1);
        drop(b);
        assert_eq!(board.open(), 0);
    }

    #[test]
    fn rooms_are_walked_again_only_after_a_change_or_when_old() {
        let board = Arc::new(CensusBoard::default());
        let walks = AtomicUsize::new(0);
        let walk = || Census {
            rooms: walks.fetch_add(1, Ordering::AcqRel) + 1,
            ..Census::default()
        };
        assert_eq!(board.current(walk).rooms, 1, "the first call walks");
        for _ in 0..100 {
            assert_eq!(
                board.current(walk).rooms,
                1,
                "calls that change nothing do not"
            );
        }
        board.changed();
        assert_eq!(board.current(walk).rooms, 2, "a join or leave walks again");
        let conn = board.opened();
        assert_eq!(board.current(walk).rooms, 3, "so does a connection");
        drop(conn);
        assert_eq!(board.current(walk).rooms, 4, "and its close");
        if let Some((_, _, at)) = board.last.lock().as_mut() {
            *at -= MAX_AGE;
        }
        assert_eq!(board.current(walk).rooms, 5, "an old count is walked again");
    }
}
