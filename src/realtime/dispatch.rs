//! From socketioxide's receive path to the handlers, in order.
//!
//! [`Dispatcher`] is the socket's only message handler (a fallback, so no
//! per-event handler map is allocated per socket). It runs synchronously on the
//! receive path — in the order the client sent — checks what can be checked
//! without waiting (size, binary, rate), and queues the event on the socket's
//! [`Session`]. [`drain`] then runs the queue one job at a time.

use std::sync::Arc;

use futures_util::FutureExt;
use serde_json::Value;
use socketioxide::adapter::Adapter;
use socketioxide::extract::{AckSender, Event, SocketRef};
use socketioxide::handler::{FromMessageParts, MessageHandler, Value as SioValue};
use socketioxide::socket::Socket;

use super::Realtime;
use super::handlers;
use super::session::{Ack, Job, Session};
use crate::error::Rejection;
use crate::metrics;

/// Type marker for [`Dispatcher`]'s [`MessageHandler`] impl.
pub struct DispatchMarker;

/// The fallback message handler of every socket.
#[derive(Clone)]
pub struct Dispatcher(pub Arc<Realtime>);

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
        let Ok(ack_sender) = AckSender::<A>::from_message_parts(&s, &mut v, &ack_id);
        let ack: Option<Ack> = ack_id.map(|_| -> Ack {
            Box::new(move |reply: &Value| {
                let _ = ack_sender.send(reply);
            })
        });
        let reject = |ack: Option<Ack>, r: Rejection| {
            metrics::rejected(r.code.as_str());
            if let Some(ack) = ack {
                ack(&r.to_json());
            }
        };
        let Some(session) = s.extensions.get::<Arc<Session>>() else {
            return;
        };
        let name = match Event::from_message_parts(&s, &mut v, &ack_id) {
            Ok(Event(name)) => name,
            Err(_) => {
                return reject(
                    ack,
                    Rejection::bad_request("the event name is not a string"),
                );
            }
        };
        metrics::event_in(&name);
        if message_size(&v) > ctx.settings.max_payload_bytes {
            return reject(
                ack,
                Rejection::too_large(format!(
                    "the message is larger than {} bytes",
                    ctx.settings.max_payload_bytes
                )),
            );
        }
        if session.limiter.as_ref().is_some_and(|l| !l.allow()) {
            return reject(ack, Rejection::rate_limited("too many events; slow down"));
        }
        let data = first_argument(&v);
        match session.enqueue(Job::Event { name, data, ack }) {
            Ok(true) => {
                let socket = SocketRef::from_message_parts(&s, &mut v, &ack_id)
                    .unwrap_or_else(|e| match e {});
                tokio::spawn(drain(ctx.clone(), socket, session));
            }
            Ok(false) => {}
            Err(Job::Event { ack, .. }) => reject(
                ack,
                Rejection::rate_limited("too many events waiting; slow down"),
            ),
            Err(Job::Connect) => {}
        }
    }
}

/// Runs a socket's queue until it is empty. At most one runs per socket.
pub async fn drain<A: Adapter>(ctx: Arc<Realtime>, socket: SocketRef<A>, session: Arc<Session>) {
    while let Some(job) = session.next_job() {
        match job {
            Job::Connect => {
                let run = handlers::on_connect(&ctx, &socket, &session);
                if std::panic::AssertUnwindSafe(run)
                    .catch_unwind()
                    .await
                    .is_err()
                {
                    tracing::error!(sid = %session.sid, "connect handler panicked");
                }
            }
            Job::Event { name, data, ack } => {
                let result = match data {
                    Ok(data) => {
                        let run = handlers::on_event(&ctx, &socket, &session, &name, data);
                        std::panic::AssertUnwindSafe(run)
                            .catch_unwind()
                            .await
                            .unwrap_or_else(|_| {
                                tracing::error!(event = %name, "handler panicked");
                                Err(Rejection::internal(
                                    "the server failed to handle this event",
                                ))
                            })
                    }
                    Err(message) => Err(Rejection::bad_request(message)),
                };
                let reply = match result {
                    Ok(mut fields) => {
                        fields.insert("ok".into(), Value::Bool(true));
                        Value::Object(fields)
                    }
                    Err(r) => {
                        metrics::rejected(r.code.as_str());
                        tracing::debug!(event = %name, code = r.code.as_str(), message = %r.message, "event refused");
                        r.to_json()
                    }
                };
                if let Some(ack) = ack {
                    ack(&reply);
                }
            }
        }
    }
}
