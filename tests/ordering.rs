//! The ordering core under test: the hub (log writer, deliverer, replay) on a
//! real SQLite log, its sockets a recording fabric.
//!
//! Seeded simulations interleave emits (single and batched) with joins that
//! replay from a past position, on sockets whose buffers fill up (replays then
//! go out paced, partly from the ring and partly from the log). The property:
//! every socket receives every event it is owed — each event for a room it
//! joined, after the position it joined from — exactly once, and nothing it is
//! not owed; a room's own events arrive in offset order. Further tests cut a
//! replay with a drop, and restart the hub on the same log between emits.

mod common;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use livehub::events::{Emit, Target};
use livehub::hub::{
    BoxFuture, Census, Fabric, Fill, Hub, HubOptions, LoggedEvent, Membership, SendOutcome,
};
use parking_lot::Mutex;
use serde_json::value::RawValue;
use socketioxide::socket::Sid;

/// What one socket got, and how much its buffer holds.
#[derive(Default)]
struct Socket {
    rooms: HashSet<String>,
    received: Vec<i64>,
    /// Frames waiting in its buffer (drained by its reader).
    queued: usize,
    capacity: usize,
    /// The connection drops once it has received this many events.
    drop_after: Option<usize>,
}

/// A fabric that records every delivery per socket. Replays (`send`) find a
/// full buffer as `Slow`, as a real socket's would; live deliveries are
/// always taken (a slow live socket is disconnected, which this test does not
/// model).
#[derive(Default)]
struct Recorder {
    sockets: Mutex<HashMap<Sid, Socket>>,
}

fn seq_of(payload: &str) -> i64 {
    let v: serde_json::Value = serde_json::from_str(payload).expect("JSON payload");
    let offset = v["offset"].as_str().expect("an offset");
    offset.rsplit('-').next().unwrap().parse().unwrap()
}

impl Recorder {
    /// Empties every buffer a little, as clients reading would.
    fn read_some(&self, n: usize) {
        for s in self.sockets.lock().values_mut() {
            s.queued = s.queued.saturating_sub(n);
        }
    }
}

impl Fabric for Recorder {
    fn deliver(&self, event: &LoggedEvent) -> usize {
        let mut reached = 0;
        for s in self.sockets.lock().values_mut() {
            if event.rooms.iter().any(|r| s.rooms.contains(r)) {
                s.received.push(event.seq);
                reached += 1;
            }
        }
        reached
    }
    fn force_reconnect(&self, _: Sid) {}
    fn send(&self, sid: Sid, _: &str, payload: &RawValue) -> SendOutcome {
        let mut sockets = self.sockets.lock();
        let Some(s) = sockets.get_mut(&sid) else {
            return SendOutcome::Gone;
        };
        if s.drop_after.is_some_and(|n| s.received.len() >= n) {
            s.rooms.clear();
            return SendOutcome::Gone;
        }
        if s.queued >= s.capacity {
            return SendOutcome::Slow;
        }
        s.queued += 1;
        s.received.push(seq_of(payload.get()));
        SendOutcome::Sent
    }
    fn disconnect(&self, _: Sid) {}
    fn join(&self, sid: Sid, rooms: &[String]) {
        if let Some(s) = self.sockets.lock().get_mut(&sid) {
            s.rooms.extend(rooms.iter().cloned());
        }
    }
    fn leave(&self, sid: Sid, room: &str) {
        if let Some(s) = self.sockets.lock().get_mut(&sid) {
            s.rooms.remove(room);
        }
    }
    fn rooms_of(&self, sid: Sid) -> Vec<String> {
        self.sockets
            .lock()
            .get(&sid)
            .map(|s| s.rooms.iter().cloned().collect())
            .unwrap_or_default()
    }
    fn signal(&self, _: &[String], _: &[String], _: &str, _: &serde_json::value::RawValue) {}
    fn disconnect_room(&self, _: String) -> BoxFuture<Result<(), String>> {
        Box::pin(async { Ok(()) })
    }
    fn census(&self) -> Census {
        Census::default()
    }
}

/// Joins of one socket run one at a time, as its session queue runs them.
type Serial = Arc<tokio::sync::Mutex<()>>;

/// A simulated socket: its id, membership, join queue, and the position each
/// of its rooms was joined from.
type Member = (Sid, Arc<Membership>, Serial, HashMap<String, i64>);

/// A small deterministic generator (no dependency on a crate's sequence).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

const ROOMS: [&str; 4] = ["order:a", "order:b", "shipment:c", "channel:d"];

fn emit_to(rooms: Vec<String>) -> Emit {
    Emit {
        event: "sim".into(),
        target: Target::rooms(rooms),
        ..Default::default()
    }
}

/// The hub's settings, with this replay limit.
fn options(replay_limit: usize) -> HubOptions {
    HubOptions {
        replay_limit,
        retention: Duration::from_secs(3600),
        node: "sim".into(),
        max_payload_bytes: 64 * 1024,
    }
}

/// A hub on a fresh SQLite log whose sockets are a recorder (and what must
/// outlive the test: the database's directory, the hub's tasks).
async fn hub_on_sqlite() -> (Hub, Arc<Recorder>, impl Sized) {
    let (store, dir) = common::sqlite().await;
    let fabric = Arc::new(Recorder::default());
    let options = options(100_000);
    let (hub, tasks) = Hub::start(Some(store), fabric.clone(), options)
        .await
        .unwrap();
    (hub, fabric, (dir, tasks))
}

/// Empties `n` frames of every socket's buffer each millisecond, as clients reading.
fn keep_reading(fabric: &Arc<Recorder>, n: usize) -> tokio::task::JoinHandle<()> {
    let fabric = fabric.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(1)).await;
            fabric.read_some(n);
        }
    })
}

/// A join of `room` replaying from `since`, as the session layer asks for it.
async fn join(hub: &Hub, sid: Sid, membership: Arc<Membership>, room: &str, since: i64) {
    let fill = Fill::new(vec![(room.to_string(), since)], hub.position());
    hub.join(sid, membership, vec![room.to_string()], Some(fill))
        .await
        .expect("the join completes");
}

async fn simulate(seed: u64) {
    let (hub, fabric, _keep) = hub_on_sqlite().await;
    let mut rng = Lcg(seed);
    // Every event: its seq and rooms.
    let mut log: Vec<(i64, Vec<String>)> = Vec::new();
    // Per socket, per joined room, the position it joined from.
    let mut joined: Vec<Member> = Vec::new();
    for i in 0..6 {
        let sid = Sid::new();
        fabric.sockets.lock().insert(
            sid,
            Socket {
                capacity: [3, 20, 1000][i % 3],
                ..Default::default()
            },
        );
        joined.push((
            sid,
            Arc::new(Membership::default()),
            Serial::default(),
            HashMap::new(),
        ));
    }
    // The buffers drain while the simulation runs, as clients read.
    let reader = keep_reading(&fabric, 5);

    let mut pending_joins = tokio::task::JoinSet::new();
    for _ in 0..400 {
        match rng.below(10) {
            // A join replaying from somewhere in the past, while emits go on.
            0 | 1 => {
                let who = rng.below(joined.len() as u64) as usize;
                let room = ROOMS[rng.below(ROOMS.len() as u64) as usize];
                let (sid, membership, serial, rooms) = &mut joined[who];
                if rooms.contains_key(room) {
                    continue;
                }
                let since = rng.below(hub.position() as u64 + 1) as i64;
                rooms.insert(room.to_string(), since);
                let (hub, sid, membership) = (hub.clone(), *sid, membership.clone());
                let serial = serial.clone();
                pending_joins.spawn(async move {
                    let _queue = serial.lock().await;
                    join(&hub, sid, membership, room, since).await
                });
            }
            // A batch of emits, committed together.
            2 => {
                let emits: Vec<Emit> = (0..1 + rng.below(40))
                    .map(|_| emit_to(vec![ROOMS[rng.below(4) as usize].to_string()]))
                    .collect();
                for receipt in hub.emit_many(emits).await {
                    let r = receipt.unwrap();
                    log.push((seq(&r.offset), r.rooms));
                }
            }
            // One emit, to one or two rooms.
            _ => {
                let mut rooms = vec![ROOMS[rng.below(4) as usize].to_string()];
                if rng.below(3) == 0 {
                    rooms.push(ROOMS[rng.below(4) as usize].to_string());
                    rooms.dedup();
                }
                let r = hub.emit(emit_to(rooms)).await.unwrap();
                log.push((seq(&r.offset), r.rooms));
            }
        }
    }
    while pending_joins.join_next().await.is_some() {}
    hub.flush().await;
    reader.abort();

    let sockets = fabric.sockets.lock();
    for (sid, _, _, rooms) in &joined {
        let got = &sockets[sid].received;
        let owed: BTreeSet<i64> = log
            .iter()
            .filter(|(seq, event_rooms)| {
                event_rooms
                    .iter()
                    .any(|r| rooms.get(r).is_some_and(|since| seq > since))
            })
            .map(|(seq, _)| *seq)
            .collect();
        let unique: BTreeSet<i64> = got.iter().copied().collect();
        assert_eq!(
            unique.len(),
            got.len(),
            "seed {seed}: a socket received an event twice"
        );
        assert_eq!(
            unique, owed,
            "seed {seed}: what a socket received is not what it was owed"
        );
        // An event of two rooms may come first through one room's live
        // delivery and then fill a gap of another's replay; events of a
        // single room always arrive in offset order.
        for room in rooms.keys() {
            let in_room: Vec<i64> = got
                .iter()
                .copied()
                .filter(|s| {
                    log.iter()
                        .any(|(seq, r)| seq == s && r.as_slice() == std::slice::from_ref(room))
                })
                .collect();
            assert!(
                in_room.windows(2).all(|w| w[0] < w[1]),
                "seed {seed}: {room}'s events out of order: {in_room:?}"
            );
        }
    }
}

fn seq(offset: &str) -> i64 {
    offset.rsplit('-').next().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_socket_gets_what_it_is_owed_exactly_once_in_order() {
    for seed in 1..=10 {
        simulate(seed).await;
    }
}

/// A connection that drops in the middle of its replay, and the client coming
/// back with the offset of the last event it got: nothing is lost, nothing
/// repeats, and emits made meanwhile arrive after the replay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_cut_by_a_drop_resumes_from_the_last_offset_received() {
    let (hub, fabric, _keep) = hub_on_sqlite().await;
    let room = "order:x";
    let mut all: Vec<i64> = Vec::new();
    for _ in 0..12 {
        let batch = (0..250).map(|_| emit_to(vec![room.into()])).collect();
        for r in hub.emit_many(batch).await {
            all.push(seq(&r.unwrap().offset));
        }
    }
    let reader = keep_reading(&fabric, 50);
    // The first connection drops after 700 events of its replay.
    let first = Sid::new();
    fabric.sockets.lock().insert(
        first,
        Socket {
            capacity: 200,
            drop_after: Some(700),
            ..Default::default()
        },
    );
    let cut = hub
        .join(
            first,
            Arc::new(Membership::default()),
            vec![room.into()],
            Some(Fill::new(vec![(room.into(), 0)], hub.position())),
        )
        .await;
    assert!(cut.is_err(), "the replay was cut by the drop");
    let got_first = fabric.sockets.lock()[&first].received.clone();
    assert_eq!(got_first, all[..700].to_vec());
    // Emits go on while the client is away and while it comes back.
    let emitter = {
        let hub = hub.clone();
        tokio::spawn(async move {
            let mut more = Vec::new();
            for _ in 0..300 {
                more.push(seq(&hub
                    .emit(emit_to(vec![room.into()]))
                    .await
                    .unwrap()
                    .offset));
            }
            more
        })
    };
    let second = Sid::new();
    fabric.sockets.lock().insert(
        second,
        Socket {
            capacity: 200,
            ..Default::default()
        },
    );
    let last = *got_first.last().unwrap();
    hub.join(
        second,
        Arc::new(Membership::default()),
        vec![room.into()],
        Some(Fill::new(vec![(room.into(), last)], hub.position())),
    )
    .await
    .expect("the second connection takes its replay");
    all.extend(emitter.await.unwrap());
    hub.flush().await;
    reader.abort();
    let got_second = fabric.sockets.lock()[&second].received.clone();
    let mut union = got_first.clone();
    union.extend(&got_second);
    assert_eq!(union, all, "every event once, in order, across the drop");
}

/// Restarts: each life of the node starts a new hub on the same log (its ring
/// empty), emits while its clients are still away, and the clients come back
/// with the offset of the last event they got while emits go on. Across every
/// restart each client gets every event once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_lose_nothing_for_clients_resuming_from_their_offsets() {
    let (store, _dir) = common::sqlite().await;
    let room = "order:r";
    let mut rng = Lcg(7);
    let mut all: Vec<i64> = Vec::new();
    let mut received: Vec<Vec<i64>> = vec![Vec::new(); 3];
    for life in 0..4 {
        let fabric = Arc::new(Recorder::default());
        let options = options(100_000);
        let (hub, tasks) = Hub::start(Some(store.clone()), fabric.clone(), options)
            .await
            .unwrap();
        let emit_some = |hub: Hub, n: u64| async move {
            let batch = (0..n).map(|_| emit_to(vec![room.into()])).collect();
            let receipts = hub.emit_many(batch).await;
            receipts
                .into_iter()
                .map(|r| seq(&r.unwrap().offset))
                .collect::<Vec<_>>()
        };
        // Emits while every client is away.
        all.extend(emit_some(hub.clone(), 1 + rng.below(300)).await);
        let reader = keep_reading(&fabric, 7);
        let mut rejoins = tokio::task::JoinSet::new();
        let mut sids = Vec::new();
        for (i, got) in received.iter().enumerate() {
            let sid = Sid::new();
            let capacity = [3, 40, 1000][i];
            fabric.sockets.lock().insert(
                sid,
                Socket {
                    capacity,
                    ..Default::default()
                },
            );
            let since = got.last().copied().unwrap_or(0);
            let hub = hub.clone();
            rejoins.spawn(async move { join(&hub, sid, Default::default(), room, since).await });
            sids.push(sid);
        }
        // Emits while they come back.
        for _ in 0..5 {
            all.extend(emit_some(hub.clone(), 1 + rng.below(50)).await);
        }
        while rejoins.join_next().await.is_some() {}
        hub.flush().await;
        reader.abort();
        for (i, sid) in sids.iter().enumerate() {
            received[i].extend(fabric.sockets.lock()[sid].received.iter().copied());
        }
        drop(hub);
        tasks.finish().await;
        for (i, got) in received.iter().enumerate() {
            assert_eq!(
                got, &all,
                "life {life}, client {i}: every event once, in order"
            );
        }
    }
}

/// The log stores envelopes without their offset, and the hub adds it to what
/// it reads back. Rows that an earlier version stored with the offset inside
/// still come back with it once, next to new rows.
#[tokio::test]
async fn envelopes_stored_with_or_without_their_offset_read_back_with_it_once() {
    let (store, _dir) = common::sqlite().await;
    let epoch = store.log_meta().await.unwrap().epoch;
    let old =
        format!(r#"{{"n":1,"type":"sim","timestamp":"t","offset":"{epoch}-0000000000000001"}}"#);
    let row = livehub::store::NewEvent {
        event: "sim".into(),
        payload: old.clone(),
        rooms: vec!["order:o".into()],
        except: Vec::new(),
        idempotency_key: None,
        created_at_ms: chrono::Utc::now().timestamp_millis(),
    };
    store.append(&[row], 0).await.unwrap();
    let fabric = Arc::new(Recorder::default());
    let options = options(100);
    let (hub, _tasks) = Hub::start(Some(store), fabric, options).await.unwrap();
    let receipt = hub.emit(emit_to(vec!["order:o".into()])).await.unwrap();
    let read = hub.read_events(&["order:o".into()], 0, 10).await.unwrap();
    assert_eq!(read.len(), 2);
    assert_eq!(read[0].payload, old, "an old row is sent as it was stored");
    let new = &read[1].payload;
    assert_eq!(new.matches("\"offset\"").count(), 1, "{new}");
    let new: serde_json::Value = serde_json::from_str(new).unwrap();
    assert_eq!(new["offset"], receipt.offset.as_str());
    assert_eq!(receipt.offset, format!("{epoch}-0000000000000002"));
}

/// The size limit is part of the one validation every emit passes: an emit
/// from Rust code is held to it like one over HTTP, and nothing is logged.
#[tokio::test]
async fn an_emit_from_rust_is_held_to_the_size_limit() {
    let (hub, _fabric, _keep) = hub_on_sqlite().await;
    let mut big = emit_to(vec!["order:1".into()]);
    big.data.insert("blob".into(), "a".repeat(64 * 1024).into());
    let err = hub.emit(big).await.unwrap_err();
    assert_eq!(err.code.as_str(), "too_large");
    hub.flush().await;
    assert_eq!(hub.position(), 0, "nothing was logged");
    assert!(hub.emit(emit_to(vec!["order:1".into()])).await.is_ok());
}

/// Two nodes on one PostgreSQL log. A client that got an event from node A
/// reconnects to node B at once, resuming after it, before B has read it from
/// the shared log: B must not then deliver it again, live, once it does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_ahead_of_its_new_node_gets_nothing_twice() {
    let Some(store_a) = common::postgres("ahead").await else {
        return;
    };
    // Node B hears of A's commits 25 ms late (each way), as across a slow
    // network: the client's join reaches B before the news of the event.
    let store_b = common::postgres_again_slowly("ahead", Duration::from_millis(25)).await;
    let node = |name: &str| HubOptions {
        node: name.into(),
        ..options(100_000)
    };
    let (a, _tasks_a) = Hub::start(Some(store_a), Arc::new(Recorder::default()), node("a"))
        .await
        .unwrap();
    let fabric = Arc::new(Recorder::default());
    let (b, _tasks_b) = Hub::start(Some(store_b), fabric.clone(), node("b"))
        .await
        .unwrap();
    let room = "order:ahead";
    let mut resumed = Vec::new();
    for _ in 0..20 {
        let seen = seq(&a.emit(emit_to(vec![room.into()])).await.unwrap().offset);
        let sid = Sid::new();
        fabric.sockets.lock().insert(
            sid,
            Socket {
                capacity: usize::MAX,
                ..Default::default()
            },
        );
        let fill = Fill::new(vec![(room.to_string(), seen)], b.position());
        b.join(
            sid,
            Arc::new(Membership::default()),
            vec![room.into()],
            Some(fill),
        )
        .await
        .expect("the join completes");
        resumed.push((sid, seen));
    }
    let last = resumed.last().unwrap().1;
    for _ in 0..500 {
        if b.position() >= last {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(b.position(), last, "node B read the shared log");
    let sockets = fabric.sockets.lock();
    for (sid, seen) in resumed {
        let owed: Vec<i64> = (seen + 1..=last).collect();
        assert_eq!(sockets[&sid].received, owed, "resumed after {seen}");
    }
}
