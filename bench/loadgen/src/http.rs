//! The controller's side of the HTTP API: keep-alive HTTP/1.1 connections.
//!
//! A backend controller keeps a few connections open and reuses them, so the
//! benchmarks never pay a TCP handshake per emit. The pool grows on demand up
//! to `max` connections; a request that finds all of them busy waits for one,
//! and (for the rate-paced emitter) that wait counts against the latency.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

/// A pool of keep-alive connections to one server, with its API key.
pub struct Pool {
    addr: SocketAddr,
    authorization: String,
    idle: Mutex<Vec<SendRequest<Full<Bytes>>>>,
    slots: Semaphore,
}

/// A response: status and body.
pub struct Reply {
    pub status: StatusCode,
    pub body: Bytes,
}

impl Pool {
    pub fn new(addr: SocketAddr, api_key: &str, max: usize) -> Pool {
        Pool {
            addr,
            authorization: format!("Bearer {api_key}"),
            idle: Mutex::new(Vec::new()),
            slots: Semaphore::new(max.max(1)),
        }
    }

    /// `POST path` with a JSON body; any status is a reply, only transport
    /// failures are errors (and drop their connection).
    pub async fn post_json(&self, path: &str, body: Bytes) -> anyhow::Result<Reply> {
        let _slot = self
            .slots
            .acquire()
            .await
            .expect("the pool is never closed");
        let mut conn = self.connection().await?;
        let req = Request::post(path)
            .header(hyper::header::HOST, self.addr.to_string())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(hyper::header::AUTHORIZATION, &self.authorization)
            .body(Full::new(body))
            .context("request")?;
        let resp = conn.send_request(req).await.context("HTTP request")?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .context("HTTP body")?
            .to_bytes();
        self.idle.lock().expect("pool lock").push(conn);
        Ok(Reply { status, body })
    }

    /// An idle connection that can take a request now, or a new one. A kept
    /// connection the server has meanwhile closed is dropped, not an error.
    async fn connection(&self) -> anyhow::Result<SendRequest<Full<Bytes>>> {
        while let Some(mut c) = self.take_idle() {
            if c.ready().await.is_ok() {
                return Ok(c);
            }
        }
        let mut c = self.open().await?;
        c.ready().await.context("new connection not ready")?;
        Ok(c)
    }

    fn take_idle(&self) -> Option<SendRequest<Full<Bytes>>> {
        let mut idle = self.idle.lock().expect("pool lock");
        while let Some(c) = idle.pop() {
            if !c.is_closed() {
                return Some(c);
            }
        }
        None
    }

    async fn open(&self) -> anyhow::Result<SendRequest<Full<Bytes>>> {
        let tcp = TcpStream::connect(self.addr)
            .await
            .with_context(|| format!("TCP connect to {}", self.addr))?;
        tcp.set_nodelay(true).context("TCP_NODELAY")?;
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .context("HTTP/1.1 handshake")?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(send)
    }
}

/// A plain GET without the pool (health checks), with a timeout.
pub async fn get(addr: SocketAddr, path: &str, timeout: Duration) -> anyhow::Result<Reply> {
    let fut = async {
        let tcp = TcpStream::connect(addr).await?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let req = Request::get(path)
            .header(hyper::header::HOST, addr.to_string())
            .body(Full::new(Bytes::new()))?;
        let resp = send.send_request(req).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        anyhow::Ok(Reply { status, body })
    };
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => bail!("GET {path} timed out"),
    }
}
