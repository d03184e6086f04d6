//! Limits that protect everyone else from one client: events per minute per
//! socket, connections per address.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use dashmap::DashMap;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

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

/// Open connections per client address.
#[derive(Default, Clone)]
pub struct ConnectionsPerIp {
    counts: Arc<DashMap<IpAddr, u32>>,
}

/// One counted connection. It is given back when released or dropped, so a
/// socket that socketioxide discards without a disconnect (its CONNECT packet
/// could not be sent: the client vanished during authentication) still frees
/// its address's slot when the socket is freed.
pub struct ConnectionSlot {
    counts: Arc<DashMap<IpAddr, u32>>,
    ip: IpAddr,
    released: AtomicBool,
}

impl ConnectionSlot {
    /// Gives the slot back (once; later calls do nothing).
    pub fn release(&self) {
        if self.released.swap(true, Ordering::AcqRel) {
            return;
        }
        if let dashmap::Entry::Occupied(mut e) = self.counts.entry(self.ip) {
            *e.get_mut() -= 1;
            if *e.get() == 0 {
                e.remove();
            }
        }
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.release();
    }
}

impl ConnectionsPerIp {
    /// Counts a new connection from `ip`, unless `cap` (non-zero) is reached.
    pub fn acquire(&self, ip: IpAddr, cap: u32) -> Option<ConnectionSlot> {
        let mut count = self.counts.entry(ip).or_insert(0);
        if cap > 0 && *count >= cap {
            return None;
        }
        *count += 1;
        Some(ConnectionSlot {
            counts: self.counts.clone(),
            ip,
            released: AtomicBool::new(false),
        })
    }

    /// Addresses with at least one connection.
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
    fn connection_cap_counts_per_address() {
        let c = ConnectionsPerIp::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = c.acquire(a, 2).unwrap();
        let a2 = c.acquire(a, 2).unwrap();
        assert!(c.acquire(a, 2).is_none());
        let b1 = c.acquire(b, 2).unwrap();
        a1.release();
        a1.release();
        let a3 = c.acquire(a, 2).expect("a released slot is free again");
        assert!(
            c.acquire(a, 2).is_none(),
            "a second release gives nothing back"
        );
        drop(a1);
        assert!(
            c.acquire(a, 2).is_none(),
            "dropping a released slot gives nothing back"
        );
        drop(a2);
        a3.release();
        drop(b1);
        assert_eq!(c.addresses(), 0, "dropped slots are given back");
        assert!(c.acquire(a, 0).is_some(), "0 means no cap");
    }
}
