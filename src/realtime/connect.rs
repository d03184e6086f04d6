//! The connect flow: authentication middleware, then the socket's setup.
//!
//! [`ConnectFlow`] implements socketioxide's `ConnectHandler` itself rather than
//! being an async closure, because of the order socketioxide 0.18 does things
//! in: middleware, then the CONNECT packet, then the connect handler — and a
//! closure handler is spawned, so events a client sends right after `connect`
//! can arrive before it has registered anything and are silently dropped.
//! Here the middleware registers the socket's handlers before CONNECT is sent,
//! and the synchronous `call` only starts the socket's first job.

use std::fmt::Display;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::pin::Pin;
use std::sync::Arc;

use socketioxide::adapter::Adapter;
use socketioxide::extract::{SocketRef, TryData};
use socketioxide::handler::{ConnectHandler, FromConnectParts, Value as SioValue};
use socketioxide::socket::{DisconnectReason, Socket};

use super::dispatch::Dispatcher;
use crate::auth::{self, AuthError};
use crate::session::limits::EventLimiter;
use crate::session::{Session, Sessions, handlers};
use crate::transport::{ConnInfo, TransportControl, client_ip};

/// Type marker for [`ConnectFlow`]'s `ConnectHandler` impl.
pub struct ConnectMarker;

/// Authenticates and sets up every socket of the namespace.
#[derive(Clone)]
pub struct ConnectFlow {
    /// The session layer.
    pub sessions: Arc<Sessions>,
    /// Engine.IO transports, forgotten when their socket goes.
    pub transport: Arc<TransportControl>,
}

/// What a connect middleware returns (socketioxide's `ConnectHandler`).
pub(crate) type MiddlewareFuture<'a> =
    Pin<Box<dyn Future<Output = Result<(), Box<dyn Display + Send>>> + Send + 'a>>;

/// Why a connection was refused: the text is the client's `connect_error` message.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error("{0}")]
    Auth(#[from] AuthError),
    #[error("rate_limited: too many connections from this address")]
    TooManyConnections,
}

impl<A: Adapter> ConnectHandler<A, ConnectMarker> for ConnectFlow {
    fn call(&self, s: Arc<Socket<A>>, auth: Option<SioValue>) {
        let Ok(socket) = SocketRef::from_connect_parts(&s, &auth);
        if let Some(session) = socket.extensions.get::<Arc<Session>>() {
            tokio::spawn(handlers::run_queue(self.sessions.clone(), session));
        }
    }

    fn call_middleware<'a>(
        &'a self,
        s: Arc<Socket<A>>,
        auth: &'a Option<SioValue>,
    ) -> MiddlewareFuture<'a> {
        Box::pin(async move {
            self.admit(s.clone(), auth).await.map_err(|refusal| {
                self.end_refused_legacy_session(&s);
                Box::new(refusal) as Box<dyn Display + Send>
            })
        })
    }
}

/// How long a refused 2.x client has to read why before its session ends.
const REFUSED_SESSION_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

impl ConnectFlow {
    /// Ends the Engine.IO session of a refused 2.x (EIO3) client. Protocol v4
    /// has no connect timeout: a refused session would otherwise live as long
    /// as its client answers pings, holding state for nothing. (Protocol v5
    /// sessions are closed by socketioxide's connect timeout.) For v4 the
    /// socket id is the Engine.IO session id.
    fn end_refused_legacy_session<A: Adapter>(&self, s: &Arc<Socket<A>>) {
        if s.protocol() != socketioxide::ProtocolVersion::V4 {
            return;
        }
        let sid = s.id.to_string();
        let handshake = s.req_parts().extensions.get::<ConnInfo>().cloned();
        let websocket = s.transport_type() == socketioxide::TransportType::Websocket;
        let transport = self.transport.clone();
        tokio::spawn(async move {
            tokio::time::sleep(REFUSED_SESSION_GRACE).await;
            transport.kill(&sid, handshake.as_ref(), websocket);
        });
    }
}

impl ConnectFlow {
    async fn admit<A: Adapter>(
        &self,
        s: Arc<Socket<A>>,
        auth: &Option<SioValue>,
    ) -> Result<(), Refusal> {
        let ctx = &self.sessions;
        let Ok(TryData(auth_json)) = TryData::<serde_json::Value>::from_connect_parts(&s, auth);
        let auth_json = auth_json.ok();
        let parts = s.req_parts();
        let authorization = parts
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let token = auth::handshake_token(auth_json.as_ref(), parts.uri.query(), authorization)
            .ok_or(AuthError::MissingToken)?;
        let claims = ctx.verifier.verify(&token).await?;

        let peer = parts
            .extensions
            .get::<ConnInfo>()
            .map(|c| c.peer.ip())
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let forwarded = parts
            .headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok());
        let ip = client_ip(peer, forwarded, &ctx.settings.trusted_proxies);
        let Some(slot) = ctx.admit(ip) else {
            crate::metrics::rejected("too_many_connections");
            return Err(Refusal::TooManyConnections);
        };

        let auth_offset = auth_json
            .as_ref()
            .and_then(|a| a.get("offset"))
            .and_then(|o| o.as_str())
            .filter(|o| !o.is_empty())
            .map(String::from);
        let session = Arc::new(Session::new(
            s.id,
            claims,
            ctx.hub.position(),
            auth_offset,
            EventLimiter::per_minute(ctx.settings.rate_limit_per_minute),
            Some(slot),
        ));
        ctx.expiry.watch(s.id, session.claims().exp);
        // Reachable by `POST /users/{id}/disconnect` from now on (see `user_sockets_room`).
        s.join(crate::rooms::user_sockets_room(&session.claims().sub));
        s.extensions.insert(session);
        s.on_fallback(Dispatcher(ctx.clone()));
        let ctx = ctx.clone();
        let transport = self.transport.clone();
        s.on_disconnect(move |socket: SocketRef<A>, reason: DisconnectReason| {
            let ctx = ctx.clone();
            let transport = transport.clone();
            async move { on_disconnect(ctx, transport, socket, reason).await }
        });
        Ok(())
    }
}

async fn on_disconnect<A: Adapter>(
    ctx: Arc<Sessions>,
    transport: Arc<TransportControl>,
    socket: SocketRef<A>,
    reason: DisconnectReason,
) {
    let Some(session) = socket.extensions.get::<Arc<Session>>() else {
        return;
    };
    tracing::debug!(sid = %socket.id, ?reason, "socket disconnected");
    if let Some(slot) = &session.connection {
        slot.release();
    }
    transport.forget(socket.id);
    ctx.expiry.forget(socket.id);
    // Boxed: socketioxide spawns this handler's future, copying it whole.
    Box::pin(handlers::on_disconnect(&ctx, &session)).await;
}
