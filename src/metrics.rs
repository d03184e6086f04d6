//! Prometheus metrics: what is counted, under which names.
//!
//! Counters and histograms are recorded where things happen through the
//! `metrics` facade; gauges of current state (connections, rooms) are read at
//! scrape time by the `/metrics` route. Event names are folded into a small set
//! of classes so that a controller inventing names cannot explode cardinality.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::events;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the Prometheus recorder (once per process) and returns its handle.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let latency = &[
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ];
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), latency)
                .expect("bucket list is not empty")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (an embedding program's);
            // then ours only renders what is recorded through it.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// The class of an event name: its catalog prefix (`shipment`, `order`…), or
/// `custom` for names outside the catalog and livehub's own.
pub fn class(event: &str) -> &'static str {
    const CLASSES: &[&str] = &[
        "shipment",
        "document",
        "inspection",
        "warehouse",
        "order",
        "machine",
        "operator",
        "equipment_update",
        "session_update",
        "sample_update",
        "dashboard",
        "analytics",
        "report",
        "notification",
        "upload_progress",
        "chat",
        "user",
        "typing",
        "presence",
        "viewers",
        "join",
        "leave",
        "subscribe",
        "unsubscribe",
        "rooms",
        "ping",
        "auth",
    ];
    let prefix = event.split(':').next().unwrap_or(event);
    let known = events::lookup(event).is_some()
        || events::RESERVED_LIVEHUB.contains(&event)
        || matches!(
            prefix,
            "join"
                | "leave"
                | "subscribe"
                | "unsubscribe"
                | "rooms"
                | "ping"
                | "chat"
                | "typing"
                | "presence"
                | "auth"
        );
    if known {
        CLASSES
            .iter()
            .find(|c| **c == prefix)
            .copied()
            .unwrap_or("custom")
    } else {
        "custom"
    }
}

/// A client→server event arrived.
pub fn event_in(event: &str) {
    counter!("livehub_events_in_total", "class" => class(event)).increment(1);
}

/// A logged event reached `sockets` sockets on this node.
pub fn event_delivered(event: &str, sockets: usize) {
    counter!("livehub_events_out_total", "class" => class(event)).increment(sockets as u64);
    counter!("livehub_events_delivered_total").increment(1);
}

/// Something was refused; `reason` is an error code or a short cause.
pub fn rejected(reason: &'static str) {
    counter!("livehub_rejected_total", "reason" => reason).increment(1);
}

/// Events sent by a replay.
pub fn replayed(n: usize) {
    if n > 0 {
        counter!("livehub_events_replayed_total").increment(n as u64);
    }
}

/// A batch of `events` was appended to the log in `elapsed`.
pub fn log_append(elapsed: Duration, events: usize) {
    histogram!("livehub_log_append_seconds").record(elapsed.as_secs_f64());
    counter!("livehub_events_logged_total").increment(events as u64);
}

/// From an emit's arrival at the log writer to its hand-off for delivery.
pub fn emit_latency(elapsed: Duration) {
    histogram!("livehub_emit_to_flush_seconds").record(elapsed.as_secs_f64());
}

/// Current-state gauges, set at scrape time.
pub fn set_gauges(websocket: usize, polling: usize, plain: usize, rooms: usize, users: usize) {
    gauge!("livehub_connections", "transport" => "websocket").set(websocket as f64);
    gauge!("livehub_connections", "transport" => "polling").set(polling as f64);
    gauge!("livehub_connections", "transport" => "plain").set(plain as f64);
    gauge!("livehub_sockets", "namespace" => "/").set((websocket + polling) as f64);
    gauge!("livehub_rooms").set(rooms as f64);
    gauge!("livehub_users").set(users as f64);
}

#[cfg(test)]
mod tests {
    use super::class;

    #[test]
    fn classes_are_bounded() {
        assert_eq!(class("shipment:updated"), "shipment");
        assert_eq!(class("order:created"), "order");
        assert_eq!(class("equipment_update"), "equipment_update");
        assert_eq!(class("join:shipment"), "join");
        assert_eq!(class("chat:message"), "chat");
        assert_eq!(class("shipment:whatever"), "custom");
        assert_eq!(class("x:y"), "custom");
        assert_eq!(class("totally-random-name"), "custom");
    }
}
