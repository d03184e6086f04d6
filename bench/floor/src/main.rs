//! The floor for livehub's benchmarks: what socketioxide + axum cost before any
//! livehub feature. It has exactly the slice of livehub's contract that the
//! scenarios use, written the shortest way the libraries allow:
//!
//! - HS256 tokens checked in a connect middleware (`auth.token`), and the
//!   automatic rooms `user:{sub}` and `branch:{branchId}`;
//! - `join:shipment` / `leave:shipment` with an ack;
//! - `POST /api/v1/emit` (Bearer API key) → `io.to(rooms).emit(…)`, with the
//!   contract's default rooms for shipment events;
//! - `GET /health`.
//!
//! No log, no replay, no presence, no rate limits, no lag detection: the gap
//! between this and livehub is what those cost.
//!
//! Configuration: HOST, PORT, JWT_SECRET, API_KEYS (comma-separated).

use std::collections::HashSet;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use socketioxide::SocketIo;
use socketioxide::extract::{AckSender, Data, SocketRef};
use socketioxide::handler::ConnectHandler;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Clone)]
struct Floor {
    io: SocketIo,
    api_keys: Arc<HashSet<String>>,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    #[serde(rename = "branchId")]
    branch_id: Option<Value>,
}

#[derive(Clone)]
struct User(Arc<Claims>);

#[derive(Deserialize)]
struct Auth {
    token: Option<String>,
}

#[derive(Deserialize)]
struct EmitRequest {
    event: String,
    #[serde(default)]
    data: Map<String, Value>,
    rooms: Option<Value>,
    user: Option<Value>,
}

const SHIPMENT_EVENTS: [&str; 4] = [
    "shipment:updated",
    "shipment:rejected",
    "document:uploaded",
    "inspection:status_changed",
];

#[tokio::main]
async fn main() {
    let host = std::env::var("HOST").unwrap_or_else(|_| "127.0.0.1".into());
    let port = std::env::var("PORT").unwrap_or_else(|_| "3000".into());
    let secret = std::env::var("JWT_SECRET").expect("JWT_SECRET is required");
    let api_keys: HashSet<String> = std::env::var("API_KEYS")
        .unwrap_or_default()
        .split(',')
        .map(|k| k.trim().to_string())
        .filter(|k| !k.is_empty())
        .collect();
    assert!(!api_keys.is_empty(), "API_KEYS is required");

    let (layer, io) = SocketIo::new_layer();
    let key = Arc::new(DecodingKey::from_secret(secret.as_bytes()));
    let authenticate = move |s: SocketRef, Data(auth): Data<Auth>| {
        let key = key.clone();
        async move { verify(&s, &key, auth) }
    };
    io.ns("/", on_connect.with(authenticate));

    let floor = Floor {
        io,
        api_keys: Arc::new(api_keys),
    };
    let app = axum::Router::new()
        .route("/api/v1/emit", post(emit))
        .route("/health", get(health))
        .with_state(floor)
        .layer(layer);
    let listener = tokio::net::TcpListener::bind(format!("{host}:{port}"))
        .await
        .expect("bind");
    println!(
        "floor listening on http://{}",
        listener.local_addr().unwrap()
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .expect("serve");
}

fn verify(s: &SocketRef, key: &DecodingKey, auth: Auth) -> Result<(), &'static str> {
    let token = auth.token.ok_or("unauthorized: missing token")?;
    let claims = jsonwebtoken::decode::<Claims>(&token, key, &Validation::new(Algorithm::HS256))
        .map_err(|_| "unauthorized: invalid token")?
        .claims;
    s.extensions.insert(User(Arc::new(claims)));
    register_handlers(s);
    Ok(())
}

async fn on_connect(s: SocketRef) {
    let Some(User(claims)) = s.extensions.get::<User>() else {
        return;
    };
    s.join(format!("user:{}", claims.sub));
    if let Some(branch) = &claims.branch_id {
        s.join(format!("branch:{}", id_text(branch)));
    }
}

/// Registered by the middleware, before socketioxide sends CONNECT: the connect
/// handler is spawned after it, so a client's first event could arrive before
/// handlers registered there exist and be dropped without an answer (3 of
/// 5,000 `join:shipment`s in a fan-out set-up, each waiting out the load
/// generator's 30 s timeout). livehub registers its handlers the same way.
fn register_handlers(s: &SocketRef) {
    s.on(
        "join:shipment",
        async |s: SocketRef, ack: AckSender, Data(body): Data<Value>| match body
            .get("shipmentId")
            .map(id_text)
        {
            Some(id) if !id.is_empty() => {
                let room = format!("shipment:{id}");
                s.join(room.clone());
                let _ = ack.send(&json!({ "ok": true, "room": room }));
            }
            _ => {
                let error = json!({ "code": "bad_request", "message": "`shipmentId` is required" });
                let _ = ack.send(&json!({ "ok": false, "error": error }));
            }
        },
    );
    s.on(
        "leave:shipment",
        async |s: SocketRef, ack: AckSender, Data(body): Data<Value>| {
            if let Some(id) = body.get("shipmentId").map(id_text) {
                s.leave(format!("shipment:{id}"));
            }
            let _ = ack.send(&json!({ "ok": true }));
        },
    );
}

fn id_text(id: &Value) -> String {
    match id {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

async fn emit(State(floor): State<Floor>, headers: HeaderMap, body: Json<EmitRequest>) -> Response {
    let key = headers
        .get("authorization")
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "));
    if !key.is_some_and(|k| floor.api_keys.contains(k.trim())) {
        return fail(StatusCode::UNAUTHORIZED, "unauthorized", "API key required");
    }
    let Json(EmitRequest {
        event,
        mut data,
        rooms,
        user,
    }) = body;
    let mut targets: Vec<String> = match rooms {
        Some(Value::String(room)) => vec![room],
        Some(Value::Array(list)) => list
            .iter()
            .filter_map(|r| r.as_str().map(String::from))
            .collect(),
        _ => Vec::new(),
    };
    if let Some(user) = user {
        targets.push(format!("user:{}", id_text(&user)));
    }
    if targets.is_empty()
        && SHIPMENT_EVENTS.contains(&event.as_str())
        && let Some(id) = data.get("shipmentId")
    {
        targets.push(format!("shipment:{}", id_text(id)));
    }
    if targets.is_empty() {
        return fail(StatusCode::BAD_REQUEST, "bad_request", "no target");
    }
    data.insert("type".into(), Value::String(event.clone()));
    let _ = floor.io.to(targets.clone()).emit(&event, &data).await;
    (
        StatusCode::ACCEPTED,
        Json(json!({ "ok": true, "rooms": targets })),
    )
        .into_response()
}

async fn health(State(floor): State<Floor>) -> Json<Value> {
    let connections = floor.io.sockets().len();
    Json(json!({ "status": "OK", "ready": true, "connections": connections }))
}

fn fail(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(json!({ "ok": false, "error": { "code": code, "message": message } })),
    )
        .into_response()
}
