//! The event catalog and the envelope.
//!
//! The catalog is data: one [`EventSpec`] row per event the seeds' systems name,
//! with its required fields and default rooms. [`prepare`] is the only
//! validation every emit goes through — HTTP, batch, or the Rust API — and turns
//! a request into a [`Prepared`] event with its final rooms. [`envelope`] builds
//! what clients receive: the data plus `type`, `timestamp` and `offset`.

use serde_json::{Map, Value};

use crate::error::Rejection;
use crate::rooms::{self, EVERYONE, EntityKind};

/// A field an event must carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// An id: a non-empty room-safe string or an integer.
    Id(&'static str),
    /// A non-empty string.
    Text(&'static str),
    /// One of a fixed set of strings.
    OneOf(&'static str, &'static [&'static str]),
    /// A number from 0 to 100.
    Percent(&'static str),
}

/// Where an event goes when the emitter names no target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultRoom {
    /// `{kind}:{data[field]}`, e.g. `shipment:{shipmentId}`.
    Entity(EntityKind, &'static str),
    /// `branch:{data.branchId}` when the data has one.
    BranchIfGiven,
    /// Every connected socket.
    Everyone,
}

/// One catalog row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventSpec {
    /// Event names sharing this row.
    pub names: &'static [&'static str],
    /// Fields the data must carry.
    pub required: &'static [Field],
    /// Rooms used when the emitter names none. Empty: an explicit target is required.
    pub defaults: &'static [DefaultRoom],
}

use DefaultRoom::*;
use Field::*;

/// Severity levels of a `notification`.
pub const SEVERITIES: &[&str] = &["info", "success", "warning", "error"];

/// How loud a `notification` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// `info`
    Info,
    /// `success`
    Success,
    /// `warning`
    Warning,
    /// `error`
    Error,
}

impl Severity {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        SEVERITIES[self as usize]
    }
}

/// The catalog: the events the seeds' systems emit, as in the contract.
pub const CATALOG: &[EventSpec] = &[
    EventSpec {
        names: &[
            "shipment:updated",
            "shipment:rejected",
            "document:uploaded",
            "inspection:status_changed",
        ],
        required: &[Id("shipmentId")],
        defaults: &[Entity(EntityKind::Shipment, "shipmentId")],
    },
    EventSpec {
        names: &["warehouse:capacity_updated"],
        required: &[Id("warehouseId")],
        defaults: &[Entity(EntityKind::Warehouse, "warehouseId"), BranchIfGiven],
    },
    EventSpec {
        names: &[
            "order:created",
            "order:status_changed",
            "order:priority_changed",
            "order:assigned",
            "order:note_added",
            "order:completed",
        ],
        required: &[Id("orderId")],
        defaults: &[Entity(EntityKind::Order, "orderId"), BranchIfGiven],
    },
    EventSpec {
        names: &[
            "machine:status_changed",
            "machine:order_started",
            "machine:order_paused",
            "machine:order_resumed",
            "machine:order_completed",
            "machine:error",
        ],
        required: &[Id("machineId")],
        defaults: &[BranchIfGiven],
    },
    EventSpec {
        names: &[
            "operator:logged_in",
            "operator:logged_out",
            "operator:assigned",
        ],
        required: &[Id("operatorId")],
        defaults: &[BranchIfGiven],
    },
    EventSpec {
        names: &["equipment_update", "session_update", "sample_update"],
        required: &[],
        defaults: &[],
    },
    EventSpec {
        names: &["dashboard:refresh", "analytics:updated", "report:generated"],
        required: &[],
        defaults: &[BranchIfGiven],
    },
    EventSpec {
        names: &["notification"],
        required: &[
            Text("title"),
            Text("message"),
            OneOf("severity", SEVERITIES),
        ],
        defaults: &[],
    },
    EventSpec {
        names: &["upload_progress"],
        required: &[Id("uploadId"), Percent("progress")],
        defaults: &[],
    },
    EventSpec {
        names: &["notification:broadcast"],
        required: &[Text("message")],
        defaults: &[Everyone],
    },
];

/// Names Socket.IO clients reserve for themselves (2.x included).
pub const RESERVED_SOCKETIO: &[&str] = &[
    "connect",
    "connect_error",
    "connect_timeout",
    "connecting",
    "disconnect",
    "disconnecting",
    "error",
    "message",
    "newListener",
    "removeListener",
    "reconnect",
    "reconnect_attempt",
    "reconnect_error",
    "reconnect_failed",
    "reconnecting",
    "ping",
    "pong",
];

/// Names livehub itself emits; a controller emitting them would spoof livehub.
pub const RESERVED_LIVEHUB: &[&str] = &[
    "user:viewing",
    "user:left",
    "user:disconnected",
    "viewers:count",
    "typing",
    "presence",
    "chat:message",
    "chat:read",
    "auth:expired",
    "replay:reset",
];

/// The most rooms one emit may name.
pub const MAX_TARGETS: usize = 100;

/// The catalog row for `name`, if it has one.
pub fn lookup(name: &str) -> Option<&'static EventSpec> {
    CATALOG.iter().find(|spec| spec.names.contains(&name))
}

/// Checks an event name a controller wants to emit.
pub fn validate_name(name: &str) -> Result<(), Rejection> {
    let mut bytes = name.bytes();
    let well_formed = name.len() <= 100
        && bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'_' | b'.' | b'-'));
    if !well_formed {
        return Err(Rejection::bad_request(
            "event name must match ^[A-Za-z][A-Za-z0-9:_.-]{0,99}$",
        ));
    }
    if RESERVED_SOCKETIO.contains(&name) {
        return Err(Rejection::bad_request(format!(
            "`{name}` is reserved by Socket.IO"
        )));
    }
    if RESERVED_LIVEHUB.contains(&name) {
        return Err(Rejection::bad_request(format!(
            "`{name}` is emitted by livehub itself and cannot be emitted through the API"
        )));
    }
    Ok(())
}

/// Who an emit is for, as the emitter names it. Empty means "the catalog's default rooms".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Target {
    /// Room names.
    pub rooms: Vec<String>,
    /// User ids (`user:{id}`).
    pub users: Vec<String>,
    /// `branch:{id}`, or with `role`, `role:{role}:{branch}`.
    pub branch: Option<String>,
    /// `role:{role}`, or with `branch`, `role:{role}:{branch}`.
    pub role: Option<String>,
    /// Every connected socket.
    pub broadcast: bool,
    /// Rooms whose sockets must not receive it (e.g. the acting user's).
    pub except: Vec<String>,
}

impl Target {
    /// Whether the emitter named any target at all.
    pub fn is_explicit(&self) -> bool {
        !self.rooms.is_empty()
            || !self.users.is_empty()
            || self.branch.is_some()
            || self.role.is_some()
            || self.broadcast
    }

    /// To these rooms.
    pub fn rooms<I: IntoIterator<Item = S>, S: Into<String>>(rooms: I) -> Target {
        Target {
            rooms: rooms.into_iter().map(Into::into).collect(),
            ..Default::default()
        }
    }

    /// To one user's sockets.
    pub fn user(user_id: impl Into<String>) -> Target {
        Target {
            users: vec![user_id.into()],
            ..Default::default()
        }
    }
}

/// An emit as a controller asks for it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Emit {
    /// Event name.
    pub event: String,
    /// Event data (a JSON object).
    pub data: Map<String, Value>,
    /// Who it is for.
    pub target: Target,
    /// A retry with the same key returns the first result and emits nothing.
    pub idempotency_key: Option<String>,
}

/// An emit that passed validation: final rooms, ready for the log.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    /// Event name.
    pub event: String,
    /// Event data; [`envelope`] adds `type`, `timestamp` and `offset`.
    pub data: Map<String, Value>,
    /// Rooms it is delivered to (deduplicated; [`EVERYONE`] for everyone).
    pub rooms: Vec<String>,
    /// Rooms excluded from delivery.
    pub except: Vec<String>,
    /// Idempotency key.
    pub idempotency_key: Option<String>,
}

/// The longest idempotency key accepted.
pub const MAX_IDEMPOTENCY_KEY: usize = 200;

fn check_size(data: &Map<String, Value>, max_data_bytes: usize) -> Result<(), Rejection> {
    let size = serde_json::to_vec(data).map_or(usize::MAX, |v| v.len());
    if size > max_data_bytes {
        return Err(Rejection::too_large(format!(
            "`data` is larger than {max_data_bytes} bytes"
        )));
    }
    Ok(())
}

/// Validates an emit — its size, its name, the catalog's fields, its rooms —
/// and resolves its rooms. Every emit passes here, whichever door it came in
/// by (HTTP, a socket, Rust code): `data` of more than `max_data_bytes` as
/// JSON is too large.
pub fn prepare(emit: Emit, max_data_bytes: usize) -> Result<Prepared, Rejection> {
    check_size(&emit.data, max_data_bytes)?;
    validate_name(&emit.event)?;
    let spec = lookup(&emit.event);
    if let Some(spec) = spec {
        for field in spec.required {
            check_field(&emit.event, &emit.data, *field)?;
        }
    }
    // No control characters: PostgreSQL refuses a NUL in text, and the key
    // is committed with the other emits of its group, which would fail with it.
    if let Some(key) = &emit.idempotency_key
        && (key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY || key.chars().any(char::is_control))
    {
        return Err(Rejection::bad_request(format!(
            "idempotency key must be 1-{MAX_IDEMPOTENCY_KEY} characters, none of them control characters"
        )));
    }
    let rooms = if emit.target.is_explicit() {
        explicit_rooms(&emit.target)?
    } else {
        default_rooms(&emit.event, spec, &emit.data)?
    };
    let except = emit
        .target
        .except
        .iter()
        .map(|r| rooms::parse(r).map(|_| r.clone()))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Prepared {
        event: emit.event,
        data: emit.data,
        rooms,
        except,
        idempotency_key: emit.idempotency_key,
    })
}

/// An event livehub emits itself (chat, read receipts): no catalog, no reservation.
pub fn system(event: &str, data: Map<String, Value>, rooms: Vec<String>) -> Prepared {
    Prepared {
        event: event.into(),
        data,
        rooms,
        except: Vec::new(),
        idempotency_key: None,
    }
}

fn check_field(event: &str, data: &Map<String, Value>, field: Field) -> Result<(), Rejection> {
    let (name, ok, expected) = match field {
        Id(name) => (
            name,
            id_value(data.get(name)).is_some(),
            "a non-empty id (string or integer)",
        ),
        Text(name) => (
            name,
            data.get(name)
                .and_then(Value::as_str)
                .is_some_and(|s| !s.trim().is_empty()),
            "a non-empty string",
        ),
        OneOf(name, allowed) => (
            name,
            data.get(name)
                .and_then(Value::as_str)
                .is_some_and(|s| allowed.contains(&s)),
            "one of info, success, warning, error",
        ),
        Percent(name) => (
            name,
            data.get(name)
                .and_then(Value::as_f64)
                .is_some_and(|p| (0.0..=100.0).contains(&p)),
            "a number from 0 to 100",
        ),
    };
    if ok {
        Ok(())
    } else if data.contains_key(name) {
        Err(Rejection::bad_request(format!(
            "`{event}` needs `{name}` to be {expected}"
        )))
    } else {
        Err(Rejection::bad_request(format!(
            "`{event}` requires the field `{name}`"
        )))
    }
}

/// An id field as text: a non-empty string or a whole number.
pub fn id_value(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => whole_number(n).map(|n| n.to_string()),
        _ => None,
    }
}

/// A JSON number that is a whole number: `42`, and `42.0` too (JSON does not
/// tell them apart, and JavaScript writes both as `42`). Fractions, and floats
/// too large to be exact, are not.
pub(crate) fn whole_number(n: &serde_json::Number) -> Option<i128> {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    if let Some(i) = n.as_i64() {
        return Some(i.into());
    }
    if let Some(u) = n.as_u64() {
        return Some(u.into());
    }
    n.as_f64()
        .filter(|f| f.fract() == 0.0 && f.abs() <= EXACT)
        .map(|f| f as i128)
}

fn room_from_parts(name: String) -> Result<String, Rejection> {
    rooms::parse(&name)?;
    Ok(name)
}

fn explicit_rooms(target: &Target) -> Result<Vec<String>, Rejection> {
    if target.broadcast {
        return Ok(vec![EVERYONE.to_string()]);
    }
    let mut out = Vec::new();
    for r in &target.rooms {
        rooms::parse(r)?;
        out.push(r.clone());
    }
    for u in &target.users {
        out.push(room_from_parts(rooms::user_room(u))?);
    }
    match (&target.role, &target.branch) {
        (Some(role), Some(branch)) => out.push(room_from_parts(format!("role:{role}:{branch}"))?),
        (Some(role), None) => out.push(room_from_parts(format!("role:{role}"))?),
        (None, Some(branch)) => out.push(room_from_parts(rooms::branch_room(branch))?),
        (None, None) => {}
    }
    finish(out)
}

fn default_rooms(
    event: &str,
    spec: Option<&EventSpec>,
    data: &Map<String, Value>,
) -> Result<Vec<String>, Rejection> {
    let Some(spec) = spec else {
        return Err(Rejection::bad_request(format!(
            "`{event}` is not in the catalog, so it needs an explicit target (rooms, user, users, branch, role or broadcast)"
        )));
    };
    let mut out = Vec::new();
    for default in spec.defaults {
        match *default {
            Entity(kind, field) => {
                let id = id_value(data.get(field)).unwrap_or_default();
                let room = rooms::entity_room(kind, &id);
                rooms::parse(&room).map_err(|_| {
                    Rejection::bad_request(format!(
                        "`{field}` {id:?} cannot name a room: ids may only contain A-Z a-z 0-9 _ . @ -"
                    ))
                })?;
                out.push(room);
            }
            BranchIfGiven => {
                if let Some(branch) = id_value(data.get("branchId")) {
                    out.push(room_from_parts(rooms::branch_room(&branch))?);
                }
            }
            Everyone => out.push(EVERYONE.to_string()),
        }
    }
    if out.is_empty() {
        return Err(Rejection::bad_request(if spec.defaults.is_empty() {
            format!(
                "`{event}` needs an explicit target (rooms, user, users, branch, role or broadcast)"
            )
        } else {
            format!(
                "`{event}` goes to `branch:{{branchId}}` by default: give `branchId` in data or an explicit target"
            )
        }));
    }
    finish(out)
}

fn finish(mut rooms: Vec<String>) -> Result<Vec<String>, Rejection> {
    let mut seen = std::collections::HashSet::new();
    rooms.retain(|r| seen.insert(r.clone()));
    if rooms.is_empty() {
        return Err(Rejection::bad_request("the target names no room"));
    }
    if rooms.len() > MAX_TARGETS {
        return Err(Rejection::bad_request(format!(
            "an emit may target at most {MAX_TARGETS} rooms"
        )));
    }
    Ok(rooms)
}

/// The payload clients receive, before the log numbers it: `data` plus `type`
/// and `timestamp` (ISO 8601, unless `data` has one), as one JSON object.
/// [`with_offset`] adds the `offset` once the event is committed.
///
/// Written as `{…data, "type", "timestamp"?, "offset"}`, in that order: the
/// plain WebSocket front reads the order back to give its clients `data`
/// exactly as emitted (a `timestamp` after `type` is livehub's own).
pub fn envelope(event: &str, data: &Map<String, Value>, now: &str) -> String {
    let own_timestamp = matches!(
        data.get("timestamp"),
        Some(Value::String(_) | Value::Number(_))
    );
    let mut out = String::with_capacity(64 + event.len() + OFFSET_ROOM);
    out.push('{');
    for (k, v) in data {
        let livehubs = k == "type" || k == "offset" || (k == "timestamp" && !own_timestamp);
        if !livehubs {
            push_member(&mut out, k, v);
        }
    }
    push_member(&mut out, "type", &Value::String(event.into()));
    if !own_timestamp {
        push_member(&mut out, "timestamp", &Value::String(now.into()));
    }
    out.push('}');
    out
}

/// Room an envelope keeps for its offset, so that adding it does not reallocate.
const OFFSET_ROOM: usize = 48;

fn push_member(out: &mut String, key: &str, value: &Value) {
    if out.len() > 1 {
        out.push(',');
    }
    out.push_str(&Value::String(key.into()).to_string());
    out.push(':');
    out.push_str(&value.to_string());
}

/// Adds the event's `offset` to its envelope, as the last member.
///
/// The log stores envelopes without it: an offset is its event's `seq` in the
/// log's epoch, known only once the commit has numbered it, so the hub adds it
/// after the commit and to every envelope it reads back. Envelopes stored by
/// earlier versions end with their offset already and come back unchanged (the
/// last member of an envelope is always livehub's own, never the emitter's).
pub fn with_offset(mut payload: String, offset: &str) -> String {
    debug_assert!(!offset.contains(['"', '\\']), "offsets are plain ASCII");
    let stamped = payload
        .strip_suffix("\"}")
        .and_then(|p| p.strip_suffix(offset))
        .is_some_and(|p| p.ends_with("\"offset\":\""));
    if !stamped {
        push_last_member(&mut payload, "\"offset\":\"");
        payload.push_str(offset);
        payload.push_str("\"}");
    }
    payload
}

/// Marks an envelope as replayed: `{…, "replayed": true}`. A stored payload
/// that is not an object (a damaged row) is returned as it is, for the reader
/// to refuse.
pub fn mark_replayed(mut payload: String) -> String {
    if !payload.trim_end().ends_with('}') {
        return payload;
    }
    push_last_member(&mut payload, "\"replayed\":true");
    payload.push('}');
    payload
}

/// Opens a last member in a JSON object: drops the closing brace and adds a
/// comma if needed, then `start`; the caller finishes the member and the object.
///
/// Envelopes are objects that livehub serialised itself, so appending before the
/// closing brace is exact and saves a parse per event.
fn push_last_member(object: &mut String, start: &str) {
    object.truncate(object.trim_end().len());
    debug_assert!(object.ends_with('}'));
    object.pop();
    if !object.trim_end().ends_with('{') {
        object.push(',');
    }
    object.push_str(start);
}

/// Now, as the ISO 8601 UTC timestamp events carry.
pub fn now_iso8601() -> String {
    iso8601(chrono::Utc::now())
}

/// `at` as the ISO 8601 UTC timestamp events carry: milliseconds, `Z`.
pub fn iso8601(at: chrono::DateTime<chrono::Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn data(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn emit(event: &str, d: Value) -> Emit {
        Emit {
            event: event.into(),
            data: data(d),
            ..Default::default()
        }
    }

    #[test]
    fn data_over_the_limit_is_too_large() {
        let d = json!({"blob": "a".repeat(1000)});
        let size = d.to_string().len();
        let mut e = emit("custom", d);
        e.target = Target::user("u1");
        assert!(prepare(e.clone(), size).is_ok(), "exactly the limit");
        let err = prepare(e, size - 1).unwrap_err();
        assert_eq!(err.code.as_str(), "too_large");
    }

    #[test]
    fn an_idempotency_key_is_1_to_200_characters_without_control_characters() {
        let keyed = |key: &str| Emit {
            idempotency_key: Some(key.into()),
            target: Target::user("u1"),
            ..emit("custom", json!({}))
        };
        for good in ["k", "order-17/step 2", &"é".repeat(100)] {
            assert!(prepare(keyed(good), 1 << 10).is_ok(), "{good:?}");
        }
        for bad in ["", "a\0b", "line\nbreak", "\u{7f}", &"k".repeat(201)] {
            let err = prepare(keyed(bad), 1 << 10).unwrap_err();
            assert_eq!(err.code.as_str(), "bad_request", "{bad:?}");
        }
    }

    fn rooms_of(e: Emit) -> Result<Vec<String>, String> {
        prepare(e, 1 << 20)
            .map(|p| p.rooms)
            .map_err(|r| r.message.to_string())
    }

    #[test]
    fn every_catalog_name_is_valid_and_listed_once() {
        let mut seen = std::collections::HashSet::new();
        for spec in CATALOG {
            for name in spec.names {
                assert!(validate_name(name).is_ok(), "{name}");
                assert!(seen.insert(*name), "{name} listed twice");
            }
        }
        assert_eq!(seen.len(), 29);
    }

    #[test]
    fn default_rooms_follow_the_contract_table() {
        let cases = [
            (
                "shipment:updated",
                json!({"shipmentId": "S1"}),
                vec!["shipment:S1"],
            ),
            (
                "document:uploaded",
                json!({"shipmentId": 7}),
                vec!["shipment:7"],
            ),
            (
                "warehouse:capacity_updated",
                json!({"warehouseId": "w1"}),
                vec!["warehouse:w1"],
            ),
            (
                "warehouse:capacity_updated",
                json!({"warehouseId": "w1", "branchId": "b1"}),
                vec!["warehouse:w1", "branch:b1"],
            ),
            ("order:created", json!({"orderId": 9}), vec!["order:9"]),
            (
                "order:status_changed",
                json!({"orderId": "o1", "branchId": 2}),
                vec!["order:o1", "branch:2"],
            ),
            (
                "machine:error",
                json!({"machineId": "m", "branchId": "b"}),
                vec!["branch:b"],
            ),
            (
                "operator:logged_in",
                json!({"operatorId": "op", "branchId": "b"}),
                vec!["branch:b"],
            ),
            (
                "dashboard:refresh",
                json!({"branchId": "b"}),
                vec!["branch:b"],
            ),
            (
                "notification:broadcast",
                json!({"message": "hi"}),
                vec!["*"],
            ),
        ];
        for (event, d, expected) in cases {
            assert_eq!(
                rooms_of(emit(event, d)),
                Ok(expected.iter().map(|s| s.to_string()).collect()),
                "{event}"
            );
        }
    }

    #[test]
    fn missing_or_wrong_required_fields_are_refused() {
        let cases = [
            ("shipment:updated", json!({})),
            ("shipment:updated", json!({"shipmentId": ""})),
            ("shipment:updated", json!({"shipmentId": 1.5})),
            ("shipment:updated", json!({"shipmentId": null})),
            ("shipment:updated", json!({"shipmentId": ["x"]})),
            ("order:assigned", json!({"order_id": 1})),
            ("machine:status_changed", json!({"branchId": "b"})),
            ("operator:assigned", json!({})),
            ("notification", json!({"title": "t", "message": "m"})),
            (
                "notification",
                json!({"title": "t", "message": "m", "severity": "fatal"}),
            ),
            (
                "notification",
                json!({"title": " ", "message": "m", "severity": "info"}),
            ),
            ("upload_progress", json!({"uploadId": "u", "progress": 101})),
            ("upload_progress", json!({"uploadId": "u", "progress": -1})),
            (
                "upload_progress",
                json!({"uploadId": "u", "progress": "50"}),
            ),
            ("upload_progress", json!({"progress": 50})),
            ("notification:broadcast", json!({})),
        ];
        for (event, d) in cases {
            let mut e = emit(event, d.clone());
            e.target = Target::user("u1");
            let err = prepare(e, 1 << 20).expect_err(&format!("{event} {d}"));
            assert_eq!(err.code.as_str(), "bad_request");
        }
    }

    #[test]
    fn events_without_defaults_need_a_target() {
        for (event, d) in [
            (
                "notification",
                json!({"title": "t", "message": "m", "severity": "info"}),
            ),
            ("upload_progress", json!({"uploadId": "u", "progress": 40})),
            ("equipment_update", json!({})),
            ("machine:status_changed", json!({"machineId": "m"})),
            ("dashboard:refresh", json!({})),
            ("custom:event", json!({})),
        ] {
            assert!(rooms_of(emit(event, d.clone())).is_err(), "{event}");
            let mut e = emit(event, d);
            e.target = Target::user("u1");
            assert_eq!(rooms_of(e), Ok(vec!["user:u1".to_string()]), "{event}");
        }
    }

    #[test]
    fn explicit_targets_replace_defaults() {
        let mut e = emit("shipment:updated", json!({"shipmentId": "S1"}));
        e.target = Target {
            rooms: vec!["order:1".into(), "order:1".into()],
            users: vec!["u1".into(), "u2".into()],
            branch: Some("b1".into()),
            ..Default::default()
        };
        assert_eq!(
            rooms_of(e),
            Ok(vec![
                "order:1".into(),
                "user:u1".into(),
                "user:u2".into(),
                "branch:b1".into()
            ])
        );
        let mut role = emit("report:generated", json!({}));
        role.target = Target {
            role: Some("manager".into()),
            branch: Some("b1".into()),
            ..Default::default()
        };
        assert_eq!(rooms_of(role), Ok(vec!["role:manager:b1".into()]));
        let mut everyone = emit("custom", json!({}));
        everyone.target = Target {
            broadcast: true,
            rooms: vec!["order:1".into()],
            ..Default::default()
        };
        assert_eq!(rooms_of(everyone), Ok(vec!["*".into()]));
    }

    #[test]
    fn bad_targets_are_refused() {
        for target in [
            Target::rooms(["bad room"]),
            Target::rooms(["*"]),
            Target::user("a b"),
            Target {
                branch: Some("x:y".into()),
                ..Default::default()
            },
            Target {
                rooms: vec!["order:1".into()],
                except: vec!["nope nope".into()],
                ..Default::default()
            },
            Target::rooms((0..101).map(|i| format!("order:{i}"))),
        ] {
            let mut e = emit("custom", json!({}));
            e.target = target.clone();
            assert!(prepare(e, 1 << 20).is_err(), "{target:?}");
        }
        let unsafe_id = emit("shipment:updated", json!({"shipmentId": "PO 1/2"}));
        assert!(rooms_of(unsafe_id).unwrap_err().contains("shipmentId"));
    }

    #[test]
    fn event_names_are_checked() {
        for bad in [
            "",
            "1abc",
            "a b",
            "a/b",
            &"a".repeat(101),
            "connect",
            "disconnect",
            "error",
            "chat:message",
            "user:viewing",
        ] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
        for good in ["a", "order:status_changed", "x.y-z_1", &"a".repeat(100)] {
            assert!(validate_name(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn envelope_adds_type_timestamp_then_offset() {
        let d = data(json!({"shipmentId": "S1", "type": "spoofed", "offset": "x"}));
        let env = envelope("shipment:updated", &d, "2026-01-01T00:00:00.000Z");
        let p: Value = serde_json::from_str(&env).unwrap();
        assert_eq!(p["type"], "shipment:updated");
        assert!(p.get("offset").is_none(), "no offset before the commit");
        assert_eq!(p["timestamp"], "2026-01-01T00:00:00.000Z");
        assert_eq!(p["shipmentId"], "S1");
        let p: Value = serde_json::from_str(&with_offset(env, "o-1")).unwrap();
        assert_eq!(p["offset"], "o-1");
        assert_eq!(p["type"], "shipment:updated");
        let own = data(json!({"timestamp": "2020-01-01T00:00:00Z"}));
        let p: Value = serde_json::from_str(&envelope("e", &own, "now")).unwrap();
        assert_eq!(p["timestamp"], "2020-01-01T00:00:00Z");
    }

    #[test]
    fn an_envelope_stored_with_its_offset_keeps_it_once() {
        let legacy = r#"{"a":1,"type":"e","offset":"ab-0000000000000007"}"#;
        assert_eq!(with_offset(legacy.into(), "ab-0000000000000007"), legacy);
        // The emitter's own `offset` never survives `envelope`, and a nested
        // one is not the envelope's last member: both get the real offset.
        let nested = envelope("e", &data(json!({"m": {"offset": "ab-1"}})), "t");
        let p: Value = serde_json::from_str(&with_offset(nested, "ab-1")).unwrap();
        assert_eq!(p["offset"], "ab-1");
        assert_eq!(p["m"]["offset"], "ab-1");
        let p: Value = serde_json::from_str(&with_offset("{}".into(), "ab-2")).unwrap();
        assert_eq!(p, json!({"offset": "ab-2"}));
    }

    #[test]
    fn replayed_marker_keeps_json_valid() {
        let p: Value = serde_json::from_str(&mark_replayed(r#"{"a":1}"#.into())).unwrap();
        assert_eq!(p, json!({"a": 1, "replayed": true}));
        let p: Value = serde_json::from_str(&mark_replayed("{}".into())).unwrap();
        assert_eq!(p, json!({"replayed": true}));
    }
}
