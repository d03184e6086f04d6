//! One plain connection's outgoing frames, in order, waiting for its task.
//!
//! A tokio channel allocates its first block of slots (32 of them, about
//! 1.3 KiB here) when it is created, and most connections sit idle for hours.
//! This queue allocates nothing until a frame is waiting, and gives its room
//! back once a burst has been written.

use std::collections::VecDeque;

use parking_lot::Mutex;
use tokio::sync::Notify;

use super::registry::Outgoing;
use crate::hub::fabric::SOCKET_BUFFER_PACKETS;

/// Why a frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// [`SOCKET_BUFFER_PACKETS`] frames are waiting already: the client is too slow.
    Full,
    /// The connection's task has finished.
    Closed,
}

/// Room kept after the queue empties; more is given back.
const KEPT: usize = 16;

#[derive(Default)]
struct Queue {
    frames: VecDeque<Outgoing>,
    closed: bool,
}

impl Queue {
    /// The first frame, giving the room back when that empties a grown queue.
    fn pop(&mut self) -> Option<Outgoing> {
        let frame = self.frames.pop_front();
        if self.frames.is_empty() && self.frames.capacity() > KEPT {
            self.frames = VecDeque::new();
        }
        frame
    }
}

/// Frames for one connection's task: many pushers, one reader.
#[derive(Default)]
pub(crate) struct Outbox {
    queue: Mutex<Queue>,
    waiting: Notify,
}

impl Outbox {
    /// Queues a frame behind the others.
    pub fn push(&self, frame: Outgoing) -> Result<(), Refused> {
        {
            let mut queue = self.queue.lock();
            if queue.closed {
                return Err(Refused::Closed);
            }
            if queue.frames.len() >= SOCKET_BUFFER_PACKETS {
                return Err(Refused::Full);
            }
            queue.frames.push_back(frame);
        }
        // Stores a permit when the task is not waiting: no wake-up is lost.
        self.waiting.notify_one();
        Ok(())
    }

    /// The next frame, if one is waiting.
    pub fn try_next(&self) -> Option<Outgoing> {
        self.queue.lock().pop()
    }

    /// The next frame, once one is waiting. Cancel-safe: a frame is only taken
    /// when this returns it.
    pub async fn next(&self) -> Option<Outgoing> {
        loop {
            {
                let mut queue = self.queue.lock();
                if let Some(frame) = queue.pop() {
                    return Some(frame);
                }
                if queue.closed {
                    return None;
                }
            }
            self.waiting.notified().await;
        }
    }

    /// The task has finished: later pushes are refused, and waiting frames dropped.
    pub fn close(&self) {
        let mut queue = self.queue.lock();
        queue.closed = true;
        queue.frames = VecDeque::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Outgoing {
        Outgoing::Text(s.to_string().into())
    }

    fn as_text(out: Option<Outgoing>) -> Option<String> {
        match out? {
            Outgoing::Text(t) => Some(t.as_str().to_string()),
            Outgoing::Probe(_) => Some("probe".into()),
        }
    }

    #[tokio::test]
    async fn frames_come_out_in_order_and_wake_the_reader() {
        let outbox = std::sync::Arc::new(Outbox::default());
        let reader = {
            let outbox = outbox.clone();
            tokio::spawn(async move { as_text(outbox.next().await) })
        };
        tokio::task::yield_now().await;
        outbox.push(text("a")).unwrap();
        outbox.push(text("b")).unwrap();
        assert_eq!(reader.await.unwrap().as_deref(), Some("a"));
        assert_eq!(as_text(outbox.next().await).as_deref(), Some("b"));
        assert!(outbox.try_next().is_none());
    }

    #[tokio::test]
    async fn a_full_queue_refuses_and_a_closed_one_ends() {
        let outbox = Outbox::default();
        for i in 0..SOCKET_BUFFER_PACKETS {
            outbox.push(text(&i.to_string())).unwrap();
        }
        assert_eq!(outbox.push(text("one more")), Err(Refused::Full));
        assert_eq!(as_text(outbox.try_next()).as_deref(), Some("0"));
        outbox.push(text("room again")).unwrap();
        outbox.close();
        assert_eq!(outbox.push(text("late")), Err(Refused::Closed));
        assert!(outbox.next().await.is_none(), "the reader sees the end");
    }

    #[test]
    fn an_emptied_queue_gives_its_room_back() {
        let outbox = Outbox::default();
        for i in 0..100 {
            outbox.push(text(&i.to_string())).unwrap();
        }
        while outbox.try_next().is_some() {}
        assert_eq!(outbox.queue.lock().frames.capacity(), 0);
    }
}
