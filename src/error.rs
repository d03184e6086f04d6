//! The one error shape livehub shows to the outside world.
//!
//! Socket acks and HTTP responses both carry `{ ok: false, error: { code, message } }`.
//! Every refusal in the crate is a [`Rejection`]; the HTTP layer maps its code to a
//! status, the socket layer sends it as the ack. Keeping one type means a refusal
//! reads the same whichever door the request came in by.

use std::borrow::Cow;

use serde::Serialize;
use serde_json::{Value, json};

/// The machine-readable part of a refusal. The wire names are the contract's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Malformed input: wrong types, missing fields, bad names.
    BadRequest,
    /// No or wrong credentials (HTTP only; sockets are refused at connect).
    Unauthorized,
    /// Valid input that the caller may not do.
    Forbidden,
    /// The thing asked for does not exist.
    NotFound,
    /// Too many requests or events; retry later.
    RateLimited,
    /// The payload is larger than `MAX_PAYLOAD_BYTES` or a batch is too long.
    TooLarge,
    /// The server could not do it (database down, shutting down). Never for bad input.
    Internal,
}

impl ErrorCode {
    /// The HTTP status the contract assigns to this code.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::BadRequest => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::TooLarge => 413,
            ErrorCode::RateLimited => 429,
            ErrorCode::Internal => 503,
        }
    }

    /// The wire name, e.g. `bad_request`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::Internal => "internal",
        }
    }
}

/// A refusal with a code and a human-readable message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", code.as_str())]
pub struct Rejection {
    /// What kind of refusal this is.
    pub code: ErrorCode,
    /// What was wrong, in words a developer can act on.
    pub message: Cow<'static, str>,
}

impl Rejection {
    /// A refusal with the given code.
    pub fn new(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> Self {
        Rejection {
            code,
            message: message.into(),
        }
    }
    /// `bad_request`.
    pub fn bad_request(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }
    /// `forbidden`.
    pub fn forbidden(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }
    /// `not_found`.
    pub fn not_found(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }
    /// `unauthorized`.
    pub fn unauthorized(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::Unauthorized, message)
    }
    /// `too_large`.
    pub fn too_large(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::TooLarge, message)
    }
    /// `rate_limited`.
    pub fn rate_limited(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::RateLimited, message)
    }
    /// `internal`: the server failed, not the caller.
    pub fn internal(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }

    /// `{ ok: false, error: { code, message } }`.
    pub fn to_json(&self) -> Value {
        json!({ "ok": false, "error": { "code": self.code, "message": self.message } })
    }
}
