//! What a connection does, whichever front it uses: its connect (automatic
//! rooms, replay, presence), each [`Command`], and its disconnect.
//!
//! Every command returns the fields of its reply (each front adds its own
//! success marker: `ok: true`, `success: true`…) or a [`Rejection`]. Nothing
//! here closes a connection: a bad request costs its sender an error reply and
//! nothing else.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_util::FutureExt;
use serde_json::{Map, Value, json};

use super::Sessions;
use super::state::{Job, Outcome, Owed, Session};
use crate::auth::Claims;
use crate::commands::Command;
use crate::error::Rejection;
use crate::events;
use crate::hub::{Fill, JoinFailure, OffsetProblem};
use crate::presence::announce::Departure;
use crate::presence::{self, Departing};
use crate::rooms::{self, EVERYONE};
use crate::store::{OfflineMark, StoreError};

type Ack = Outcome;

/// Runs a connection's queue until it is empty. At most one runs per
/// connection (see [`Session::enqueue`]); the front starts it.
pub(crate) async fn run_queue(ctx: Arc<Sessions>, session: Arc<Session>) {
    while let Some(job) = session.next_job() {
        match job {
            // Each job's future is boxed: this queue's task is spawned per
            // connection, and tokio copies a spawned future whole, more than
            // once. Unboxed, the largest command made it kilobytes: the
            // biggest single cost of a connect in an instruction profile of a
            // connect storm (callgrind: memcpy from task spawn).
            Job::Connect => {
                let run = Box::pin(on_connect(&ctx, &session));
                if AssertUnwindSafe(run).catch_unwind().await.is_err() {
                    tracing::error!(sid = %session.sid, "connect handler panicked");
                }
            }
            Job::Command { command, reply } => {
                let outcome = match command {
                    Ok(command) => {
                        let what = command.name();
                        AssertUnwindSafe(Box::pin(apply(&ctx, &session, command)))
                            .catch_unwind()
                            .await
                            .unwrap_or_else(|_| {
                                tracing::error!(command = what, "handler panicked");
                                Err(Rejection::internal(
                                    "the server failed to handle this request",
                                ))
                            })
                    }
                    Err(r) => Err(r),
                };
                if let Err(r) = &outcome {
                    crate::metrics::rejected(r.code.as_str());
                    tracing::debug!(code = r.code.as_str(), message = %r.message, "request refused");
                }
                if let Some(reply) = reply {
                    reply(outcome);
                }
            }
        }
    }
}

/// Applies one command for a connection: the fields of its reply, or why not.
pub(crate) async fn apply(ctx: &Arc<Sessions>, session: &Arc<Session>, command: Command) -> Ack {
    match command {
        Command::Join { room, since } => join(ctx, session, room.into_string(), since).await,
        Command::Leave { room } => leave(ctx, session, room.into_string()).await,
        Command::Typing { room, typing } => {
            let room = room.into_string();
            if !session.membership.contains(&room) {
                return Err(Rejection::forbidden("join the room before typing in it"));
            }
            let user = session.claims().sub.clone();
            if typing {
                ctx.typing.started(&room, &user);
            } else {
                ctx.typing.stopped(&room, &user);
            }
            Ok(fields(json!({ "room": room })))
        }
        Command::RefreshToken { token } => {
            let fresh = ctx
                .verifier
                .verify(&token)
                .await
                .map_err(|e| Rejection::forbidden(e.to_string()))?;
            let current = session.claims();
            if fresh.sub != current.sub {
                return Err(Rejection::forbidden("the new token is for another user"));
            }
            let exp = fresh.exp;
            *session.claims.lock() = Arc::new(fresh);
            ctx.expiry.watch(session.sid, exp);
            Ok(fields(json!({ "exp": exp })))
        }
        Command::SetPresence { status } => {
            ctx.statuses.changed(&session.claims(), &status);
            Ok(fields(json!({ "status": status })))
        }
        Command::ChatSend(message) => {
            let claims = session.claims();
            rooms::authorize(&claims, message.room.as_str())?;
            let message = ctx.chat.send_message(&claims, &message).await?;
            Ok(fields(json!({ "message": message })))
        }
        Command::ChatHistory {
            room,
            before,
            limit,
        } => {
            rooms::authorize(&session.claims(), room.as_str())?;
            let messages = ctx.chat.history(room.as_str(), before, 0, limit).await?;
            Ok(fields(
                json!({ "room": room.as_str(), "messages": messages }),
            ))
        }
        Command::ChatRead { room, message_ids } => {
            let claims = session.claims();
            rooms::authorize(&claims, room.as_str())?;
            let receipt = ctx
                .chat
                .mark_read(&claims, room.as_str(), &message_ids)
                .await?;
            Ok(fields(receipt))
        }
        Command::Rooms => Ok(fields(json!({ "rooms": visible_rooms(ctx, session) }))),
        // Each front answers with its own `pong`.
        Command::Ping => Ok(fields(json!({ "timestamp": events::now_iso8601() }))),
    }
}

/// The connection's rooms, sorted, without livehub's internal ones.
pub(crate) fn visible_rooms(ctx: &Sessions, session: &Session) -> Vec<String> {
    let mut rooms: Vec<String> = ctx
        .hub
        .rooms_of(session.sid)
        .into_iter()
        .filter(|r| !rooms::is_internal(r))
        .collect();
    rooms.sort();
    rooms
}

/// Joins the automatic rooms, replaying what the socket missed: after
/// `auth.offset` when it gave one, else the offline queue of its user room.
/// Events emitted while the connect was under way are always delivered.
pub(crate) async fn on_connect(ctx: &Arc<Sessions>, session: &Arc<Session>) {
    let claims = session.claims();
    let mut rooms = rooms::automatic_rooms(&claims);
    rooms.push(EVERYONE.to_string());
    let connected_at = session.connected_at;
    let mut after: Vec<(String, i64)> = rooms.iter().map(|r| (r.clone(), connected_at)).collect();

    let Some(Arrival { first, mark }) = arrive(ctx, session, &claims).await else {
        return; // disconnected before its connect job ran
    };
    let Ok(mark) = mark else {
        return retry_later(ctx, session).await;
    };
    let mut owed = false;
    if let Some(offset) = &session.auth_offset {
        // An offset covers the offline queue too.
        match ctx.hub.resolve_offset(offset).await {
            // Its rooms from the offset on, even past this node's position
            // at connect (it saw those events on another node).
            Ok(seq) => match ctx.hub.too_far_behind(&rooms, seq).await {
                Ok(false) => after.iter_mut().for_each(|(_, a)| *a = seq),
                Ok(true) => reset(ctx, session, OffsetProblem::TooFarBehind, offset, None),
                Err(_) => reset(ctx, session, OffsetProblem::Unknown, offset, None),
            },
            Err(problem) => reset(ctx, session, problem, offset, None),
        }
    } else if let Some(since) = queue_start(ctx, mark, first)
        && ctx.hub.user_may_have_events_after(&claims.sub, since)
    {
        let Ok(queue) = offline_queue(ctx, session, &claims, since).await else {
            return retry_later(ctx, session).await;
        };
        if let Some(since) = queue {
            owed = true;
            let user_room = rooms::user_room(&claims.sub);
            for (room, a) in &mut after {
                if *room == user_room {
                    *a = since.min(*a);
                }
            }
        }
    }

    let fill = Fill::new(after, connected_at);
    match ctx
        .hub
        .join(session.sid, session.membership.clone(), rooms, Some(fill))
        .await
    {
        Ok(sent) => {
            crate::metrics::replayed(sent);
            let probe = session.probe.get().and_then(std::sync::Weak::upgrade);
            match probe {
                // The queue is through once the client shows it read it; meanwhile
                // its requests go on (the wait runs beside the session's queue).
                Some(probe) if owed => {
                    let (ctx, session) = (ctx.clone(), session.clone());
                    tokio::spawn(async move {
                        if probe.confirm().await {
                            caught_up(&ctx, &session, &claims).await;
                        }
                    });
                }
                _ if first || owed => caught_up(ctx, session, &claims).await,
                _ => {}
            }
        }
        Err(JoinFailure::Store) => retry_later(ctx, session).await,
        Err(e) => tracing::debug!(sid = %session.sid, ?e, "connect join did not complete"),
    }
}

/// Ends a connect that could not read what its user is owed (the database did
/// not answer): the socket is closed, having been sent nothing of its rooms,
/// so that its client reconnects and reads it then. Left connected it would
/// count as caught up, and the user's queue would be lost.
async fn retry_later(ctx: &Sessions, session: &Session) {
    tracing::warn!(sid = %session.sid, "the offline queue could not be read: the client is told to reconnect");
    session.presence.lock().await.owed = Owed::Unknown;
    ctx.hub.reconnect(session.sid);
}

/// What a connect learnt about its user.
struct Arrival {
    /// The user had no other connection anywhere.
    first: bool,
    /// The user's offline mark, for a connection without an offset; an error
    /// when the database did not answer.
    mark: Result<Option<OfflineMark>, StoreError>,
}

/// The user-level half of a connect: the socket counts among its user's
/// connections, the branch hears `online` when it is the first, and a
/// connection without an offset reads the offline mark — all under the user
/// lock, after any departure of theirs has written its mark. `None` when the
/// socket is already gone.
async fn arrive(ctx: &Sessions, session: &Session, claims: &Claims) -> Option<Arrival> {
    let mut state = session.presence.lock().await;
    if state.gone {
        return None;
    }
    // The user's transition, status and offline mark, in one order with
    // their other sockets' (see `UserLocks`).
    let _user = ctx.user_locks.lock(&claims.sub).await;
    state.user_online = true;
    state.counted_branch = claims.branch_id.clone();
    let in_branch = ctx.branch_sockets.arrived(state.counted_branch.as_deref());
    let first = ctx
        .presence
        .connect_user(
            &claims.sub,
            &session.sid.to_string(),
            &Departing {
                branch: claims.branch_id.as_deref(),
                name: claims.display_name(),
                position: session.connected_at,
            },
        )
        .await;
    if first.changed && in_branch <= ctx.settings.presence_broadcast_limit {
        ctx.statuses.connected(claims);
        reannounce_later(ctx, claims, "online", first.reannounce());
    }
    // A user with no event in the retained log has no queue, whatever their
    // mark: no need to read it.
    let mark = if session.auth_offset.is_none()
        && ctx
            .hub
            .user_may_have_events_after(&claims.sub, ctx.hub.retained_from())
    {
        ctx.offline_mark(&claims.sub).await
    } else {
        Ok(None)
    };
    Some(Arrival {
        first: first.changed,
        mark,
    })
}

/// Whether a connection without an offset is owed the user's offline queue,
/// and from where. A queue is owed until some connection has taken all of it
/// (then the mark turns `Online`): after the user's last departure, or from
/// the retained log's start for a user never seen — to every connection,
/// so a reconnect that beats the old connection's cleanup still gets it. An
/// `Online` mark found by the user's first connection means their node died
/// without recording the departure: resume from where that connect started.
fn queue_start(ctx: &Sessions, mark: Option<OfflineMark>, first: bool) -> Option<i64> {
    match mark? {
        OfflineMark::Never => Some(ctx.hub.retained_from()),
        OfflineMark::Offline(seq) => Some(seq),
        OfflineMark::Online(seq) => first.then_some(seq),
    }
}

/// Prepares the replay of an offline queue from `since`: nothing
/// (`replay:reset`) when it holds more than `REPLAY_LIMIT` events. The mark
/// stays until the replay completes, and the socket remembers where it
/// started, so a drop mid-replay loses nothing (see `on_disconnect`). An
/// error when the queue could not be counted.
async fn offline_queue(
    ctx: &Sessions,
    session: &Session,
    claims: &Claims,
    since: i64,
) -> Result<Option<i64>, JoinFailure> {
    let user_room = vec![rooms::user_room(&claims.sub)];
    if ctx.hub.too_far_behind(&user_room, since).await? {
        let offset = ctx.hub.offset_of(since);
        reset(ctx, session, OffsetProblem::TooFarBehind, &offset, None);
        return Ok(None);
    }
    session.presence.lock().await.owed = Owed::From(since);
    Ok(Some(since))
}

/// The user's first connection took its replay: from now on the user is
/// online, caught up to the log's current position.
async fn caught_up(ctx: &Sessions, session: &Session, claims: &Claims) {
    let mut state = session.presence.lock().await;
    if state.gone {
        return; // its disconnect recorded where the queue stands
    }
    let _user = ctx.user_locks.lock(&claims.sub).await;
    state.owed = Owed::Nothing;
    ctx.mark_online(&claims.sub, ctx.hub.position());
}

async fn join(
    ctx: &Arc<Sessions>,
    session: &Arc<Session>,
    room: String,
    since: Option<String>,
) -> Ack {
    let claims = session.claims();
    rooms::authorize(&claims, &room)?;
    if session.membership.contains(&room) {
        let (viewers, count) = ctx
            .presence
            .viewers(&room, ctx.settings.presence_broadcast_limit)
            .await;
        return Ok(fields(
            json!({ "room": room, "replayed": 0, "viewers": viewers, "viewersCount": count }),
        ));
    }
    if session.membership.len() >= ctx.settings.max_rooms_per_socket {
        return Err(Rejection::forbidden(format!(
            "a socket may be in at most {} rooms",
            ctx.settings.max_rooms_per_socket
        )));
    }
    let (fill, reset_reason) = match &since {
        None => (None, None),
        Some(offset) => fill_since(ctx, &room, offset).await?,
    };
    if let (Some(problem), Some(offset)) = (reset_reason, &since) {
        reset(ctx, session, problem, offset, Some(&room));
    }
    let replayed = match ctx
        .hub
        .join(
            session.sid,
            session.membership.clone(),
            vec![room.clone()],
            fill,
        )
        .await
    {
        Ok(n) => n,
        Err(JoinFailure::Store) => return Err(Rejection::internal("the event log is unavailable")),
        Err(JoinFailure::Gone | JoinFailure::Slow) => {
            return Err(Rejection::internal("the socket could not take its replay"));
        }
    };
    crate::metrics::replayed(replayed);
    start_viewing(ctx, session, &claims, &room).await?;
    // A large room lists its first viewers only: listing every one on every
    // join would make filling a room quadratic (see presence::announce).
    let (viewers, count) = ctx
        .presence
        .viewers(&room, ctx.settings.presence_broadcast_limit)
        .await;
    let mut ack = fields(json!({
        "room": room,
        "replayed": replayed,
        "viewers": viewers,
        "viewersCount": count,
    }));
    if let Some(problem) = reset_reason {
        ack.insert("reset".into(), Value::String(problem.as_str().into()));
    }
    Ok(ack)
}

/// What a join with `since` must replay: the fill from that offset, or the
/// reason it cannot be replayed (the client is told to refetch).
async fn fill_since(
    ctx: &Sessions,
    room: &str,
    offset: &str,
) -> Result<(Option<Fill>, Option<OffsetProblem>), Rejection> {
    let seq = match ctx.hub.resolve_offset(offset).await {
        Ok(seq) => seq,
        Err(problem) => return Ok((None, Some(problem))),
    };
    let rooms = [room.to_string()];
    match ctx.hub.too_far_behind(&rooms, seq).await {
        Ok(false) => {
            let fill = Fill::new(vec![(room.to_string(), seq)], ctx.hub.position());
            Ok((Some(fill), None))
        }
        Ok(true) => Ok((None, Some(OffsetProblem::TooFarBehind))),
        Err(_) => Err(Rejection::internal("the event log is unavailable")),
    }
}

/// The socket now views `room`: presence records it, and the room hears of
/// the user when they were not there yet.
async fn start_viewing(
    ctx: &Sessions,
    session: &Session,
    claims: &Claims,
    room: &str,
) -> Result<(), Rejection> {
    let sid = session.sid.to_string();
    let mut state = session.presence.lock().await;
    if state.gone {
        return Err(Rejection::internal("the socket disconnected"));
    }
    let change = ctx
        .presence
        .join(room, &claims.sub, claims.display_name(), &sid)
        .await;
    state.viewing.push(room.to_string());
    drop(state);
    if change.user_changed {
        ctx.announcer.arrived(
            room,
            &claims.sub,
            claims.display_name(),
            &sid,
            change.viewers,
        );
    }
    Ok(())
}

async fn leave(ctx: &Arc<Sessions>, session: &Arc<Session>, room: String) -> Ack {
    let was_in = session.membership.contains(&room);
    ctx.hub.leave(session.sid, &room);
    session.membership.forget(&room);
    let mut state = session.presence.lock().await;
    let before = state.viewing.len();
    state.viewing.retain(|r| *r != room);
    if state.viewing.len() != before {
        stop_viewing(ctx, session, &room, Departure::Left).await;
    }
    drop(state);
    Ok(fields(json!({ "room": room, "left": was_in })))
}

/// The socket no longer views `room`: typing ends, and if it was the user's
/// last socket there, the room hears that the user left.
async fn stop_viewing(ctx: &Sessions, session: &Session, room: &str, how: Departure) {
    let claims = session.claims();
    let sid = session.sid.to_string();
    let change = ctx.presence.leave(room, &claims.sub, &sid).await;
    if change.user_changed {
        ctx.typing.stopped(room, &claims.sub);
        ctx.announcer.departed(
            room,
            &claims.sub,
            claims.display_name(),
            &sid,
            how,
            change.viewers,
        );
    }
}

/// Cleans up after a socket: presence in its rooms, and — when it was the
/// user's last socket — the offline queue mark and an `offline` status.
///
/// Runs once per socket: on its disconnect, or earlier when the server drains.
pub(crate) async fn on_disconnect(ctx: &Arc<Sessions>, session: &Arc<Session>) {
    let mut state = session.presence.lock().await;
    if state.gone {
        return;
    }
    state.gone = true;
    for room in std::mem::take(&mut state.viewing) {
        stop_viewing(ctx, session, &room, Departure::Disconnected).await;
    }
    if !state.user_online {
        return;
    }
    let claims = session.claims();
    let _user = ctx.user_locks.lock(&claims.sub).await;
    let in_branch = ctx.branch_sockets.departed(state.counted_branch.as_deref());
    let last = ctx
        .presence
        .disconnect_user(&claims.sub, &session.sid.to_string())
        .await;
    if last.changed {
        // What was delivered up to now reached the socket; anything later waits
        // for the user's next connection — and so does an offline queue whose
        // replay had not finished. The status goes out before the mark is
        // written: the branch learns at once, and the user's next connect
        // waits for the mark on the user lock.
        let position = ctx.hub.position();
        if in_branch < ctx.settings.presence_broadcast_limit {
            ctx.statuses.changed(&claims, "offline");
            reannounce_later(ctx, &claims, "offline", last.reannounce());
        }
        match state.owed {
            Owed::Nothing => ctx.mark_offline(&claims.sub, position),
            Owed::From(owed) => ctx.mark_offline(&claims.sub, owed.min(position)),
            Owed::Unknown => {}
        }
    }
}

/// Announces `status` again after [`presence::SETTLE`] when `number` is
/// still the user's latest transition: it came right after another node's,
/// whose signal may have reached the branch after this one.
fn reannounce_later(ctx: &Sessions, claims: &Claims, status: &'static str, number: Option<i64>) {
    let Some(number) = number else { return };
    let (statuses, presence, claims) = (ctx.statuses.clone(), ctx.presence.clone(), claims.clone());
    tokio::spawn(async move {
        tokio::time::sleep(presence::SETTLE).await;
        if presence.transition_number(&claims.sub).await == Some(number) {
            statuses.changed(&claims, status);
        }
    });
}

/// Tells the socket its offset cannot be replayed from and it must refetch.
fn reset(
    ctx: &Sessions,
    session: &Session,
    problem: OffsetProblem,
    offset: &str,
    room: Option<&str>,
) {
    let mut payload = json!({
        "reason": problem.as_str(),
        "offset": offset,
        "latestOffset": ctx.hub.latest_offset(),
    });
    if let Some(room) = room {
        payload["room"] = room.into();
    }
    ctx.hub.send_to(session.sid, "replay:reset", &payload);
}

fn fields(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of what a function's call returns, without calling it.
    fn returned_size<A, B, R>(_: impl FnOnce(A, B) -> R) -> usize {
        std::mem::size_of::<R>()
    }

    #[test]
    fn a_connection_queue_is_small_to_spawn() {
        // Spawned per connect and per burst of events, and copied whole by
        // tokio each time: with its jobs inline it was over 5 KiB.
        let size = returned_size(run_queue);
        assert!(size <= 1024, "run_queue's future is {size} bytes");
    }
}
