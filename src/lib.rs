//! livehub: a Socket.IO-compatible real-time server for operations platforms,
//! with a durable event log.
//!
//! The modules follow the path of a request:
//!
//! ```text
//! front ─────────────▶ decode ──────────▶ check ─────────────────▶ hub ──▶ log ──▶ delivery ──▶ connections
//!  realtime:: (Socket.IO)  commands::       auth::  (who is asking)   hub::   store::  hub::delivery
//!  plain::    (/ws)        http:: (routes)  rooms:: (names, policy)
//!  http::     (API)                         events:: (catalog, `prepare`)
//!                          └─ session:: applies client commands, whichever front
//! ```
//!
//! * [`config`] reads and validates settings, once.
//! * [`auth`] turns a request into verified claims.
//! * [`rooms`] owns room names and who may join them.
//! * [`events`] owns the catalog and the envelope.
//! * [`hub`] is the single place that emits, and orders replay against live delivery.
//! * [`store`] owns every SQL statement.
//! * `presence` knows who views what; [`chat`] stores and searches messages.
//! * The fronts only decode and encode: `realtime` (Socket.IO), `plain`
//!   (plain WebSocket, `/ws`), [`http`] (the axum routes). Client requests
//!   become `commands::Command`s, applied by the `session` layer for both
//!   socket fronts.
//! * `cluster` makes several nodes one; [`app`] wires everything together;
//!   `server` accepts connections.
//!
//! The public surface is what a Rust backend embeds: [`app::App`], [`config`],
//! the [`Hub`] emit API with [`events`]' types, and [`Rejection`]; the
//! modules the integration tests reach ([`store`], [`rooms`], [`auth`], [`chat`],
//! [`http`]) are public too. Everything else is the crate's own.

#![warn(missing_docs)]

pub mod app;
pub mod auth;
pub mod chat;
pub mod cli;
pub(crate) mod cluster;
pub(crate) mod commands;
pub mod config;
pub mod error;
pub mod events;
pub mod http;
pub mod hub;
pub(crate) mod memory;
pub(crate) mod metrics;
pub(crate) mod plain;
pub(crate) mod presence;
pub(crate) mod realtime;
pub mod rooms;
pub(crate) mod server;
pub(crate) mod session;
pub mod store;
pub(crate) mod transport;

pub use error::{ErrorCode, Rejection};
pub use hub::{Hub, Receipt};
