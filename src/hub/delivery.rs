//! The deliverer: the one task that moves logged events to this node's sockets.
//!
//! Everything that must be ordered against live traffic happens here, one step
//! at a time: delivering committed events (strictly in offset order), and
//! *joins* — putting a socket in rooms after sending it what it missed. Because
//! a join is a step in the same sequence as deliveries, there is an exact
//! boundary: every event up to the deliverer's position at the join was either
//! replayed to the socket or not for it, and every event after reaches it live.
//! Nothing is lost or sent twice, however busy the rooms are.
//!
//! The deliverer keeps the most recent events in a ring so that a join can fill
//! the last stretch from memory. When the ring does not reach back far enough it
//! says so, and the caller reads that stretch from the database and tries again.
//!
//! The deliverer runs on the shared runtime, among the write tasks it wakes
//! (one per socket per event), not on the log writer's thread: a wake-up from a
//! worker goes to that worker's own queue, one from another thread through the
//! runtime's shared queue, and there the writer's next commit also waited for
//! the deliverer's turn. For the same reason its queue wakes it through the
//! I/O driver (`handoff.rs`), not directly from the writer's thread. It gives its
//! worker back every [`YIELD_AFTER`] at most, so a controller's batch of a
//! thousand events does not hold a worker for seconds.
//!
//! Events committed while it was busy are taken together: consecutive ones
//! with the same rooms go to each socket in one pass (up to [`MAX_RUN`]), and
//! each socket's writer sends them in one write. Falling behind makes its work
//! per event cheaper, so it catches up rather than falling further behind.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::value::RawValue;
use socketioxide::socket::Sid;
use tokio::sync::oneshot;

use super::fabric::{Fabric, LoggedEvent, SendOutcome};
use super::handoff;
use super::reader::LogReader;
use crate::events::mark_replayed;
use crate::metrics;

/// Events kept in memory for joins.
pub const RING_CAPACITY: usize = 8192;
/// Bytes of events kept in memory for joins, at most: 8,192 events near
/// `MAX_PAYLOAD_BYTES` would otherwise hold a gibibyte.
const RING_BYTES: usize = 32 << 20;
const QUEUE_DEPTH: usize = 4096;

/// The rooms a socket is in through the deliverer, and for each the log
/// position its delivery starts after: events of that room with a greater
/// `seq` reached the socket, by its join's replay or live.
#[derive(Debug, Default)]
pub struct Membership {
    joined: Mutex<HashMap<String, i64>>,
}

impl Membership {
    /// The socket entered `rooms` at `at`, after `fill` sent what it asked for.
    fn record(&self, rooms: &[String], at: i64, fill: Option<&Fill>) {
        let mut joined = self.joined.lock();
        for room in rooms {
            let from = fill
                .and_then(|f| f.origin.iter().find(|(r, _)| r == room))
                .map_or(at, |(_, after)| (*after).min(at));
            joined.entry(room.clone()).or_insert(from);
        }
    }

    /// Forgets a room the socket left.
    pub fn forget(&self, room: &str) {
        self.joined.lock().remove(room);
    }

    /// Rooms joined through the deliverer.
    pub fn rooms(&self) -> Vec<String> {
        self.joined.lock().keys().cloned().collect()
    }

    /// How many rooms, not counting the internal everyone-room.
    pub fn len(&self) -> usize {
        let joined = self.joined.lock();
        joined.len() - usize::from(joined.contains_key(crate::rooms::EVERYONE))
    }

    /// Whether no room has been joined yet.
    pub fn is_empty(&self) -> bool {
        self.joined.lock().is_empty()
    }

    /// Whether the socket is in `room`.
    pub fn contains(&self, room: &str) -> bool {
        self.joined.lock().contains_key(room)
    }

    /// Whether an event for `rooms` at `seq` already reached the socket, live
    /// or by the replay of an earlier join (an event of two rooms joined one
    /// after the other is replayed once).
    fn already_received(&self, rooms: &[String], seq: i64) -> bool {
        let joined = self.joined.lock();
        rooms
            .iter()
            .any(|r| joined.get(r).is_some_and(|&at| seq > at))
    }
}

/// What a join must send before the socket enters its rooms.
#[derive(Debug, Clone)]
pub struct Fill {
    /// Per room: events with a greater `seq` are wanted (raised as stretches
    /// are sent).
    pub after: Vec<(String, i64)>,
    /// Events up to this `seq` are marked `replayed: true`; later ones were
    /// emitted while the join was under way and go out unmarked.
    pub marked_through: i64,
    /// `after` as asked for: where the socket's delivery of each room starts.
    origin: Vec<(String, i64)>,
}

impl Fill {
    /// A fill of each room's events after its position.
    pub fn new(after: Vec<(String, i64)>, marked_through: i64) -> Fill {
        Fill {
            origin: after.clone(),
            after,
            marked_through,
        }
    }

    /// The smallest `after` of any room.
    pub fn min_after(&self) -> i64 {
        self.after.iter().map(|(_, a)| *a).min().unwrap_or(i64::MAX)
    }

    /// The latest position the fill starts after: the client has seen the log
    /// up to there.
    pub fn max_after(&self) -> i64 {
        self.after.iter().map(|(_, a)| *a).max().unwrap_or(0)
    }

    /// Whether an event belongs in this fill for a socket with `membership`
    /// and current rooms `socket_rooms`.
    pub fn wants(
        &self,
        seq: i64,
        rooms: &[String],
        except: &[String],
        membership: &Membership,
        socket_rooms: &[String],
    ) -> bool {
        let for_us = rooms.iter().any(|r| {
            self.after
                .iter()
                .any(|(room, after)| room == r && seq > *after)
        });
        let excluded = except
            .iter()
            .any(|x| socket_rooms.contains(x) || self.after.iter().any(|(room, _)| room == x));
        for_us && !excluded && !membership.already_received(rooms, seq)
    }

    /// The payload to send for `seq`: marked when it was missed. `None` for
    /// a stored envelope that is not JSON (a damaged row): it is skipped, as
    /// the catch-up from the shared log skips it, rather than ending the join.
    pub fn payload(&self, seq: i64, payload: String) -> Option<Box<RawValue>> {
        let text = if seq <= self.marked_through {
            mark_replayed(payload)
        } else {
            payload
        };
        RawValue::from_string(text)
            .inspect_err(
                |e| tracing::error!(seq, error = %e, "an unreadable stored event was skipped"),
            )
            .ok()
    }

    /// Raises every room's `after` to `seq` (that stretch has been sent).
    pub fn advance_to(&mut self, seq: i64) {
        for (_, after) in &mut self.after {
            *after = (*after).max(seq);
        }
    }
}

pub(crate) struct JoinOp {
    pub sid: Sid,
    pub membership: Arc<Membership>,
    pub rooms: Vec<String>,
    pub fill: Option<Fill>,
    pub reply: oneshot::Sender<JoinReply>,
}

/// The outcome of a join step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JoinReply {
    /// In the rooms from `at` on, after `sent` events.
    Joined { sent: usize, at: i64 },
    /// The ring does not reach back to the fill's start; read the database up to
    /// `through` and try again.
    NotCovered { through: i64 },
    /// The socket's buffer filled up after `sent` events, every one up to
    /// `sent_through` considered: send the rest up to `through` paced to what
    /// the client takes, and try again.
    Backlog {
        sent: usize,
        sent_through: i64,
        through: i64,
    },
    /// The socket is gone.
    Gone,
}

enum Op {
    /// Committed events, and when the log writer handed them on.
    Deliver(Vec<Arc<LoggedEvent>>, Instant),
    /// Another node committed up to this `seq` (shared log only).
    Remote(i64),
    Join(JoinOp),
    Barrier(oneshot::Sender<i64>),
}

/// Talks to the deliverer.
#[derive(Clone)]
pub(crate) struct DeliveryHandle {
    /// Rung through the I/O driver (`handoff.rs`): the log writer sends from
    /// its own thread.
    tx: handoff::Sender<Op>,
    position: Arc<AtomicI64>,
    /// The highest `seq` known to be committed: handed to the deliverer, or
    /// announced by another node. At or ahead of `position`.
    known: Arc<AtomicI64>,
}

impl DeliveryHandle {
    /// The `seq` of the last event delivered on this node.
    pub fn position(&self) -> i64 {
        self.position.load(Ordering::Acquire)
    }

    /// The highest `seq` known to be committed (delivered here or on its way).
    pub fn known(&self) -> i64 {
        self.known.load(Ordering::Acquire)
    }

    /// Queues committed events, in offset order.
    pub async fn deliver(&self, events: Vec<Arc<LoggedEvent>>) {
        if let Some(last) = events.last() {
            self.known.fetch_max(last.seq, Ordering::AcqRel);
            self.tx.send(Op::Deliver(events, Instant::now())).await;
        }
    }

    /// Another node committed everything up to `seq`: deliver it here too.
    pub async fn remote(&self, seq: i64) {
        self.known.fetch_max(seq, Ordering::AcqRel);
        if seq > self.position() {
            self.tx.send(Op::Remote(seq)).await;
        }
    }

    pub async fn join(&self, op: JoinOp) {
        self.tx.send(Op::Join(op)).await;
    }

    /// Waits until everything queued before this call has been delivered.
    pub async fn barrier(&self) -> i64 {
        let (tx, rx) = oneshot::channel();
        if !self.tx.send(Op::Barrier(tx)).await {
            return self.position();
        }
        rx.await.unwrap_or_else(|_| self.position())
    }
}

/// Starts the deliverer at log position `start`. With a shared `store`, it
/// fills gaps left by other nodes' commits from the log.
pub(crate) fn spawn(
    fabric: Arc<dyn Fabric>,
    start: i64,
    shared_log: Option<LogReader>,
    quiet: Arc<super::quiet::QuietUsers>,
) -> (DeliveryHandle, tokio::task::JoinHandle<()>) {
    let (tx, rx) = handoff::channel(QUEUE_DEPTH).expect("a socket pair for the deliverer's queue");
    let position = Arc::new(AtomicI64::new(start));
    let deliverer = Deliverer {
        fabric,
        ring: Ring::default(),
        position: position.clone(),
        shared_log,
        quiet,
        busy: Busy::default(),
    };
    let task = tokio::spawn(super::lane::critical("deliverer", deliverer.run(rx)));
    let known = Arc::new(AtomicI64::new(start));
    (
        DeliveryHandle {
            tx,
            position,
            known,
        },
        task,
    )
}

/// The most recent events delivered, oldest first: at most [`RING_CAPACITY`]
/// of them and [`RING_BYTES`] of their payloads and rooms.
#[derive(Default)]
struct Ring {
    events: VecDeque<Arc<LoggedEvent>>,
    bytes: usize,
}

impl Ring {
    fn push(&mut self, event: Arc<LoggedEvent>) {
        self.bytes += Ring::size(&event);
        self.events.push_back(event);
        while self.events.len() > RING_CAPACITY
            || (self.bytes > RING_BYTES && self.events.len() > 1)
        {
            if let Some(oldest) = self.events.pop_front() {
                self.bytes -= Ring::size(&oldest);
            }
        }
    }

    fn size(event: &LoggedEvent) -> usize {
        let rooms: usize = event
            .rooms
            .iter()
            .chain(&event.except)
            .map(String::len)
            .sum();
        event.payload.get().len() + event.event.len() + rooms
    }
}

struct Deliverer {
    fabric: Arc<dyn Fabric>,
    ring: Ring,
    position: Arc<AtomicI64>,
    /// The shared log, to read what other nodes committed.
    shared_log: Option<LogReader>,
    /// Users' last events, recorded before the position passes them.
    quiet: Arc<super::quiet::QuietUsers>,
    /// How long it has kept its worker.
    busy: Busy,
}

/// How long the deliverer may keep its worker thread before it lets the
/// runtime's other tasks run. An event to thousands of sockets takes a few
/// milliseconds; a controller's batch can hold a thousand of them.
const YIELD_AFTER: Duration = Duration::from_millis(20);

/// Time since the deliverer last let its worker go.
struct Busy(Instant);

impl Default for Busy {
    fn default() -> Self {
        Busy(Instant::now())
    }
}

impl Busy {
    /// The next op; the time counts from here when there was none waiting.
    async fn next(&mut self, rx: &mut handoff::Receiver<Op>) -> Option<Op> {
        if let Some(op) = rx.try_recv() {
            return Some(op);
        }
        let op = rx.recv().await;
        self.0 = Instant::now();
        op
    }

    /// Yields once the deliverer has been running for [`YIELD_AFTER`]. Not after
    /// every event: a yield puts the deliverer behind the writes it just
    /// queued, one per socket, and the next event would wait for all of them.
    async fn yield_if_long(&mut self) {
        if self.0.elapsed() >= YIELD_AFTER {
            tokio::task::yield_now().await;
            self.0 = Instant::now();
        }
    }
}

/// The most events one pass over the sockets takes. A socket's writer sends
/// what waits for it in one write, so events that queued up while the
/// deliverer was busy cost one system call per socket, not one each: a
/// deliverer that falls behind catches up instead of falling further behind.
/// Bounded, because a pass does not give its worker back until it ends (the
/// other workers run the rest meanwhile): 16 events take a little less than
/// 16 fan-outs. Runs form only from events already waiting.
const MAX_RUN: usize = 16;

/// Whether two events go to the same sockets.
fn same_targets(a: &LoggedEvent, b: &LoggedEvent) -> bool {
    a.rooms == b.rooms && a.except == b.except
}

/// Events read per query while catching up with other nodes' commits.
const CATCH_UP_PAGE: usize = 1000;

impl Deliverer {
    async fn run(mut self, mut rx: handoff::Receiver<Op>) {
        // An op taken while gathering committed events, handled next.
        let mut taken = None;
        loop {
            let op = match taken.take() {
                Some(op) => op,
                None => match self.busy.next(&mut rx).await {
                    Some(op) => op,
                    None => break,
                },
            };
            match op {
                Op::Deliver(events, handed_on) => {
                    let mut committed: Vec<_> =
                        events.into_iter().map(|e| (e, handed_on)).collect();
                    // Events committed while the deliverer was busy go out with
                    // these, one pass over the sockets for the lot.
                    while committed.len() < MAX_RUN {
                        match rx.try_recv() {
                            Some(Op::Deliver(more, at)) => {
                                committed.extend(more.into_iter().map(|e| (e, at)));
                            }
                            other => {
                                taken = other;
                                break;
                            }
                        }
                    }
                    self.deliver_committed(committed).await;
                }
                Op::Remote(through) => self.catch_up(through).await,
                Op::Join(op) => self.join(op),
                Op::Barrier(reply) => {
                    let _ = reply.send(self.position.load(Ordering::Acquire));
                }
            }
            // Joins come by the thousand in a reconnect storm.
            self.busy.yield_if_long().await;
        }
        tracing::debug!("deliverer stopped");
    }

    /// Delivers committed events in offset order, in runs: consecutive events
    /// with the same rooms, up to [`MAX_RUN`], go to each socket together.
    async fn deliver_committed(&mut self, committed: Vec<(Arc<LoggedEvent>, Instant)>) {
        let mut run: Vec<Arc<LoggedEvent>> = Vec::new();
        for (event, handed_on) in committed {
            let delivered = run
                .last()
                .map_or_else(|| self.position.load(Ordering::Acquire), |e| e.seq);
            if event.seq <= delivered {
                continue; // already read from the shared log
            }
            if event.seq > delivered + 1 {
                // Other nodes committed the seqs before ours: they come first.
                self.deliver_run(std::mem::take(&mut run)).await;
                self.catch_up(event.seq - 1).await;
            }
            metrics::delivery_wait(handed_on.elapsed());
            self.add_to_run(&mut run, event).await;
        }
        self.deliver_run(run).await;
    }

    /// Adds `event` to `run`, delivering the run first when the event cannot
    /// join it (other rooms, or the run is full).
    async fn add_to_run(&mut self, run: &mut Vec<Arc<LoggedEvent>>, event: Arc<LoggedEvent>) {
        if run.len() == MAX_RUN || run.first().is_some_and(|f| !same_targets(f, &event)) {
            self.deliver_run(std::mem::take(run)).await;
        }
        run.push(event);
    }

    /// Delivers every event of the shared log up to `through`, in order. While
    /// the database is unreachable it retries: nothing later may overtake.
    async fn catch_up(&mut self, through: i64) {
        let Some(log) = self.shared_log.clone() else {
            return;
        };
        let mut failures = 0u32;
        loop {
            let position = self.position.load(Ordering::Acquire);
            if position >= through {
                return;
            }
            let want = ((through - position) as usize).min(CATCH_UP_PAGE);
            match log.after(position, want).await {
                Ok(events) if !events.is_empty() => {
                    failures = 0;
                    // A page of other nodes' events goes out in runs too.
                    let mut run = Vec::new();
                    for stored in events {
                        if stored.seq > through {
                            break;
                        }
                        match RawValue::from_string(stored.payload) {
                            Ok(payload) => {
                                let event = Arc::new(LoggedEvent {
                                    seq: stored.seq,
                                    event: stored.event,
                                    payload,
                                    rooms: stored.rooms,
                                    except: stored.except,
                                });
                                self.add_to_run(&mut run, event).await;
                            }
                            Err(e) => {
                                self.deliver_run(std::mem::take(&mut run)).await;
                                tracing::error!(seq = stored.seq, error = %e, "unreadable event in the log; skipped");
                                self.position.store(stored.seq, Ordering::Release);
                            }
                        }
                    }
                    self.deliver_run(run).await;
                }
                Ok(_) => {
                    // Announced but not visible yet (a replica lagging?): wait a moment.
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    failures += 1;
                    if failures > 250 {
                        tracing::error!(position, through, "log gap never filled; moving on");
                        return;
                    }
                }
                Err(e) => {
                    failures += 1;
                    if failures == 1 || failures.is_multiple_of(50) {
                        tracing::warn!(error = %e, position, through, "cannot read the shared log; retrying");
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
            }
        }
    }

    /// Delivers a run of events with the same rooms (in offset order), then lets
    /// the worker go if it has had it long.
    async fn deliver_run(&mut self, run: Vec<Arc<LoggedEvent>>) {
        if run.is_empty() {
            return;
        }
        let started = Instant::now();
        let reached = self.fabric.deliver_run(&run);
        let each = started.elapsed() / run.len() as u32;
        for (event, reached) in run.into_iter().zip(reached) {
            metrics::fanout(each);
            metrics::event_delivered(&event.event, reached);
            self.quiet.record(&event.rooms, event.seq);
            self.position.store(event.seq, Ordering::Release);
            self.ring.push(event);
        }
        self.busy.yield_if_long().await;
    }

    fn join(&mut self, op: JoinOp) {
        let at = self.position.load(Ordering::Acquire);
        let mut sent = 0;
        if let Some(fill) = &op.fill {
            let start = fill.min_after();
            if start < at {
                // Sequence numbers may have gaps (a catch-up that gave up, an
                // unreadable event skipped): find the start by `seq`, not by
                // counting from the front.
                if self.ring.events.front().is_none_or(|e| e.seq > start + 1) {
                    let _ = op.reply.send(JoinReply::NotCovered { through: at });
                    return;
                }
                let first = self.ring.events.partition_point(|e| e.seq <= start);
                let socket_rooms = self.fabric.rooms_of(op.sid);
                for event in self.ring.events.range(first..) {
                    if !fill.wants(
                        event.seq,
                        &event.rooms,
                        &event.except,
                        &op.membership,
                        &socket_rooms,
                    ) {
                        continue;
                    }
                    let Some(payload) = fill.payload(event.seq, event.payload.get().to_owned())
                    else {
                        continue;
                    };
                    match self.fabric.send(op.sid, &event.event, &payload) {
                        SendOutcome::Sent => sent += 1,
                        SendOutcome::Gone => {
                            let _ = op.reply.send(JoinReply::Gone);
                            return;
                        }
                        SendOutcome::Slow => {
                            // A big replay outruns any buffer: the rest goes out
                            // paced, outside this task, which must not wait.
                            let _ = op.reply.send(JoinReply::Backlog {
                                sent,
                                sent_through: event.seq - 1,
                                through: at,
                            });
                            return;
                        }
                    }
                }
            }
        }
        self.fabric.join(op.sid, &op.rooms);
        op.membership.record(&op.rooms, at, op.fill.as_ref());
        let _ = op.reply.send(JoinReply::Joined { sent, at });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::fabric::{BoxFuture, Census};

    /// A fabric that records what each socket was sent and takes at most
    /// `capacity` sends (then it is "slow").
    #[derive(Default)]
    struct Recorder {
        sent: Mutex<Vec<i64>>,
        capacity: usize,
        /// Events delivered, each taking `delivery_takes` of the thread.
        delivered: std::sync::atomic::AtomicUsize,
        /// Sockets put in rooms, each also taking `delivery_takes`.
        joined: std::sync::atomic::AtomicUsize,
        delivery_takes: Duration,
        /// A count other tasks keep, read at each delivery.
        clock: Arc<std::sync::atomic::AtomicUsize>,
        clock_at_delivery: Mutex<Vec<usize>>,
        /// The seqs of each run the deliverer handed over, in order.
        runs: Mutex<Vec<Vec<i64>>>,
    }

    impl Fabric for Recorder {
        fn deliver(&self, _: &LoggedEvent) -> usize {
            let now = self.clock.load(Ordering::SeqCst);
            self.clock_at_delivery.lock().push(now);
            std::thread::sleep(self.delivery_takes);
            self.delivered.fetch_add(1, Ordering::SeqCst);
            0
        }
        fn deliver_run(&self, run: &[Arc<LoggedEvent>]) -> Vec<usize> {
            self.runs.lock().push(run.iter().map(|e| e.seq).collect());
            run.iter().map(|e| self.deliver(e)).collect()
        }
        fn force_reconnect(&self, _: Sid) {}
        fn send(&self, _: Sid, _: &str, payload: &RawValue) -> SendOutcome {
            let mut sent = self.sent.lock();
            if sent.len() >= self.capacity {
                return SendOutcome::Slow;
            }
            let v: serde_json::Value = serde_json::from_str(payload.get()).unwrap();
            sent.push(v["seq"].as_i64().unwrap());
            SendOutcome::Sent
        }
        fn disconnect(&self, _: Sid) {}
        fn join(&self, _: Sid, _: &[String]) {
            std::thread::sleep(self.delivery_takes);
            self.joined.fetch_add(1, Ordering::SeqCst);
        }
        fn leave(&self, _: Sid, _: &str) {}
        fn rooms_of(&self, _: Sid) -> Vec<String> {
            Vec::new()
        }
        fn signal(&self, _: &[String], _: &[String], _: &str, _: &RawValue) {}
        fn disconnect_room(&self, _: String) -> BoxFuture<Result<(), String>> {
            Box::pin(async { Ok(()) })
        }
        fn census(&self) -> Census {
            Census::default()
        }
    }

    fn event(seq: i64) -> Arc<LoggedEvent> {
        Arc::new(LoggedEvent {
            seq,
            event: "e".into(),
            payload: RawValue::from_string(format!("{{\"seq\":{seq}}}")).unwrap(),
            rooms: vec!["r".into()],
            except: Vec::new(),
        })
    }

    async fn join_after(handle: &DeliveryHandle, after: i64) -> JoinReply {
        let (reply, answer) = oneshot::channel();
        handle
            .join(JoinOp {
                sid: Sid::new(),
                membership: Arc::new(Membership::default()),
                rooms: vec!["r".into()],
                fill: Some(Fill::new(vec![("r".into(), after)], 0)),
                reply,
            })
            .await;
        answer.await.unwrap()
    }

    /// A fabric that takes every send.
    fn takes_everything() -> Arc<Recorder> {
        Arc::new(Recorder {
            capacity: usize::MAX,
            ..Default::default()
        })
    }

    /// A deliverer, as the hub starts it.
    fn start(fabric: Arc<Recorder>) -> DeliveryHandle {
        let (handle, _task) = spawn(fabric, 0, None, Default::default());
        handle
    }

    #[tokio::test]
    async fn a_fill_from_the_ring_finds_its_start_by_seq_across_gaps() {
        let fabric = takes_everything();
        let handle = start(fabric.clone());
        // Seqs 3 and 4 never arrive (skipped): the ring holds 1, 2, 5, 6, 7.
        handle
            .deliver([1, 2, 5, 6, 7].into_iter().map(event).collect())
            .await;
        assert_eq!(
            join_after(&handle, 5).await,
            JoinReply::Joined { sent: 2, at: 7 }
        );
        assert_eq!(
            *fabric.sent.lock(),
            vec![6, 7],
            "exactly what follows seq 5"
        );
        fabric.sent.lock().clear();
        assert_eq!(
            join_after(&handle, 2).await,
            JoinReply::Joined { sent: 3, at: 7 }
        );
        assert_eq!(*fabric.sent.lock(), vec![5, 6, 7]);
    }

    #[test]
    fn a_damaged_stored_envelope_is_skipped_not_a_panic() {
        let fill = Fill::new(vec![("r".into(), 0)], 5);
        assert!(fill.payload(3, "{\"seq\":3".into()).is_none());
        let replayed = fill.payload(3, "{\"seq\":3}".into()).unwrap();
        assert_eq!(replayed.get(), "{\"seq\":3,\"replayed\":true}");
        let live = fill.payload(6, "{\"seq\":6}".into()).unwrap();
        assert_eq!(live.get(), "{\"seq\":6}");
    }

    #[tokio::test]
    async fn the_ring_keeps_at_most_its_bytes_of_events() {
        let fabric = takes_everything();
        let handle = start(fabric.clone());
        let pad = "x".repeat(1 << 20);
        let large = |seq: i64| {
            let payload = format!("{{\"seq\":{seq},\"pad\":\"{pad}\"}}");
            Arc::new(LoggedEvent {
                payload: RawValue::from_string(payload).unwrap(),
                ..Arc::into_inner(event(seq)).unwrap()
            })
        };
        let last = (RING_BYTES >> 20) as i64 + 8;
        handle.deliver((1..=last).map(large).collect()).await;
        assert!(
            matches!(join_after(&handle, 0).await, JoinReply::NotCovered { .. }),
            "the oldest went to make room: a join from the start reads the log"
        );
        assert_eq!(
            join_after(&handle, last - 2).await,
            JoinReply::Joined { sent: 2, at: last }
        );
        assert_eq!(*fabric.sent.lock(), vec![last - 1, last]);
    }

    fn event_to(seq: i64, room: &str) -> Arc<LoggedEvent> {
        Arc::new(LoggedEvent {
            rooms: vec![room.into()],
            ..Arc::into_inner(event(seq)).unwrap()
        })
    }

    /// Queues each of `ops` before the deliverer runs (the tests run on one
    /// thread), as a deliverer busy with a fan-out finds them, then waits.
    async fn queued_while_busy(handle: &DeliveryHandle, ops: Vec<Vec<Arc<LoggedEvent>>>) -> i64 {
        for events in ops {
            handle.deliver(events).await;
        }
        handle.barrier().await
    }

    #[tokio::test]
    async fn events_committed_while_the_deliverer_was_busy_go_to_each_socket_in_one_pass() {
        let fabric = Arc::new(Recorder::default());
        let handle = start(fabric.clone());
        let ops = (1..=3).map(|seq| vec![event(seq)]).collect();
        assert_eq!(queued_while_busy(&handle, ops).await, 3);
        assert_eq!(*fabric.runs.lock(), vec![vec![1, 2, 3]]);
    }

    #[tokio::test]
    async fn a_run_holds_only_consecutive_events_to_the_same_rooms_and_at_most_max_run() {
        let fabric = Arc::new(Recorder::default());
        let handle = start(fabric.clone());
        let to = |room| move |seq| event_to(seq, room);
        let ops = vec![
            (1..=2).map(to("a")).collect(),
            vec![event_to(3, "b")],
            (4..=4 + MAX_RUN as i64).map(to("a")).collect(),
        ];
        assert_eq!(queued_while_busy(&handle, ops).await, 4 + MAX_RUN as i64);
        let runs: Vec<Vec<i64>> = fabric.runs.lock().clone();
        let last = 4 + MAX_RUN as i64;
        assert_eq!(
            runs,
            vec![vec![1, 2], vec![3], (4..last).collect(), vec![last]],
            "split where the rooms change and after {MAX_RUN} events"
        );
    }

    #[tokio::test]
    async fn a_join_queued_between_events_splits_the_run_at_its_position() {
        let fabric = takes_everything();
        let handle = start(fabric.clone());
        handle.deliver(vec![event(1)]).await;
        let joined = join_after(&handle, 0);
        let later = async {
            handle.deliver(vec![event(2)]).await;
            handle.barrier().await
        };
        let (joined, at) = tokio::join!(joined, later);
        assert_eq!(
            joined,
            JoinReply::Joined { sent: 1, at: 1 },
            "seq 1 replayed, 2 live"
        );
        assert_eq!(at, 2);
        assert_eq!(*fabric.runs.lock(), vec![vec![1], vec![2]]);
    }

    #[tokio::test]
    async fn other_nodes_events_read_from_the_shared_log_go_out_in_runs() {
        use crate::config::DatabaseUrl;
        use crate::store::{NewEvent, Store};
        let store = Store::connect(&DatabaseUrl::Sqlite("sqlite::memory:".into()))
            .await
            .unwrap();
        let to = |room: &str| NewEvent {
            event: "e".into(),
            payload: "{}".into(),
            rooms: vec![room.into()],
            except: Vec::new(),
            idempotency_key: None,
            created_at_ms: 0,
        };
        let batch: Vec<_> = ["a", "a", "a", "b", "a"].into_iter().map(to).collect();
        store.append(&batch, 0).await.unwrap();
        let log = LogReader::new(store, crate::hub::offset::OffsetCodec::new("ep0ch"));
        let fabric = Arc::new(Recorder::default());
        let (handle, _task) = spawn(fabric.clone(), 0, Some(log), Default::default());
        handle.remote(5).await;
        assert_eq!(handle.barrier().await, 5);
        assert_eq!(
            *fabric.runs.lock(),
            vec![vec![1, 2, 3], vec![4], vec![5]],
            "committed by another node, read back in one page"
        );
    }

    /// A fabric whose deliveries and joins each take 2 ms of the thread.
    fn slow_fabric() -> Arc<Recorder> {
        Arc::new(Recorder {
            delivery_takes: Duration::from_millis(2),
            ..Default::default()
        })
    }

    /// What `count` said when a task spawned now first ran. The tests run on
    /// one thread, as a worker under load: the deliverer shares it.
    async fn when_another_task_ran(count: impl Fn() -> usize + Send + 'static) -> usize {
        tokio::spawn(async move { count() }).await.unwrap()
    }

    #[tokio::test]
    async fn a_long_batch_lets_other_tasks_run_before_it_ends() {
        let fabric = slow_fabric();
        let handle = start(fabric.clone());
        handle.deliver((1..=100).map(event).collect()).await;
        let f = fabric.clone();
        let seen = when_another_task_ran(move || f.delivered.load(Ordering::SeqCst)).await;
        assert!(
            seen < 100,
            "another task ran only after all 100 events ({seen} delivered when it ran)"
        );
        assert_eq!(handle.barrier().await, 100, "and the batch was delivered");
    }

    #[tokio::test]
    async fn a_storm_of_joins_lets_other_tasks_run_before_it_ends() {
        let fabric = slow_fabric();
        let handle = start(fabric.clone());
        let mut replies = Vec::new();
        for _ in 0..100 {
            let (reply, answer) = oneshot::channel();
            let membership = Arc::new(Membership::default());
            let rooms = vec!["r".into()];
            let (sid, fill) = (Sid::new(), None);
            handle
                .join(JoinOp {
                    sid,
                    membership,
                    rooms,
                    fill,
                    reply,
                })
                .await;
            replies.push(answer);
        }
        let f = fabric.clone();
        let seen = when_another_task_ran(move || f.joined.load(Ordering::SeqCst)).await;
        assert!(
            seen < 100,
            "another task ran only after all 100 joins ({seen} done when it ran)"
        );
        for answer in replies {
            assert!(matches!(answer.await, Ok(JoinReply::Joined { .. })));
        }
    }

    /// Under fan-out the runtime's queues hold one write task per socket. An
    /// event the log writer hands on from its own thread must not wait behind
    /// all of them (it did, by 18 ms at 5,000 sockets × 50 emits/s).
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn an_event_handed_on_from_another_thread_starts_before_the_queued_tasks_drain() {
        const QUEUED: usize = 5000;
        let fabric = Arc::new(Recorder::default());
        let handle = start(fabric.clone());
        // Let the deliverer reach its wait.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let clock = fabric.clock.clone();
        let writer = handle.clone();
        tokio::spawn(async move {
            // As a fan-out does: wake thousands of tasks from this worker.
            for _ in 0..QUEUED {
                let clock = clock.clone();
                tokio::spawn(async move {
                    clock.fetch_add(1, Ordering::SeqCst);
                });
            }
            // The log writer's hand-off, from its own thread.
            std::thread::spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .build()
                    .unwrap()
                    .block_on(writer.deliver(vec![event(1)]));
            })
            .join()
            .unwrap();
        })
        .await
        .unwrap();
        while fabric.clock_at_delivery.lock().is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let ran_before = fabric.clock_at_delivery.lock()[0];
        drop(handle);
        assert!(
            ran_before < QUEUED / 2,
            "the event started after {ran_before} of the {QUEUED} queued tasks had run"
        );
    }

    #[tokio::test]
    async fn a_fill_bigger_than_the_buffer_hands_the_rest_back_instead_of_failing() {
        let fabric = Arc::new(Recorder {
            capacity: 3,
            ..Default::default()
        });
        let handle = start(fabric.clone());
        handle.deliver((1..=10).map(event).collect()).await;
        assert_eq!(
            join_after(&handle, 0).await,
            JoinReply::Backlog {
                sent: 3,
                sent_through: 3,
                through: 10
            },
            "the caller sends seq 4-10 paced, then joins again"
        );
    }
}
