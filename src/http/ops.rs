//! `/health` and `/metrics`.

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde_json::json;

use super::AppState;

/// `GET /health`: 200 with live counts when ready, 503 while starting or draining.
///
/// `connections` and `rooms` are this node's (named by `node`): the first
/// exact, the second as counted at most two seconds ago; `users` counts
/// users connected anywhere — cluster-wide when clustered. In a cluster,
/// `cluster.ready` is false while Redis is unreachable: the node keeps serving
/// its own sockets (so it stays `ready`), but cross-node signals and presence wait.
pub async fn health(State(state): State<AppState>) -> impl IntoResponse {
    let ready = state.ready.load(Ordering::Acquire);
    let census = state.hub.census();
    let mut body = json!({
        "status": if ready { "OK" } else { "UNAVAILABLE" },
        "ready": ready,
        "connections": state.hub.open_connections(),
        "users": state.presence.users_online().await,
        "rooms": census.rooms,
        "node": state.node_id,
        "uptimeSeconds": state.started.elapsed().as_secs(),
        "eventLog": if state.hub.is_durable() { "on" } else { "off" },
        "offset": state.hub.latest_offset(),
    });
    if let (crate::presence::Presence::Redis(shared), Some(membership)) =
        (&state.presence, &state.membership)
    {
        let cluster = crate::cluster::ClusterHealth::of(membership, shared).await;
        body["cluster"] = json!({
            "ready": cluster.redis_up,
            "redis": if cluster.redis_up { "up" } else { "down" },
            "nodes": cluster.nodes,
        });
    }
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
        census.plain,
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
