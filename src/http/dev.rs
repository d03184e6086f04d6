//! Dev mode only: tokens for the demo users, the controller key for the demo's
//! controller panel, and the demo page itself.
//!
//! None of this exists unless livehub runs with `--dev`.

use axum::Router;
use axum::extract::State;

use super::error::Query;
use axum::response::IntoResponse;
use axum::routing::get;
use serde::Deserialize;
use serde_json::json;
use tower_http::services::{ServeDir, ServeFile};

use super::AppState;
use super::error::ApiError;
use crate::error::Rejection;
use crate::transport::ConnInfo;

/// The generated secrets of a dev server.
#[derive(Clone)]
pub struct DevInfo {
    /// HS256 secret the dev tokens are signed with.
    pub secret: String,
    /// A controller API key.
    pub api_key: String,
    /// Both were generated for this run. With a configured secret or key the
    /// dev routes are off: they would hand out real credentials.
    pub generated: bool,
}

/// Demo users: (id, name, branch, role).
pub const DEMO_USERS: &[(&str, &str, &str, &str)] = &[
    ("ana", "Ana Ortiz", "north", "manager"),
    ("ben", "Ben Okafor", "north", "operator"),
    ("chen", "Chen Wei", "south", "operator"),
    ("dana", "Dana Levi", "south", "admin"),
];

#[derive(Deserialize)]
struct TokenQuery {
    sub: Option<String>,
}

pub(super) fn routes(dev: &DevInfo, demo_dir: Option<&std::path::Path>) -> Router<AppState> {
    let mut r = Router::new();
    if dev.generated {
        r = r
            .route("/dev/token", get(token))
            .route("/dev/config", get(config));
    }
    if let Some(dir) = demo_dir {
        let index = dir.join("index.html");
        r = r
            .nest_service("/demo", ServeDir::new(dir).fallback(ServeFile::new(&index)))
            .fallback_service(ServeDir::new(dir).fallback(ServeFile::new(index)));
    }
    r
}

/// The dev secrets, for a request from this machine only (a dev server bound
/// to every interface must not mint tokens for the network).
fn dev_for(
    state: &AppState,
    conn: Option<axum::Extension<ConnInfo>>,
) -> Result<&DevInfo, Rejection> {
    let local = conn.is_some_and(|c| c.peer.ip().is_loopback());
    match &state.dev {
        Some(dev) if local => Ok(dev),
        _ => Err(Rejection::not_found("no such route")),
    }
}

/// `GET /dev/token?sub=ana`: a 12-hour token for a demo user.
async fn token(
    State(state): State<AppState>,
    conn: Option<axum::Extension<ConnInfo>>,
    Query(q, _): Query<TokenQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let dev = dev_for(&state, conn)?;
    let sub = q.sub.unwrap_or_else(|| DEMO_USERS[0].0.to_string());
    let (_, name, branch, role) = DEMO_USERS
        .iter()
        .find(|u| u.0 == sub)
        .ok_or_else(|| Rejection::not_found(format!("no demo user `{sub}`")))?;
    let token = crate::auth::mint_dev_token(
        &dev.secret,
        &sub,
        Some(branch),
        Some(role),
        Some(name),
        12 * 3600,
    );
    Ok(axum::Json(
        json!({ "ok": true, "token": token, "user": { "id": sub, "name": name, "branchId": branch, "role": role } }),
    ))
}

/// `GET /dev/config`: the demo users and the controller key.
async fn config(
    State(state): State<AppState>,
    conn: Option<axum::Extension<ConnInfo>>,
) -> Result<impl IntoResponse, ApiError> {
    let dev = dev_for(&state, conn)?;
    let users: Vec<_> = DEMO_USERS
        .iter()
        .map(|(id, name, branch, role)| json!({ "id": id, "name": name, "branchId": branch, "role": role }))
        .collect();
    Ok(axum::Json(
        json!({ "ok": true, "apiKey": dev.api_key, "users": users }),
    ))
}
