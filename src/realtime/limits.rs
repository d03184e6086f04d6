//! Limits that protect everyone else from one client: events per minute per
//! socket, connections per address.

use std::net::IpAddr;
use std::num::NonZeroU32;

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
#[derive(Default)]
pub struct ConnectionsPerIp {
    counts: DashMap<IpAddr, u32>,
}

impl ConnectionsPerIp {
    /// Counts a new connection from `ip`, unless `cap` (non-zero) is reached.
    pub fn acquire(&self, ip: IpAddr, cap: u32) -> bool {
        let mut count = self.counts.entry(ip).or_insert(0);
        if cap > 0 && *count >= cap {
            return false;
        }
        *count += 1;
        true
    }

    /// Forgets a connection from `ip`.
    pub fn release(&self, ip: IpAddr) {
        if let dashmap::Entry::Occupied(mut e) = self.counts.entry(ip) {
            *e.get_mut() -= 1;
            if *e.get() == 0 {
                e.remove();
            }
        }
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
        assert!(c.acquire(a, 2) && c.acquire(a, 2));
        assert!(!c.acquire(a, 2));
        assert!(c.acquire(b, 2));
        c.release(a);
        assert!(c.acquire(a, 2));
        c.release(a);
        c.release(a);
        c.release(b);
        assert_eq!(c.addresses(), 0);
        assert!(c.acquire(a, 0), "0 means no cap");
    }
}
