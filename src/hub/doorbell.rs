//! The log writer's hand-off to the deliverer, rung through the runtime's I/O
//! driver.
//!
//! The writer runs on a thread of its own (`lane.rs`). A task it wakes directly
//! (a channel send) joins the runtime's shared queue, and under fan-out that
//! queue holds the previous event's write tasks, one per socket: what a
//! worker's own queue (256 tasks) cannot hold spills there. The deliverer then
//! started each event 18–20 ms after the commit (`livehub_delivery_wait_seconds`
//! at 5,000 sockets × 50 emits/s), behind thousands of writes.
//!
//! A readiness event is different. A worker polls the I/O driver whenever it
//! would park and every 61 tasks while it is busy, and what that poll wakes is
//! scheduled on the polling worker itself, next in line. So the writer puts the
//! events in a channel that wakes nobody and writes one byte to a socket pair;
//! the deliverer waits for that socket to be readable.

use std::io::{ErrorKind, Write};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::sync::Arc;

use tokio::net::UnixStream;

/// The ringing end, for the log writer's thread.
#[derive(Clone)]
pub(crate) struct Bell(Arc<StdUnixStream>);

/// The end the deliverer waits on. Registered with the runtime it is made on.
pub(crate) struct Door(UnixStream);

/// A bell and its door. Must be called on the runtime the door is waited on.
pub(crate) fn doorbell() -> std::io::Result<(Bell, Door)> {
    let (bell, door) = StdUnixStream::pair()?;
    bell.set_nonblocking(true)?;
    door.set_nonblocking(true)?;
    Ok((Bell(Arc::new(bell)), Door(UnixStream::from_std(door)?)))
}

impl Bell {
    /// Wakes the door's waiter, or leaves it woken. Never blocks: a full
    /// socket buffer means unread rings are already waiting.
    pub(crate) fn ring(&self) {
        match (&*self.0).write(&[1]) {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            // The door is gone: so is the deliverer, and nothing waits.
            Err(e) => tracing::debug!(error = %e, "the deliverer's doorbell is closed"),
        }
    }
}

impl Door {
    /// Waits for at least one ring since the last wait ended, and takes every
    /// ring up to now. Returns `false` once every bell is dropped.
    pub(crate) async fn rung(&self) -> bool {
        let mut buf = [0u8; 64];
        loop {
            if self.0.readable().await.is_err() {
                return false;
            }
            let mut rung = false;
            loop {
                match self.0.try_read(&mut buf) {
                    Ok(0) => return rung,
                    Ok(_) => rung = true,
                    // Read to the end of what was rung: readiness is cleared.
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => return false,
                }
            }
            if rung {
                return true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_ring_from_another_thread_opens_the_door_once() {
        let (bell, door) = doorbell().unwrap();
        let ringer = bell.clone();
        std::thread::spawn(move || {
            ringer.ring();
            ringer.ring();
        })
        .join()
        .unwrap();
        assert!(door.rung().await, "the rings opened the door");
        let again = tokio::time::timeout(Duration::from_millis(100), door.rung()).await;
        assert!(again.is_err(), "two rings before a wait open it once");
        drop(bell);
    }

    #[tokio::test]
    async fn the_door_says_so_when_every_bell_is_gone() {
        let (bell, door) = doorbell().unwrap();
        drop(bell);
        assert!(!door.rung().await);
    }
}
