//! Typed client commands: what every front decodes a request into.
//!
//! A Socket.IO event (`join:shipment {shipmentId}`), a plain WebSocket frame in
//! action style (`{action:"subscribeToShipment", data:{shipmentId}}`) or in type
//! style (`{type:"join_room", room}`) all become one [`Command`]; the session
//! layer ([`crate::session`]) applies it, whichever door it came in by. Decoding
//! checks shapes and the room grammar; who may do what is checked when the
//! command is applied.
//!
//! Field names differ between the protocols (`messageIds` on Socket.IO,
//! `message_ids` in type style), so the decoders read through [`Fields`], whose
//! errors name the field the way the client wrote it.

use serde_json::{Map, Value};

use crate::error::Rejection;
use crate::rooms::{self, EntityKind};

/// A room name that passed the grammar (`[A-Za-z0-9:_.@-]`, at most 200 bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RoomName(String);

impl RoomName {
    /// Checks `name` against the room grammar.
    pub(crate) fn parse(name: &str) -> Result<RoomName, Rejection> {
        rooms::parse(name)?;
        Ok(RoomName(name.to_string()))
    }

    /// The room of one entity: `order:{id}`, `shipment:{id}`…
    pub(crate) fn entity(kind: EntityKind, id: &str) -> Result<RoomName, Rejection> {
        RoomName::parse(&rooms::entity_room(kind, id))
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }

    pub(crate) fn into_string(self) -> String {
        self.0
    }
}

/// Statuses a client may set; `offline` is livehub's to say.
pub(crate) const PRESENCE_STATUSES: &[&str] = &["online", "away", "busy"];

/// A chat message as a client sends it; [`crate::chat::Chat::send`] checks the rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChatSend {
    pub room: RoomName,
    pub content: String,
    pub message_type: Option<String>,
    pub client_id: Option<String>,
}

/// One client request, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Command {
    /// Join a room, replaying what it had after `since`.
    Join {
        room: RoomName,
        since: Option<String>,
    },
    /// Leave a room.
    Leave { room: RoomName },
    /// Typing started (`true`) or stopped in a joined room.
    Typing { room: RoomName, typing: bool },
    /// `online`, `away` or `busy`, told to the user's branch.
    SetPresence { status: String },
    /// Store and broadcast a chat message.
    ChatSend(ChatSend),
    /// A page of a room's chat history.
    ChatHistory {
        room: RoomName,
        before: Option<i64>,
        limit: Option<usize>,
    },
    /// Read receipts.
    ChatRead {
        room: RoomName,
        message_ids: Vec<i64>,
    },
    /// The connection's rooms.
    Rooms,
    /// `pong` back.
    Ping,
    /// A later token for the same user.
    RefreshToken { token: String },
}

impl Command {
    /// A short name, for logs.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Command::Join { .. } => "join",
            Command::Leave { .. } => "leave",
            Command::Typing { .. } => "typing",
            Command::SetPresence { .. } => "presence",
            Command::ChatSend(_) => "chat send",
            Command::ChatHistory { .. } => "chat history",
            Command::ChatRead { .. } => "chat read",
            Command::Rooms => "rooms",
            Command::Ping => "ping",
            Command::RefreshToken { .. } => "token refresh",
        }
    }

    /// Decodes a Socket.IO event and its first argument.
    pub(crate) fn from_socketio(name: &str, data: &Value) -> Result<Command, Rejection> {
        let f = || Fields::of(data);
        Ok(match name {
            "join:shipment" => Command::Join {
                room: f()?.entity(EntityKind::Shipment, "shipmentId")?,
                since: f()?.offset("since")?,
            },
            "join:order" => Command::Join {
                room: f()?.entity(EntityKind::Order, "orderId")?,
                since: f()?.offset("since")?,
            },
            "subscribe" => Command::Join {
                room: f()?.room("room")?,
                since: f()?.offset("since")?,
            },
            "leave:shipment" => Command::Leave {
                room: f()?.entity(EntityKind::Shipment, "shipmentId")?,
            },
            "leave:order" => Command::Leave {
                room: f()?.entity(EntityKind::Order, "orderId")?,
            },
            "unsubscribe" => Command::Leave {
                room: f()?.room("room")?,
            },
            "typing:start" | "typing:stop" => Command::Typing {
                room: f()?.room("room")?,
                typing: name == "typing:start",
            },
            "auth:refresh" => Command::RefreshToken {
                token: f()?.token("token")?,
            },
            "presence:set" => Command::SetPresence {
                status: f()?.status("status")?,
            },
            "chat:send" => Command::ChatSend(f()?.chat_send("messageType", "clientId")?),
            "chat:history" => {
                let f = f()?;
                Command::ChatHistory {
                    room: f.room("room")?,
                    before: f.int("before")?,
                    limit: f.page_limit("limit")?,
                }
            }
            "chat:read" => {
                let f = f()?;
                Command::ChatRead {
                    room: f.room("room")?,
                    message_ids: f.message_ids("messageIds")?,
                }
            }
            "rooms" => Command::Rooms,
            "ping" => Command::Ping,
            _ => return Err(Rejection::not_found(format!("unknown event `{name}`"))),
        })
    }
}

/// The fields of a request object, read with errors that name them.
pub(crate) struct Fields<'a>(&'a Map<String, Value>);

static EMPTY: std::sync::LazyLock<Map<String, Value>> = std::sync::LazyLock::new(Map::new);

impl<'a> Fields<'a> {
    /// A request payload: a JSON object.
    pub(crate) fn of(data: &'a Value) -> Result<Fields<'a>, Rejection> {
        data.as_object()
            .map(Fields)
            .ok_or_else(|| Rejection::bad_request("the payload must be a JSON object"))
    }

    /// The fields of an object.
    pub(crate) fn from_map(map: &'a Map<String, Value>) -> Fields<'a> {
        Fields(map)
    }

    /// A payload that may be absent (`null`): then it has no fields.
    pub(crate) fn of_optional(data: Option<&'a Value>) -> Result<Fields<'a>, Rejection> {
        match data {
            None | Some(Value::Null) => Ok(Fields(&EMPTY)),
            Some(v) => Fields::of(v),
        }
    }

    pub(crate) fn get(&self, key: &str) -> Option<&'a Value> {
        self.0.get(key).filter(|v| !v.is_null())
    }

    /// A required string.
    pub(crate) fn string(&self, key: &str) -> Result<&'a str, Rejection> {
        match self.get(key) {
            Some(Value::String(s)) => Ok(s),
            _ => Err(Rejection::bad_request(format!("`{key}` must be a string"))),
        }
    }

    /// A room name in livehub's grammar.
    pub(crate) fn room(&self, key: &str) -> Result<RoomName, Rejection> {
        RoomName::parse(self.string(key)?)
    }

    /// An entity id (a non-empty string or an integer), as its room.
    pub(crate) fn entity(&self, kind: EntityKind, key: &str) -> Result<RoomName, Rejection> {
        RoomName::entity(kind, &self.id(key)?)
    }

    /// An id: a non-empty string or a whole number (`42`, `42.0`; never `1.5`).
    pub(crate) fn id(&self, key: &str) -> Result<String, Rejection> {
        crate::events::id_value(self.get(key)).ok_or_else(|| {
            Rejection::bad_request(format!("`{key}` must be a non-empty string or an integer"))
        })
    }

    /// An optional id.
    pub(crate) fn opt_id(&self, key: &str) -> Result<Option<String>, Rejection> {
        self.get(key).map(|_| self.id(key)).transpose()
    }

    /// An optional object (absent is empty).
    pub(crate) fn object(&self, key: &str) -> Result<Map<String, Value>, Rejection> {
        match self.get(key) {
            None => Ok(Map::new()),
            Some(Value::Object(o)) => Ok(o.clone()),
            Some(_) => Err(Rejection::bad_request(format!(
                "`{key}` must be a JSON object"
            ))),
        }
    }

    /// An optional flag (absent is `false`).
    pub(crate) fn flag(&self, key: &str) -> Result<bool, Rejection> {
        match self.get(key) {
            None => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(Rejection::bad_request(format!(
                "`{key}` must be true or false"
            ))),
        }
    }

    /// One string or a list of strings (absent is empty).
    pub(crate) fn strings(&self, key: &str) -> Result<Vec<String>, Rejection> {
        self.list(key, |i| i.as_str().map(str::to_string))
    }

    /// One string or a list of ids, strings or whole numbers (absent is empty).
    pub(crate) fn ids(&self, key: &str) -> Result<Vec<String>, Rejection> {
        self.list(key, |i| match i {
            Value::String(s) => Some(s.clone()),
            _ => crate::events::id_value(Some(i)),
        })
    }

    /// One string, or a list whose every item `item` reads.
    fn list(
        &self,
        key: &str,
        item: impl Fn(&Value) -> Option<String>,
    ) -> Result<Vec<String>, Rejection> {
        let bad = || Rejection::bad_request(format!("`{key}` must be a list of strings"));
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(Value::String(s)) => Ok(vec![s.clone()]),
            Some(Value::Array(items)) => items.iter().map(|i| item(i).ok_or_else(bad)).collect(),
            Some(_) => Err(bad()),
        }
    }

    /// An optional log offset (`since`).
    pub(crate) fn offset(&self, key: &str) -> Result<Option<String>, Rejection> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(Rejection::bad_request(format!(
                "`{key}` must be an offset string"
            ))),
        }
    }

    /// An optional integer (a JSON integer or a string of digits).
    pub(crate) fn int(&self, key: &str) -> Result<Option<i64>, Rejection> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Number(n)) if whole_i64(n).is_some() => Ok(whole_i64(n)),
            Some(Value::String(s)) if s.parse::<i64>().is_ok() => Ok(s.parse().ok()),
            Some(_) => Err(Rejection::bad_request(format!(
                "`{key}` must be an integer"
            ))),
        }
    }

    /// An optional page size (the chat layer checks its range).
    fn page_limit(&self, key: &str) -> Result<Option<usize>, Rejection> {
        Ok(self
            .int(key)?
            .map(|l| l.clamp(0, i64::from(u16::MAX)) as usize))
    }

    /// A non-empty token string.
    fn token(&self, key: &str) -> Result<String, Rejection> {
        match self.get(key) {
            Some(Value::String(t)) if !t.is_empty() => Ok(t.clone()),
            _ => Err(Rejection::bad_request(format!("`{key}` must be a string"))),
        }
    }

    /// A presence status a client may set.
    pub(crate) fn status(&self, key: &str) -> Result<String, Rejection> {
        match self.get(key) {
            Some(Value::String(s)) if PRESENCE_STATUSES.contains(&s.as_str()) => Ok(s.clone()),
            _ => Err(Rejection::bad_request(format!(
                "`{key}` must be one of online, away, busy"
            ))),
        }
    }

    /// A list of message ids (integers, or strings of digits).
    pub(crate) fn message_ids(&self, key: &str) -> Result<Vec<i64>, Rejection> {
        let bad = || Rejection::bad_request(format!("`{key}` must be a list of message ids"));
        let Some(Value::Array(items)) = self.get(key) else {
            return Err(bad());
        };
        items
            .iter()
            .map(|i| match i {
                Value::Number(n) => whole_i64(n).ok_or_else(bad),
                Value::String(s) => s.parse().map_err(|_| bad()),
                _ => Err(bad()),
            })
            .collect()
    }

    /// A chat message: `room`, `content`, and the type and client id under
    /// the protocol's names for them.
    pub(crate) fn chat_send(
        &self,
        type_key: &str,
        client_key: &str,
    ) -> Result<ChatSend, Rejection> {
        self.chat_send_to(self.room("room")?, type_key, client_key)
    }

    /// A chat message to an already decoded room.
    pub(crate) fn chat_send_to(
        &self,
        room: RoomName,
        type_key: &str,
        client_key: &str,
    ) -> Result<ChatSend, Rejection> {
        let content = match self.get("content") {
            Some(Value::String(c)) => c.clone(),
            None => {
                return Err(Rejection::bad_request(
                    "`content` must be a non-empty string",
                ));
            }
            Some(_) => return Err(Rejection::bad_request("`content` must be a string")),
        };
        let message_type = match self.get(type_key) {
            None => None,
            Some(Value::String(t)) => Some(t.clone()),
            Some(_) => {
                return Err(Rejection::bad_request(format!(
                    "`{type_key}` must be one of text, file, image"
                )));
            }
        };
        let client_id = match self.get(client_key) {
            None => None,
            Some(Value::String(c)) => Some(c.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            Some(_) => {
                return Err(Rejection::bad_request(format!(
                    "`{client_key}` must be a string"
                )));
            }
        };
        Ok(ChatSend {
            room,
            content,
            message_type,
            client_id,
        })
    }
}

/// A whole JSON number (`42` or `42.0`) that fits an `i64`.
fn whole_i64(n: &serde_json::Number) -> Option<i64> {
    crate::events::whole_number(n).and_then(|n| i64::try_from(n).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn decode(name: &str, data: Value) -> Result<Command, Rejection> {
        Command::from_socketio(name, &data)
    }

    #[test]
    fn entity_joins_take_string_or_integer_ids_only() {
        assert_eq!(
            decode("join:shipment", json!({"shipmentId": 42})).unwrap(),
            Command::Join {
                room: RoomName("shipment:42".into()),
                since: None
            }
        );
        assert_eq!(
            decode("join:order", json!({"orderId": "o-1", "since": "x"})).unwrap(),
            Command::Join {
                room: RoomName("order:o-1".into()),
                since: Some("x".into())
            }
        );
        // 42.0 is 42 (JSON cannot tell them apart); 1.5 and 1e300 are no ids.
        // Large ones are read exactly (serde_json's `float_roundtrip`).
        let big: Value = serde_json::from_str("2206713902169441.0").unwrap();
        assert_eq!(
            decode("join:shipment", json!({ "shipmentId": big })).unwrap(),
            Command::Join {
                room: RoomName("shipment:2206713902169441".into()),
                since: None
            }
        );
        for whole in [json!(42), json!(42.0)] {
            assert_eq!(
                decode("join:shipment", json!({ "shipmentId": whole })).unwrap(),
                Command::Join {
                    room: RoomName("shipment:42".into()),
                    since: None
                }
            );
        }
        for bad in [
            json!(1.5),
            json!(1e300),
            json!(""),
            json!(null),
            json!([1]),
            json!(true),
        ] {
            let e = decode("join:shipment", json!({ "shipmentId": bad })).unwrap_err();
            assert_eq!(e.code, crate::ErrorCode::BadRequest, "{bad}");
        }
        assert!(decode("join:order", json!({"orderId": "a b"})).is_err());
        assert!(decode("join:order", json!({"orderId": "o", "since": 5})).is_err());
    }

    #[test]
    fn payloads_must_be_objects() {
        for bad in [json!(null), json!("room"), json!([]), json!(3)] {
            assert!(decode("subscribe", bad.clone()).is_err(), "{bad}");
            assert!(decode("chat:send", bad).is_err());
        }
        assert_eq!(decode("rooms", json!(null)).unwrap(), Command::Rooms);
        assert_eq!(decode("ping", json!("anything")).unwrap(), Command::Ping);
    }

    #[test]
    fn rooms_follow_the_grammar() {
        assert!(decode("subscribe", json!({"room": "order:1"})).is_ok());
        for bad in ["", "order 1", "order/1", &"x".repeat(201)] {
            assert!(
                decode("subscribe", json!({ "room": bad })).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn unknown_events_are_not_found() {
        let e = decode("join:moon", json!({})).unwrap_err();
        assert_eq!(e.code, crate::ErrorCode::NotFound);
    }

    #[test]
    fn chat_fields_are_typed() {
        let c = decode(
            "chat:send",
            json!({"room": "order:1", "content": "hi", "clientId": 7}),
        )
        .unwrap();
        assert_eq!(
            c,
            Command::ChatSend(ChatSend {
                room: RoomName("order:1".into()),
                content: "hi".into(),
                message_type: None,
                client_id: Some("7".into()),
            })
        );
        assert!(decode("chat:send", json!({"room": "order:1", "content": 5})).is_err());
        assert!(decode("chat:send", json!({"room": "order:1"})).is_err());
        assert!(
            decode(
                "chat:send",
                json!({"room": "order:1", "content": "x", "messageType": 1})
            )
            .is_err()
        );
    }

    #[test]
    fn message_ids_are_integers_or_digit_strings() {
        let ok = decode(
            "chat:read",
            json!({"room": "order:1", "messageIds": [1, "2"]}),
        )
        .unwrap();
        assert_eq!(
            ok,
            Command::ChatRead {
                room: RoomName("order:1".into()),
                message_ids: vec![1, 2]
            }
        );
        for bad in [json!([1.5]), json!(["x"]), json!("1"), json!([null])] {
            let e = decode("chat:read", json!({"room": "order:1", "messageIds": bad})).unwrap_err();
            assert!(e.message.contains("messageIds"), "{}", e.message);
        }
    }

    #[test]
    fn history_limits_and_before_are_integers() {
        let c = decode(
            "chat:history",
            json!({"room": "order:1", "before": "12", "limit": 20}),
        )
        .unwrap();
        assert_eq!(
            c,
            Command::ChatHistory {
                room: RoomName("order:1".into()),
                before: Some(12),
                limit: Some(20)
            }
        );
        assert!(decode("chat:history", json!({"room": "order:1", "before": 1.5})).is_err());
        assert!(decode("chat:history", json!({"room": "order:1", "limit": "ten"})).is_err());
    }

    #[test]
    fn presence_and_refresh() {
        assert_eq!(
            decode("presence:set", json!({"status": "away"})).unwrap(),
            Command::SetPresence {
                status: "away".into()
            }
        );
        assert!(decode("presence:set", json!({"status": "offline"})).is_err());
        assert!(decode("auth:refresh", json!({"token": ""})).is_err());
        assert_eq!(
            decode("typing:stop", json!({"room": "order:1"})).unwrap(),
            Command::Typing {
                room: RoomName("order:1".into()),
                typing: false
            }
        );
    }
}
