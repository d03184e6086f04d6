//! The HTTP side: the controller API, user-facing reads, `/health`, `/metrics`,
//! and (in dev mode) the demo page — all on the same port as Socket.IO.

pub mod dev;
pub mod emit;
pub mod error;
pub mod ops;
pub mod rooms;
pub mod seed_chat;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::set_header::SetResponseHeaderLayer;

use crate::auth::{ApiKeys, Verifier};
use crate::cluster::forward::{Forwarder, Route};
use crate::config::CorsOrigins;
use crate::hub::Hub;
use crate::transport::{ConnInfo, TransportControl, engine_session};
use error::{ApiError, Controller, Path};

/// What every route can reach, behind one pointer: axum clones a route's
/// state for every request it routes (a Socket.IO handshake cloned it six
/// times).
pub type AppState = Arc<AppContext>;

/// What [`AppState`] holds.
pub struct AppContext {
    /// The emitter.
    pub hub: Hub,
    /// Controller keys.
    pub api_keys: ApiKeys,
    /// User token verification.
    pub verifier: Verifier,
    /// Chat.
    pub chat: crate::chat::Chat,
    /// Presence.
    pub presence: crate::presence::Presence,
    /// Prometheus.
    pub metrics: PrometheusHandle,
    /// This node's name.
    pub node_id: String,
    /// When the process started.
    pub started: Instant,
    /// False while starting and while draining.
    pub ready: Arc<AtomicBool>,
    /// Largest accepted message.
    pub max_payload_bytes: usize,
    /// Present in dev mode.
    pub dev: Option<dev::DevInfo>,
    /// Requests per user per minute on the user routes (`None`: no limit).
    pub user_limits: Option<Arc<UserLimits>>,
    /// Which nodes of the cluster are alive (clustered only).
    pub(crate) membership: Option<Arc<crate::cluster::membership::Membership>>,
}

/// A request budget per user on the routes users call with their token
/// (history, search, read receipts…), so that one user's loop cannot flood
/// the database. The same budget as a socket's events: `RATE_LIMIT_PER_MINUTE`.
pub struct UserLimits(governor::DefaultKeyedRateLimiter<String>);

impl UserLimits {
    /// `per_minute` requests per user, or `None` for 0 (no limit).
    pub fn per_minute(per_minute: u32) -> Option<Arc<UserLimits>> {
        let n = std::num::NonZeroU32::new(per_minute)?;
        Some(Arc::new(UserLimits(governor::RateLimiter::keyed(
            governor::Quota::per_minute(n),
        ))))
    }

    /// Whether `user` may make one more request now.
    pub(crate) fn allow(&self, user: &str) -> bool {
        // Users who have been quiet for a while are forgotten now and then.
        if self.0.len() > 10_000 {
            self.0.retain_recent();
        }
        self.0.check_key(&user.to_string()).is_ok()
    }
}

/// The routes, without the Socket.IO layer. `admin_ui` is the Admin UI's
/// built files, served at `/admin/` when the admin namespace is open to someone.
pub fn router(
    state: AppState,
    demo_dir: Option<&std::path::Path>,
    admin_ui: Option<&std::path::Path>,
) -> Router {
    let mut app = Router::new()
        .route("/api/v1/emit", post(emit::emit))
        .route("/api/v1/emit/batch", post(emit::emit_batch))
        .route("/api/v1/users/{id}/disconnect", post(disconnect_user))
        .route("/api/v1/events", get(rooms::events))
        .route("/api/v1/rooms/{room}/presence", get(rooms::presence))
        .route("/api/v1/rooms/{room}/messages", get(rooms::messages))
        .route("/api/v1/rooms/{room}/read", post(rooms::read))
        .route("/api/v1/search", get(rooms::search))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/health", get(ops::health))
        .route("/metrics", get(ops::metrics))
        .merge(seed_chat::routes());
    if let Some(dir) = admin_ui {
        // The UI loads its assets by relative paths: `/admin` must end in a slash.
        app = app
            .route(
                "/admin",
                get(|| async { axum::response::Redirect::permanent("/admin/") }),
            )
            .nest_service("/admin/", tower_http::services::ServeDir::new(dir));
    }
    // Unknown API paths are a JSON 404 even when the demo page serves everything else.
    app = app
        .route("/api/{*rest}", axum::routing::any(not_found))
        .method_not_allowed_fallback(method_not_allowed);
    match &state.dev {
        Some(dev) if demo_dir.is_some() => app.merge(dev::routes(dev, demo_dir)).with_state(state),
        Some(dev) => app
            .merge(dev::routes(dev, None))
            .fallback(not_found)
            .with_state(state),
        None => app.fallback(not_found).with_state(state),
    }
}

/// The HTTP API's description (OpenAPI 3.1), built by `scripts/openapi/gen.py`.
const OPENAPI: &str = include_str!("openapi.json");

/// `GET /api/v1/openapi.json`
async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}

/// Wraps the whole service (Socket.IO included): the Engine.IO gate, CORS and
/// security headers.
pub(crate) fn outer_layers(
    app: Router,
    cors: &CorsOrigins,
    transport: Arc<TransportControl>,
    ready: Arc<AtomicBool>,
    forwarder: Option<Arc<Forwarder>>,
) -> Router {
    let gate = middleware::from_fn(move |req: Request, next: Next| {
        let transport = transport.clone();
        let ready = ready.clone();
        let forwarder = forwarder.clone().filter(|f| f.is_reachable());
        async move { engine_gate(transport, ready, forwarder, req, next).await }
    });
    let mut app = app
        .layer(gate)
        .layer(SetResponseHeaderLayer::if_not_present(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::X_FRAME_OPTIONS,
            HeaderValue::from_static("DENY"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ));
    if let Some(layer) = cors_layer(cors) {
        app = app.layer(layer);
    }
    app
}

fn cors_layer(cors: &CorsOrigins) -> Option<CorsLayer> {
    let base = CorsLayer::new()
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            "idempotency-key".parse().expect("valid header name"),
        ])
        .max_age(std::time::Duration::from_secs(600));
    match cors {
        CorsOrigins::None => None,
        CorsOrigins::Any => Some(base.allow_origin(AllowOrigin::any())),
        CorsOrigins::List(origins) => {
            let list: Vec<HeaderValue> = origins.iter().filter_map(|o| o.parse().ok()).collect();
            Some(
                base.allow_origin(AllowOrigin::list(list))
                    .allow_credentials(true),
            )
        }
    }
}

/// In front of Engine.IO: refuses new sessions while draining, sends the
/// requests of sessions another node owns to that node (a cluster without
/// sticky sessions), refuses the requests of sessions whose transport livehub
/// killed, and records which connection carries which session.
async fn engine_gate(
    transport: Arc<TransportControl>,
    ready: Arc<AtomicBool>,
    forwarder: Option<Arc<Forwarder>>,
    req: Request,
    next: Next,
) -> Response {
    if !req.uri().path().starts_with("/socket.io") {
        return next.run(req).await;
    }
    let query = req.uri().query().unwrap_or("").to_string();
    match engine_session(&query) {
        None => {
            let mut req = req;
            detach_from_read_buffer(&mut req);
            if !ready.load(Ordering::Acquire) {
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [(header::RETRY_AFTER, "1")],
                    "livehub is not accepting connections right now",
                )
                    .into_response();
            }
            let polling = !query.contains("transport=websocket");
            let response = next.run(req).await;
            match forwarder {
                Some(f) if polling && response.status() == StatusCode::OK => {
                    record_owner(&f, response).await
                }
                _ => response,
            }
        }
        Some((sid, websocket)) => {
            let sid = sid.to_string();
            let req = match forwarder {
                None => req,
                Some(f) => match f.route(&sid, req).await {
                    Route::Here(req) => req,
                    Route::Owner(owner, req) => return f.forward(&owner, req).await,
                },
            };
            engine_request(transport, &sid, websocket, req, next).await
        }
    }
}

/// This node opened a polling session: it records itself as the owner, so
/// that the session's next requests reach it wherever they land.
async fn record_owner(forwarder: &Forwarder, response: Response) -> Response {
    let (parts, body) = response.into_parts();
    // An open packet is a few hundred bytes.
    let Ok(bytes) = axum::body::to_bytes(body, 64 * 1024).await else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    if let Some(sid) = crate::cluster::forward::opened_sid(&bytes) {
        forwarder.opened(&sid).await;
    }
    Response::from_parts(parts, axum::body::Body::from(bytes))
}

/// A request of an existing session, handled on this node.
async fn engine_request(
    transport: Arc<TransportControl>,
    sid: &str,
    websocket: bool,
    req: Request,
    next: Next,
) -> Response {
    let conn = req.extensions().get::<ConnInfo>().cloned();
    let guard = match &conn {
        Some(conn) => match transport.track(sid, websocket, conn) {
            Ok(guard) => Some(guard),
            Err(_killed) => return crate::transport::unknown_session(),
        },
        None => None,
    };
    let response = next.run(req).await;
    if websocket
        && response.status() == StatusCode::SWITCHING_PROTOCOLS
        && let Some(conn) = &conn
    {
        transport.upgraded(sid, conn);
    }
    drop(guard);
    response
}

/// Gives a handshake request's URI and headers their own small allocations.
///
/// hyper parses them as slices of its connection read buffer (8 KiB or more),
/// and socketioxide keeps a new session's request parts for the session's whole
/// life — which would pin that buffer per connection: most of an idle
/// websocket's memory. Copying a few hundred bytes frees it.
fn detach_from_read_buffer(req: &mut Request) {
    use axum::http::{HeaderMap, HeaderName, Uri};
    let headers = std::mem::take(req.headers_mut());
    let mut owned = HeaderMap::with_capacity(headers.len());
    for (name, value) in &headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_str().as_bytes()),
            HeaderValue::from_bytes(value.as_bytes()),
        ) {
            owned.append(name, value);
        }
    }
    *req.headers_mut() = owned;
    if let Ok(uri) = Uri::try_from(req.uri().to_string()) {
        // axum keeps a copy of the URI as it arrived; it would pin the buffer too.
        if req
            .extensions()
            .get::<axum::extract::OriginalUri>()
            .is_some()
        {
            req.extensions_mut()
                .insert(axum::extract::OriginalUri(uri.clone()));
        }
        *req.uri_mut() = uri;
    }
}

async fn disconnect_user(
    State(state): State<AppState>,
    _: Controller,
    Path(id, _): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    crate::rooms::parse(&crate::rooms::user_room(&id))?;
    state.hub.disconnect_user(&id).await?;
    Ok(axum::Json(json!({ "ok": true, "userId": id })))
}

async fn method_not_allowed() -> Response {
    let rejection = crate::error::Rejection::bad_request("method not allowed on this route");
    (
        StatusCode::METHOD_NOT_ALLOWED,
        axum::Json(rejection.to_json()),
    )
        .into_response()
}

async fn not_found() -> ApiError {
    ApiError(crate::error::Rejection::not_found("no such route"))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    /// The paths the routers declare, read from their source.
    fn served() -> BTreeSet<String> {
        let sources = [
            include_str!("mod.rs"),
            include_str!("seed_chat.rs"),
            include_str!("dev.rs"),
            include_str!("../plain/mod.rs"),
        ];
        let mut paths = BTreeSet::new();
        for source in sources {
            // Only the code, not the tests (this one quotes the calls it looks for).
            let source = source.split("#[cfg(test)]").next().unwrap_or_default();
            for call in [".route(", ".nest_service("] {
                for rest in source.split(call).skip(1) {
                    let Some(rest) = rest.trim_start().strip_prefix('"') else {
                        continue;
                    };
                    let path = rest.split('"').next().unwrap_or_default();
                    // The catch-all JSON 404 and the demo's files are not routes of the API.
                    if !path.contains("{*") && path != "/demo" {
                        paths.insert(path.to_string());
                    }
                }
            }
        }
        paths
    }

    #[test]
    fn the_openapi_document_describes_every_route_and_no_other() {
        let spec: serde_json::Value = serde_json::from_str(super::OPENAPI).unwrap();
        assert_eq!(spec["openapi"], "3.1.0");
        let documented: BTreeSet<String> =
            spec["paths"].as_object().unwrap().keys().cloned().collect();
        let served = served();
        assert!(served.len() > 15, "the routes were found: {served:?}");
        let missing: Vec<_> = served.difference(&documented).collect();
        assert!(
            missing.is_empty(),
            "served but not in openapi.json: {missing:?}"
        );
        let stale: Vec<_> = documented.difference(&served).collect();
        assert!(
            stale.is_empty(),
            "in openapi.json but not served: {stale:?}"
        );
    }
}
