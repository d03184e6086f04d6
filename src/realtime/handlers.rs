//! The client events: what each one checks and does.
//!
//! Every handler returns the fields of its ack (`ok: true` is added by the
//! dispatcher) or a [`Rejection`]. Nothing here closes a socket: a bad event
//! costs its sender an error ack and nothing else.

use std::sync::Arc;

use serde_json::{Map, Value, json};
use socketioxide::adapter::Adapter;
use socketioxide::extract::SocketRef;

use super::Realtime;
use super::session::Session;
use crate::auth::Claims;
use crate::error::Rejection;
use crate::events;
use crate::hub::{Fill, JoinFailure, OffsetProblem};
use crate::presence::announce::Departure;
use crate::rooms::{self, EVERYONE, EntityKind};

type Ack = Result<Map<String, Value>, Rejection>;

/// Handles one client event.
pub async fn on_event<A: Adapter>(
    ctx: &Arc<Realtime>,
    socket: &SocketRef<A>,
    session: &Arc<Session>,
    name: &str,
    data: Value,
) -> Ack {
    match name {
        "join:shipment" => {
            let room = entity_room(&data, EntityKind::Shipment, "shipmentId")?;
            join(ctx, session, room, since(&data)?).await
        }
        "join:order" => {
            let room = entity_room(&data, EntityKind::Order, "orderId")?;
            join(ctx, session, room, since(&data)?).await
        }
        "subscribe" => join(ctx, session, room_field(&data)?, since(&data)?).await,
        "leave:shipment" => {
            leave(
                ctx,
                socket,
                session,
                entity_room(&data, EntityKind::Shipment, "shipmentId")?,
            )
            .await
        }
        "leave:order" => {
            leave(
                ctx,
                socket,
                session,
                entity_room(&data, EntityKind::Order, "orderId")?,
            )
            .await
        }
        "unsubscribe" => leave(ctx, socket, session, room_field(&data)?).await,
        "typing:start" | "typing:stop" => {
            let room = room_field(&data)?;
            rooms::parse(&room)?;
            if !session.membership.contains(&room) {
                return Err(Rejection::forbidden("join the room before typing in it"));
            }
            let user = session.claims().sub.clone();
            if name == "typing:start" {
                ctx.typing.started(&room, &user);
            } else {
                ctx.typing.stopped(&room, &user);
            }
            Ok(fields(json!({ "room": room })))
        }
        "auth:refresh" => {
            let token = match object(&data)?.get("token") {
                Some(Value::String(t)) if !t.is_empty() => t,
                _ => return Err(Rejection::bad_request("`token` must be a string")),
            };
            let fresh = ctx
                .verifier
                .verify(token)
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
        "presence:set" => {
            let status = match object(&data)?.get("status") {
                Some(Value::String(s)) if PRESENCE_STATUSES.contains(&s.as_str()) => s.clone(),
                _ => {
                    return Err(Rejection::bad_request(
                        "`status` must be one of online, away, busy",
                    ));
                }
            };
            announce_status(ctx, &session.claims(), &status);
            Ok(fields(json!({ "status": status })))
        }
        "chat:send" => {
            let room = room_field(&data)?;
            let claims = session.claims();
            rooms::authorize(&claims, &room)?;
            let message = ctx.chat.send(&claims, &room, object(&data)?).await?;
            Ok(fields(json!({ "message": message })))
        }
        "chat:history" => {
            let room = room_field(&data)?;
            rooms::authorize(&session.claims(), &room)?;
            let obj = object(&data)?;
            let before = optional_int(obj.get("before"), "before")?;
            let limit = optional_int(obj.get("limit"), "limit")?
                .map(|l| l.clamp(0, i64::from(u16::MAX)) as usize);
            let messages = ctx.chat.history(&room, before, limit).await?;
            Ok(fields(json!({ "room": room, "messages": messages })))
        }
        "chat:read" => {
            let room = room_field(&data)?;
            let claims = session.claims();
            rooms::authorize(&claims, &room)?;
            let ids = message_ids(object(&data)?.get("messageIds"))?;
            let receipt = ctx.chat.mark_read(&claims, &room, &ids).await?;
            Ok(fields(receipt))
        }
        "rooms" => {
            let mut rooms: Vec<String> = socket
                .rooms()
                .into_iter()
                .map(|r| r.to_string())
                .filter(|r| !rooms::is_internal(r))
                .collect();
            rooms.sort();
            Ok(fields(json!({ "rooms": rooms })))
        }
        "ping" => {
            let timestamp = events::now_iso8601();
            ctx.hub
                .send_to(session.sid, "pong", &json!({ "timestamp": timestamp }));
            Ok(fields(json!({ "timestamp": timestamp })))
        }
        _ => Err(Rejection::not_found(format!("unknown event `{name}`"))),
    }
}

/// Joins the automatic rooms, replaying what the socket missed: after
/// `auth.offset` when it gave one, else the offline queue of its user room.
/// Events emitted while the connect was under way are always delivered.
pub async fn on_connect<A: Adapter>(
    ctx: &Arc<Realtime>,
    _socket: &SocketRef<A>,
    session: &Arc<Session>,
) {
    let claims = session.claims();
    let mut rooms = rooms::automatic_rooms(&claims);
    rooms.push(EVERYONE.to_string());
    let connected_at = session.connected_at;
    let mut after: Vec<(String, i64)> = rooms.iter().map(|r| (r.clone(), connected_at)).collect();

    let offline_since = {
        let mut state = session.presence.lock().await;
        if state.gone {
            return; // disconnected before its connect job ran
        }
        // The user's transition, status and offline mark, in one order with
        // their other sockets' (see `UserLocks`).
        let _user = ctx.user_locks.lock(&claims.sub).await;
        state.user_online = true;
        state.counted_branch = claims.branch_id.clone();
        let in_branch = ctx.branch_sockets.arrived(state.counted_branch.as_deref());
        if ctx
            .presence
            .connect_user(&claims.sub, &session.sid.to_string())
            .await
            && in_branch <= ctx.settings.presence_broadcast_limit
        {
            announce_status(ctx, &claims, "online");
        }
        if session.auth_offset.is_some() {
            // An offset covers the offline queue too.
            ctx.forget_offline(&claims.sub).await;
            None
        } else {
            ctx.take_offline(&claims.sub).await
        }
    };

    if let Some(offset) = &session.auth_offset {
        match ctx.hub.resolve_offset(offset).await {
            Ok(seq) => match ctx.hub.too_far_behind(&rooms, seq).await {
                Ok(false) => after.iter_mut().for_each(|(_, a)| *a = seq.min(*a)),
                Ok(true) => reset(ctx, session, OffsetProblem::TooFarBehind, offset, None),
                Err(_) => reset(ctx, session, OffsetProblem::Unknown, offset, None),
            },
            Err(problem) => reset(ctx, session, problem, offset, None),
        }
    } else if let Some(since) = offline_since {
        let user_room = rooms::user_room(&claims.sub);
        for (room, a) in &mut after {
            if *room == user_room {
                *a = since.min(*a);
            }
        }
    }

    let fill = Fill {
        after,
        marked_through: connected_at,
    };
    match ctx
        .hub
        .join(session.sid, session.membership.clone(), rooms, Some(fill))
        .await
    {
        Ok(sent) if sent > 0 => {
            crate::metrics::replayed(sent);
            tracing::debug!(sid = %session.sid, sent, "connect caught up");
        }
        Ok(_) => {}
        Err(e) => tracing::debug!(sid = %session.sid, ?e, "connect join did not complete"),
    }
}

async fn join(
    ctx: &Arc<Realtime>,
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
    let mut reset_reason = None;
    let fill = match &since {
        None => None,
        Some(offset) => match ctx.hub.resolve_offset(offset).await {
            Ok(seq) => match ctx
                .hub
                .too_far_behind(std::slice::from_ref(&room), seq)
                .await
            {
                Ok(false) => Some(Fill {
                    after: vec![(room.clone(), seq)],
                    marked_through: ctx.hub.position(),
                }),
                Ok(true) => {
                    reset_reason = Some(OffsetProblem::TooFarBehind);
                    None
                }
                Err(_) => return Err(Rejection::internal("the event log is unavailable")),
            },
            Err(problem) => {
                reset_reason = Some(problem);
                None
            }
        },
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
    let sid = session.sid.to_string();
    let mut state = session.presence.lock().await;
    if state.gone {
        return Err(Rejection::internal("the socket disconnected"));
    }
    let change = ctx
        .presence
        .join(&room, &claims.sub, claims.display_name(), &sid)
        .await;
    state.viewing.push(room.clone());
    drop(state);
    if change.user_changed {
        ctx.announcer.arrived(
            &room,
            &claims.sub,
            claims.display_name(),
            &sid,
            change.viewers,
        );
    }
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

async fn leave<A: Adapter>(
    ctx: &Arc<Realtime>,
    socket: &SocketRef<A>,
    session: &Arc<Session>,
    room: String,
) -> Ack {
    rooms::parse(&room)?;
    let was_in = session.membership.contains(&room);
    socket.leave(room.clone());
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
async fn stop_viewing(ctx: &Realtime, session: &Session, room: &str, how: Departure) {
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
pub async fn on_disconnect(ctx: &Arc<Realtime>, session: &Arc<Session>) {
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
    if ctx
        .presence
        .disconnect_user(&claims.sub, &session.sid.to_string())
        .await
    {
        // What was delivered up to now reached the socket; anything later waits
        // for the user's next connection. The status goes out before the mark
        // is written: the branch learns at once, and the user's next connect
        // waits for the mark on the user lock.
        let position = ctx.hub.position();
        if in_branch < ctx.settings.presence_broadcast_limit {
            announce_status(ctx, &claims, "offline");
        }
        ctx.mark_offline(&claims.sub, position).await;
    }
}

/// Statuses a client may set; `offline` is livehub's to say.
pub const PRESENCE_STATUSES: &[&str] = &["online", "away", "busy"];

/// Tells the user's branch room their status.
fn announce_status(ctx: &Realtime, claims: &Claims, status: &str) {
    if let Some(branch) = &claims.branch_id {
        ctx.hub.signal(
            &[format!("branch:{branch}")],
            &[],
            "presence",
            &json!({
                "userId": claims.sub,
                "name": claims.display_name(),
                "status": status,
                "timestamp": events::now_iso8601(),
            }),
        );
    }
}

/// Tells the socket its offset cannot be replayed from and it must refetch.
fn reset(
    ctx: &Realtime,
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

fn object(data: &Value) -> Result<&Map<String, Value>, Rejection> {
    data.as_object()
        .ok_or_else(|| Rejection::bad_request("the payload must be a JSON object"))
}

fn entity_room(data: &Value, kind: EntityKind, field: &str) -> Result<String, Rejection> {
    let obj = object(data)?;
    let id = events::id_value(obj.get(field)).ok_or_else(|| {
        Rejection::bad_request(format!(
            "`{field}` must be a non-empty string or an integer"
        ))
    })?;
    let room = rooms::entity_room(kind, &id);
    rooms::parse(&room)?;
    Ok(room)
}

fn room_field(data: &Value) -> Result<String, Rejection> {
    match object(data)?.get("room") {
        Some(Value::String(room)) => Ok(room.clone()),
        _ => Err(Rejection::bad_request("`room` must be a string")),
    }
}

fn optional_int(v: Option<&Value>, field: &str) -> Result<Option<i64>, Rejection> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) if n.is_i64() => Ok(n.as_i64()),
        Some(Value::String(s)) if s.parse::<i64>().is_ok() => Ok(s.parse().ok()),
        Some(_) => Err(Rejection::bad_request(format!(
            "`{field}` must be an integer"
        ))),
    }
}

/// `messageIds`: a list of message ids (integers, or strings of digits).
pub fn message_ids(v: Option<&Value>) -> Result<Vec<i64>, Rejection> {
    let bad = || Rejection::bad_request("`messageIds` must be a list of message ids");
    let Some(Value::Array(items)) = v else {
        return Err(bad());
    };
    items
        .iter()
        .map(|i| match i {
            Value::Number(n) => n.as_i64().ok_or_else(bad),
            Value::String(s) => s.parse().map_err(|_| bad()),
            _ => Err(bad()),
        })
        .collect()
}

fn since(data: &Value) -> Result<Option<String>, Rejection> {
    match data.get("since") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(Rejection::bad_request("`since` must be an offset string")),
    }
}
