//! Room routes: the event log for clients that poll, presence, chat history,
//! read receipts and search.

use axum::extract::State;

use super::error::{Path, Query};
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::error::{ApiError, Caller};
use crate::error::Rejection;

/// Query of `GET /api/v1/events`.
#[derive(Debug, Deserialize)]
pub struct EventsQuery {
    room: Option<String>,
    after: Option<String>,
    limit: Option<String>,
}

/// The most events one page returns.
pub const MAX_EVENTS_PAGE: usize = 1000;

/// `GET /api/v1/events?room=&after=&limit=`: the room's events after an offset,
/// oldest first, each with its `offset`. Without `after`, from the start of the
/// retained log.
pub async fn events(
    State(state): State<AppState>,
    caller: Caller,
    Query(q, _): Query<EventsQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let room = q
        .room
        .ok_or_else(|| Rejection::bad_request("`room` is required"))?;
    caller.may_read(&room)?;
    let limit = match q.limit.as_deref() {
        None => 100,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_EVENTS_PAGE).contains(n))
            .ok_or_else(|| {
                Rejection::bad_request(format!("`limit` must be 1-{MAX_EVENTS_PAGE}"))
            })?,
    };
    let after = match q.after.as_deref().filter(|a| !a.is_empty()) {
        None => 0,
        Some(offset) => state.hub.resolve_offset(offset).await.map_err(|problem| {
            Rejection::bad_request(format!(
                "`after` cannot be read from ({}): refetch the room's state and continue from `latestOffset` {}",
                problem.as_str(),
                state.hub.latest_offset()
            ))
        })?,
    };
    let events = state
        .hub
        .read_events(std::slice::from_ref(&room), after, limit)
        .await?;
    let events: Vec<Value> = events
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(&e.payload).ok())
        .collect();
    Ok(axum::Json(json!({
        "ok": true,
        "room": room,
        "events": events,
        "latestOffset": state.hub.latest_offset(),
    })))
}

/// Query of the presence route.
#[derive(Debug, Deserialize)]
pub struct PresenceQuery {
    limit: Option<String>,
}

/// The most viewers the presence route lists.
pub const MAX_VIEWERS_LISTED: usize = 10_000;

/// `GET /api/v1/rooms/{room}/presence?limit=`: who views the room (200 with 0
/// when nobody): `viewersCount` users in all, up to `limit` (default 1000) of
/// them listed.
pub async fn presence(
    State(state): State<AppState>,
    caller: Caller,
    Path(room, _): Path<String>,
    Query(q, _): Query<PresenceQuery>,
) -> Result<impl IntoResponse, ApiError> {
    caller.may_read(&room)?;
    let limit = int_param(q.limit.as_deref(), "limit")?.unwrap_or(1000);
    if !(0..=MAX_VIEWERS_LISTED as i64).contains(&limit) {
        return Err(
            Rejection::bad_request(format!("`limit` must be 0-{MAX_VIEWERS_LISTED}")).into(),
        );
    }
    let (viewers, count) = state.presence.viewers(&room, limit as usize).await;
    Ok(axum::Json(
        json!({ "ok": true, "room": room, "viewersCount": count, "viewers": viewers }),
    ))
}

/// Query of the history route.
#[derive(Debug, Deserialize)]
pub struct HistoryQuery {
    before: Option<String>,
    limit: Option<String>,
}

fn int_param(v: Option<&str>, name: &str) -> Result<Option<i64>, Rejection> {
    v.filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<i64>()
                .map_err(|_| Rejection::bad_request(format!("`{name}` must be an integer")))
        })
        .transpose()
}

/// `GET /api/v1/rooms/{room}/messages?before=&limit=`: a page of history, newest last.
pub async fn messages(
    State(state): State<AppState>,
    caller: Caller,
    Path(room, _): Path<String>,
    Query(q, _): Query<HistoryQuery>,
) -> Result<impl IntoResponse, ApiError> {
    caller.may_read(&room)?;
    let before = int_param(q.before.as_deref(), "before")?;
    let limit = int_param(q.limit.as_deref(), "limit")?.map(|l| l.clamp(0, 100_000) as usize);
    let messages = state.chat.history(&room, before, 0, limit).await?;
    Ok(axum::Json(
        json!({ "ok": true, "room": room, "messages": messages }),
    ))
}

/// `POST /api/v1/rooms/{room}/read {messageIds}`: read receipts of the calling user.
pub async fn read(
    State(state): State<AppState>,
    caller: Caller,
    Path(room, _): Path<String>,
    super::error::JsonBody(body): super::error::JsonBody,
) -> Result<impl IntoResponse, ApiError> {
    caller.may_read(&room)?;
    let Caller::User(claims) = caller else {
        return Err(Rejection::forbidden(
            "read receipts belong to a user: call with the user's token",
        )
        .into());
    };
    let ids = crate::commands::Fields::of(&body)?.message_ids("messageIds")?;
    let receipt = state.chat.mark_read(&claims, &room, &ids).await?;
    let mut out = json!({ "ok": true });
    if let (Some(o), Value::Object(r)) = (out.as_object_mut(), receipt) {
        o.extend(r);
    }
    Ok(axum::Json(out))
}

/// Query of the search route.
#[derive(Debug, Deserialize)]
pub struct SearchQuery {
    q: Option<String>,
    room: Option<String>,
    limit: Option<String>,
}

/// `GET /api/v1/search?q=&room=`: messages the caller may see, newest first.
pub async fn search(
    State(state): State<AppState>,
    caller: Caller,
    Query(q, _): Query<SearchQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let text =
        q.q.filter(|s| !s.trim().is_empty())
            .ok_or_else(|| Rejection::bad_request("`q` is required"))?;
    if text.len() > 500 {
        return Err(Rejection::bad_request("`q` is longer than 500 bytes").into());
    }
    let room = q.room.filter(|r| !r.is_empty());
    if let Some(room) = &room {
        caller.may_read(room)?;
    }
    let limit = int_param(q.limit.as_deref(), "limit")?.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(Rejection::bad_request("`limit` must be 1-200").into());
    }
    let visible = |r: &str| caller.may_read(r).is_ok();
    let result = state
        .chat
        .search(&text, room.as_deref(), visible, limit as usize)
        .await?;
    Ok(axum::Json(json!({
        "ok": true,
        "messages": result.messages,
        "search": { "mode": result.mode, "note": result.note },
    })))
}
