//! The TCP accept loop.
//!
//! livehub accepts connections itself instead of calling `axum::serve` for two
//! reasons: `TCP_NODELAY` (with Nagle on, every small websocket frame waits for
//! the previous one's ACK — about 40 ms per delivery on Linux), and a kill token
//! per connection that still works after an HTTP upgrade (see
//! [`crate::transport`]).

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::transport::{ConnInfo, KillableStream};

/// How long a client may take to send a request's headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The answer to a connection over the cap: written raw, before any HTTP
/// parsing, so that a flood costs one small write per connection.
const OVER_CAPACITY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\n\
Content-Type: application/json\r\nContent-Length: 80\r\nConnection: close\r\n\r\n\
{\"ok\":false,\"error\":{\"code\":\"internal\",\"message\":\"too many connections, retry\"}}";

/// How the accept loop bounds its connections.
pub struct Limits {
    /// How long open connections may finish after shutdown begins.
    pub grace: Duration,
    /// Open connections at most (0 = no cap); more are answered 503 and closed.
    pub max_connections: usize,
}

/// Serves `app` on `listener` until `shutdown` is cancelled, then gives open
/// connections up to `limits.grace` to finish and closes the rest.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: CancellationToken,
    limits: Limits,
) {
    let Limits {
        grace,
        max_connections,
    } = limits;
    let tracker = TaskTracker::new();
    let all_connections = CancellationToken::new();
    let serve_one = |stream: TcpStream, peer: SocketAddr| {
        let _ = stream.set_nodelay(true);
        let kill = all_connections.child_token();
        let info = ConnInfo::new(peer, kill.clone());
        let handshake = info.clone();
        let service = app
            .clone()
            .map_request(move |mut req: hyper::Request<Incoming>| {
                req.extensions_mut().insert(info.clone());
                req
            });
        tracker.spawn(async move {
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
            let io = TokioIo::new(KillableStream::new(stream, &handshake));
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
    };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) if max_connections > 0 && tracker.len() >= max_connections => {
                    refuse(stream);
                }
                Ok((stream, peer)) => serve_one(stream, peer),
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
                serve_one(stream, peer);
            }
        }
    }
    tracker.close();
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::debug!("closing connections still open after the grace period");
    }
    all_connections.cancel();
}

/// Answers a connection over the cap with 503 and closes it, within a second.
fn refuse(mut stream: TcpStream) {
    use tokio::io::AsyncWriteExt;
    crate::metrics::rejected("too_many_connections");
    tokio::spawn(async move {
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            let _ = stream.write_all(OVER_CAPACITY).await;
            let _ = stream.shutdown().await;
        })
        .await;
    });
}
