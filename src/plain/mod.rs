//! The plain WebSocket front (contract v1.1): `/ws` and `/ws/connect`, for
//! frontends that open a browser `WebSocket` and exchange JSON text frames.
//!
//! * [`frames`] — the wire format: request frames in, replies and events out;
//! * [`conn`] — one connection's task: authentication, reading, writing, heartbeat;
//! * [`registry`] — this node's plain connections and their rooms, as the
//!   hub's [`crate::hub::Fabric`].
//!
//! Like the Socket.IO front it only decodes and encodes: requests become
//! [`crate::commands::Command`]s that the session layer applies, and the hub
//! delivers events to both kinds of connection alike.

pub(crate) mod conn;
pub(crate) mod frames;
mod outbox;
pub(crate) mod registry;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{Query, State, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;

use crate::config::CorsOrigins;
use crate::error::Rejection;
use crate::session::Sessions;
use crate::transport::{ConnInfo, client_ip};
pub(crate) use registry::Registry;

/// What the plain front needs.
pub(crate) struct Front {
    pub sessions: Arc<Sessions>,
    pub registry: Arc<Registry>,
    /// False while starting and draining: new connections get 503.
    pub ready: Arc<AtomicBool>,
    pub cors: CorsOrigins,
    /// How often connections are pinged (`WS_PING_INTERVAL`, 25 s).
    pub ping_every: std::time::Duration,
    /// Silence after which a connection is closed with 4408 (`WS_IDLE_TIMEOUT`, 60 s).
    pub idle_after: std::time::Duration,
}

/// `/ws` and `/ws/connect`.
pub(crate) fn router(front: Arc<Front>) -> Router {
    Router::new()
        .route("/ws", get(upgrade))
        .route("/ws/connect", get(upgrade))
        .with_state(front)
}

/// The query of the upgrade request.
#[derive(Debug, Default, Deserialize)]
struct ConnectQuery {
    token: Option<String>,
    offset: Option<String>,
    client_type: Option<String>,
    client_version: Option<String>,
    device_id: Option<String>,
}

fn refusal(status: StatusCode, r: Rejection) -> Response {
    crate::metrics::rejected(r.code.as_str());
    (status, axum::Json(r.to_json())).into_response()
}

/// Checks what can be refused with an HTTP status, then upgrades.
async fn upgrade(
    State(front): State<Arc<Front>>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    query: Result<Query<ConnectQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    conn_info: Option<axum::Extension<ConnInfo>>,
) -> Response {
    if !front.ready.load(Ordering::Acquire) {
        return refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            Rejection::internal("livehub is not accepting connections right now"),
        );
    }
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok())
        && !origin_allowed(&front.cors, origin)
    {
        return refusal(
            StatusCode::FORBIDDEN,
            Rejection::forbidden(format!("origin {origin} is not allowed")),
        );
    }
    let ws = match ws {
        Ok(ws) => ws,
        Err(_) => {
            return refusal(
                StatusCode::BAD_REQUEST,
                Rejection::bad_request("this endpoint takes a WebSocket upgrade"),
            );
        }
    };
    let settings = &front.sessions.settings;
    let peer = conn_info.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.peer.ip());
    let forwarded = headers.get("x-forwarded-for").and_then(|v| v.to_str().ok());
    let ip = client_ip(peer, forwarded, &settings.trusted_proxies);
    let Some(slot) = front.sessions.admit(ip) else {
        return refusal(
            StatusCode::TOO_MANY_REQUESTS,
            Rejection::rate_limited("too many connections from this address"),
        );
    };
    // A query that cannot be read (a parameter given twice…) is refused, not
    // dropped: dropping it would drop the token and the offset with it.
    let q = match query {
        Ok(Query(q)) => q,
        Err(e) => {
            return refusal(
                StatusCode::BAD_REQUEST,
                Rejection::bad_request(format!("the query string: {}", e.body_text())),
            );
        }
    };
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let token = q.token.filter(|t| !t.is_empty()).or_else(|| {
        authorization
            .and_then(crate::auth::bearer)
            .map(String::from)
    });
    let hello = conn::Hello {
        token,
        offset: q.offset.filter(|o| !o.is_empty()),
        client_type: q.client_type,
        client_version: q.client_version,
        device_id: q.device_id,
        slot,
    };
    // Frames up to MAX_PAYLOAD_BYTES are handled, up to twice that refused with
    // `too_large`; beyond that the read fails and the connection closes (1009).
    let hard_cap = settings.max_payload_bytes * 2;
    ws.max_message_size(hard_cap)
        .max_frame_size(hard_cap)
        .read_buffer_size(1024)
        .on_upgrade(move |socket| conn::serve(front, socket, hello))
}

fn origin_allowed(cors: &CorsOrigins, origin: &str) -> bool {
    match cors {
        CorsOrigins::None | CorsOrigins::Any => true,
        CorsOrigins::List(list) => list.iter().any(|o| o == origin),
    }
}

/// On shutdown: each connection's cleanup (presence, offline mark) runs first,
/// then it is closed with 1012 so that its client reconnects (elsewhere).
pub(crate) async fn drain(front: &Front) {
    use futures_util::StreamExt;
    let ctx = &front.sessions;
    futures_util::stream::iter(front.registry.all())
        .for_each_concurrent(64, |conn| async move {
            crate::session::handlers::on_disconnect(ctx, &conn.session).await;
            conn.close(registry::close::RESTART, "server restarting");
        })
        .await;
    // Each connection's task writes its close frame, waits for the client's
    // close in answer, and then leaves the registry; exiting before that would
    // cut them (1006) instead of 1012, and clients would not know to
    // reconnect at once. A client on a busy machine may take a while to answer.
    let deadline = tokio::time::Instant::now() + conn::ANSWER_PATIENCE;
    while front.registry.len() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}
