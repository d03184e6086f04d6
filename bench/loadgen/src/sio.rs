//! A minimal Socket.IO v5 client over a raw websocket (Engine.IO v4).
//!
//! Only what the benchmarks need, on namespace "/": the open packet, CONNECT
//! with an `auth` object, events, acknowledgements, and answering the server's
//! heartbeat. A JS client would be the bottleneck on a small machine; this one
//! costs one task, one TCP socket and a few KiB of buffers per connection, so
//! a single process can hold tens of thousands.
//!
//! Wire format, as text frames: Engine.IO type digit, then for messages (`4`)
//! the Socket.IO type digit, an optional ack id, and a JSON array:
//! `42["event",{…}]`, `4217["event",{…}]` (wants ack 17), `4317[{…}]` (ack 17).
//!
//! With [`Endpoint::plain`] the same client speaks livehub's plain WebSocket
//! protocol on `/ws` instead (contract v1.1): `?token=` on the URL,
//! `connection_established` as the connect, action-style requests with a
//! `requestId` as calls, and `{type, data, timestamp, offset}` event frames,
//! handed out in the Socket.IO shape (`["type", data]`) so that the scenarios
//! read both alike.

use std::collections::VecDeque;
use std::net::SocketAddr;

use anyhow::{Context, anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

/// Where the Socket.IO endpoint is.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub addr: SocketAddr,
    url: String,
    plain: bool,
}

impl Endpoint {
    pub fn new(addr: SocketAddr) -> Endpoint {
        Endpoint {
            addr,
            url: format!("ws://{addr}/socket.io/?EIO=4&transport=websocket"),
            plain: false,
        }
    }

    /// livehub's plain WebSocket endpoint (`/ws`) on the same server.
    pub fn plain(addr: SocketAddr) -> Endpoint {
        Endpoint {
            addr,
            url: format!("ws://{addr}/ws"),
            plain: true,
        }
    }
}

/// The text of one Socket.IO packet's JSON part, sharing the frame's bytes.
#[derive(Debug, Clone)]
pub struct Json {
    frame: Utf8Bytes,
    start: usize,
}

impl Json {
    pub fn as_str(&self) -> &str {
        &self.frame.as_str()[self.start..]
    }
}

/// A Socket.IO packet from the server (namespace "/").
#[derive(Debug)]
pub enum Packet {
    /// CONNECT accepted (`40{"sid":…}`).
    Connect,
    /// CONNECT refused (`44{"message":…}`).
    ConnectError(Json),
    /// An event: the JSON array `["name", args…]`. (An ack the server may
    /// ask for is not answered: the benchmarked events ask for none.)
    Event { args: Json },
    /// The answer to one of our events.
    Ack { id: u64, args: Json },
    /// The server closed the Socket.IO session.
    Disconnect,
}

/// Why a connection did not come up.
#[derive(Debug)]
pub enum ConnectError {
    /// The server refused the CONNECT; the `message` it gave.
    Refused(String),
    /// Network or protocol failure.
    Failed(anyhow::Error),
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::Refused(m) => write!(f, "refused: {m}"),
            ConnectError::Failed(e) => write!(f, "{e:#}"),
        }
    }
}

impl From<anyhow::Error> for ConnectError {
    fn from(e: anyhow::Error) -> Self {
        ConnectError::Failed(e)
    }
}

/// One connected Socket.IO client.
pub struct Client {
    ws: WebSocketStream<TcpStream>,
    /// Speaking the plain WebSocket protocol instead of Socket.IO.
    plain: bool,
    /// Packets read while waiting for something else (e.g. events that
    /// arrive before an ack), handed out by [`Client::next`] first.
    pending: VecDeque<Packet>,
    next_ack: u64,
}

/// Small buffers: the benchmark holds thousands of mostly idle connections,
/// and tungstenite's default allocates 128 KiB per connection up front.
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
}

impl Client {
    /// Opens the websocket, reads the Engine.IO open packet and connects to
    /// namespace "/" with `auth` (e.g. `{"token": …}`).
    pub async fn connect(ep: &Endpoint, auth: &Value) -> Result<Client, ConnectError> {
        let tcp = TcpStream::connect(ep.addr)
            .await
            .with_context(|| format!("TCP connect to {}", ep.addr))?;
        // Small frames both ways: without this, Nagle adds up to 40 ms to acks.
        tcp.set_nodelay(true).context("TCP_NODELAY")?;
        let url = match (ep.plain, auth.get("token").and_then(Value::as_str)) {
            (true, Some(token)) => format!("{}?token={token}", ep.url),
            _ => ep.url.clone(),
        };
        let (ws, _) =
            tokio_tungstenite::client_async_with_config(url.as_str(), tcp, Some(ws_config()))
                .await
                .context("websocket handshake")?;
        let mut client = Client {
            ws,
            plain: ep.plain,
            pending: VecDeque::new(),
            next_ack: 0,
        };
        if ep.plain {
            return client.plain_established().await.map(|()| client);
        }
        match client.next_text().await? {
            Some(t) if t.as_str().starts_with('0') => {}
            Some(t) => return Err(anyhow!("expected the Engine.IO open packet, got {t:?}").into()),
            None => return Err(anyhow!("closed before the Engine.IO open packet").into()),
        }
        client.send(format!("40{auth}")).await?;
        let mut early = VecDeque::new();
        loop {
            match client.read_packet().await? {
                Some(Packet::Connect) => break,
                Some(Packet::ConnectError(j)) => {
                    let message = serde_json::from_str::<Value>(j.as_str())
                        .ok()
                        .and_then(|v| v.get("message").and_then(Value::as_str).map(String::from))
                        .unwrap_or_else(|| j.as_str().to_string());
                    return Err(ConnectError::Refused(message));
                }
                Some(Packet::Disconnect) | None => {
                    return Err(anyhow!("closed before CONNECT was answered").into());
                }
                // Not expected before CONNECT, but never drop what the server sent.
                Some(other) => early.push_back(other),
            }
        }
        client.pending = early;
        Ok(client)
    }

    /// The next packet from the server; `None` once the connection is closed.
    /// Cancel-safe: heartbeats are answered inside, packets are never lost.
    pub async fn next(&mut self) -> anyhow::Result<Option<Packet>> {
        if let Some(p) = self.pending.pop_front() {
            return Ok(Some(p));
        }
        self.read_packet().await
    }

    /// Sends an event and waits for its ack; returns the ack's JSON array.
    /// Events that arrive meanwhile go to `on_event` (a join with `since`
    /// replays before it acknowledges).
    pub async fn call(
        &mut self,
        event: &str,
        data: &Value,
        mut on_event: impl FnMut(&str),
    ) -> anyhow::Result<Value> {
        let id = self.next_ack;
        self.next_ack += 1;
        let frame = if self.plain {
            plain_request(event, data, id)?
        } else {
            format!(
                "42{id}{}",
                Value::from(vec![Value::from(event), data.clone()])
            )
        };
        self.send(frame).await?;
        loop {
            match self.next().await? {
                Some(Packet::Ack { id: got, args }) if got == id => {
                    return serde_json::from_str(args.as_str()).context("ack is not JSON");
                }
                Some(Packet::Event { args, .. }) => on_event(args.as_str()),
                Some(Packet::Disconnect) | None => {
                    bail!("closed while waiting for the {event} ack")
                }
                Some(_) => {}
            }
        }
    }

    /// Leaves politely, as `socket.disconnect()` does: Socket.IO DISCONNECT,
    /// then a websocket close. Errors are irrelevant at this point.
    pub async fn close(mut self) {
        if !self.plain {
            let _ = self.ws.send(Message::text("41")).await;
        }
        let _ = self.ws.close(None).await;
    }

    async fn send(&mut self, text: String) -> anyhow::Result<()> {
        self.ws
            .send(Message::text(text))
            .await
            .context("websocket send")
    }

    /// The next text frame, answering heartbeats; `None` when closed.
    async fn next_text(&mut self) -> anyhow::Result<Option<Utf8Bytes>> {
        while let Some(msg) = self.ws.next().await {
            match msg.context("websocket read")? {
                Message::Text(t) if self.plain => return Ok(Some(t)),
                Message::Text(t) => match t.as_bytes().first() {
                    // Engine.IO ping: the server drops us without the pong.
                    Some(b'2') => self.send("3".into()).await?,
                    Some(b'1') => return Ok(None),
                    Some(b'6') => {}
                    _ => return Ok(Some(t)),
                },
                Message::Close(_) => return Ok(None),
                // Websocket pings are answered by tungstenite itself.
                _ => {}
            }
        }
        Ok(None)
    }

    async fn read_packet(&mut self) -> anyhow::Result<Option<Packet>> {
        loop {
            let Some(text) = self.next_text().await? else {
                return Ok(None);
            };
            if self.plain {
                if let Some(p) = parse_plain(&text)? {
                    return Ok(Some(p));
                }
                continue;
            }
            if text.as_bytes().first() != Some(&b'4') {
                continue; // open/upgrade packets: nothing for us
            }
            if let Some(p) = parse(text)? {
                return Ok(Some(p));
            }
        }
    }
}

impl Client {
    /// Waits for `connection_established` (or the refusal frame).
    async fn plain_established(&mut self) -> Result<(), ConnectError> {
        loop {
            let Some(text) = self.next_text().await? else {
                return Err(anyhow!("closed before connection_established").into());
            };
            let v: Value = serde_json::from_str(text.as_str()).context("frame is not JSON")?;
            match v.get("type").and_then(Value::as_str) {
                Some("connection_established") => return Ok(()),
                Some("error") => {
                    let message = v["data"]["message"].as_str().unwrap_or("refused");
                    return Err(ConnectError::Refused(message.to_string()));
                }
                _ => {}
            }
        }
    }
}

/// The plain protocol's request for a Socket.IO event the benchmarks send.
fn plain_request(event: &str, data: &Value, id: u64) -> anyhow::Result<String> {
    let (action, data) = match event {
        "join:shipment" => ("subscribeToShipment", data.clone()),
        "subscribe" => ("subscribe", data.clone()),
        "ping" => ("ping", Value::Null),
        other => bail!("no plain request for {other}"),
    };
    Ok(serde_json::json!({ "action": action, "data": data, "requestId": id }).to_string())
}

/// A plain frame as a Socket.IO packet: an event (`["type", data]`, the data
/// with the frame's offset), or the reply to a request (`[{ ok, … }]`).
fn parse_plain(frame: &Utf8Bytes) -> anyhow::Result<Option<Packet>> {
    #[derive(serde::Deserialize)]
    struct Frame<'a> {
        #[serde(rename = "type", borrow)]
        kind: Option<&'a serde_json::value::RawValue>,
        #[serde(borrow)]
        data: Option<&'a serde_json::value::RawValue>,
        #[serde(rename = "requestId")]
        request_id: Option<u64>,
        success: Option<bool>,
    }
    let f: Frame = serde_json::from_str(frame.as_str()).context("plain frame is not JSON")?;
    if let Some(id) = f.request_id {
        let ok = f.success.unwrap_or(true) && f.kind.is_none_or(|k| k.get() != "\"error\"");
        let text = format!("[{{\"ok\":{ok},\"reply\":{}}}]", frame.as_str());
        return Ok(Some(Packet::Ack {
            id,
            args: Json {
                frame: Utf8Bytes::from(text),
                start: 0,
            },
        }));
    }
    match (f.kind, f.data) {
        (Some(kind), Some(data)) => {
            let text = format!("[{},{}]", kind.get(), data.get());
            Ok(Some(Packet::Event {
                args: Json {
                    frame: Utf8Bytes::from(text),
                    start: 0,
                },
            }))
        }
        _ => Ok(None),
    }
}

/// Parses an Engine.IO message frame (`4…`) into a Socket.IO packet for "/".
fn parse(frame: Utf8Bytes) -> anyhow::Result<Option<Packet>> {
    let s = frame.as_str();
    let bytes = s.as_bytes();
    let Some(&kind) = bytes.get(1) else {
        bail!("empty Socket.IO packet");
    };
    let mut i = 2;
    // Namespace "/other," — this client lives on "/" only.
    if bytes.get(i) == Some(&b'/') {
        let comma = s[i..].find(',').map(|c| i + c);
        let nsp_end = comma.unwrap_or(s.len());
        if &s[i..nsp_end] != "/" {
            return Ok(None);
        }
        i = comma.map_or(s.len(), |c| c + 1);
    }
    let digits = bytes[i..].iter().take_while(|b| b.is_ascii_digit()).count();
    let id = if digits > 0 {
        Some(s[i..i + digits].parse::<u64>().context("ack id")?)
    } else {
        None
    };
    let json = Json {
        frame: frame.clone(),
        start: i + digits,
    };
    Ok(Some(match kind {
        b'0' => Packet::Connect,
        b'1' => Packet::Disconnect,
        b'2' => Packet::Event { args: json },
        b'3' => Packet::Ack {
            id: id.context("ack without id")?,
            args: json,
        },
        b'4' => Packet::ConnectError(json),
        // Binary packets: the benchmarks send none and expect none.
        _ => return Ok(None),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Packet {
        parse(Utf8Bytes::from(s.to_string())).unwrap().unwrap()
    }

    #[test]
    fn parses_packets() {
        assert!(matches!(p("40{\"sid\":\"x\"}"), Packet::Connect));
        match p("42[\"a\",{\"b\":1}]") {
            Packet::Event { args } => assert_eq!(args.as_str(), "[\"a\",{\"b\":1}]"),
            other => panic!("{other:?}"),
        }
        match p("4312[{\"ok\":true}]") {
            Packet::Ack { id: 12, args } => assert_eq!(args.as_str(), "[{\"ok\":true}]"),
            other => panic!("{other:?}"),
        }
        match p("44{\"message\":\"unauthorized: invalid token\"}") {
            Packet::ConnectError(j) => assert!(j.as_str().contains("invalid token")),
            other => panic!("{other:?}"),
        }
        match p("42/,7[\"a\"]") {
            Packet::Event { args } => assert_eq!(args.as_str(), "[\"a\"]"),
            other => panic!("{other:?}"),
        }
        assert!(
            parse(Utf8Bytes::from_static("42/admin,[\"a\"]"))
                .unwrap()
                .is_none()
        );
    }
}
