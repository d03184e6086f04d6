//! Hand-offs from the log writer's thread to tasks on the shared runtime,
//! woken through the runtime's I/O driver.
//!
//! The writer runs on a thread of its own (`lane.rs`). A task it wakes directly
//! (a channel send) joins the runtime's shared queue, and under fan-out that
//! queue holds the previous event's write tasks, one per socket: what a
//! worker's own queue (256 tasks) cannot hold spills there. The deliverer then
//! started each event 18–20 ms after the commit (`livehub_delivery_wait_seconds`
//! at 5,000 sockets × 50 emits/s), behind thousands of writes.
//!
//! A readiness event is different. A worker polls the I/O driver whenever it
//! would park and every few tasks while it is busy (15, set in `cli.rs`;
//! tokio's default is 61), and what that poll wakes is
//! scheduled on the polling worker itself, next in line. So a [`Sender`] puts
//! the item on a channel whose receiver never waits on it (a send wakes
//! nobody) and writes one byte to a socket pair; the [`Receiver`] waits for
//! that socket to be readable.

use std::io::{ErrorKind, Write};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::sync::Arc;

use tokio::net::UnixStream;
use tokio::sync::mpsc;

/// A bounded hand-off. Must be called on the runtime the receiver runs on.
pub(crate) fn channel<T>(depth: usize) -> std::io::Result<(Sender<T>, Receiver<T>)> {
    let (bell, door) = StdUnixStream::pair()?;
    bell.set_nonblocking(true)?;
    door.set_nonblocking(true)?;
    let (tx, rx) = mpsc::channel(depth);
    Ok((
        Sender {
            tx,
            bell: Arc::new(bell),
        },
        Receiver {
            rx,
            door: UnixStream::from_std(door)?,
        },
    ))
}

/// The sending half, for the log writer's thread.
pub(crate) struct Sender<T> {
    tx: mpsc::Sender<T>,
    bell: Arc<StdUnixStream>,
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        Sender {
            tx: self.tx.clone(),
            bell: self.bell.clone(),
        }
    }
}

/// The receiving half, on the shared runtime.
pub(crate) struct Receiver<T> {
    /// Only ever read with `try_recv`: it never holds a waker to wake.
    rx: mpsc::Receiver<T>,
    door: UnixStream,
}

impl<T> Sender<T> {
    /// Queues `item` (waiting while the channel is full) and rings. `false`
    /// when the receiver is gone.
    pub(crate) async fn send(&self, item: T) -> bool {
        if self.tx.send(item).await.is_err() {
            return false;
        }
        self.ring();
        true
    }

    /// Never blocks: a full socket buffer means unread rings are already waiting.
    fn ring(&self) {
        match (&*self.bell).write(&[1]) {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            // The receiver is gone, and nothing waits for the ring.
            Err(e) => tracing::debug!(error = %e, "a hand-off's doorbell is closed"),
        }
    }
}

impl<T> Receiver<T> {
    /// The next item, waiting for a ring when there is none. `None` once every
    /// sender is dropped and the channel is empty.
    pub(crate) async fn recv(&mut self) -> Option<T> {
        loop {
            match self.rx.try_recv() {
                Ok(item) => return Some(item),
                Err(mpsc::error::TryRecvError::Disconnected) => return None,
                Err(mpsc::error::TryRecvError::Empty) => {}
            }
            if !self.rung().await {
                return self.rx.try_recv().ok();
            }
        }
    }

    /// An item already queued, without waiting.
    pub(crate) fn try_recv(&mut self) -> Option<T> {
        self.rx.try_recv().ok()
    }

    /// Waits for at least one ring since the last wait ended, and takes every
    /// ring up to now. `false` once every sender is dropped. Cancel-safe.
    async fn rung(&self) -> bool {
        let mut buf = [0u8; 64];
        loop {
            if self.door.readable().await.is_err() {
                return false;
            }
            let mut rung = false;
            loop {
                match self.door.try_read(&mut buf) {
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

    /// `send` from a thread outside the runtime, as the log writer does.
    fn send_from_another_thread(tx: &Sender<u32>, items: Vec<u32>) {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            for item in items {
                assert!(runtime.block_on(tx.send(item)));
            }
        })
        .join()
        .unwrap();
    }

    #[tokio::test]
    async fn items_sent_from_another_thread_arrive_in_order_and_wake_the_receiver() {
        let (tx, mut rx) = channel(8).unwrap();
        let waiting = tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(item) = rx.recv().await {
                got.push(item);
            }
            got
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        send_from_another_thread(&tx, vec![1, 2, 3]);
        send_from_another_thread(&tx, vec![4]);
        drop(tx);
        let got = tokio::time::timeout(Duration::from_secs(5), waiting).await;
        assert_eq!(got.expect("the receiver was woken").unwrap(), [1, 2, 3, 4]);
    }

    #[tokio::test]
    async fn several_rings_before_a_wait_open_it_once() {
        let (tx, rx) = channel(8).unwrap();
        send_from_another_thread(&tx, vec![1, 2]);
        assert!(rx.rung().await, "the rings opened the door");
        let again = tokio::time::timeout(Duration::from_millis(100), rx.rung()).await;
        assert!(again.is_err(), "two rings before a wait open it once");
    }

    #[tokio::test]
    async fn the_receiver_says_so_when_every_sender_is_gone() {
        let (tx, rx) = channel::<u32>(8).unwrap();
        drop(tx);
        assert!(!rx.rung().await);
    }
}
