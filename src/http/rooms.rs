//! Reads about rooms: the event log for clients that poll.

use axum::extract::{Query, State};
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
    Query(q): Query<EventsQuery>,
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
