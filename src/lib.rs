//! livehub: a Socket.IO-compatible real-time server for operations platforms,
//! with a durable event log.
//!
//! The modules follow the path of an event:
//!
//! ```text
//! HTTP / socket event ─▶ validate ─────────────────────▶ hub ──▶ log ──▶ delivery ──▶ sockets
//!   http::, realtime::     events:: (catalog, envelope)   hub::   store::  hub::delivery
//!                          rooms::  (names, policy)
//!                          auth::   (who is asking)
//! ```
//!
//! * [`config`] reads and validates settings, once.
//! * [`auth`] turns a request into verified claims.
//! * [`rooms`] owns room names and who may join them.
//! * [`events`] owns the catalog and the envelope.
//! * [`hub`] is the single place that emits, and orders replay against live delivery.
//! * [`store`] owns every SQL statement.
//! * [`presence`] knows who views what; [`chat`] stores and searches messages.
//! * [`realtime`] holds the Socket.IO handlers, [`http`] the axum routes.
//! * [`cluster`] makes several nodes one; [`app`] wires everything together;
//!   [`server`] accepts connections.

#![warn(missing_docs)]

pub mod app;
pub mod auth;
pub mod chat;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod error;
pub mod events;
pub mod http;
pub mod hub;
pub mod metrics;
pub mod presence;
pub mod realtime;
pub mod rooms;
pub mod server;
pub mod store;

pub use error::{ErrorCode, Rejection};
pub use hub::{Hub, Receipt};
