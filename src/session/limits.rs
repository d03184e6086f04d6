//! Limits that protect everyone else from one client: events per minute per
//! socket, connections per address — and the keyed counter they count with.

use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use dashmap::DashMap;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use parking_lot::Mutex;

use crate::hub::OpenConnection;

/// A socket's budget of client events: `RATE_LIMIT_PER_MINUTE`, refilled
/// continuously, with the whole minute's budget available as a burst.
pub struct EventLimiter(DefaultDirectRateLimiter);

impl EventLimiter {
    /// `None` when the limit is off (0).
    pub fn per_minute(n: u32) -> Option<EventLimiter> {
        NonZeroU32::new(n).map(|n| EventLimiter(RateLimiter::direct(Quota::per_minute(n))))
    }

    /// Takes one event from the budget; `false` when it is spent.
    pub fn allow(&self) -> bool {
        self.0.check().is_ok()
    }
}

/// Live counts per key (connections per address, sockets per branch). A key
/// is dropped when its count falls back to zero, so the map holds only what is
/// open now.
pub struct CountsByKey<K: Eq + Hash>(DashMap<K, usize>);

impl<K: Eq + Hash> Default for CountsByKey<K> {
    fn default() -> Self {
        CountsByKey(DashMap::new())
    }
}

impl<K: Eq + Hash + Clone> CountsByKey<K> {
    /// Adds one to `key` unless `cap` (non-zero) is reached: the count after.
    pub fn increment(&self, key: K, cap: usize) -> Option<usize> {
        let mut count = self.0.entry(key).or_insert(0);
        if cap > 0 && *count >= cap {
            return None;
        }
        *count += 1;
        Some(*count)
    }

    /// Takes one from `key`: the count after (0 for a key that is not counted).
    pub fn decrement(&self, key: &K) -> usize {
        let left = match self.0.entry(key.clone()) {
            dashmap::Entry::Occupied(mut e) => {
                *e.get_mut() -= 1;
                let left = *e.get();
                if left == 0 {
                    e.remove();
                }
                left
            }
            dashmap::Entry::Vacant(_) => return 0,
        };
        if left == 0 {
            // The entry (and its shard's lock) is gone by now.
            crate::memory::give_back_shared_room(&self.0);
        }
        left
    }

    /// Keys with a count above zero.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether nothing is counted.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Open connections per client address.
#[derive(Default)]
pub struct ConnectionsPerIp {
    counts: Arc<CountsByKey<IpAddr>>,
}

/// One counted connection. It is given back when released or dropped, so a
/// socket that socketioxide discards without a disconnect (its CONNECT packet
/// could not be sent: the client vanished during authentication) still frees
/// its address's slot when the socket is freed.
pub struct ConnectionSlot {
    counts: Arc<CountsByKey<IpAddr>>,
    ip: IpAddr,
    released: AtomicBool,
    /// The node's count of open connections, given back with the slot.
    open: Mutex<Option<OpenConnection>>,
}

impl ConnectionSlot {
    /// Gives the slot back (once; later calls do nothing).
    pub fn release(&self) {
        if !self.released.swap(true, Ordering::AcqRel) {
            self.counts.decrement(&self.ip);
            self.open.lock().take();
        }
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.release();
    }
}

impl ConnectionsPerIp {
    /// Counts a new connection from `ip`, unless `cap` (non-zero) is reached;
    /// once admitted, it is also counted by `count` (the node's open connections).
    pub fn acquire(
        &self,
        ip: IpAddr,
        cap: u32,
        count: impl FnOnce() -> Option<OpenConnection>,
    ) -> Option<ConnectionSlot> {
        self.counts.increment(ip, cap as usize)?;
        Some(ConnectionSlot {
            counts: self.counts.clone(),
            ip,
            released: AtomicBool::new(false),
            open: Mutex::new(count()),
        })
    }

    /// Addresses with at least one connection.
    #[cfg(test)]
    pub fn addresses(&self) -> usize {
        self.counts.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_is_spent_then_refused() {
        let l = EventLimiter::per_minute(5).unwrap();
        assert_eq!((0..10).filter(|_| l.allow()).count(), 5);
        assert!(EventLimiter::per_minute(0).is_none());
    }

    #[test]
    fn counts_by_key_never_go_below_zero_and_forget_empty_keys() {
        let c = CountsByKey::default();
        assert_eq!(c.increment("x", 0), Some(1));
        assert_eq!(c.increment("x", 0), Some(2));
        assert_eq!(c.increment("y", 0), Some(1));
        assert_eq!(c.increment("y", 1), None, "at the cap");
        assert_eq!(c.decrement(&"x"), 1);
        assert_eq!(c.decrement(&"x"), 0);
        assert_eq!(c.decrement(&"x"), 0, "a key that is not counted stays at 0");
        assert_eq!(c.len(), 1, "an empty key is forgotten");
    }

    #[test]
    fn connection_cap_counts_per_address() {
        let c = ConnectionsPerIp::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = c.acquire(a, 2, || None).unwrap();
        let a2 = c.acquire(a, 2, || None).unwrap();
        assert!(c.acquire(a, 2, || None).is_none());
        let b1 = c.acquire(b, 2, || None).unwrap();
        a1.release();
        a1.release();
        let a3 = c
            .acquire(a, 2, || None)
            .expect("a released slot is free again");
        assert!(
            c.acquire(a, 2, || None).is_none(),
            "a second release gives nothing back"
        );
        drop(a1);
        assert!(
            c.acquire(a, 2, || None).is_none(),
            "dropping a released slot gives nothing back"
        );
        drop(a2);
        a3.release();
        drop(b1);
        assert_eq!(c.addresses(), 0, "dropped slots are given back");
        assert!(c.acquire(a, 0, || None).is_some(), "0 means no cap");
    }
}
