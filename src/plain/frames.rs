//! The plain WebSocket wire format: request frames in, reply and event frames out.
//!
//! Pure functions, no I/O. A request frame decodes into a [`Request`]: the
//! [`Command`] the session layer applies, plus how to shape its reply
//! ([`Answer`]). Events leave as `{type, data, timestamp, offset}`.

use std::fmt::Write;

use serde::Deserialize;
use serde::de::{MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use crate::commands::{Command, Fields, RoomName};
use crate::error::{ErrorCode, Rejection};
use crate::events::now_iso8601;
use crate::rooms::{EntityKind, canonical_room};

/// Which of the two request styles a frame used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Style {
    /// `{action, data}` (seed 000's API-Gateway protocol); the action's name.
    Action(String),
    /// `{type, …fields}` (seeds 001 and 003); the type's name.
    Type(String),
}

/// How a successful request is answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Answer {
    /// `pong` with a timestamp.
    Pong,
    /// The connection's rooms (`getRooms`).
    Rooms,
    /// The connection's status (`getStatus`).
    Status,
    /// `{action, success: true, key: value}`.
    Success { key: &'static str, value: Value },
    /// `{type:"room_joined", room, viewers_count}`, the room as the client named it.
    RoomJoined(String),
    /// `{type:"room_left", room}`.
    RoomLeft(String),
    /// `{type:"subscribed", room}`.
    Subscribed(String),
    /// Nothing, unless the request carried a `requestId` (then an `ack`).
    Silent,
}

/// A decoded request frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Request {
    pub style: Style,
    pub request_id: Option<Value>,
    pub command: Command,
    pub answer: Answer,
    /// A join's seed-001 room name, and the room it means: later frames to
    /// this connection name that room the client's way. Only a join carries
    /// one: a room's frames come to a connection in it.
    pub alias: Option<Alias>,
}

/// Why a frame is not a request: the error and the style to answer it in.
#[derive(Debug, Clone)]
pub(crate) struct Refused {
    pub style: Style,
    pub request_id: Option<Value>,
    pub rejection: Rejection,
}

/// What the first frame of a connection without a token must be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AuthFrame {
    pub token: String,
    pub offset: Option<String>,
}

/// Reads `{"type":"auth","token","offset"?}`; anything else is `None`.
pub(crate) fn auth_frame(text: &str) -> Option<AuthFrame> {
    let v: Value = serde_json::from_str(text).ok()?;
    let f = Fields::of(&v).ok()?;
    if f.get("action").is_some() || f.get("type")?.as_str()? != "auth" {
        return None;
    }
    Some(AuthFrame {
        token: f.string("token").ok()?.to_string(),
        offset: f.offset("offset").ok().flatten().filter(|o| !o.is_empty()),
    })
}

/// Decodes a text frame into a request.
pub(crate) fn decode(text: &str) -> Result<Request, Refused> {
    let unknown_style = || Style::Type(String::new());
    let value: Value = serde_json::from_str(text).map_err(|e| Refused {
        style: unknown_style(),
        request_id: None,
        rejection: Rejection::bad_request(format!("the frame is not JSON: {e}")),
    })?;
    let Some(obj) = value.as_object() else {
        return Err(Refused {
            style: unknown_style(),
            request_id: None,
            rejection: Rejection::bad_request("a request must be a JSON object"),
        });
    };
    let request_id = obj.get("requestId").filter(|v| !v.is_null()).cloned();
    let (style, decoded) = match (obj.get("action"), obj.get("type")) {
        (Some(Value::String(a)), _) => (Style::Action(a.clone()), decode_action(a, obj)),
        (Some(_), _) => (
            Style::Action(String::new()),
            Err(Rejection::bad_request("`action` must be a string")),
        ),
        (None, Some(Value::String(t))) => (Style::Type(t.clone()), decode_type(t, obj)),
        (None, _) => (
            unknown_style(),
            Err(Rejection::bad_request(
                "a request needs an `action` or a `type`",
            )),
        ),
    };
    match decoded {
        Ok((command, answer, alias)) => Ok(Request {
            style,
            request_id,
            command,
            answer,
            alias,
        }),
        Err(rejection) => Err(Refused {
            style,
            request_id,
            rejection,
        }),
    }
}

type Decoded = Result<(Command, Answer, Option<Alias>), Rejection>;

fn decode_action(action: &str, obj: &Map<String, Value>) -> Decoded {
    let f = Fields::of_optional(obj.get("data"))?;
    let success = |key: &'static str, value: Value| Answer::Success { key, value };
    let entity = |kind, key: &'static str| -> Result<(RoomName, Answer), Rejection> {
        let id = f.id(key)?;
        Ok((
            RoomName::entity(kind, &id)?,
            success(key, Value::String(id)),
        ))
    };
    let (command, answer) = match action {
        "ping" => (Command::Ping, Answer::Pong),
        "getRooms" => (Command::Rooms, Answer::Rooms),
        "getStatus" => (Command::Rooms, Answer::Status),
        "subscribe" => {
            let room = f.room("room")?;
            let answer = success("room", room.as_str().into());
            let since = f.offset("since")?;
            (Command::Join { room, since }, answer)
        }
        "unsubscribe" => {
            let room = f.room("room")?;
            (
                Command::Leave { room: room.clone() },
                success("room", room.as_str().into()),
            )
        }
        "subscribeToOrder" | "subscribeToShipment" => {
            let (room, answer) = match action {
                "subscribeToOrder" => entity(EntityKind::Order, "orderId")?,
                _ => entity(EntityKind::Shipment, "shipmentId")?,
            };
            let since = f.offset("since")?;
            (Command::Join { room, since }, answer)
        }
        "unsubscribeFromOrder" | "unsubscribeFromShipment" => {
            let (room, answer) = match action {
                "unsubscribeFromOrder" => entity(EntityKind::Order, "orderId")?,
                _ => entity(EntityKind::Shipment, "shipmentId")?,
            };
            (Command::Leave { room }, answer)
        }
        "refreshToken" => (
            Command::RefreshToken {
                token: f.string("token")?.to_string(),
            },
            Answer::Silent,
        ),
        _ => {
            return Err(Rejection::bad_request(format!("unknown action `{action}`")));
        }
    };
    Ok((command, answer, None))
}

fn decode_type(kind: &str, obj: &Map<String, Value>) -> Decoded {
    let f = Fields::from_map(obj);
    // Replies name the room the way the client wrote it.
    let named = || f.string("room").map(String::from);
    let room = || seed_room(f.string("room")?);
    // A room named by a request other than a join: its alias is not kept.
    let named_room = || Ok::<_, Rejection>(room()?.0);
    let decoded = match kind {
        "ping" => (Command::Ping, Answer::Pong, None),
        "join_room" => {
            let (room, alias) = room()?;
            let since = f.offset("since")?;
            (
                Command::Join { room, since },
                Answer::RoomJoined(named()?),
                alias,
            )
        }
        "leave_room" => {
            let room = named_room()?;
            (Command::Leave { room }, Answer::RoomLeft(named()?), None)
        }
        "subscribe_order_updates" => {
            let id = f.id("order_id")?;
            let room = RoomName::entity(EntityKind::Order, &id)?;
            let named = format!("order_{id}");
            let alias = Some((named.clone(), room.as_str().to_string()));
            (
                Command::Join { room, since: None },
                Answer::Subscribed(named),
                alias,
            )
        }
        "chat_message" => {
            let message = f.chat_send_to(named_room()?, "message_type", "client_id")?;
            (Command::ChatSend(message), Answer::Silent, None)
        }
        "typing_start" | "typing_stop" => {
            let room = named_room()?;
            let typing = kind == "typing_start";
            (Command::Typing { room, typing }, Answer::Silent, None)
        }
        "mark_read" => {
            let room = named_room()?;
            let message_ids = f.message_ids("message_ids")?;
            (
                Command::ChatRead { room, message_ids },
                Answer::Silent,
                None,
            )
        }
        "presence" => (
            Command::SetPresence {
                status: f.status("status")?,
            },
            Answer::Silent,
            None,
        ),
        "auth:refresh" | "auth" => (
            Command::RefreshToken {
                token: f.string("token")?.to_string(),
            },
            Answer::Silent,
            None,
        ),
        _ => return Err(Rejection::bad_request(format!("unknown type `{kind}`"))),
    };
    Ok(decoded)
}

/// A seed-001 room name a client used, and livehub's name for that room.
pub(crate) type Alias = (String, String);

/// A room as a type-style request names it: livehub's name, or seed 001's
/// (`order_123`, `user_a_b`), with the alias to remember in that case.
pub(crate) fn seed_room(name: &str) -> Result<(RoomName, Option<Alias>), Rejection> {
    match canonical_room(name) {
        Some(canonical) => Ok((
            RoomName::parse(&canonical)?,
            Some((name.to_string(), canonical)),
        )),
        None => Ok((RoomName::parse(name)?, None)),
    }
}

/// The reply to a request that succeeded, if it gets one.
pub(crate) fn reply(
    request: &Request,
    fields: &Map<String, Value>,
    status: impl FnOnce() -> Value,
) -> Option<String> {
    let name = match &request.style {
        Style::Action(a) | Style::Type(a) => a.as_str(),
    };
    let field = |k: &str| fields.get(k).cloned().unwrap_or(Value::Null);
    let mut out = match (&request.style, &request.answer) {
        (Style::Action(_), Answer::Pong) => {
            json!({ "action": "pong", "timestamp": field("timestamp") })
        }
        (Style::Type(_), Answer::Pong) => {
            json!({ "type": "pong", "timestamp": field("timestamp") })
        }
        (_, Answer::Rooms) => {
            let rooms = field("rooms");
            let count = rooms.as_array().map_or(0, Vec::len);
            json!({ "action": name, "rooms": rooms, "count": count })
        }
        (_, Answer::Status) => status(),
        (_, Answer::Success { key, value }) => {
            let mut m = Map::new();
            m.insert("action".into(), name.into());
            m.insert("success".into(), true.into());
            m.insert((*key).into(), value.clone());
            Value::Object(m)
        }
        (_, Answer::RoomJoined(room)) => json!({
            "type": "room_joined",
            "room": room,
            "viewers_count": field("viewersCount"),
        }),
        (_, Answer::RoomLeft(room)) => json!({ "type": "room_left", "room": room }),
        (_, Answer::Subscribed(room)) => json!({ "type": "subscribed", "room": room }),
        (_, Answer::Silent) => {
            request.request_id.as_ref()?;
            json!({ "type": "ack", "request": name })
        }
    };
    if let (Some(id), Some(o)) = (&request.request_id, out.as_object_mut()) {
        o.insert("requestId".into(), id.clone());
    }
    Some(out.to_string())
}

/// The error reply, in the request's style.
pub(crate) fn error_reply(style: &Style, request_id: Option<&Value>, r: &Rejection) -> String {
    let error = json!({ "code": r.code.as_str(), "message": r.message });
    let mut out = match style {
        Style::Action(a) => json!({ "action": a, "success": false, "error": error }),
        Style::Type(t) => {
            let mut v = json!({ "type": "error", "data": error, "timestamp": now_iso8601() });
            if !t.is_empty() {
                v["request"] = t.as_str().into();
            }
            v
        }
    };
    if let (Some(id), Some(o)) = (request_id, out.as_object_mut()) {
        o.insert("requestId".into(), id.clone());
    }
    out.to_string()
}

/// `{"type":"error","data":{"code":"unauthorized","message":M},"timestamp"}`.
pub(crate) fn unauthorized(message: &str) -> String {
    error_reply(
        &Style::Type(String::new()),
        None,
        &Rejection::new(ErrorCode::Unauthorized, message.to_string()),
    )
}

/// The first frame of an accepted connection.
pub(crate) fn connection_established(
    connection_id: &str,
    user_id: &str,
    rooms: &[String],
) -> String {
    json!({
        "type": "connection_established",
        "connection_id": connection_id,
        "user_id": user_id,
        "rooms": rooms,
        "timestamp": now_iso8601(),
    })
    .to_string()
}

/// A JSON object's members in the order they were written.
struct Ordered<'a>(Vec<(String, &'a RawValue)>);

impl<'de> Deserialize<'de> for Ordered<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Ordered<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Ordered<'de>, M::Error> {
                let mut members = Vec::new();
                while let Some(entry) = map.next_entry::<String, &'de RawValue>()? {
                    members.push(entry);
                }
                Ok(Ordered(members))
            }
        }
        d.deserialize_map(V)
    }
}

/// Events whose plain frames have their own type and snake_case fields.
fn plain_type(event: &str) -> Option<&'static str> {
    match event {
        "chat:message" => Some("chat_message"),
        "chat:read" => Some("messages_read"),
        "typing" => Some("typing"),
        _ => None,
    }
}

/// Whether `event`'s frames carry a room a connection may name its own way.
pub(crate) fn names_a_room(event: &str) -> bool {
    plain_type(event).is_some()
}

/// The frame of an event the hub sends: a logged event's envelope (as stored,
/// maybe marked replayed) or a signal's payload. `room_alias` renames the
/// `room` field of chat, typing and read frames.
pub(crate) fn event_frame(event: &str, payload: &str, room_alias: Option<&str>) -> String {
    let Ok(Ordered(members)) = serde_json::from_str::<Ordered>(payload) else {
        return signal_frame(event, payload, room_alias);
    };
    let is_envelope = members
        .iter()
        .any(|(k, v)| k == "type" && v.get() == json_str(event))
        && members.iter().any(|(k, _)| k == "offset");
    if !is_envelope {
        return signal_frame(event, payload, room_alias);
    }
    // livehub writes envelopes as `{…data, "type", "timestamp"?, "offset",
    // "replayed"?}`: a `timestamp` or `replayed` after `type` is livehub's,
    // one before it is the data's own.
    let type_at = members.iter().rposition(|(k, _)| k == "type").unwrap_or(0);
    let mut data = Map::new();
    let (mut timestamp, mut offset, mut replayed) = (None, None, false);
    for (i, (k, v)) in members.iter().enumerate() {
        match k.as_str() {
            "type" => {}
            "offset" => offset = Some(*v),
            "replayed" if i > type_at => replayed = true,
            "timestamp" if i > type_at => timestamp = Some(*v),
            _ => {
                if k == "timestamp" {
                    timestamp = Some(*v);
                }
                if let Ok(v) = serde_json::from_str(v.get()) {
                    data.insert(k.clone(), v);
                }
            }
        }
    }
    let data = present(event, data, room_alias);
    let mut out = String::with_capacity(payload.len() + 32);
    let _ = write!(
        out,
        "{{\"type\":{},\"data\":{},\"timestamp\":{},\"offset\":{}",
        json_str(plain_type(event).unwrap_or(event)),
        Value::Object(data),
        timestamp.map_or("null", |t| t.get()),
        offset.map_or("null", |o| o.get()),
    );
    out.push_str(if replayed { ",\"replayed\":true}" } else { "}" });
    out
}

/// A signal's frame: its payload as `data`, its timestamp (or now) on top.
fn signal_frame(event: &str, payload: &str, room_alias: Option<&str>) -> String {
    let data: Value = serde_json::from_str(payload).unwrap_or(Value::Null);
    let timestamp = match data.get("timestamp") {
        Some(t @ (Value::String(_) | Value::Number(_))) => t.clone(),
        _ => Value::String(now_iso8601()),
    };
    let data = match data {
        Value::Object(m) => Value::Object(present(event, m, room_alias)),
        other => other,
    };
    json!({ "type": plain_type(event).unwrap_or(event), "data": data, "timestamp": timestamp })
        .to_string()
}

/// Chat, typing and read payloads in snake_case, their room as the connection names it.
fn present(event: &str, data: Map<String, Value>, room_alias: Option<&str>) -> Map<String, Value> {
    if plain_type(event).is_none() {
        return data;
    }
    let mut out: Map<String, Value> = data
        .into_iter()
        .map(|(k, v)| (snake_case(&k), snake_keys(v)))
        .collect();
    if let Some(alias) = room_alias {
        out.insert("room".into(), Value::String(alias.to_string()));
    }
    out
}

fn snake_keys(v: Value) -> Value {
    match v {
        Value::Array(items) => Value::Array(items.into_iter().map(snake_keys).collect()),
        Value::Object(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| (snake_case(&k), snake_keys(v)))
                .collect(),
        ),
        other => other,
    }
}

fn snake_case(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 4);
    for c in key.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

fn json_str(s: &str) -> String {
    Value::String(s.to_string()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{mark_replayed, with_offset};

    /// An envelope as clients receive it, offset included.
    fn envelope(event: &str, data: &Map<String, Value>, offset: &str, now: &str) -> String {
        with_offset(crate::events::envelope(event, data, now), offset)
    }

    fn frame(event: &str, payload: &str) -> Value {
        serde_json::from_str(&event_frame(event, payload, None)).unwrap()
    }

    #[test]
    fn an_event_frame_carries_the_data_exactly() {
        let data = json!({"shipmentId": "S1", "status": "received", "type": "ignored"});
        let env = envelope("shipment:updated", data.as_object().unwrap(), "e-1", "T0");
        let f = frame("shipment:updated", &env);
        assert_eq!(
            f,
            json!({"type": "shipment:updated", "data": {"shipmentId": "S1", "status": "received"}, "timestamp": "T0", "offset": "e-1"})
        );
        let f = frame("shipment:updated", &mark_replayed(env.clone()));
        assert_eq!(f["replayed"], true);
        assert_eq!(f["data"], json!({"shipmentId": "S1", "status": "received"}));
    }

    #[test]
    fn the_datas_own_timestamp_stays_in_data_and_on_top() {
        let data = json!({"uploadId": "u", "progress": 5, "timestamp": "2020-01-01T00:00:00Z"});
        let env = envelope("upload_progress", data.as_object().unwrap(), "e-2", "NOW");
        let f = frame("upload_progress", &env);
        assert_eq!(f["data"], data);
        assert_eq!(f["timestamp"], "2020-01-01T00:00:00Z");
    }

    #[test]
    fn the_datas_own_replayed_stays_in_data_and_marks_nothing() {
        let data = json!({"uploadId": "u", "progress": 5, "replayed": false});
        let env = envelope("upload_progress", data.as_object().unwrap(), "e-3", "NOW");
        let live = frame("upload_progress", &env);
        assert_eq!(live["data"], data);
        assert!(live.get("replayed").is_none(), "a live event");
        let replayed = frame("upload_progress", &mark_replayed(env));
        assert_eq!(replayed["data"], data);
        assert_eq!(replayed["replayed"], true);
    }

    #[test]
    fn signals_keep_their_payload_as_data() {
        let f = frame(
            "user:viewing",
            r#"{"userId":"u1","room":"order:1","timestamp":"T"}"#,
        );
        assert_eq!(f["type"], "user:viewing");
        assert_eq!(f["data"]["userId"], "u1");
        assert_eq!(f["timestamp"], "T");
        assert!(f.get("offset").is_none());
        let reset = frame("replay:reset", r#"{"reason":"unknown","offset":"x"}"#);
        assert_eq!(
            reset["data"]["offset"], "x",
            "a signal with an offset field is still a signal"
        );
    }

    #[test]
    fn chat_frames_are_snake_case_and_use_the_connections_room_name() {
        let msg = json!({"id": 3, "room": "order:9", "senderId": "ann", "content": "hi", "messageType": "text", "clientId": null, "createdAt": "T", "readBy": [{"userId": "b", "readAt": "T"}]});
        let env = envelope("chat:message", msg.as_object().unwrap(), "e-3", "T");
        let f: Value =
            serde_json::from_str(&event_frame("chat:message", &env, Some("order_9"))).unwrap();
        assert_eq!(f["type"], "chat_message");
        assert_eq!(f["data"]["sender_id"], "ann");
        assert_eq!(f["data"]["message_type"], "text");
        assert_eq!(f["data"]["room"], "order_9");
        assert_eq!(f["data"]["read_by"][0]["user_id"], "b");
        let typing = frame(
            "typing",
            r#"{"room":"order:9","userId":"ann","typing":true}"#,
        );
        assert_eq!(typing["data"]["user_id"], "ann");
    }

    #[test]
    fn both_request_styles_decode() {
        let r = decode(r#"{"action":"subscribeToOrder","data":{"orderId":7},"requestId":"r1"}"#)
            .unwrap();
        assert_eq!(
            r.command,
            Command::Join {
                room: RoomName::parse("order:7").unwrap(),
                since: None
            }
        );
        assert_eq!(r.request_id, Some(json!("r1")));
        let r = decode(r#"{"type":"join_room","room":"order_7","action_hint":1}"#).unwrap();
        assert_eq!(r.answer, Answer::RoomJoined("order_7".into()));
        assert_eq!(r.alias, Some(("order_7".into(), "order:7".into())));
        let r = decode(
            r#"{"type":"chat_message","room":"user_z_a","content":"hi","message_type":"text"}"#,
        )
        .unwrap();
        assert!(matches!(r.command, Command::ChatSend(ref m) if m.room.as_str() == "dm:a:z"));
    }

    #[test]
    fn bad_frames_are_refused_in_the_right_style() {
        for (text, action) in [
            ("not json", false),
            ("[1,2]", false),
            ("{}", false),
            (r#"{"type":"fly"}"#, false),
            (r#"{"action":"fly"}"#, true),
            (r#"{"action":"subscribe","data":{"room":"order_1"}}"#, true),
            (r#"{"action":"subscribe","data":"x"}"#, true),
            (r#"{"type":"join_room","room":5}"#, false),
            (
                r#"{"type":"mark_read","room":"order:1","message_ids":[1.5]}"#,
                false,
            ),
        ] {
            let refused = decode(text).unwrap_err();
            assert_eq!(refused.rejection.code, ErrorCode::BadRequest, "{text}");
            assert_eq!(matches!(refused.style, Style::Action(_)), action, "{text}");
            let reply: Value =
                serde_json::from_str(&error_reply(&refused.style, None, &refused.rejection))
                    .unwrap();
            if action {
                assert_eq!(reply["success"], false);
                assert_eq!(reply["error"]["code"], "bad_request");
            } else {
                assert_eq!(reply["type"], "error");
                assert_eq!(reply["data"]["code"], "bad_request");
            }
        }
    }

    #[test]
    fn replies_repeat_the_request_id() {
        let r = decode(r#"{"type":"typing_start","room":"order:1","requestId":9}"#).unwrap();
        let out: Value =
            serde_json::from_str(&reply(&r, &Map::new(), || Value::Null).unwrap()).unwrap();
        assert_eq!(
            out,
            json!({"type": "ack", "request": "typing_start", "requestId": 9})
        );
        let r = decode(r#"{"type":"typing_start","room":"order:1"}"#).unwrap();
        assert!(reply(&r, &Map::new(), || Value::Null).is_none());
    }

    #[test]
    fn the_auth_frame() {
        assert_eq!(
            auth_frame(r#"{"type":"auth","token":"t","offset":"o"}"#),
            Some(AuthFrame {
                token: "t".into(),
                offset: Some("o".into())
            })
        );
        assert_eq!(auth_frame(r#"{"type":"auth"}"#), None);
        assert_eq!(
            auth_frame(r#"{"action":"x","type":"auth","token":"t"}"#),
            None
        );
    }
}
