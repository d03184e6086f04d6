//! Seed 001's REST routes under `/ws`, for the chat frontend that speaks
//! plain WebSocket: the same chat, search and health as `/api/v1`, in that
//! team's `{"status":"success","data":…}` envelope with snake_case messages,
//! and its room names (`order_123` for `order:123`).

use axum::extract::State;

use super::error::{Path, Query};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::error::{ApiError, Caller, JsonBody};
use crate::auth::Claims;
use crate::chat::MAX_PAGE;
use crate::commands::Fields;
use crate::error::Rejection;
use crate::rooms::{canonical_room, underscore_room};

/// The routes, under `/ws`.
pub fn routes() -> axum::Router<AppState> {
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/ws/rooms", get(rooms))
        .route("/ws/rooms/{room}/messages", get(messages))
        .route("/ws/rooms/{room}/mark-read", post(mark_read))
        .route("/ws/search", get(search))
        .route("/ws/health", get(health))
}

/// A refusal in seed 001's error envelope.
pub struct SeedError(Rejection);

impl From<Rejection> for SeedError {
    fn from(r: Rejection) -> Self {
        SeedError(r)
    }
}

impl From<ApiError> for SeedError {
    fn from(e: ApiError) -> Self {
        SeedError(e.0)
    }
}

impl IntoResponse for SeedError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.code.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
        crate::metrics::rejected(self.0.code.as_str());
        let body = json!({
            "status": "error",
            "error": { "code": self.0.code.as_str(), "message": self.0.message },
        });
        (status, axum::Json(body)).into_response()
    }
}

fn success(data: Value) -> Response {
    axum::Json(json!({ "status": "success", "data": data })).into_response()
}

/// The user behind the request's token (these routes are the user's own).
fn user(caller: Result<Caller, ApiError>) -> Result<Claims, SeedError> {
    match caller? {
        Caller::User(claims) => Ok(claims),
        Caller::Controller => Err(Rejection::forbidden(
            "these routes belong to a user: call with the user's token",
        )
        .into()),
    }
}

/// A room as the client names it, checked against the policy: livehub's room.
fn readable(claims: &Claims, named: &str) -> Result<String, SeedError> {
    let room = canonical_room(named).unwrap_or_else(|| named.to_string());
    crate::rooms::authorize(claims, &room)?;
    Ok(room)
}

/// A message in seed 001's shape, its room named as the client named it.
fn snake_message(m: &Value, named: Option<&str>) -> Value {
    let field = |k: &str| m.get(k).cloned().unwrap_or(Value::Null);
    let room = match named {
        Some(n) => Value::String(n.to_string()),
        None => {
            let r = m.get("room").and_then(Value::as_str).unwrap_or_default();
            Value::String(underscore_room(r).unwrap_or_else(|| r.to_string()))
        }
    };
    let read_by: Vec<Value> = m
        .get("readBy")
        .and_then(Value::as_array)
        .map(|r| {
            r.iter()
                .map(|x| json!({ "user_id": x.get("userId"), "read_at": x.get("readAt") }))
                .collect()
        })
        .unwrap_or_default();
    json!({
        "id": field("id"),
        "room": room,
        "sender_id": field("senderId"),
        "sender_name": field("senderName"),
        "content": field("content"),
        "message_type": field("messageType"),
        "client_id": field("clientId"),
        "created_at": field("createdAt"),
        "read_by": read_by,
    })
}

/// Query of the messages route.
#[derive(Debug, Deserialize)]
pub struct PageQuery {
    limit: Option<String>,
    offset: Option<String>,
}

fn count_param(
    v: Option<&str>,
    name: &str,
    default: usize,
    max: usize,
) -> Result<usize, SeedError> {
    match v.filter(|s| !s.is_empty()) {
        None => Ok(default),
        Some(s) => s
            .parse::<usize>()
            .ok()
            .filter(|n| *n <= max)
            .ok_or_else(|| Rejection::bad_request(format!("`{name}` must be 0-{max}")).into()),
    }
}

/// The most messages `offset` may skip: the database walks past each.
const MAX_SKIP: usize = 1_000_000;

/// `GET /ws/rooms/{room}/messages?limit=50&offset=0`: newest last; `offset`
/// skips that many of the newest.
async fn messages(
    State(state): State<AppState>,
    caller: Result<Caller, ApiError>,
    Path(named, _): Path<String, SeedError>,
    Query(q, _): Query<PageQuery, SeedError>,
) -> Result<Response, SeedError> {
    let claims = user(caller)?;
    let room = readable(&claims, &named)?;
    let limit = count_param(q.limit.as_deref(), "limit", 50, MAX_PAGE)?.max(1);
    let skip = count_param(q.offset.as_deref(), "offset", 0, MAX_SKIP)?;
    let messages = state.chat.history(&room, None, skip, Some(limit)).await?;
    let messages: Vec<Value> = messages
        .iter()
        .map(|m| snake_message(m, Some(&named)))
        .collect();
    Ok(success(json!({ "room": named, "messages": messages })))
}

/// `POST /ws/rooms/{room}/mark-read {"message_ids":[…]}`.
async fn mark_read(
    State(state): State<AppState>,
    caller: Result<Caller, ApiError>,
    Path(named, _): Path<String, SeedError>,
    body: Result<JsonBody, ApiError>,
) -> Result<Response, SeedError> {
    let claims = user(caller)?;
    let room = readable(&claims, &named)?;
    let JsonBody(body) = body?;
    let ids = Fields::of(&body)?.message_ids("message_ids")?;
    let receipt = state.chat.mark_read(&claims, &room, &ids).await?;
    let marked = receipt
        .get("messageIds")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    Ok(success(json!({ "room": named, "marked": marked })))
}

/// Query of the search route.
#[derive(Debug, Deserialize)]
pub struct SeedSearch {
    query: Option<String>,
    room_name: Option<String>,
}

/// `GET /ws/search?query=&room_name=`.
async fn search(
    State(state): State<AppState>,
    caller: Result<Caller, ApiError>,
    Query(q, _): Query<SeedSearch, SeedError>,
) -> Result<Response, SeedError> {
    let claims = user(caller)?;
    let text = q
        .query
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| Rejection::bad_request("`query` is required"))?;
    if text.len() > 500 {
        return Err(Rejection::bad_request("`query` is longer than 500 bytes").into());
    }
    let named = q.room_name.filter(|r| !r.is_empty());
    let room = match &named {
        Some(n) => Some(readable(&claims, n)?),
        None => None,
    };
    let visible = |r: &str| crate::rooms::authorize(&claims, r).is_ok();
    let found = state
        .chat
        .search(&text, room.as_deref(), visible, 50)
        .await?;
    let messages: Vec<Value> = found
        .messages
        .iter()
        .map(|m| snake_message(m, named.as_deref()))
        .collect();
    Ok(success(json!({ "messages": messages })))
}

/// `GET /ws/rooms`: the rooms of the caller's live connections on this node
/// and the chat rooms it wrote in, in seed 001's names where they have one.
async fn rooms(
    State(state): State<AppState>,
    caller: Result<Caller, ApiError>,
) -> Result<Response, SeedError> {
    let claims = user(caller)?;
    let mut rooms = state.hub.user_rooms(&claims.sub);
    rooms.extend(state.chat.rooms_written_by(&claims.sub).await?);
    rooms.retain(|r| crate::rooms::authorize(&claims, r).is_ok());
    let mut named: Vec<String> = rooms
        .iter()
        .map(|r| underscore_room(r).unwrap_or_else(|| r.clone()))
        .collect();
    named.sort();
    named.dedup();
    Ok(success(json!({ "rooms": named })))
}

/// `GET /ws/health` (no auth): `degraded` when the database or, in a cluster,
/// Redis is unreachable.
async fn health(State(state): State<AppState>) -> Response {
    let census = state.hub.census();
    let database_up = state.chat.store_reachable().await;
    let redis = match &state.presence {
        crate::presence::Presence::Redis(shared) => Some(shared.is_healthy()),
        _ => None,
    };
    let healthy = database_up && redis != Some(false);
    let score = match (database_up, redis) {
        (true, Some(false)) | (false, None | Some(true)) => 50,
        (false, Some(false)) => 0,
        _ => 100,
    };
    let body = json!({
        "health_status": if healthy { "healthy" } else { "degraded" },
        "health_score": score,
        "redis_connected": redis.unwrap_or(false),
        "connection_stats": {
            "total_connections": state.hub.open_connections(),
            "unique_users": state.presence.users_online().await,
            "total_rooms": census.rooms,
        },
    });
    axum::Json(body).into_response()
}
