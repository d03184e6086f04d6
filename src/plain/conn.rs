//! One plain WebSocket connection: authentication, then one task that reads
//! request frames, writes queued frames, and keeps the heartbeat.
//!
//! Requests are decoded here and queued on the connection's [`Session`], whose
//! queue the session layer runs in order (as for Socket.IO); replies and events
//! come back through the same outgoing queue, so a client sees them in order.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use socketioxide::socket::Sid;
use tokio::time::Instant;

use super::Front;
use super::frames::{self, Request};
use super::registry::{Conn, Outgoing, close};
use crate::auth::{AuthError, Claims};
use crate::commands::Command;
use crate::error::{ErrorCode, Rejection};
use crate::hub::Fabric;
use crate::session::limits::{ConnectionSlot, EventLimiter};
use crate::session::state::Outcome;
use crate::session::{Job, Reply, Session, handlers};

/// How long a connection without a token may take to send its auth frame.
pub(crate) const AUTH_DEADLINE: Duration = Duration::from_secs(10);
/// Frames written per flush when several are waiting.
const WRITE_BATCH: usize = 64;

/// What the upgrade request brought.
pub(crate) struct Hello {
    pub token: Option<String>,
    pub offset: Option<String>,
    pub client_type: Option<String>,
    pub client_version: Option<String>,
    pub device_id: Option<String>,
    pub slot: ConnectionSlot,
}

type Sink = futures_util::stream::SplitSink<WebSocket, Message>;
type Stream = futures_util::stream::SplitStream<WebSocket>;

/// How long closing waits to write the close frame.
const CLOSE_PATIENCE: Duration = Duration::from_secs(1);
/// How long it then waits for the client's close in answer; a drain waits as
/// long for every connection (`plain::drain`). On a starved machine a client
/// took over a second (a fresh-clone CI run saw 1006 again with 1 s): dropping
/// the connection before its answer arrives resets it, and a client that has
/// not read our close frame yet loses it with the reset.
pub(crate) const ANSWER_PATIENCE: Duration = Duration::from_secs(3);

/// Serves one upgraded connection until it closes.
///
/// The future returned is the connection's task, alive for as long as the
/// connection: its size is memory held per idle connection. So what only the
/// start needs stays out of it. The socket is split before the future exists
/// (an async fn keeps its arguments for its whole life), the rest of the start
/// travels in one box, and the cold steps (authentication, refusal, clean-up)
/// are boxed: they cost an allocation while they run instead of their size for
/// the connection's whole life.
pub(crate) fn serve(
    front: Arc<Front>,
    socket: WebSocket,
    hello: Hello,
) -> impl Future<Output = ()> + Send {
    let (sink, stream) = socket.split();
    let start = Box::new(Start {
        front,
        sink,
        stream,
        hello,
    });
    async move {
        if let Some((link, sink, stream)) = Box::pin(admit(start)).await {
            link.run(sink, stream).await;
            Box::pin(link.clean_up()).await;
        }
    }
}

/// A connection before it is admitted.
struct Start {
    front: Arc<Front>,
    sink: Sink,
    stream: Stream,
    hello: Hello,
}

/// Authenticates the connection (by its URL's token or its first frame) and
/// registers it; a refused one is told why and closed.
async fn admit(start: Box<Start>) -> Option<(Link, Sink, Stream)> {
    let Start {
        front,
        mut sink,
        mut stream,
        hello,
    } = *start;
    let (token, offset) = match hello.token.clone() {
        Some(token) => (token, hello.offset.clone()),
        None => match await_auth_frame(&mut sink, &mut stream).await {
            Some(auth) => (auth.token, auth.offset.or_else(|| hello.offset.clone())),
            None => {
                hello.slot.release();
                refuse(sink, stream, &AuthError::MissingToken).await;
                return None;
            }
        },
    };
    match front.sessions.verifier.verify(&token).await {
        Ok(claims) => Some((register(front, claims, offset, hello), sink, stream)),
        Err(e) => {
            hello.slot.release();
            refuse(sink, stream, &e).await;
            None
        }
    }
}

/// Waits for `{"type":"auth","token"}`, for [`AUTH_DEADLINE`] in all: the
/// answers to other frames count too, so a client that sends frames but never
/// reads their answers cannot hold the connection past it.
async fn await_auth_frame(sink: &mut Sink, stream: &mut Stream) -> Option<frames::AuthFrame> {
    tokio::time::timeout(AUTH_DEADLINE, read_auth_frame(sink, stream))
        .await
        .ok()?
}

/// Reads frames until the auth frame; other frames are answered `unauthorized`.
async fn read_auth_frame(sink: &mut Sink, stream: &mut Stream) -> Option<frames::AuthFrame> {
    loop {
        match stream.next().await?.ok()? {
            Message::Text(text) => {
                if let Some(auth) = frames::auth_frame(text.as_str()) {
                    return Some(auth);
                }
                let refusal = frames::unauthorized(&AuthError::MissingToken.to_string());
                sink.send(Message::Text(refusal.into())).await.ok()?;
            }
            Message::Binary(_) => {
                let refusal = frames::unauthorized(&AuthError::MissingToken.to_string());
                sink.send(Message::Text(refusal.into())).await.ok()?;
            }
            Message::Close(_) => return None,
            Message::Ping(_) | Message::Pong(_) => {}
        }
    }
}

/// The refusal frame, then close 4401 with the same text.
async fn refuse(sink: Sink, stream: Stream, e: &AuthError) {
    crate::metrics::rejected("unauthorized");
    let message = e.to_string();
    let refusal = Message::Text(frames::unauthorized(&message).into());
    close_with(sink, stream, [refusal], close::UNAUTHORIZED, message).await;
}

/// Writes `last` (frames still owed to the client), then the close frame,
/// within [`CLOSE_PATIENCE`], and waits for the client's close in answer
/// within [`ANSWER_PATIENCE`]. Dropping the connection before the client has
/// read our close (while its own frames sit unread here) resets it, and the
/// client sees 1006 instead of the code.
async fn close_with(
    mut sink: Sink,
    mut stream: Stream,
    last: impl IntoIterator<Item = Message>,
    code: u16,
    reason: String,
) {
    let told = async {
        for frame in last {
            sink.feed(frame).await?;
        }
        sink.send(Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        })))
        .await
    };
    if !matches!(tokio::time::timeout(CLOSE_PATIENCE, told).await, Ok(Ok(()))) {
        return;
    }
    let answered = async {
        while let Some(Ok(msg)) = stream.next().await {
            if matches!(msg, Message::Close(_)) {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(ANSWER_PATIENCE, answered).await;
}

/// Registers an authenticated connection: its session, its place in the
/// registry, its hello frame, and its session queue (which starts with the
/// connect job: automatic rooms, replay).
fn register(front: Arc<Front>, claims: Claims, offset: Option<String>, hello: Hello) -> Link {
    let ctx = &front.sessions;
    let sid = Sid::new();
    let automatic = crate::rooms::automatic_rooms(&claims);
    let user = claims.sub.clone();
    let session = Arc::new(Session::new(
        sid,
        claims,
        ctx.hub.position(),
        offset,
        EventLimiter::per_minute(ctx.settings.rate_limit_per_minute),
        Some(hello.slot),
    ));
    let conn = Arc::new(Conn::new(sid, session.clone()));
    let probe: Arc<dyn crate::session::ReceiptProbe> = conn.clone();
    let _ = session.probe.set(Arc::downgrade(&probe));
    let info = Arc::new(Info {
        client_type: hello.client_type,
        client_version: hello.client_version,
        device_id: hello.device_id,
        connected_at: crate::events::now_iso8601(),
    });
    front.registry.add(conn.clone());
    // Reachable by `POST /users/{id}/disconnect` from now on.
    front
        .registry
        .join(sid, &[crate::rooms::user_sockets_room(&user)]);
    ctx.expiry.watch(sid, session.claims().exp);
    let hello_frame = frames::connection_established(&sid.to_string(), &user, &automatic);
    conn.push(hello_frame.into());
    tokio::spawn(handlers::run_queue(ctx.clone(), session.clone()));
    Link {
        front,
        conn,
        session,
        info,
    }
}

/// What `getStatus` reports beside the session.
struct Info {
    client_type: Option<String>,
    client_version: Option<String>,
    device_id: Option<String>,
    connected_at: String,
}

/// A running connection.
struct Link {
    front: Arc<Front>,
    conn: Arc<Conn>,
    session: Arc<Session>,
    info: Arc<Info>,
}

impl Link {
    /// After the connection ended: out of the registry, its address slot and
    /// expiry freed, then the session's own clean-up (presence, offline mark).
    async fn clean_up(&self) {
        self.conn.finished();
        let sid = self.conn.sid;
        self.front.registry.remove(sid);
        if let Some(slot) = &self.session.connection {
            slot.release();
        }
        let ctx = &self.front.sessions;
        ctx.expiry.forget(sid);
        handlers::on_disconnect(ctx, &self.session).await;
    }

    async fn run(&self, mut sink: Sink, mut stream: Stream) {
        let (ping_every, idle_after) = (self.front.ping_every, self.front.idle_after);
        let mut ping = tokio::time::interval_at(Instant::now() + ping_every, ping_every);
        let mut last_heard = Instant::now();
        // Re-armed lazily from `last_heard` when it fires, not on every message.
        let idle = tokio::time::sleep(idle_after);
        tokio::pin!(idle);
        loop {
            tokio::select! {
                biased;
                _ = self.conn.kill.cancelled() => break,
                frame = self.conn.next_out() => {
                    let Some(frame) = frame else { break };
                    let written = tokio::select! {
                        r = write_batch(&mut sink, &self.conn, frame) => r,
                        _ = self.conn.kill.cancelled() => break,
                    };
                    if written.is_err() {
                        return;
                    }
                }
                msg = stream.next() => {
                    last_heard = Instant::now();
                    match msg {
                        Some(Ok(msg)) => {
                            if !self.on_message(msg) {
                                return;
                            }
                        }
                        Some(Err(e)) => {
                            self.on_read_error(&e);
                            break;
                        }
                        None => return,
                    }
                }
                () = &mut idle => {
                    let deadline = last_heard + idle_after;
                    if deadline <= Instant::now() {
                        self.conn.close(close::IDLE, "idle timeout");
                    } else {
                        idle.as_mut().reset(deadline);
                    }
                }
                _ = ping.tick() => {
                    let sent = tokio::select! {
                        r = sink.send(Message::Ping(Default::default())) => r,
                        _ = self.conn.kill.cancelled() => break,
                    };
                    if sent.is_err() {
                        return;
                    }
                }
            }
        }
        Box::pin(self.finish(sink, stream)).await;
    }

    /// Sends what is still queued (an `auth:expired` before its close, say),
    /// then the close frame ([`close_with`]).
    async fn finish(&self, sink: Sink, stream: Stream) {
        let Some((code, reason)) = self.conn.close_reason() else {
            return;
        };
        let queued = std::iter::from_fn(|| self.conn.try_next_out()).map(message);
        close_with(sink, stream, queued, code, reason).await;
    }

    fn on_read_error(&self, e: &axum::Error) {
        let text = e.to_string();
        // tungstenite's capacity errors: a frame or message over twice the cap.
        if text.contains("Space limit exceeded")
            || text.contains("too long")
            || text.contains("too big")
        {
            crate::metrics::rejected("too_large");
            self.conn.close(close::TOO_BIG, "message too big");
        } else {
            tracing::debug!(error = %text, "plain connection read failed");
        }
    }

    /// Handles one incoming message; `false` when the client closed.
    fn on_message(&self, msg: Message) -> bool {
        match msg {
            Message::Text(text) => self.on_text(text.as_str()),
            Message::Binary(_) => self.push(frames::error_reply(
                &frames::Style::Type(String::new()),
                None,
                &Rejection::bad_request("binary frames are not accepted: send JSON text"),
            )),
            Message::Close(_) => return false,
            Message::Pong(payload) => self.conn.pong(&payload),
            Message::Ping(_) => {}
        }
        true
    }

    fn on_text(&self, text: &str) {
        let request = frames::decode(text);
        let name = match &request {
            Ok(r) => style_name(&r.style),
            Err(r) => style_name(&r.style),
        };
        crate::metrics::event_in(name);
        let settings = &self.front.sessions.settings;
        let refusal = if text.len() > settings.max_payload_bytes {
            Some(Rejection::too_large(format!(
                "the message is larger than {} bytes",
                settings.max_payload_bytes
            )))
        } else if self.session.limiter.as_ref().is_some_and(|l| !l.allow()) {
            Some(Rejection::rate_limited("too many requests; slow down"))
        } else {
            None
        };
        let request = match (request, refusal) {
            (Ok(r), Some(rejection)) => {
                return self.refuse(&r.style, r.request_id.as_ref(), rejection);
            }
            (Err(refused), refusal) => {
                let rejection = refusal.unwrap_or(refused.rejection);
                return self.refuse(&refused.style, refused.request_id.as_ref(), rejection);
            }
            (Ok(r), None) => r,
        };
        if let Some((alias, canonical)) = &request.alias {
            self.conn.remember_alias(alias.clone(), canonical.clone());
        }
        let command = request.command.clone();
        let job = Job::Command {
            command: Ok(command),
            reply: Some(self.reply_to(request)),
        };
        match self.session.enqueue(job) {
            Ok(true) => {
                let ctx = self.front.sessions.clone();
                tokio::spawn(handlers::run_queue(ctx, self.session.clone()));
            }
            Ok(false) => {}
            Err(Job::Command {
                reply: Some(reply), ..
            }) => reply(Err(Rejection::rate_limited(
                "too many requests waiting; slow down",
            ))),
            Err(_) => {}
        }
    }

    fn refuse(&self, style: &frames::Style, request_id: Option<&Value>, rejection: Rejection) {
        crate::metrics::rejected(rejection.code.as_str());
        self.push(frames::error_reply(style, request_id, &rejection));
    }

    /// How a request's outcome is written back.
    fn reply_to(&self, request: Request) -> Reply {
        let conn = self.conn.clone();
        let session = self.session.clone();
        let info = self.info.clone();
        Box::new(move |outcome: Outcome| {
            let text = match outcome {
                Ok(fields) => frames::reply(&request, &fields, || {
                    status(&session, &info, fields.get("rooms"))
                }),
                Err(mut r) => {
                    match &request.command {
                        Command::RefreshToken { .. } => r.code = ErrorCode::Unauthorized,
                        Command::Join { room, .. } => conn.forget_alias(room.as_str()),
                        _ => {}
                    }
                    Some(frames::error_reply(
                        &request.style,
                        request.request_id.as_ref(),
                        &r,
                    ))
                }
            };
            if let Some(text) = text
                && conn.push(text.into()) == crate::hub::SendOutcome::Slow
            {
                conn.close(close::TRY_AGAIN, "too slow: reconnect and replay");
            }
        })
    }

    fn push(&self, text: String) {
        if self.conn.push(text.into()) == crate::hub::SendOutcome::Slow {
            self.conn
                .close(close::TRY_AGAIN, "too slow: reconnect and replay");
        }
    }
}

/// Writes `first` and whatever else is waiting (up to a batch), then flushes once.
async fn write_batch(sink: &mut Sink, conn: &Conn, first: Outgoing) -> Result<(), axum::Error> {
    sink.feed(message(first)).await?;
    for _ in 1..WRITE_BATCH {
        match conn.try_next_out() {
            Some(out) => sink.feed(message(out)).await?,
            None => break,
        }
    }
    sink.flush().await
}

fn message(out: Outgoing) -> Message {
    match out {
        Outgoing::Text(frame) => Message::Text(frame),
        Outgoing::Probe(nonce) => Message::Ping(nonce),
    }
}

fn style_name(style: &frames::Style) -> &str {
    match style {
        frames::Style::Action(a) | frames::Style::Type(a) => a,
    }
}

/// The `getStatus` reply.
fn status(session: &Session, info: &Info, rooms: Option<&Value>) -> Value {
    let claims = session.claims();
    json!({
        "action": "getStatus",
        "connectionId": session.sid.to_string(),
        "userId": claims.sub,
        "branchId": claims.branch_id,
        "role": claims.role,
        "clientType": info.client_type,
        "clientVersion": info.client_version,
        "deviceId": info.device_id,
        "rooms": rooms.cloned().unwrap_or(Value::Array(Vec::new())),
        "connectedAt": info.connected_at,
        "timestamp": crate::events::now_iso8601(),
    })
}
