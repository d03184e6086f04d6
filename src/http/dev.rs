//! Dev mode only: tokens for the demo users, the controller key for the demo's
//! controller panel, and the demo page itself.
//!
//! None of this exists unless livehub runs with `--dev`.

use axum::Router;
use axum::extract::{Query, State};
use axum::response::IntoResponse;
use axum::routing::get;
use serde::Deserialize;
use serde_json::json;
use tower_http::services::{ServeDir, ServeFile};

use super::AppState;
use super::error::ApiError;
use crate::error::Rejection;

/// The generated secrets of a dev server.
#[derive(Clone)]
pub struct DevInfo {
    /// HS256 secret the dev tokens are signed with.
    pub secret: String,
    /// A controller API key.
    pub api_key: String,
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

pub(super) fn routes(_dev: &DevInfo, demo_dir: Option<&std::path::Path>) -> Router<AppState> {
    let mut r = Router::new()
        .route("/dev/token", get(token))
        .route("/dev/config", get(config));
    if let Some(dir) = demo_dir {
        let index = dir.join("index.html");
        r = r
            .nest_service("/demo", ServeDir::new(dir).fallback(ServeFile::new(&index)))
            .fallback_service(ServeDir::new(dir).fallback(ServeFile::new(index)));
    }
    r
}

/// `GET /dev/token?sub=ana`: a 12-hour token for a demo user.
async fn token(
    State(state): State<AppState>,
    Query(q): Query<TokenQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let dev = state
        .dev
        .as_ref()
        .ok_or_else(|| Rejection::not_found("dev mode is off"))?;
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
async fn config(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let dev = state
        .dev
        .as_ref()
        .ok_or_else(|| Rejection::not_found("dev mode is off"))?;
    let users: Vec<_> = DEMO_USERS
        .iter()
        .map(|(id, name, branch, role)| json!({ "id": id, "name": name, "branchId": branch, "role": role }))
        .collect();
    Ok(axum::Json(
        json!({ "ok": true, "apiKey": dev.api_key, "users": users }),
    ))
}
