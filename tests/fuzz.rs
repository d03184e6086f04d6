//! Property-based fuzzing of everything that parses outside input: the HTTP emit
//! body, room names, event names, offsets and `rooms`-claim patterns. Each
//! property runs a fixed number of generated cases, so the run is bounded.
//!
//! The property is always the same: no input makes livehub panic, and whatever
//! it accepts satisfies the contract's grammar.

use livehub::events::{self, Emit};
use livehub::http::emit::parse_emit;
use livehub::hub::OffsetCodec;
use livehub::rooms;
use proptest::prelude::*;
use serde_json::{Map, Value};

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Strings biased towards the characters that matter to the parsers.
fn tricky_string() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z]{1,8}(:[A-Za-z0-9_.@-]{0,12}){0,3}",
        "(user|branch|role|order|shipment|quote|support|equipment|warehouse|dm|channel)(:[a-zA-Z0-9]{0,6}){0,3}",
        ".{0,40}",
        "[\\x00-\\x7f]{0,300}",
        Just("*".to_string()),
        Just(String::new()),
    ]
}

/// Arbitrary JSON, a few levels deep, leaning on the emit body's field names.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        tricky_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        let key = prop_oneof![
            Just("event".to_string()),
            Just("data".to_string()),
            Just("rooms".to_string()),
            Just("user".to_string()),
            Just("users".to_string()),
            Just("branch".to_string()),
            Just("role".to_string()),
            Just("broadcast".to_string()),
            Just("except".to_string()),
            Just("shipmentId".to_string()),
            Just("orderId".to_string()),
            Just("branchId".to_string()),
            Just("severity".to_string()),
            Just("progress".to_string()),
            "[a-zA-Z]{1,6}",
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key, inner), 0..8)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Emit bodies that look like real ones, with fields sometimes of the wrong type.
fn emit_body() -> impl Strategy<Value = Value> {
    let event = prop_oneof![
        Just("shipment:updated"),
        Just("order:status_changed"),
        Just("notification"),
        Just("upload_progress"),
        Just("notification:broadcast"),
        Just("machine:error"),
        Just("connect"),
        Just("custom:thing"),
        Just(""),
    ]
    .prop_map(|s| Value::String(s.to_string()));
    (
        prop_oneof![event, json_value()],
        json_value(),
        json_value(),
        json_value(),
    )
        .prop_map(|(event, data, rooms, user)| {
            let mut body = Map::new();
            body.insert("event".into(), event);
            body.insert("data".into(), data);
            body.insert("rooms".into(), rooms);
            body.insert("user".into(), user);
            Value::Object(body)
        })
}

fn check_emit(body: &Value) {
    if let Ok(emit) = parse_emit(body) {
        check_prepared(emit);
    }
}

fn check_prepared(emit: Emit) {
    let event = emit.event.clone();
    if let Ok(prepared) = events::prepare(emit, 131_072) {
        assert!(events::validate_name(&event).is_ok());
        assert!(!prepared.rooms.is_empty() && prepared.rooms.len() <= events::MAX_TARGETS);
        for room in &prepared.rooms {
            assert!(
                room == rooms::EVERYONE || rooms::parse(room).is_ok(),
                "accepted room {room:?}"
            );
        }
        for room in &prepared.except {
            assert!(rooms::parse(room).is_ok());
        }
        // The envelope of anything accepted is a JSON object carrying its type.
        let envelope: Value =
            serde_json::from_str(&events::envelope(&event, &prepared.data, "t")).unwrap();
        assert_eq!(envelope["type"], Value::String(event));
    }
}

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn emit_bodies_never_panic(body in emit_body()) {
        check_emit(&body);
    }

    #[test]
    fn arbitrary_json_never_panics(body in json_value()) {
        check_emit(&body);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        if let Ok(body) = serde_json::from_slice::<Value>(&bytes) {
            check_emit(&body);
        }
    }

    #[test]
    fn room_names_parse_or_refuse_cleanly(name in tricky_string()) {
        if let Ok(room) = rooms::parse(&name) {
            prop_assert!(name.len() <= rooms::MAX_ROOM_BYTES);
            prop_assert!(name.bytes().all(|b| b.is_ascii_alphanumeric() || b":_.@-".contains(&b)));
            // What was parsed names the same room again.
            let again = match room {
                rooms::Room::User(id) => format!("user:{id}"),
                rooms::Room::Branch(id) => format!("branch:{id}"),
                rooms::Room::Role { role, branch: None } => format!("role:{role}"),
                rooms::Room::Role { role, branch: Some(b) } => format!("role:{role}:{b}"),
                rooms::Room::Entity(kind, id) => rooms::entity_room(kind, id),
                rooms::Room::Dm(a, b) => { prop_assert!(a < b); format!("dm:{a}:{b}") }
                rooms::Room::Channel(c) => format!("channel:{c}"),
            };
            prop_assert_eq!(again, name);
        }
    }

    #[test]
    fn event_names_follow_the_contract_regex(name in tricky_string()) {
        if events::validate_name(&name).is_ok() {
            let mut chars = name.chars();
            prop_assert!(chars.next().is_some_and(|c| c.is_ascii_alphabetic()));
            prop_assert!(name.len() <= 100);
            prop_assert!(chars.all(|c| c.is_ascii_alphanumeric() || ":_.-".contains(c)));
        }
    }

    #[test]
    fn offsets_parse_or_refuse_cleanly(offset in ".{0,40}", last in 0i64..1_000_000, pruned in 0i64..1000) {
        let codec = OffsetCodec::new("abc123");
        if let Ok(seq) = codec.parse(&offset, last, pruned) {
            prop_assert!(seq >= pruned && seq <= last);
            prop_assert_eq!(codec.parse(&codec.format(seq), last, pruned), Ok(seq));
        }
    }

    #[test]
    fn room_patterns_never_panic(pattern in "[a-z*:0-9]{0,30}", room in tricky_string()) {
        let m = rooms::pattern_matches(&pattern, &room);
        if pattern == room {
            prop_assert!(m);
        }
        if !pattern.is_empty() && pattern.chars().all(|c| c == '*') {
            prop_assert!(m);
        }
    }
}
