//! Replay: how fast a client that was away catches up from its offset.
//!
//! A client connects, learns its position from an event's `offset`, and
//! leaves. The controller then emits N events for it through the batch route.
//! The client reconnects with that offset and the clock runs from the start
//! of the TCP connect to the N-th replayed event. Two ways in, as the
//! contract offers them: `user` (events to `user:{sub}`, reconnect with
//! `auth.offset`) and `room` (events to `shipment:{id}`, join with `since`).
//! livehub only: a server without a durable log has nothing to replay.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use serde_json::{Value, json};

use super::Common;
use crate::http::Pool;
use crate::sio::{Client, Packet};

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// `user:{sub}` events, reconnect with `auth.offset`.
    User,
    /// `shipment:{id}` events, `join:shipment` with `since`.
    Room,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Events missed while away.
    #[arg(long, default_value_t = 10_000)]
    pub events: usize,
    /// Events per `POST /api/v1/emit/batch` (the route takes up to 1000).
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
    #[arg(long, value_enum, default_value_t = Via::User)]
    pub via: Via,
    /// Give up waiting for the replay after this many seconds.
    #[arg(long, default_value_t = 60.0)]
    pub timeout: f64,
}

/// What the reconnected client has seen of the replay.
struct Progress {
    event: &'static str,
    expected: usize,
    seen: usize,
    replayed: usize,
    out_of_order: usize,
    next_seq: u64,
    done_at: Option<Instant>,
}

impl Progress {
    fn see(&mut self, args: &str) {
        let Ok((name, data)) = serde_json::from_str::<(String, Value)>(args) else {
            return;
        };
        let Some(seq) = data.get("seq").and_then(Value::as_u64) else {
            return; // the marker, presence, …
        };
        if name != self.event {
            return;
        }
        self.seen += 1;
        if data.get("replayed") == Some(&Value::Bool(true)) {
            self.replayed += 1;
        }
        if seq != self.next_seq {
            self.out_of_order += 1;
        }
        self.next_seq = seq + 1;
        if self.seen == self.expected {
            self.done_at = Some(Instant::now());
        }
    }
}

pub async fn run(common: &Common, args: Args) -> anyhow::Result<Value> {
    anyhow::ensure!((1..=1000).contains(&args.batch), "--batch must be 1-1000");
    let run_id = std::process::id();
    let sub = format!("replay-{run_id}");
    let shipment = format!("BENCH-REPLAY-{run_id}");
    let token = common.minter().token(&sub, None, 3600);
    let ep = common.endpoint();
    let pool = Pool::new(common.server, &common.api_key, 4);
    let (event, target) = match args.via {
        Via::User => ("bench:replay", json!({ "user": sub })),
        Via::Room => ("shipment:updated", json!({})),
    };
    let emit = |data: Value| {
        let mut e = json!({ "event": event, "data": data });
        for (k, v) in target.as_object().expect("object") {
            e[k] = v.clone();
        }
        e
    };

    // 1. Connected once; the position comes from an event, as a client sees it.
    let mut client = Client::connect(&ep, &json!({ "token": token }))
        .await
        .map_err(|e| anyhow::anyhow!("first connect: {e}"))?;
    if args.via == Via::Room {
        client
            .call("join:shipment", &json!({ "shipmentId": shipment }), |_| {})
            .await?;
    }
    let marker = emit(json!({ "shipmentId": shipment, "marker": true }));
    let reply = pool
        .post_json("/api/v1/emit", Bytes::from(marker.to_string()))
        .await?;
    anyhow::ensure!(reply.status.is_success(), "marker emit: {}", reply.status);
    let offset = tokio::time::timeout(Duration::from_secs(10), marker_offset(&mut client, event))
        .await
        .context("the marker event never arrived")??;
    client.close().await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // 2. Missed while away.
    let emitting = Instant::now();
    let data = |seq: usize| json!({ "shipmentId": shipment, "seq": seq });
    for chunk in (0..args.events).collect::<Vec<_>>().chunks(args.batch) {
        let events: Vec<Value> = chunk.iter().map(|&i| emit(data(i))).collect();
        let body = Bytes::from(json!({ "events": events }).to_string());
        let reply = pool.post_json("/api/v1/emit/batch", body).await?;
        let results: Value = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
        let ok = results["results"]
            .as_array()
            .map(|r| r.iter().filter(|r| r["ok"] == Value::Bool(true)).count())
            .unwrap_or(0);
        if !reply.status.is_success() || ok != chunk.len() {
            bail!(
                "batch emit: {} ({ok}/{} ok) {}",
                reply.status,
                chunk.len(),
                String::from_utf8_lossy(&reply.body)
                    .chars()
                    .take(300)
                    .collect::<String>()
            );
        }
    }
    let emit_time = emitting.elapsed();

    // 3. Back, from the offset; the clock starts before the TCP connect.
    let mut progress = Progress {
        event,
        expected: args.events,
        seen: 0,
        replayed: 0,
        out_of_order: 0,
        next_seq: 0,
        done_at: None,
    };
    let began = Instant::now();
    let auth = match args.via {
        Via::User => json!({ "token": token, "offset": offset }),
        Via::Room => json!({ "token": token }),
    };
    let mut client = Client::connect(&ep, &auth)
        .await
        .map_err(|e| anyhow::anyhow!("reconnect: {e}"))?;
    let connected = began.elapsed();
    if args.via == Via::Room {
        let since = json!({ "shipmentId": shipment, "since": offset });
        client
            .call("join:shipment", &since, |a| progress.see(a))
            .await?;
    }
    let deadline = began + Duration::from_secs_f64(args.timeout);
    while progress.done_at.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, client.next()).await {
            Ok(Ok(Some(Packet::Event { args, .. }))) => progress.see(args.as_str()),
            Ok(Ok(Some(_))) => {}
            Ok(Ok(None)) | Ok(Err(_)) => bail!("connection closed after {} events", progress.seen),
            Err(_) => break,
        }
    }
    // Anything beyond N (duplicates) would arrive right behind; give it a moment.
    let extra_wait = Instant::now() + Duration::from_millis(200);
    while let Ok(Ok(Some(p))) = tokio::time::timeout_at(extra_wait.into(), client.next()).await {
        if let Packet::Event { args, .. } = p {
            progress.see(args.as_str());
        }
    }
    client.close().await;

    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    Ok(json!({
        "via": format!("{:?}", args.via).to_lowercase(),
        "events": args.events,
        "batch": args.batch,
        "batch_emit_ms": ms(emit_time),
        "batch_emits_per_s": args.events as f64 / emit_time.as_secs_f64(),
        "received": progress.seen,
        "replayed_flag": progress.replayed,
        "out_of_order": progress.out_of_order,
        "complete": progress.done_at.is_some() && progress.seen == args.events && progress.out_of_order == 0,
        "connect_ms": ms(connected),
        "replay_ms": progress.done_at.map(|t| ms(t - began)),
        "events_per_s": progress.done_at.map(|t| args.events as f64 / (t - began).as_secs_f64()),
    }))
}

/// Waits for the marker event and returns its `offset`.
async fn marker_offset(client: &mut Client, event: &str) -> anyhow::Result<String> {
    loop {
        match client.next().await? {
            Some(Packet::Event { args, .. }) => {
                let Ok((name, data)) = serde_json::from_str::<(String, Value)>(args.as_str())
                else {
                    continue;
                };
                if name == event && data["marker"] == Value::Bool(true) {
                    return data["offset"]
                        .as_str()
                        .map(String::from)
                        .context("the event carries no offset: is the event log on?");
                }
            }
            Some(_) => {}
            None => bail!("closed while waiting for the marker"),
        }
    }
}
