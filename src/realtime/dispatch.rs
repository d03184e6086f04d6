//! From socketioxide's receive path to the session layer, in order.
//!
//! [`Dispatcher`] is the socket's only message handler (a fallback, so no
//! per-event handler map is allocated per socket). It runs synchronously on the
//! receive path — in the order the client sent — checks what can be checked
//! without waiting (size, binary, rate), decodes the event into a [`Command`]
//! and queues it on the socket's [`Session`]; [`handlers::run_queue`] applies
//! the queue one job at a time and answers each ack.

use std::sync::Arc;

use serde_json::Value;
use socketioxide::adapter::Adapter;
use socketioxide::extract::{AckSender, Event};
use socketioxide::handler::{FromMessageParts, MessageHandler, Value as SioValue};
use socketioxide::socket::Socket;

use crate::commands::Command;
use crate::error::Rejection;
use crate::metrics;
use crate::session::handlers;
use crate::session::state::Outcome;
use crate::session::{Job, Reply, Session, Sessions};

/// Type marker for [`Dispatcher`]'s [`MessageHandler`] impl.
pub struct DispatchMarker;

/// The fallback message handler of every socket.
#[derive(Clone)]
pub struct Dispatcher(pub Arc<Sessions>);

/// Bytes a message carries: its text and binary attachments.
fn message_size(v: &SioValue) -> usize {
    match v {
        SioValue::Str(s, bins) => {
            s.len() + bins.as_ref().map_or(0, |b| b.iter().map(|b| b.len()).sum())
        }
        SioValue::Bytes(b) => b.len(),
    }
}

/// The event's first argument (`null` when it has none). The common parser
/// hands over the packet's JSON array, `["event", arg, …]`, unparsed.
fn first_argument(v: &SioValue) -> Result<Value, String> {
    match v {
        SioValue::Str(_, Some(bins)) if !bins.is_empty() => {
            Err("binary attachments are not accepted".into())
        }
        SioValue::Bytes(_) => Err("binary attachments are not accepted".into()),
        SioValue::Str(text, _) => match serde_json::from_str::<Vec<Value>>(text.as_str()) {
            Ok(mut args) if !args.is_empty() => Ok(if args.len() > 1 {
                args.swap_remove(1)
            } else {
                Value::Null
            }),
            Ok(_) => Err("the event has no name".into()),
            Err(e) => Err(format!("the payload is not valid JSON: {e}")),
        },
    }
}

impl<A: Adapter> MessageHandler<A, DispatchMarker> for Dispatcher {
    fn call(&self, s: Arc<Socket<A>>, mut v: SioValue, ack_id: Option<i64>) {
        let ctx = &self.0;
        let Some(session) = s.extensions.get::<Arc<Session>>() else {
            return;
        };
        let command = match Event::from_message_parts(&s, &mut v, &ack_id) {
            Ok(Event(name)) => decode(ctx, &session, &name, &v),
            Err(_) => Err(Rejection::bad_request("the event name is not a string")),
        };
        let Ok(ack_sender) = AckSender::<A>::from_message_parts(&s, &mut v, &ack_id);
        let ack = ack_id.map(|_| ack_sender);
        let reply: Option<Reply> = match &command {
            // `ping` answers with a `pong` event as well as its ack.
            Ok(Command::Ping) => {
                let socket = s.clone();
                Some(Box::new(move |outcome: Outcome| {
                    if let Ok(fields) = &outcome {
                        let _ = socket.emit("pong", fields);
                    }
                    if let Some(ack) = ack {
                        let _ = ack.send(&ack_body(outcome));
                    }
                }))
            }
            _ => ack.map(|ack| -> Reply {
                Box::new(move |outcome: Outcome| {
                    let _ = ack.send(&ack_body(outcome));
                })
            }),
        };
        match session.enqueue(Job::Command { command, reply }) {
            Ok(true) => {
                tokio::spawn(handlers::run_queue(ctx.clone(), session));
            }
            Ok(false) => {}
            Err(Job::Command { reply, .. }) => {
                let refused = Rejection::rate_limited("too many events waiting; slow down");
                metrics::rejected(refused.code.as_str());
                if let Some(reply) = reply {
                    reply(Err(refused));
                }
            }
            Err(Job::Connect) => {}
        }
    }
}

/// What can be checked on the receive path, without waiting: size, rate,
/// then the event's shape.
fn decode(
    ctx: &Sessions,
    session: &Session,
    name: &str,
    v: &SioValue,
) -> Result<Command, Rejection> {
    metrics::event_in(name);
    if message_size(v) > ctx.settings.max_payload_bytes {
        return Err(Rejection::too_large(format!(
            "the message is larger than {} bytes",
            ctx.settings.max_payload_bytes
        )));
    }
    if session.limiter.as_ref().is_some_and(|l| !l.allow()) {
        return Err(Rejection::rate_limited("too many events; slow down"));
    }
    let data = first_argument(v).map_err(Rejection::bad_request)?;
    Command::from_socketio(name, &data)
}

/// A Socket.IO ack: `{ ok: true, … }` or `{ ok: false, error }`.
fn ack_body(outcome: Outcome) -> Value {
    match outcome {
        Ok(mut fields) => {
            fields.insert("ok".into(), Value::Bool(true));
            Value::Object(fields)
        }
        Err(r) => r.to_json(),
    }
}
