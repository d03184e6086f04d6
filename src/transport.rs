//! Transport control: the client's address, and closing one client's transport
//! so that it reconnects by itself.
//!
//! socketioxide can only end a socket with a Socket.IO disconnect packet, after
//! which socket.io-client does *not* reconnect ("io server disconnect"). A slow
//! client, or one we want to move to another node, must instead lose its
//! transport the way a network blip would. livehub owns the TCP accept loop, so
//! every connection carries a [`ConnInfo`] with a kill token; this module knows
//! which connection carries which Engine.IO session:
//!
//! * websocket opened directly: the connection of the socket's handshake request;
//! * websocket upgraded from polling: the connection of the upgrade request
//!   (recorded by [`TransportControl::track`] as it passes);
//! * polling: every in-flight request of the session, and every later one is
//!   refused with 400 — which socket.io-client answers by reconnecting.

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use ipnet::IpNet;
use socketioxide::socket::Sid;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::memory::give_back_shared_room;

/// Per-connection facts, attached to every request on that connection.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The TCP peer.
    pub peer: SocketAddr,
    /// Cancelling it closes the TCP connection, upgraded websockets included.
    pub kill: CancellationToken,
    /// Set once the connection's stream is dropped (the TCP connection is gone).
    pub closed: Arc<AtomicBool>,
    /// What waits in memory to be written to this connection.
    pub outbox: Outbox,
}

impl ConnInfo {
    /// Facts of a new connection from `peer`.
    pub fn new(peer: SocketAddr, kill: CancellationToken) -> ConnInfo {
        ConnInfo {
            peer,
            kill,
            closed: Arc::default(),
            outbox: Outbox::default(),
        }
    }

    /// Whether the TCP connection is gone.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

/// The bytes livehub queued for the websocket session a connection carries,
/// and the bytes written to the connection: the difference is what waits in
/// memory for a client that reads slowly. (socketioxide bounds its queue in
/// packets; this bounds it in bytes, whatever the size of the events.)
///
/// Written bytes include frames livehub did not count as queued (pings,
/// acks, signals). Each count first raises `queued` to `written`, so those
/// frames never become credit for the bytes after them; at worst the
/// difference errs low by what is in flight, and a reading client is never
/// taken for a slow one.
#[derive(Debug, Clone, Default)]
pub struct Outbox(Arc<OutboxCounts>);

/// One allocation per connection for both counts.
#[derive(Debug, Default)]
pub struct OutboxCounts {
    queued: AtomicU64,
    written: AtomicU64,
}

impl Outbox {
    /// Counts `bytes` more queued: `false` when what waits unwritten is then
    /// over `budget`.
    pub fn queue(&self, bytes: usize, budget: usize) -> bool {
        let written = self.0.written.load(Ordering::Relaxed);
        self.0.queued.fetch_max(written, Ordering::Relaxed);
        let queued = self.0.queued.fetch_add(bytes as u64, Ordering::Relaxed) + bytes as u64;
        queued.saturating_sub(written) <= budget as u64
    }

    /// Counts `bytes` written to the connection. Only the connection's own
    /// stream writes this count, so a plain store does (no locked add on
    /// every write).
    fn wrote(&self, bytes: usize) {
        let written = self.0.written.load(Ordering::Relaxed);
        self.0
            .written
            .store(written + bytes as u64, Ordering::Relaxed);
    }
}

/// How long a killed polling session's requests keep being refused.
const KILLED_TTL: Duration = Duration::from_secs(120);

/// Which TCP connection carries which Engine.IO session.
#[derive(Default)]
pub struct TransportControl {
    /// Sessions upgraded to websocket: the upgrade request's connection. Keyed
    /// by [`Sid`], not its text: every delivery to a websocket looks here.
    upgraded: DashMap<Sid, ConnInfo>,
    /// Polling requests in flight, by session.
    polling: DashMap<String, Vec<(u64, CancellationToken)>>,
    /// Sessions whose transport was killed, and when.
    killed: DashMap<String, Instant>,
    next_request: std::sync::atomic::AtomicU64,
}

/// The session's transport was closed by livehub: its requests get 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionKilled;

/// A request of an existing Engine.IO session, as seen on the way in.
pub struct Tracked {
    control: Arc<TransportControl>,
    sid: String,
    id: Option<u64>,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            if let Some(mut list) = self.control.polling.get_mut(&self.sid) {
                list.retain(|(i, _)| *i != id);
            }
            self.control
                .polling
                .remove_if(&self.sid, |_, list| list.is_empty());
        }
    }
}

impl TransportControl {
    /// Records an Engine.IO request for session `sid` on connection `conn`.
    /// Fails when the session was killed: answer 400.
    /// Keep the returned guard alive for the duration of the request.
    pub fn track(
        self: &Arc<Self>,
        sid: &str,
        websocket: bool,
        conn: &ConnInfo,
    ) -> Result<Tracked, SessionKilled> {
        if let Some(at) = self.killed.get(sid) {
            if at.elapsed() < KILLED_TTL {
                return Err(SessionKilled);
            }
            drop(at);
            self.killed.remove(sid);
        }
        if websocket {
            // Recorded by `upgraded` once Engine.IO accepted the upgrade: an
            // upgrade request for a session that does not exist records nothing.
            return Ok(Tracked {
                control: self.clone(),
                sid: sid.to_string(),
                id: None,
            });
        }
        let id = self
            .next_request
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.polling
            .entry(sid.to_string())
            .or_default()
            .push((id, conn.kill.clone()));
        Ok(Tracked {
            control: self.clone(),
            sid: sid.to_string(),
            id: Some(id),
        })
    }

    /// Engine.IO accepted a websocket upgrade of session `sid` on connection `conn`.
    pub fn upgraded(&self, sid: &str, conn: &ConnInfo) {
        // Engine.IO accepted the upgrade, so the id is one of its own.
        if let Ok(sid) = sid.parse::<Sid>() {
            self.upgraded.insert(sid, conn.clone());
        }
    }

    /// The connection carrying a websocket session: the upgrade's, or for a
    /// websocket opened directly, its handshake's (`handshake`).
    pub fn websocket_conn(&self, sid: Sid, handshake: Option<&ConnInfo>) -> Option<ConnInfo> {
        self.with_websocket_conn(sid, handshake, ConnInfo::clone)
    }

    /// The outbox of that connection, for the delivery path: without cloning
    /// the rest of the connection's facts.
    pub fn websocket_outbox(&self, sid: Sid, handshake: Option<&ConnInfo>) -> Option<Outbox> {
        self.with_websocket_conn(sid, handshake, |c| c.outbox.clone())
    }

    fn with_websocket_conn<T>(
        &self,
        sid: Sid,
        handshake: Option<&ConnInfo>,
        read: impl FnOnce(&ConnInfo) -> T,
    ) -> Option<T> {
        match self.upgraded.get(&sid) {
            Some(conn) => Some(read(&conn)),
            None => handshake.map(read),
        }
    }

    /// Closes the transport of session `sid`. `handshake` is the connection of
    /// the session's first request (the websocket itself when opened directly).
    pub fn kill(&self, sid: &str, handshake: Option<&ConnInfo>, is_websocket: bool) {
        self.killed.insert(sid.to_string(), Instant::now());
        let upgrade = sid
            .parse::<Sid>()
            .ok()
            .and_then(|s| self.upgraded.remove(&s));
        if let Some((_, conn)) = upgrade {
            conn.kill.cancel();
        } else if is_websocket && let Some(conn) = handshake {
            conn.kill.cancel();
        }
        if let Some((_, list)) = self.polling.remove(sid) {
            for (_, token) in list {
                token.cancel();
            }
        }
    }

    /// Forgets a session that ended.
    pub fn forget(&self, sid: Sid) {
        self.upgraded.remove(&sid);
        self.polling.remove(&sid.to_string());
        give_back_shared_room(&self.upgraded);
    }

    /// Forgets upgrades whose connection is gone and kills past their time
    /// (run every few seconds by the ghost sweeper, so neither map grows).
    /// An upgrade is otherwise forgotten when its socket disconnects, and a
    /// handshake that never became a socket (no CONNECT, a refused token)
    /// has none: without this, a loop of such handshakes grows the map for
    /// good. Returns how many sessions are still tracked.
    pub fn sweep(&self) -> usize {
        self.upgraded.retain(|_, conn| !conn.is_closed());
        self.killed.retain(|_, at| at.elapsed() < KILLED_TTL);
        // Here rather than per polling request: those come and go too often.
        give_back_shared_room(&self.polling);
        give_back_shared_room(&self.killed);
        self.upgraded.len() + self.polling.len()
    }
}

/// What Engine.IO answers a request for a session it does not know (or one
/// livehub closed): socket.io-client then opens a new session.
pub(crate) fn unknown_session() -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        http::StatusCode::BAD_REQUEST,
        axum::Json(serde_json::json!({ "code": 1, "message": "Session ID unknown" })),
    )
        .into_response()
}

/// The Engine.IO session id and transport of a `/socket.io/` request query.
pub fn engine_session(query: &str) -> Option<(&str, bool)> {
    let mut sid = None;
    let mut websocket = false;
    for pair in query.split('&') {
        if let Some(v) = pair.strip_prefix("sid=") {
            sid = Some(v);
        } else if pair == "transport=websocket" {
            websocket = true;
        }
    }
    sid.filter(|s| !s.is_empty()).map(|s| (s, websocket))
}

/// The client's address: the TCP peer, or — when the peer is a trusted proxy —
/// the last address in `X-Forwarded-For` that is not itself a trusted proxy.
pub fn client_ip(peer: IpAddr, forwarded_for: Option<&str>, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let Some(header) = forwarded_for else {
        return peer;
    };
    // Walk from the right: each hop appended the address it saw. The first one
    // that is not a trusted proxy is the client as far as we can trust anyone.
    let mut client = peer;
    for hop in header.rsplit(',') {
        match hop.trim().parse::<IpAddr>() {
            Ok(ip) => {
                client = ip;
                if !is_trusted(&ip) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    client
}

/// A TCP stream that fails its reads and writes once its kill token is
/// cancelled, even after an HTTP upgrade has handed it to a websocket task.
pub struct KillableStream<S> {
    inner: S,
    /// The kill token, waited on by reads.
    killed: Pin<Box<WaitForCancellationFutureOwned>>,
    /// The same, waited on by writes that must wait: a future wakes only its
    /// last poller, and a websocket's reader and writer are different tasks.
    /// Made the first time a write waits, so most connections never pay it.
    killed_while_writing: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
    kill: CancellationToken,
    closed: Arc<AtomicBool>,
    outbox: Outbox,
    /// The address's connection slot, given back when the stream is dropped.
    _slot: Option<crate::session::limits::ConnectionSlot>,
}

impl<S> Drop for KillableStream<S> {
    fn drop(&mut self) {
        self.closed.store(true, Ordering::Release);
    }
}

impl<S> KillableStream<S> {
    /// Wraps `inner` for connection `conn`: cancelling its kill token ends it,
    /// dropping it marks the connection closed.
    pub fn new(inner: S, conn: &ConnInfo) -> Self {
        KillableStream {
            inner,
            killed: Box::pin(conn.kill.clone().cancelled_owned()),
            killed_while_writing: None,
            kill: conn.kill.clone(),
            closed: conn.closed.clone(),
            outbox: conn.outbox.clone(),
            _slot: None,
        }
    }

    /// Holds `slot` until the stream is dropped.
    pub fn holding(mut self, slot: Option<crate::session::limits::ConnectionSlot>) -> Self {
        self._slot = slot;
        self
    }

    /// Counts what a write wrote. The kill token is looked at only when the
    /// write must wait: a fan-out writes to thousands of connections, and
    /// polling the token on every write was a measurable share of it. A
    /// killed connection still stops at once: reads look at the token every
    /// time, and a websocket always has a read pending (its failure ends the
    /// session, writer included); a writer that waits on a client that does
    /// not read is woken by the kill too.
    fn after_write(
        &mut self,
        cx: &mut Context<'_>,
        written: Poll<std::io::Result<usize>>,
    ) -> Poll<std::io::Result<usize>> {
        match written {
            Poll::Ready(Ok(n)) => self.outbox.wrote(n),
            Poll::Ready(Err(_)) => {}
            Poll::Pending => {
                let kill = &self.kill;
                let killed = self
                    .killed_while_writing
                    .get_or_insert_with(|| Box::pin(kill.clone().cancelled_owned()));
                if killed.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(killed_error()));
                }
            }
        }
        written
    }

    fn check(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Error> {
        self.killed.as_mut().poll(cx).map(|()| killed_error())
    }
}

fn killed_error() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::ConnectionAborted,
        "transport closed by livehub",
    )
}

use std::future::Future;

impl<S: AsyncRead + Unpin> AsyncRead for KillableStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if let Poll::Ready(e) = self.check(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for KillableStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.after_write(cx, written)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.after_write(cx, written)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let proxy: IpAddr = "10.0.0.5".parse().unwrap();
        let outsider: IpAddr = "203.0.113.9".parse().unwrap();
        let trusted = nets(&["10.0.0.0/8"]);
        assert_eq!(client_ip(outsider, Some("1.2.3.4"), &trusted), outsider);
        assert_eq!(
            client_ip(proxy, Some("1.2.3.4"), &trusted),
            "1.2.3.4".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            client_ip(proxy, Some("6.6.6.6, 1.2.3.4, 10.0.0.7"), &trusted),
            "1.2.3.4".parse::<IpAddr>().unwrap()
        );
        assert_eq!(client_ip(proxy, Some("garbage"), &trusted), proxy);
        assert_eq!(client_ip(proxy, None, &trusted), proxy);
        assert_eq!(client_ip(proxy, Some("1.2.3.4"), &[]), proxy);
    }

    fn killable(
        inner: tokio::io::DuplexStream,
    ) -> (KillableStream<tokio::io::DuplexStream>, ConnInfo) {
        let conn = ConnInfo::new(([127, 0, 0, 1], 9).into(), CancellationToken::new());
        (KillableStream::new(inner, &conn), conn)
    }

    #[tokio::test]
    async fn a_kill_ends_a_pending_read_and_a_write_that_waits() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (ours, _client) = tokio::io::duplex(64);
        let (mut stream, conn) = killable(ours);
        stream.write_all(b"hello").await.unwrap();
        assert_eq!(conn.outbox.0.written.load(Ordering::Relaxed), 5);

        let (mut reader, mut writer) = tokio::io::split(stream);
        let read = tokio::spawn(async move { reader.read(&mut [0; 8]).await });
        // The client reads nothing: the 64-byte pipe fills and the write waits.
        let write = tokio::spawn(async move { writer.write_all(&[0; 1024]).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!read.is_finished() && !write.is_finished());
        conn.kill.cancel();
        let read = tokio::time::timeout(Duration::from_secs(1), read).await;
        let write = tokio::time::timeout(Duration::from_secs(1), write).await;
        let aborted = Some(std::io::ErrorKind::ConnectionAborted);
        let read = read.expect("the read ends").unwrap();
        assert_eq!(read.err().map(|e| e.kind()), aborted);
        let write = write.expect("the write ends").unwrap();
        assert_eq!(write.err().map(|e| e.kind()), aborted);
    }

    #[test]
    fn outbox_counts_what_was_queued_and_not_yet_written() {
        let outbox = Outbox::default();
        assert!(outbox.queue(600, 1000));
        assert!(!outbox.queue(600, 1000), "1,200 unwritten bytes");
        outbox.wrote(1200);
        assert!(outbox.queue(1000, 1000), "written bytes free the budget");
        outbox.wrote(5000);
        assert!(outbox.queue(10, 100));
        assert!(
            !outbox.queue(2000, 1000),
            "bytes written that were never counted as queued are no credit"
        );
    }

    #[test]
    fn engine_session_reads_sid_and_transport() {
        assert_eq!(
            engine_session("EIO=4&transport=polling&sid=abc"),
            Some(("abc", false))
        );
        assert_eq!(
            engine_session("EIO=4&transport=websocket&sid=abc"),
            Some(("abc", true))
        );
        assert_eq!(engine_session("EIO=4&transport=polling"), None);
        assert_eq!(engine_session("sid="), None);
    }
}
