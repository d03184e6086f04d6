//! HTTP plumbing shared by the routes: the error response, the JSON body
//! extractor with its size cap, and the two kinds of caller.

use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{StatusCode, header, request::Parts};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::AppState;
use crate::auth::{self, Claims};
use crate::error::Rejection;

/// A refusal as an HTTP response: the contract's status and JSON shape.
#[derive(Debug)]
pub struct ApiError(pub Rejection);

impl From<Rejection> for ApiError {
    fn from(r: Rejection) -> Self {
        ApiError(r)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.code.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
        crate::metrics::rejected(self.0.code.as_str());
        let mut response = (status, axum::Json(self.0.to_json())).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

/// `axum`'s `Query`, refused in livehub's error shape (`E`: the API's or seed
/// 001's envelope) instead of axum's plain-text 400.
pub struct Query<T, E = ApiError>(pub T, pub std::marker::PhantomData<E>);

/// `axum`'s `Path`, refused in livehub's error shape.
pub struct Path<T, E = ApiError>(pub T, pub std::marker::PhantomData<E>);

impl<T, E, S> FromRequestParts<S> for Query<T, E>
where
    T: serde::de::DeserializeOwned,
    E: From<Rejection> + IntoResponse,
    S: Send + Sync,
{
    type Rejection = E;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, E> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(q) => Ok(Query(q.0, std::marker::PhantomData)),
            Err(e) => {
                Err(Rejection::bad_request(format!("the query string: {}", e.body_text())).into())
            }
        }
    }
}

impl<T, E, S> FromRequestParts<S> for Path<T, E>
where
    T: serde::de::DeserializeOwned + Send,
    E: From<Rejection> + IntoResponse,
    S: Send + Sync,
{
    type Rejection = E;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, E> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(p) => Ok(Path(p.0, std::marker::PhantomData)),
            Err(e) => Err(Rejection::bad_request(format!("the path: {}", e.body_text())).into()),
        }
    }
}

/// A JSON request body, read up to the body limit. Too large → 413, not JSON → 400,
/// both in the contract's error shape.
pub struct JsonBody(pub Value);

/// How many `MAX_PAYLOAD_BYTES` a batch body may be.
pub const BATCH_BODY_FACTOR: usize = 8;

impl FromRequest<AppState> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request<Body>, state: &AppState) -> Result<Self, ApiError> {
        let limit = if req.uri().path().ends_with("/batch") {
            state.max_payload_bytes * BATCH_BODY_FACTOR
        } else {
            state.max_payload_bytes
        };
        if let Some(len) = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok())
            && len > limit
        {
            if len <= DRAIN_LIMIT {
                drain(req.into_body()).await;
            }
            return Err(too_large(limit).into());
        }
        let bytes = axum::body::to_bytes(req.into_body(), limit)
            .await
            .map_err(|_| ApiError(too_large(limit)))?;
        if bytes.is_empty() {
            return Err(
                Rejection::bad_request("the request body is empty; send a JSON object").into(),
            );
        }
        serde_json::from_slice(&bytes).map(JsonBody).map_err(|e| {
            Rejection::bad_request(format!("the request body is not valid JSON: {e}")).into()
        })
    }
}

/// A body this large or smaller is read (and thrown away) before its 413, so
/// that a client still sending it reads the answer instead of a reset connection.
const DRAIN_LIMIT: usize = 8 * 1024 * 1024;

/// Reads a refused body to its end, for at most a few seconds.
async fn drain(body: Body) {
    use futures_util::StreamExt;
    let mut chunks = body.into_data_stream();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        while let Some(Ok(_)) = chunks.next().await {}
    })
    .await;
}

fn too_large(limit: usize) -> Rejection {
    Rejection::too_large(format!("the request body is larger than {limit} bytes"))
}

/// A controller, authenticated by an API key.
pub struct Controller;

/// A controller (API key) or a user (JWT).
pub enum Caller {
    /// Authenticated by an API key.
    Controller,
    /// Authenticated by a user token.
    User(Claims),
}

fn bearer_token(parts: &Parts) -> Result<&str, Rejection> {
    let header = parts.headers.get(header::AUTHORIZATION).ok_or_else(|| {
        Rejection::unauthorized("missing Authorization: Bearer <API key or token>")
    })?;
    header.to_str().ok().and_then(auth::bearer).ok_or_else(|| {
        Rejection::unauthorized("the Authorization header must be `Bearer <API key or token>`")
    })
}

impl FromRequestParts<AppState> for Controller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer_token(parts)?;
        if state.api_keys.check(token) {
            return Ok(Controller);
        }
        if state.verifier.verify(token).await.is_ok() {
            return Err(Rejection::forbidden(
                "this route is for controllers: use an API key, not a user token",
            )
            .into());
        }
        Err(Rejection::unauthorized("invalid API key").into())
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer_token(parts)?;
        if state.api_keys.check(token) {
            return Ok(Caller::Controller);
        }
        let claims = state
            .verifier
            .verify(token)
            .await
            .map_err(|e| Rejection::unauthorized(e.to_string()))?;
        if let Some(limits) = &state.user_limits
            && !limits.allow(&claims.sub)
        {
            return Err(
                Rejection::rate_limited("too many requests from this user; slow down").into(),
            );
        }
        Ok(Caller::User(claims))
    }
}

impl Caller {
    /// Whether this caller may read `room`: controllers may read any room,
    /// users the rooms the room policy lets them join.
    pub fn may_read(&self, room: &str) -> Result<(), Rejection> {
        crate::rooms::parse(room)?;
        match self {
            Caller::Controller => Ok(()),
            Caller::User(claims) => crate::rooms::authorize(claims, room).map(|_| ()),
        }
    }
}
