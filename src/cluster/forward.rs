//! Long-polling without sticky sessions: a request for an Engine.IO session
//! another node owns is forwarded to that node.
//!
//! Engine.IO keeps a session in the memory of the node that opened it, and a
//! polling client sends every request separately; behind a load balancer
//! without affinity those requests land anywhere. So:
//!
//! * the node that opens a polling session records itself as its owner in
//!   Redis (`{cluster}-eio:{sid}` → its advertised URL), refreshed while the
//!   session polls and expiring after it ends;
//! * a node that receives a request for a session it does not know looks the
//!   owner up and forwards the request over HTTP (the long poll waits on the
//!   owner; the answer comes back through this node); a websocket upgrade is
//!   tunnelled, the bytes copied both ways for the socket's life;
//! * a forwarded request carries the client's address, signed with a key the
//!   cluster keeps in Redis (which livehub trusts fully), so the owner counts
//!   the right address and never forwards it again. A forwarded-looking
//!   request with a bad signature is handled as any outside request.
//!
//! Node-to-node HTTP rather than Redis pub/sub: a long poll is a request that
//! waits, and HTTP already has the request, the wait, the streaming body and
//! the upgrade; through Redis every poll would need its own reply channel.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use dashmap::DashMap;
use hmac::{Hmac, Mac};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use redis::aio::ConnectionManager;
use sha2::Sha256;

use crate::transport::{ConnInfo, unknown_session};

/// The header a forwarded request carries: `{unix seconds};{client ip};{hex mac}`.
const FORWARDED: &str = "x-livehub-forwarded";
/// How old a forwarded request's signature may be.
const SIGNATURE_WINDOW: u64 = 30;
/// How long an owner record lives without a refresh (a poll arrives at least
/// every ping interval, 25 s).
const OWNER_TTL: Duration = Duration::from_secs(90);
/// How often a session's owner record is refreshed, at most.
const REFRESH_EVERY: Duration = Duration::from_secs(30);
/// Redis lookups wait this long at most; past it the request stays here.
const REDIS_WAIT: Duration = Duration::from_millis(500);

type HmacSha256 = Hmac<Sha256>;

/// Where a request for an Engine.IO session is handled.
pub(crate) enum Route {
    /// Here: the session is this node's, or its owner is unknown.
    Here(Request),
    /// At the owner, through [`Forwarder::forward`].
    Owner(String, Request),
}

/// This node's side of session forwarding.
pub(crate) struct Forwarder {
    /// This node's base URL as other nodes reach it, once known.
    me: OnceLock<String>,
    key: [u8; 32],
    redis: ConnectionManager,
    prefix: String,
    /// Sessions opened here, and when their owner record was last written.
    local: DashMap<String, Instant>,
    client: Client<HttpConnector, Body>,
    /// Proxies whose `X-Forwarded-For` names the client (`TRUSTED_PROXIES`).
    trusted_proxies: Vec<ipnet::IpNet>,
}

impl Forwarder {
    /// The forwarder of cluster `cluster`, with the cluster's key (made by
    /// the first node, kept in Redis). `advertise` is this node's URL for the
    /// other nodes; without it, [`Forwarder::listening_on`] sets it.
    pub(crate) async fn new(
        mut redis: ConnectionManager,
        cluster: &str,
        advertise: Option<String>,
        trusted_proxies: Vec<ipnet::IpNet>,
    ) -> anyhow::Result<Arc<Forwarder>> {
        let key_name = format!("{cluster}-forward-key");
        let fresh = hex::encode(rand::random::<[u8; 32]>());
        let _: Option<String> = redis::cmd("SET")
            .arg(&key_name)
            .arg(&fresh)
            .arg("NX")
            .query_async(&mut redis)
            .await?;
        let stored: String = redis::cmd("GET")
            .arg(&key_name)
            .query_async(&mut redis)
            .await?;
        let mut key = [0u8; 32];
        hex::decode_to_slice(stored.trim(), &mut key)
            .map_err(|_| anyhow::anyhow!("{key_name} in Redis is not 32 bytes of hex"))?;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        let forwarder = Forwarder {
            me: OnceLock::new(),
            key,
            redis,
            prefix: format!("{cluster}-eio:"),
            local: DashMap::new(),
            client,
            trusted_proxies,
        };
        if let Some(url) = advertise {
            let _ = forwarder.me.set(url.trim_end_matches('/').to_string());
        }
        let forwarder = Arc::new(forwarder);
        tokio::spawn(forget_idle(Arc::downgrade(&forwarder)));
        Ok(forwarder)
    }

    /// The node listens on `addr`: its URL for the other nodes, unless
    /// `ADVERTISE_URL` gave one. An unspecified address (0.0.0.0) says
    /// nothing about how to reach the node: forwarding stays off.
    pub(crate) fn listening_on(&self, addr: SocketAddr) {
        if !addr.ip().is_unspecified() {
            let _ = self.me.set(format!("http://{addr}"));
        }
    }

    /// Whether other nodes can reach this one (forwarding is on).
    pub(crate) fn is_reachable(&self) -> bool {
        self.me.get().is_some()
    }

    /// A polling session `sid` opened here: this node owns it.
    pub(crate) async fn opened(&self, sid: &str) {
        self.local.insert(sid.to_string(), Instant::now());
        self.record_owner(sid).await;
    }

    async fn record_owner(&self, sid: &str) {
        let Some(me) = self.me.get() else { return };
        let mut redis = self.redis.clone();
        let mut cmd = redis::cmd("SET");
        cmd.arg(format!("{}{sid}", self.prefix))
            .arg(me)
            .arg("EX")
            .arg(OWNER_TTL.as_secs());
        let set = cmd.query_async::<()>(&mut redis);
        if !matches!(tokio::time::timeout(REDIS_WAIT, set).await, Ok(Ok(()))) {
            tracing::debug!(sid, "could not record a session's owner in Redis");
        }
    }

    /// Decides where a request for session `sid` is handled. A forwarded
    /// request with a valid signature is handled here, with the client's
    /// address it carries.
    pub(crate) async fn route(&self, sid: &str, mut req: Request) -> Route {
        if let Some(client) = self.verified_client(&req) {
            if let Some(conn) = req.extensions_mut().get_mut::<ConnInfo>() {
                conn.peer = SocketAddr::new(client, 0);
            }
            req.headers_mut().remove(FORWARDED);
            req.headers_mut().remove("x-forwarded-for");
            self.touch(sid).await;
            return Route::Here(req);
        }
        req.headers_mut().remove(FORWARDED);
        if self.local.contains_key(sid) {
            self.touch(sid).await;
            return Route::Here(req);
        }
        match self.owner(sid).await {
            Some(owner) if Some(&owner) != self.me.get() => Route::Owner(owner, req),
            _ => Route::Here(req),
        }
    }

    /// Refreshes the owner record of a session opened here, now and then (a
    /// forwarded request for a session this node does not have claims nothing).
    async fn touch(&self, sid: &str) {
        let due = match self.local.get_mut(sid) {
            Some(mut written) if written.elapsed() >= REFRESH_EVERY => {
                *written = Instant::now();
                true
            }
            _ => false,
        };
        if due {
            self.record_owner(sid).await;
        }
    }

    async fn owner(&self, sid: &str) -> Option<String> {
        let mut redis = self.redis.clone();
        let mut cmd = redis::cmd("GET");
        cmd.arg(format!("{}{sid}", self.prefix));
        let get = cmd.query_async::<Option<String>>(&mut redis);
        tokio::time::timeout(REDIS_WAIT, get).await.ok()?.ok()?
    }

    /// Forwards `req` to `owner` and returns its answer; an owner that cannot
    /// be reached answers as an unknown session does, so that the client
    /// opens a new one.
    pub(crate) async fn forward(&self, owner: &str, mut req: Request) -> Response {
        let client = self.client_of(&req);
        let websocket = is_upgrade(&req);
        let upgrade = websocket.then(|| hyper::upgrade::on(&mut req));
        let (mut parts, body) = req.into_parts();
        let path = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        let Ok(uri) = format!("{owner}{path}").parse() else {
            return unknown_session();
        };
        parts.uri = uri;
        let signature = self.sign(unix_now(), client, parts.method.as_str(), &path);
        if let Ok(value) = HeaderValue::from_str(&signature) {
            parts.headers.insert(FORWARDED, value);
        }
        let out = Request::from_parts(parts, body);
        let mut answer = match self.client.request(out).await {
            Ok(answer) => answer,
            Err(e) => {
                tracing::debug!(error = %e, owner, "a session's owner did not answer");
                return unknown_session();
            }
        };
        crate::metrics::forwarded(if websocket { "websocket" } else { "polling" });
        if let Some(from_client) = upgrade
            && answer.status() == StatusCode::SWITCHING_PROTOCOLS
        {
            let to_owner = hyper::upgrade::on(&mut answer);
            tokio::spawn(tunnel(from_client, to_owner));
        }
        answer.map(Body::new)
    }

    /// The client's address, as this node sees it.
    fn client_of(&self, req: &Request) -> IpAddr {
        let peer = req
            .extensions()
            .get::<ConnInfo>()
            .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.peer.ip());
        let forwarded = req
            .headers()
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok());
        crate::transport::client_ip(peer, forwarded, &self.trusted_proxies)
    }

    fn sign(&self, at: u64, client: IpAddr, method: &str, path: &str) -> String {
        let mac = self.mac(at, client, method, path).finalize().into_bytes();
        format!("{at};{client};{}", hex::encode(mac))
    }

    fn mac(&self, at: u64, client: IpAddr, method: &str, path: &str) -> HmacSha256 {
        let mut mac = <HmacSha256 as hmac::KeyInit>::new_from_slice(&self.key)
            .expect("HMAC takes any key length");
        mac.update(format!("{at}\n{client}\n{method}\n{path}").as_bytes());
        mac
    }

    /// The client address of a request forwarded by another node, when its
    /// signature is valid and recent.
    fn verified_client(&self, req: &Request) -> Option<IpAddr> {
        let value = req.headers().get(FORWARDED)?.to_str().ok()?;
        let mut fields = value.splitn(3, ';');
        let at: u64 = fields.next()?.parse().ok()?;
        let client: IpAddr = fields.next()?.parse().ok()?;
        let given = hex::decode(fields.next()?).ok()?;
        if unix_now().abs_diff(at) > SIGNATURE_WINDOW {
            return None;
        }
        let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
        self.mac(at, client, req.method().as_str(), path)
            .verify_slice(&given)
            .ok()?;
        Some(client)
    }
}

/// The session id in an Engine.IO open packet (`0{"sid":"…",…}`, framed by
/// any protocol version).
pub(crate) fn opened_sid(body: &[u8]) -> Option<String> {
    const KEY: &[u8] = b"\"sid\":\"";
    let start = body.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let len = body[start..].iter().position(|&b| b == b'"')?;
    String::from_utf8(body[start..start + len].to_vec()).ok()
}

fn is_upgrade(req: &Request) -> bool {
    req.headers()
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"))
}

/// Copies a tunnelled websocket both ways until either side closes.
async fn tunnel(from_client: hyper::upgrade::OnUpgrade, to_owner: hyper::upgrade::OnUpgrade) {
    let (Ok(client), Ok(owner)) = futures_util::join!(from_client, to_owner) else {
        return;
    };
    let mut client = TokioIo::new(client);
    let mut owner = TokioIo::new(owner);
    let _ = tokio::io::copy_bidirectional(&mut client, &mut owner).await;
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Forgets local sessions that have not been seen for a while (their owner
/// record expires by itself in Redis).
async fn forget_idle(forwarder: std::sync::Weak<Forwarder>) {
    loop {
        tokio::time::sleep(OWNER_TTL).await;
        let Some(f) = forwarder.upgrade() else { return };
        f.local
            .retain(|_, written| written.elapsed() < OWNER_TTL * 2);
        crate::memory::give_back_shared_room(&f.local);
    }
}

#[cfg(test)]
mod tests {
    use super::opened_sid;

    #[test]
    fn the_session_id_is_read_from_open_packets_of_every_version() {
        assert_eq!(
            opened_sid(br#"0{"sid":"abc-_1","upgrades":["websocket"],"pingInterval":25000}"#),
            Some("abc-_1".into())
        );
        assert_eq!(
            opened_sid(b"96:0{\"sid\":\"v3sid\",\"upgrades\":[]}2:40"),
            Some("v3sid".into())
        );
        assert_eq!(
            opened_sid(b"\x00\x09\xff0{\"sid\":\"bin\"}"),
            Some("bin".into())
        );
        assert_eq!(opened_sid(b"0{\"upgrades\":[]}"), None);
        assert_eq!(opened_sid(b"0{\"sid\":\"unterminated"), None);
    }
}
