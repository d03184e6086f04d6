//! Prometheus metrics: what is counted, under which names.
//!
//! Counters and histograms are recorded where things happen through the
//! `metrics` facade; gauges of current state (connections, rooms) are read at
//! scrape time by the `/metrics` route. Event names are folded into a small set
//! of classes so that a controller inventing names cannot explode cardinality.

use std::sync::{OnceLock, Weak};
use std::time::Duration;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::error::ErrorCode;
use crate::events;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// How often histogram samples are folded into their buckets between scrapes.
const DRAIN_EVERY: Duration = Duration::from_secs(5);

/// What kind of series a [`Series`] is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One series `/metrics` can report: its help text and every label value it
/// can carry. All of them exist from start-up, at zero, so that `rate()` and
/// "absent" alerts behave after a restart; `docs/operations.md` lists them.
pub(crate) struct Series {
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
    /// At most one label, with its closed set of values.
    pub label: Option<(&'static str, &'static [&'static str])>,
}

/// Why something was refused (`livehub_rejected_total{reason}`): the error
/// codes, and refusals that are not answers to a request.
const REJECT_REASONS: &[&str] = &[
    ErrorCode::BadRequest.as_str(),
    ErrorCode::Unauthorized.as_str(),
    ErrorCode::Forbidden.as_str(),
    ErrorCode::NotFound.as_str(),
    ErrorCode::RateLimited.as_str(),
    ErrorCode::TooLarge.as_str(),
    ErrorCode::Internal.as_str(),
    "too_many_connections",
    "too_many_connections_per_address",
];

const TRANSPORTS: &[&str] = &["websocket", "polling", "plain"];
const FRONTS: &[&str] = &["socketio", "plain"];

/// Every series, in the order `docs/operations.md` lists them.
pub(crate) const SERIES: &[Series] = &[
    Series {
        name: "livehub_connections",
        kind: Kind::Gauge,
        help: "Open client connections on this node, by transport (Socket.IO websocket or polling, plain WebSocket), as counted at most 2 s ago.",
        label: Some(("transport", TRANSPORTS)),
    },
    Series {
        name: "livehub_sockets",
        kind: Kind::Gauge,
        help: "Connected Socket.IO sockets on this node, by namespace.",
        label: Some(("namespace", &["/"])),
    },
    Series {
        name: "livehub_rooms",
        kind: Kind::Gauge,
        help: "Rooms with at least one member on this node.",
        label: None,
    },
    Series {
        name: "livehub_users",
        kind: Kind::Gauge,
        help: "Distinct users online (cluster-wide in a cluster).",
        label: None,
    },
    Series {
        name: "livehub_transport_sessions",
        kind: Kind::Gauge,
        help: "Engine.IO sessions whose connections livehub tracks (upgraded websockets, polling requests in flight); sampled every 5 s.",
        label: None,
    },
    Series {
        name: "livehub_events_in_total",
        kind: Kind::Counter,
        help: "Client-to-server events received, by event class.",
        label: Some(("class", CLASSES)),
    },
    Series {
        name: "livehub_events_out_total",
        kind: Kind::Counter,
        help: "Logged events sent to connections on this node (one per connection reached), by event class.",
        label: Some(("class", CLASSES)),
    },
    Series {
        name: "livehub_events_delivered_total",
        kind: Kind::Counter,
        help: "Logged events this node's deliverer handed to its connections.",
        label: None,
    },
    Series {
        name: "livehub_events_logged_total",
        kind: Kind::Counter,
        help: "Events appended to the event log by this node.",
        label: None,
    },
    Series {
        name: "livehub_events_replayed_total",
        kind: Kind::Counter,
        help: "Events sent again by replays (reconnects with an offset, offline queues, joins with since).",
        label: None,
    },
    Series {
        name: "livehub_rejected_total",
        kind: Kind::Counter,
        help: "Requests, events and connections refused, by reason (the error code).",
        label: Some(("reason", REJECT_REASONS)),
    },
    Series {
        name: "livehub_lagging_disconnects_total",
        kind: Kind::Counter,
        help: "Connections closed because they did not read fast enough (they reconnect and replay), by front.",
        label: Some(("front", FRONTS)),
    },
    Series {
        name: "livehub_forwarded_requests_total",
        kind: Kind::Counter,
        help: "Engine.IO requests forwarded to the node that owns their session (cluster without sticky sessions), by transport.",
        label: Some(("transport", &["polling", "websocket"])),
    },
    Series {
        name: "livehub_signals_dropped_total",
        kind: Kind::Counter,
        help: "Presence, typing and other ephemeral signals dropped because the queue to the cluster (Redis) was full.",
        label: None,
    },
    Series {
        name: "livehub_log_append_seconds",
        kind: Kind::Histogram,
        help: "Time to append one batch of events to the event log (one transaction).",
        label: None,
    },
    Series {
        name: "livehub_emit_to_flush_seconds",
        kind: Kind::Histogram,
        help: "Time from an emit's arrival at the log writer to its hand-off for delivery.",
        label: None,
    },
    Series {
        name: "livehub_delivery_wait_seconds",
        kind: Kind::Histogram,
        help: "Time a committed event waits for the deliverer: from its hand-off to the start of its fan-out.",
        label: None,
    },
    Series {
        name: "livehub_fanout_seconds",
        kind: Kind::Histogram,
        help: "Time to queue one event to every socket of this node it is for (events queued in one pass share its time equally).",
        label: None,
    },
];

/// Installs the Prometheus recorder (once per process), registers every
/// series at zero, and returns its handle.
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
            register_all();
            handle
        })
        .clone()
}

fn register_all() {
    for s in SERIES {
        match s.kind {
            Kind::Counter => describe_counter!(s.name, s.help),
            Kind::Gauge => describe_gauge!(s.name, s.help),
            Kind::Histogram => describe_histogram!(s.name, s.help),
        }
        let values: &[&str] = s.label.map_or(&[""], |(_, values)| values);
        for value in values {
            let labels: Vec<(&'static str, String)> = s
                .label
                .map(|(key, _)| vec![(key, value.to_string())])
                .unwrap_or_default();
            match s.kind {
                Kind::Counter => counter!(s.name, &labels).absolute(0),
                Kind::Gauge => gauge!(s.name, &labels).set(0.0),
                Kind::Histogram => {
                    let _ = histogram!(s.name, &labels);
                }
            }
        }
    }
}

/// Event classes (`class` label): catalog prefixes, livehub's own events, `custom`.
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
    "custom",
];

/// The class of an event name: its catalog prefix (`shipment`, `order`…), or
/// `custom` for names outside the catalog and livehub's own.
pub fn class(event: &str) -> &'static str {
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

/// Something was refused; `reason` is one of [`REJECT_REASONS`].
pub fn rejected(reason: &'static str) {
    debug_assert!(REJECT_REASONS.contains(&reason), "unlisted reason {reason}");
    counter!("livehub_rejected_total", "reason" => reason).increment(1);
}

/// An Engine.IO request went to its session's owner; `transport` is
/// `polling` or `websocket` (a tunnelled upgrade).
pub fn forwarded(transport: &'static str) {
    counter!("livehub_forwarded_requests_total", "transport" => transport).increment(1);
}

/// A connection was closed for not reading fast enough; `front` is
/// `socketio` or `plain`.
pub fn lagging_disconnect(front: &'static str) {
    counter!("livehub_lagging_disconnects_total", "front" => front).increment(1);
}

/// Engine.IO sessions tracked by the transport control, after a sweep.
pub fn transport_sessions(n: usize) {
    gauge!("livehub_transport_sessions").set(n as f64);
}

/// A cluster signal was dropped: the relay queue to Redis was full.
pub fn signal_dropped() {
    counter!("livehub_signals_dropped_total").increment(1);
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

/// Folds recorded histogram samples into their buckets every [`DRAIN_EVERY`]
/// for as long as something holds `owner` (the app). The recorder keeps each
/// sample until a scrape or an upkeep folds it in, and livehub builds the
/// recorder itself (the exporter runs its own upkeep task only beside its HTTP
/// listener, which livehub does not use): a server nobody scraped kept about
/// 20 bytes per emit for good.
pub(crate) fn start_draining<T: Send + Sync + 'static>(owner: Weak<T>) {
    let handle = install();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(DRAIN_EVERY).await;
            if owner.strong_count() == 0 {
                return;
            }
            handle.run_upkeep();
        }
    });
}

/// From an emit's arrival at the log writer to its hand-off for delivery.
pub fn emit_latency(elapsed: Duration) {
    histogram!("livehub_emit_to_flush_seconds").record(elapsed.as_secs_f64());
}

/// A committed event waited `elapsed` between its hand-off and its fan-out.
pub fn delivery_wait(elapsed: Duration) {
    histogram!("livehub_delivery_wait_seconds").record(elapsed.as_secs_f64());
}

/// One event's fan-out to this node's sockets took `elapsed` (its share of a
/// run's pass over the sockets).
pub fn fanout(elapsed: Duration) {
    histogram!("livehub_fanout_seconds").record(elapsed.as_secs_f64());
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
    use super::{Kind, SERIES, class, install};

    #[test]
    fn every_series_exists_at_start_with_help() {
        let text = install().render();
        for s in SERIES {
            assert!(
                text.contains(&format!("# HELP {} ", s.name)),
                "{} has no HELP",
                s.name
            );
            let sample = match s.kind {
                Kind::Histogram => format!("{}_count", s.name),
                _ => s.name.to_string(),
            };
            let values: &[&str] = s.label.map_or(&[""], |(_, v)| v);
            for value in values {
                let line = match s.label {
                    Some((key, _)) => format!("{sample}{{{key}=\"{value}\"}} "),
                    None => format!("{sample} "),
                };
                assert!(text.contains(&line), "{line} missing from:\n{text}");
            }
        }
    }

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

    /// What [`super::start_draining`] relies on: samples folded into their
    /// buckets between scrapes (so that they do not pile up in memory) are
    /// still counted by the next scrape.
    #[test]
    fn samples_drained_between_scrapes_still_count() {
        let handle = install();
        let count = |text: &str| -> u64 {
            let line = text
                .lines()
                .find(|l| l.starts_with("livehub_log_append_seconds_count"))
                .expect("the histogram is rendered");
            line.rsplit(' ').next().unwrap().parse().unwrap()
        };
        let before = count(&handle.render());
        for _ in 0..5 {
            super::log_append(std::time::Duration::from_millis(2), 1);
        }
        handle.run_upkeep();
        super::log_append(std::time::Duration::from_millis(2), 1);
        // Other tests of this process may record too: at least ours.
        assert!(count(&handle.render()) >= before + 6);
    }

    /// The label values are listed by hand (every series exists from start-up):
    /// an event added to the catalog must get its own class, not `custom`.
    #[test]
    fn every_catalog_event_has_its_class() {
        for name in crate::events::CATALOG.iter().flat_map(|spec| spec.names) {
            let prefix = name.split(':').next().unwrap();
            assert_eq!(class(name), prefix, "{name}");
        }
    }
}
