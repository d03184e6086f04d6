//! The log writer: one task that appends emits to the store in batches.
//!
//! Emits from every HTTP request, socket handler and Rust caller queue on one
//! channel. The writer takes everything waiting (up to [`MAX_BATCH`] events),
//! appends it in one transaction — one fsync for many emits (group commit) —
//! then hands the committed events, in offset order, to the deliverer and answers
//! each caller. While a commit runs, the next batch accumulates, so under load
//! the batches grow and the cost per emit falls.
//!
//! The writer runs on a thread of its own (`lane.rs`). Both the deliverer and
//! the callers' answers leave it through hand-offs (`handoff.rs`) that wake
//! their task through the runtime's I/O driver: woken from this thread, a task
//! waits behind every socket write of the fan-outs before it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot};

use super::Receipt;
use super::delivery::DeliveryHandle;
use super::fabric::LoggedEvent;
use super::handoff;
use super::offset::OffsetCodec;
use crate::error::Rejection;
use crate::events::{self, Prepared};
use crate::metrics;
use crate::store::{Appended, NewEvent, Store, StoreResult};

/// The most events committed in one transaction.
pub const MAX_BATCH: usize = 1024;
/// How long an idempotency key holds.
pub const IDEMPOTENCY_WINDOW: Duration = Duration::from_secs(600);

/// Emits waiting for the writer, by request.
const QUEUE_DEPTH: usize = 16 * 1024;

pub(crate) struct AppendRequest {
    pub events: Vec<Prepared>,
    pub reply: oneshot::Sender<Vec<Result<Receipt, Rejection>>>,
    pub queued_at: Instant,
}

/// Where emits go to be logged.
#[derive(Clone)]
pub(crate) struct LogHandle {
    tx: mpsc::Sender<AppendRequest>,
}

impl LogHandle {
    /// Appends events (contiguously, in order) and waits for their receipts.
    pub async fn append(&self, events: Vec<Prepared>) -> Vec<Result<Receipt, Rejection>> {
        let n = events.len();
        let (reply, rx) = oneshot::channel();
        let req = AppendRequest {
            events,
            reply,
            queued_at: Instant::now(),
        };
        if self.tx.send(req).await.is_err() {
            return refused(n, SHUTTING_DOWN);
        }
        rx.await.unwrap_or_else(|_| refused(n, SHUTTING_DOWN))
    }
}

const SHUTTING_DOWN: &str = "the event log is shutting down";
const APPEND_FAILED: &str = "the event log is unavailable; nothing was emitted";

/// The answer for `n` events that were not logged.
fn refused(n: usize, why: &'static str) -> Vec<Result<Receipt, Rejection>> {
    (0..n).map(|_| Err(Rejection::internal(why))).collect()
}

/// Where appends land: the database, or (with `EVENT_LOG=off`) only a counter.
pub(crate) enum Sink {
    Store(Store),
    Memory { last_seq: i64 },
}

/// Starts the writer. It stops when every [`LogHandle`] is dropped, after
/// committing and delivering what was queued.
pub(crate) fn spawn(
    sink: Sink,
    codec: OffsetCodec,
    delivery: DeliveryHandle,
) -> std::io::Result<(LogHandle, tokio::task::JoinHandle<()>)> {
    let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
    let (answers, to_answer) = handoff::channel(ANSWERS_DEPTH)?;
    tokio::spawn(super::lane::critical("answerer", answer(to_answer)));
    let writer = run(rx, sink, codec, delivery, answers);
    let task = super::lane::spawn_critical("livehub-log", "log writer", writer)?;
    Ok((LogHandle { tx }, task))
}

/// Commits whose callers wait for their receipts.
const ANSWERS_DEPTH: usize = 1024;

/// One commit's callers, each with its receipts.
type Answers = Vec<(Caller, Vec<Result<Receipt, Rejection>>)>;

/// Answers callers on the shared runtime, where the wake-ups of their tasks
/// go to this worker's own queue. Ends once the writer has stopped.
async fn answer(mut to_answer: handoff::Receiver<Answers>) {
    while let Some(answers) = to_answer.recv().await {
        for (caller, receipts) in answers {
            metrics::emit_latency(caller.queued_at.elapsed());
            let _ = caller.reply.send(receipts);
        }
    }
}

async fn run(
    mut rx: mpsc::Receiver<AppendRequest>,
    mut sink: Sink,
    codec: OffsetCodec,
    delivery: DeliveryHandle,
    answers: handoff::Sender<Answers>,
) {
    let mut requests: Vec<AppendRequest> = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut count = 0;
        let mut next = Some(first);
        while let Some(req) = next {
            // A caller that stopped waiting (an HTTP emit past its deadline,
            // already answered 503) is not logged: its event stays unlogged,
            // as its answer said. Only a batch already in its commit when the
            // caller gives up can still land.
            if !req.reply.is_closed() {
                count += req.events.len();
                requests.push(req);
            }
            next = if count < MAX_BATCH {
                rx.try_recv().ok()
            } else {
                None
            };
        }
        if !requests.is_empty() {
            let requests = std::mem::take(&mut requests);
            commit(&mut sink, &codec, &delivery, &answers, requests).await;
        }
    }
    tracing::debug!("log writer stopped");
}

/// One group commit: append every waiting request's events in one
/// transaction, hand the new ones to the deliverer, then answer each caller.
async fn commit(
    sink: &mut Sink,
    codec: &OffsetCodec,
    delivery: &DeliveryHandle,
    answers: &handoff::Sender<Answers>,
    requests: Vec<AppendRequest>,
) {
    let now = chrono::Utc::now();
    let (rows, callers) = into_rows(requests, now);
    if rows.is_empty() {
        // A flush: everything queued before it has been committed and handed on.
        for caller in callers {
            let _ = caller.reply.send(Vec::new());
        }
        return;
    }
    let started = Instant::now();
    let cutoff = now.timestamp_millis() - IDEMPOTENCY_WINDOW.as_millis() as i64;
    let outcome = append_to(sink, &rows, cutoff).await;
    metrics::log_append(started.elapsed(), rows.len());
    let appended = match outcome {
        Ok(appended) => appended,
        Err(e) => {
            tracing::error!(error = %e, events = rows.len(), "event log append failed");
            for caller in callers {
                let _ = caller.reply.send(refused(caller.count, APPEND_FAILED));
            }
            return;
        }
    };
    let (to_deliver, receipts) = settle(rows, appended, codec);
    // Deliver before answering: a caller that emits and then asks a socket what
    // it got must find the event already on its way.
    delivery.deliver(to_deliver).await;
    let mut receipts = receipts.into_iter();
    let answered = callers
        .into_iter()
        .map(|caller| {
            let own = receipts.by_ref().take(caller.count).collect();
            (caller, own)
        })
        .collect();
    answers.send(answered).await;
}

/// A caller waiting for the receipts of its `count` events.
struct Caller {
    reply: oneshot::Sender<Vec<Result<Receipt, Rejection>>>,
    count: usize,
    queued_at: Instant,
}

/// The requests' events as log rows, in order, each envelope stamped `now`,
/// and the callers waiting for them.
fn into_rows(
    requests: Vec<AppendRequest>,
    now: chrono::DateTime<chrono::Utc>,
) -> (Vec<NewEvent>, Vec<Caller>) {
    let now_ms = now.timestamp_millis();
    let now_iso = crate::events::iso8601(now);
    let mut rows = Vec::new();
    let mut callers = Vec::with_capacity(requests.len());
    for req in requests {
        callers.push(Caller {
            reply: req.reply,
            count: req.events.len(),
            queued_at: req.queued_at,
        });
        rows.extend(req.events.into_iter().map(|p| NewEvent {
            payload: events::envelope(&p.event, &p.data, &now_iso),
            event: p.event,
            rooms: p.rooms,
            except: p.except,
            idempotency_key: p.idempotency_key,
            created_at_ms: now_ms,
        }));
    }
    (rows, callers)
}

/// Appends one batch to the sink.
async fn append_to(
    sink: &mut Sink,
    rows: &[NewEvent],
    idempotency_cutoff_ms: i64,
) -> StoreResult<Vec<Appended>> {
    match sink {
        Sink::Store(store) => store.append(rows, idempotency_cutoff_ms).await,
        Sink::Memory { last_seq } => Ok(rows
            .iter()
            .map(|_| {
                *last_seq += 1;
                Appended::New { seq: *last_seq }
            })
            .collect()),
    }
}

/// The event as the deliverer will keep it, its offset stamped, every part
/// allocated anew on this thread (the log writer's).
///
/// The deliverer's ring keeps the last events for minutes. Their names and
/// rooms arrived in buffers allocated on the runtime's workers, among the
/// thousands of short-lived allocations of a fan-out to every socket; kept,
/// each one held its allocator page (64 KiB) resident after the burst around
/// it was freed. Copies made here sit beside the writer's own buffers instead.
/// Measured with `bench/memory-back.sh`: about 1 MiB less resident after two
/// bursts of 5,000 sockets, for a copy of a few hundred bytes per event.
fn kept(seq: i64, row: &NewEvent, offset: &str) -> LoggedEvent {
    // Room for the `"offset":"…"` member, so that stamping it does not move it.
    let mut payload = String::with_capacity(row.payload.len() + offset.len() + 16);
    payload.push_str(&row.payload);
    LoggedEvent {
        seq,
        event: row.event.clone(),
        payload: RawValue::from_string(events::with_offset(payload, offset))
            .expect("envelopes are valid JSON"),
        rooms: row.rooms.clone(),
        except: row.except.clone(),
    }
}

/// Pairs each row with what the append did to it: the events to deliver (new
/// ones only, their offset added; a duplicate was delivered the first time)
/// and one receipt per row, in order.
fn settle(
    rows: Vec<NewEvent>,
    appended: Vec<Appended>,
    codec: &OffsetCodec,
) -> (Vec<Arc<LoggedEvent>>, Vec<Result<Receipt, Rejection>>) {
    assert_eq!(rows.len(), appended.len(), "one outcome per event");
    let mut to_deliver = Vec::with_capacity(appended.len());
    let receipts = rows
        .into_iter()
        .zip(appended)
        .map(|(row, outcome)| {
            Ok(match outcome {
                Appended::New { seq } => {
                    let offset = codec.format(seq);
                    to_deliver.push(Arc::new(kept(seq, &row, &offset)));
                    Receipt {
                        offset,
                        rooms: row.rooms,
                        duplicate: false,
                    }
                }
                Appended::Duplicate { seq, rooms } => Receipt {
                    offset: codec.format(seq),
                    rooms,
                    duplicate: true,
                },
            })
        })
        .collect();
    (to_deliver, receipts)
}
