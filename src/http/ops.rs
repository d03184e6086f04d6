//! `/health` and `/metrics`.

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde_json::json;

use super::AppState;

/// `GET /health`: 200 with live counts when ready, 503 while starting or draining.
///
/// Counts are this node's (`connections`, `users`, `rooms`), labelled so by `node`.
pub async fn health(State(state): State<AppState>) -> impl IntoResponse {
    let ready = state.ready.load(Ordering::Acquire);
    let census = state.hub.census();
    let body = json!({
        "status": if ready { "OK" } else { "UNAVAILABLE" },
        "ready": ready,
        "connections": census.websocket + census.polling,
        "users": state.presence.users_online().await,
        "rooms": census.rooms,
        "node": state.node_id,
        "uptimeSeconds": state.started.elapsed().as_secs(),
        "eventLog": if state.hub.is_durable() { "on" } else { "off" },
        "offset": state.hub.latest_offset(),
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body))
}

/// `GET /metrics`: Prometheus text.
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let census = state.hub.census();
    crate::metrics::set_gauges(
        census.websocket,
        census.polling,
        census.rooms,
        state.presence.users_online().await,
    );
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}
