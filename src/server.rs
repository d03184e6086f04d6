//! The TCP accept loop.
//!
//! livehub accepts connections itself instead of calling `axum::serve` for two
//! reasons: `TCP_NODELAY` (with Nagle on, every small websocket frame waits for
//! the previous one's ACK — about 40 ms per delivery on Linux), and a kill token
//! per connection that still works after an HTTP upgrade (see
//! [`crate::transport`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::session::limits::{ConnectionSlot, ConnectionsPerIp};
use crate::transport::{ConnInfo, KillableStream};

/// How long a client may take to send a request's headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The answer to a connection over the cap: written raw, before any HTTP
/// parsing, so that a flood costs one small write per connection.
const OVER_CAPACITY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\n\
Content-Type: application/json\r\nContent-Length: 80\r\nConnection: close\r\n\r\n\
{\"ok\":false,\"error\":{\"code\":\"internal\",\"message\":\"too many connections, retry\"}}";

/// The answer to an address over its own cap, written the same way.
const OVER_ADDRESS_CAP: &[u8] = b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 5\r\n\
Content-Type: application/json\r\nContent-Length: 95\r\nConnection: close\r\n\r\n\
{\"ok\":false,\"error\":{\"code\":\"rate_limited\",\"message\":\"too many connections from this address\"}}";

/// How the accept loop bounds its connections.
pub struct Limits {
    /// How long open connections may finish after shutdown begins.
    pub grace: Duration,
    /// Open connections at most (0 = no cap); more are answered 503 and closed.
    pub max_connections: usize,
    /// Open TCP connections per peer address at most, authenticated or not
    /// (0 = no cap); more are answered 429 and closed. Trusted proxies are
    /// not capped: every client behind them shares their address.
    pub max_per_address: u32,
    /// Peers that are proxies (`TRUSTED_PROXIES`).
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

impl Limits {
    /// The TCP connections one address may hold open when `MAX_CONNECTIONS_PER_IP`
    /// is `per_ip` (0 = no cap): a polling client holds two (its long poll
    /// and its sends), and handshakes and API calls need a few more.
    pub fn tcp_per_address(per_ip: u32) -> u32 {
        if per_ip == 0 {
            0
        } else {
            per_ip.saturating_mul(2).saturating_add(8)
        }
    }
}

/// Serves `app` on `listener` until `shutdown` is cancelled, then gives open
/// connections up to `limits.grace` to finish and closes the rest.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: CancellationToken,
    limits: Limits,
) {
    let grace = limits.grace;
    let acceptor = Acceptor {
        app,
        limits,
        per_address: Arc::new(ConnectionsPerIp::default()),
        tracker: TaskTracker::new(),
        all_connections: CancellationToken::new(),
    };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => acceptor.accept(stream, peer),
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    // Connections the kernel completed but nobody accepted yet would be reset
    // when the listener closes. Take every one that is waiting, straight from
    // the socket (the reactor may not have seen them yet), so each gets an
    // answer (`/health` is 503 by now), and only then close the listener.
    if let Ok(listener) = listener.into_std() {
        while let Ok((stream, peer)) = listener.accept() {
            let accepted = stream
                .set_nonblocking(true)
                .and_then(|()| TcpStream::from_std(stream));
            if let Ok(stream) = accepted {
                acceptor.serve(stream, peer, None);
            }
        }
    }
    acceptor.tracker.close();
    if tokio::time::timeout(grace, acceptor.tracker.wait())
        .await
        .is_err()
    {
        tracing::debug!("closing connections still open after the grace period");
    }
    acceptor.all_connections.cancel();
}

/// What the accept loop serves connections with.
struct Acceptor {
    app: Router,
    limits: Limits,
    /// Open TCP connections per peer address.
    per_address: Arc<ConnectionsPerIp>,
    /// Every connection's task.
    tracker: TaskTracker,
    /// The parent of every connection's kill token.
    all_connections: CancellationToken,
}

impl Acceptor {
    /// Serves a new connection, or refuses it when a cap is reached.
    fn accept(&self, stream: TcpStream, peer: SocketAddr) {
        let max = self.limits.max_connections;
        if max > 0 && self.tracker.len() >= max {
            return refuse(stream, OVER_CAPACITY, "too_many_connections");
        }
        match self.admit(peer) {
            Some(slot) => self.serve(stream, peer, slot),
            None => refuse(stream, OVER_ADDRESS_CAP, "too_many_connections_per_address"),
        }
    }

    /// A slot for a connection from an address that is not a trusted proxy
    /// (`Some(None)`: not counted); `None` when that address is at its cap.
    fn admit(&self, peer: SocketAddr) -> Option<Option<ConnectionSlot>> {
        let ip = peer.ip();
        let cap = self.limits.max_per_address;
        if cap == 0
            || self
                .limits
                .trusted_proxies
                .iter()
                .any(|net| net.contains(&ip))
        {
            return Some(None);
        }
        self.per_address.acquire(ip, cap, || None).map(Some)
    }

    /// Runs HTTP on one connection, with its kill token and timeouts.
    fn serve(&self, stream: TcpStream, peer: SocketAddr, slot: Option<ConnectionSlot>) {
        let _ = stream.set_nodelay(true);
        let kill = self.all_connections.child_token();
        let info = ConnInfo::new(peer, kill.clone());
        let handshake = info.clone();
        let service = self
            .app
            .clone()
            .map_request(move |mut req: hyper::Request<Incoming>| {
                req.extensions_mut().insert(info.clone());
                req
            });
        self.tracker.spawn(async move {
            // hyper's header timer starts at a request's first byte: a client
            // that connects and sends nothing would hold its connection forever.
            // (`peek`, not `readable`: readiness may be reported before any byte is there.)
            let mut first = [0u8; 1];
            if tokio::time::timeout(HEADER_READ_TIMEOUT, stream.peek(&mut first))
                .await
                .is_err()
            {
                return;
            }
            // The address's slot lives as long as the stream, which an
            // upgraded websocket keeps after this task ends.
            let io = TokioIo::new(KillableStream::new(stream, &handshake).holding(slot));
            let mut builder = auto::Builder::new(TokioExecutor::new());
            // A client that sends its request headers a byte at a time is
            // closed instead of holding its connection forever.
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT);
            let conn = builder.serve_connection_with_upgrades(
                io,
                hyper_util::service::TowerToHyperService::new(service),
            );
            tokio::select! {
                result = conn => {
                    if let Err(e) = result {
                        tracing::trace!(error = %e, "connection ended with an error");
                    }
                }
                _ = kill.cancelled() => {}
            }
        });
    }
}

/// Answers a connection over a cap with `answer` and closes it, within a second.
fn refuse(mut stream: TcpStream, answer: &'static [u8], reason: &'static str) {
    use tokio::io::AsyncWriteExt;
    crate::metrics::rejected(reason);
    tokio::spawn(async move {
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            let _ = stream.write_all(answer).await;
            let _ = stream.shutdown().await;
        })
        .await;
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_answers_declare_their_body_length() {
        for answer in [OVER_CAPACITY, OVER_ADDRESS_CAP] {
            let text = std::str::from_utf8(answer).unwrap();
            let (head, body) = text.split_once("\r\n\r\n").unwrap();
            let declared = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .unwrap();
            assert_eq!(declared.parse::<usize>().unwrap(), body.len(), "{head}");
            let json: serde_json::Value = serde_json::from_str(body).unwrap();
            assert_eq!(json["ok"], false);
        }
    }
}
