//! `POST /api/v1/emit` and `/api/v1/emit/batch`: controllers emitting events.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use serde_json::{Value, json};

use super::AppState;
use super::error::{ApiError, Controller, JsonBody};
use crate::commands::Fields;
use crate::error::Rejection;
use crate::events::{Emit, Target};
use crate::hub::Receipt;

/// The most events in one batch.
pub const MAX_BATCH_EVENTS: usize = 1000;

/// How long an emit waits for the log before the controller is answered 503.
/// (A database that answers nothing — frozen, cut off — would otherwise hold
/// the request until the statement timeout or TCP gives up.)
pub const EMIT_DEADLINE: std::time::Duration = std::time::Duration::from_secs(15);

/// `work`'s outcome, or 503 after [`EMIT_DEADLINE`]. An emit still queued
/// then is dropped by the writer; one already in a commit may still land,
/// so the answer says so: a retry with the same idempotency key is safe.
async fn within_deadline<T>(work: impl std::future::Future<Output = T>) -> Result<T, Rejection> {
    tokio::time::timeout(EMIT_DEADLINE, work)
        .await
        .map_err(|_| {
            Rejection::internal(
                "the event log did not answer in time; the event may still be logged: \
             retry with the same Idempotency-Key",
            )
        })
}

/// `POST /api/v1/emit`
pub async fn emit(
    State(state): State<AppState>,
    _: Controller,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> Result<impl IntoResponse, ApiError> {
    let mut emit = parse_emit(&body)?;
    if let Some(key) = headers.get("idempotency-key") {
        let key = key
            .to_str()
            .map_err(|_| Rejection::bad_request("Idempotency-Key must be printable ASCII"))?;
        emit.idempotency_key = Some(key.trim().to_string());
    }
    let receipt = within_deadline(state.hub.emit(emit)).await??;
    Ok((StatusCode::ACCEPTED, axum::Json(receipt_json(&receipt))))
}

/// `POST /api/v1/emit/batch`
pub async fn emit_batch(
    State(state): State<AppState>,
    _: Controller,
    JsonBody(body): JsonBody,
) -> Result<impl IntoResponse, ApiError> {
    let Some(items) = body.get("events").and_then(Value::as_array) else {
        return Err(Rejection::bad_request("the body must be { \"events\": [ … ] }").into());
    };
    if items.is_empty() {
        return Err(Rejection::bad_request("`events` is empty").into());
    }
    if items.len() > MAX_BATCH_EVENTS {
        return Err(Rejection::too_large(format!(
            "a batch holds at most {MAX_BATCH_EVENTS} events"
        ))
        .into());
    }
    let parsed: Vec<Result<Emit, Rejection>> = items
        .iter()
        .map(|item| {
            let mut emit = parse_emit(item)?;
            emit.idempotency_key = match item.get("idempotencyKey") {
                None | Some(Value::Null) => None,
                Some(Value::String(k)) => Some(k.clone()),
                Some(_) => return Err(Rejection::bad_request("`idempotencyKey` must be a string")),
            };
            Ok(emit)
        })
        .collect();
    let valid: Vec<Emit> = parsed
        .iter()
        .filter_map(|r| r.as_ref().ok().cloned())
        .collect();
    let mut outcomes = within_deadline(state.hub.emit_many(valid))
        .await?
        .into_iter();
    let results: Vec<Value> = parsed
        .into_iter()
        .map(
            |p| match p.and_then(|_| outcomes.next().expect("one outcome per valid emit")) {
                Ok(receipt) => receipt_json(&receipt),
                Err(r) => r.to_json(),
            },
        )
        .collect();
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(json!({ "ok": true, "results": results })),
    ))
}

fn receipt_json(r: &Receipt) -> Value {
    let mut v = json!({ "ok": true, "offset": r.offset, "rooms": r.rooms });
    if r.duplicate {
        v["duplicate"] = Value::Bool(true);
    }
    v
}

/// Reads an emit request: `{ event, data, rooms?, user?, users?, branch?, role?, broadcast?, except? }`.
/// Only its shape: the hub checks the rest (see [`crate::events::prepare`]).
pub fn parse_emit(body: &Value) -> Result<Emit, Rejection> {
    let f =
        Fields::of(body).map_err(|_| Rejection::bad_request("an emit must be a JSON object"))?;
    let event = match f.get("event") {
        None => return Err(Rejection::bad_request("`event` is required")),
        Some(_) => f.string("event")?.to_string(),
    };
    let mut users = f.ids("users")?;
    if let Some(user) = f.opt_id("user")? {
        users.insert(0, user);
    }
    let target = Target {
        rooms: f.strings("rooms")?,
        users,
        branch: f.opt_id("branch")?,
        role: f.opt_id("role")?,
        broadcast: f.flag("broadcast")?,
        except: f.strings("except")?,
    };
    Ok(Emit {
        event,
        data: f.object("data")?,
        target,
        idempotency_key: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_target_field() {
        let e = parse_emit(
            &json!({"event": "x", "data": {"a": 1}, "rooms": "order:1", "user": 7, "users": ["u2", 3],
                    "branch": "b", "role": "r", "broadcast": false, "except": ["user:7"]}),
        )
        .unwrap();
        assert_eq!(e.target.rooms, vec!["order:1"]);
        assert_eq!(e.target.users, vec!["7", "u2", "3"]);
        assert_eq!(e.target.branch.as_deref(), Some("b"));
        assert_eq!(e.target.except, vec!["user:7"]);
    }

    #[test]
    fn wrong_types_are_bad_requests() {
        for body in [
            json!([]),
            json!("x"),
            json!({}),
            json!({"event": 5}),
            json!({"event": "x", "data": []}),
            json!({"event": "x", "data": "s"}),
            json!({"event": "x", "rooms": [1]}),
            json!({"event": "x", "rooms": {"a": 1}}),
            json!({"event": "x", "user": ""}),
            json!({"event": "x", "user": 1.5}),
            json!({"event": "x", "broadcast": "yes"}),
            json!({"event": "x", "except": 3}),
        ] {
            let err = parse_emit(&body).expect_err(&body.to_string());
            assert_eq!(err.code.as_str(), "bad_request", "{body}");
        }
    }
}
