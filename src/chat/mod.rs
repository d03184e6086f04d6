//! Chat: messages stored per room, history pages, read receipts and search.
//!
//! The caller (a socket handler or an HTTP route) has already checked that the
//! user may join the room; this module checks the message itself, stores it
//! through the [`Store`], and emits `chat:message` / `chat:read` through the hub.
//!
//! With `ENCRYPTION_KEY`, content is sealed before it reaches the store (see
//! [`seal`]). The event log is not encrypted, so in that mode `chat:message` is
//! delivered live but not written to the log; clients catch up with
//! `chat:history` instead of replay.

pub mod seal;

use serde_json::{Value, json};

use crate::auth::Claims;
use crate::commands::{ChatSend, Fields, RoomName};
use crate::error::Rejection;
use crate::hub::Hub;
use crate::store::{NewMessage, SearchQuery, Store, StoredMessage};
use seal::Sealer;

/// The longest message, in characters.
pub const MAX_CONTENT_CHARS: usize = 10_000;
/// The longest `clientId`.
pub const MAX_CLIENT_ID: usize = 100;
/// History page size when the client names none, and the most it may ask for.
pub const DEFAULT_PAGE: usize = 50;
/// See [`DEFAULT_PAGE`].
pub const MAX_PAGE: usize = 200;
/// Matches a search reads from the store at once.
const SEARCH_PAGE: usize = 200;
/// Matches a search reads at most, looking for ones the caller may see.
const SEARCH_SCAN_AT_MOST: usize = 5_000;
/// Message types clients may send. `system` is reserved to livehub and controllers.
pub const USER_MESSAGE_TYPES: &[&str] = &["text", "file", "image"];

/// The chat service.
#[derive(Clone)]
pub struct Chat {
    store: Store,
    hub: Hub,
    sealer: Option<Sealer>,
}

/// Search results and what the search could do.
pub struct SearchResult {
    /// Matching messages, newest first.
    pub messages: Vec<Value>,
    /// `full-text` (word prefixes) or `exact-words` (encrypted content).
    pub mode: &'static str,
    /// What this mode can and cannot find.
    pub note: &'static str,
}

impl Chat {
    /// A chat over `store`, emitting through `hub`, sealing with `key` if given.
    pub fn new(store: Store, hub: Hub, key: Option<&[u8; 32]>) -> Chat {
        Chat {
            store,
            hub,
            sealer: key.map(Sealer::new),
        }
    }

    /// Stores and broadcasts a message from `sender` to `room`, given as a
    /// client sends it (`content`, `messageType?`, `clientId?`). A repeated
    /// `clientId` returns the first message and broadcasts nothing.
    pub async fn send(
        &self,
        sender: &Claims,
        room: &str,
        data: &serde_json::Map<String, Value>,
    ) -> Result<Value, Rejection> {
        let room = RoomName::parse(room)?;
        let message = Fields::from_map(data).chat_send_to(room, "messageType", "clientId")?;
        self.send_message(sender, &message).await
    }

    /// Stores and broadcasts a decoded message (see [`Chat::send`]).
    pub(crate) async fn send_message(
        &self,
        sender: &Claims,
        message: &ChatSend,
    ) -> Result<Value, Rejection> {
        let room = message.room.as_str();
        let content = &message.content;
        if content.trim().is_empty() {
            return Err(Rejection::bad_request(
                "`content` must be a non-empty string",
            ));
        }
        if content.chars().count() > MAX_CONTENT_CHARS {
            return Err(Rejection::too_large(format!(
                "a message holds at most {MAX_CONTENT_CHARS} characters"
            )));
        }
        let message_type = match message.message_type.as_deref() {
            None => "text",
            Some(t) if USER_MESSAGE_TYPES.contains(&t) => t,
            Some("system") => {
                return Err(Rejection::forbidden(
                    "`system` messages are sent by livehub, not by users",
                ));
            }
            Some(_) => {
                return Err(Rejection::bad_request(
                    "`messageType` must be one of text, file, image",
                ));
            }
        };
        let client_id = match &message.client_id {
            None => None,
            Some(c) if !c.is_empty() && c.len() <= MAX_CLIENT_ID => Some(c.clone()),
            Some(_) => {
                return Err(Rejection::bad_request(format!(
                    "`clientId` must be a string of 1-{MAX_CLIENT_ID} characters"
                )));
            }
        };
        let (stored_content, search_text, tokens) = match &self.sealer {
            Some(s) => (s.seal(room, content), None, s.tokens(content)),
            None => (content.clone(), Some(content.clone()), Vec::new()),
        };
        let new = NewMessage {
            room: room.to_string(),
            sender_id: sender.sub.clone(),
            sender_name: Some(sender.display_name().to_string()),
            content: stored_content,
            encrypted: self.sealer.is_some(),
            message_type: message_type.to_string(),
            client_id,
            created_at_ms: chrono::Utc::now().timestamp_millis(),
            search_text,
            tokens,
        };
        let (stored, created) = self.store.insert_message(&new).await.map_err(unavailable)?;
        let message = self.to_json(&stored);
        if created {
            let payload = message.as_object().cloned().unwrap_or_default();
            if self.sealer.is_some() {
                // Sealed at rest: keep the plaintext out of the (unencrypted) event log.
                self.hub
                    .signal(&[room.to_string()], &[], "chat:message", &message);
            } else {
                self.hub
                    .emit_system("chat:message", payload, vec![room.to_string()])
                    .await?;
            }
        }
        Ok(message)
    }

    /// A page of `room`'s history, newest last: before message `before` (or
    /// from the newest), less the `skip` newest of those.
    pub async fn history(
        &self,
        room: &str,
        before: Option<i64>,
        skip: usize,
        limit: Option<usize>,
    ) -> Result<Vec<Value>, Rejection> {
        let limit = limit.unwrap_or(DEFAULT_PAGE);
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(Rejection::bad_request(format!(
                "`limit` must be 1-{MAX_PAGE}"
            )));
        }
        let messages = self
            .store
            .history(room, before, skip, limit)
            .await
            .map_err(unavailable)?;
        Ok(messages.iter().map(|m| self.to_json(m)).collect())
    }

    /// Records that `reader` read `ids` in `room` and tells the room.
    pub async fn mark_read(
        &self,
        reader: &Claims,
        room: &str,
        ids: &[i64],
    ) -> Result<Value, Rejection> {
        if ids.is_empty() || ids.len() > MAX_PAGE {
            return Err(Rejection::bad_request(format!(
                "`messageIds` must list 1-{MAX_PAGE} message ids"
            )));
        }
        let now = chrono::Utc::now();
        let marked = self
            .store
            .mark_read(room, &reader.sub, ids, now.timestamp_millis())
            .await
            .map_err(unavailable)?;
        if marked.is_empty() {
            return Err(Rejection::not_found(
                "none of these messages are in this room",
            ));
        }
        let read_at = crate::events::iso8601(now);
        let receipt =
            json!({ "room": room, "userId": reader.sub, "messageIds": marked, "readAt": read_at });
        let payload = receipt.as_object().cloned().unwrap_or_default();
        self.hub
            .emit_system("chat:read", payload, vec![room.to_string()])
            .await?;
        Ok(receipt)
    }

    /// Searches messages in `room` (or every room `visible` allows), newest first.
    pub async fn search(
        &self,
        query: &str,
        room: Option<&str>,
        visible: impl Fn(&str) -> bool,
        limit: usize,
    ) -> Result<SearchResult, Rejection> {
        let mut words = seal::words(query);
        if words.is_empty() {
            return Err(Rejection::bad_request("`q` must contain at least one word"));
        }
        words.truncate(seal::MAX_QUERY_WORDS);
        let (query, mode, note) = match &self.sealer {
            None => (
                SearchQuery::Words(words),
                "full-text",
                "every word must appear; words match as prefixes, case- and accent-insensitively",
            ),
            Some(s) => (
                SearchQuery::Tokens(words.iter().flat_map(|w| s.tokens(w)).collect()),
                "exact-words",
                "chat content is encrypted at rest: search matches whole words only (no prefixes, no stemming), \
                 and only messages stored while encryption was on",
            ),
        };
        // Page back through the matches, dropping what the caller may not see,
        // until `limit` are left or SEARCH_SCAN_AT_MOST were read: newer
        // matches in others' rooms must not hide the caller's own.
        let mut messages = Vec::new();
        let (mut before, mut scanned) = (None, 0);
        while messages.len() < limit && scanned < SEARCH_SCAN_AT_MOST {
            let page = self
                .store
                .search(&query, room, before, SEARCH_PAGE)
                .await
                .map_err(unavailable)?;
            scanned += page.len();
            before = page.last().map(|m| m.id);
            let wanted = limit - messages.len();
            let seen = page.iter().filter(|m| visible(&m.room)).take(wanted);
            messages.extend(seen.map(|m| self.to_json(m)));
            if page.len() < SEARCH_PAGE {
                break;
            }
        }
        Ok(SearchResult {
            messages,
            mode,
            note,
        })
    }

    /// Whether the database answers.
    pub(crate) async fn store_reachable(&self) -> bool {
        self.store.ping().await
    }

    /// The rooms `user` wrote in (at most a thousand).
    pub(crate) async fn rooms_written_by(&self, user: &str) -> Result<Vec<String>, Rejection> {
        self.store
            .rooms_written_by(user, 1000)
            .await
            .map_err(unavailable)
    }

    /// The wire form of a stored message.
    fn to_json(&self, m: &StoredMessage) -> Value {
        let content = match (&self.sealer, m.encrypted) {
            (_, false) => Value::String(m.content.clone()),
            (Some(s), true) => s
                .open(&m.room, &m.content)
                .map(Value::String)
                .unwrap_or(Value::Null),
            (None, true) => Value::Null,
        };
        let read_by: Vec<Value> = m
            .read_by
            .iter()
            .map(|(user, at)| json!({ "userId": user, "readAt": iso(*at) }))
            .collect();
        json!({
            "id": m.id,
            "room": m.room,
            "senderId": m.sender_id,
            "senderName": m.sender_name,
            "content": content,
            "messageType": m.message_type,
            "clientId": m.client_id,
            "createdAt": iso(m.created_at_ms),
            "readBy": read_by,
        })
    }
}

fn iso(ms: i64) -> String {
    crate::events::iso8601(chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default())
}

fn unavailable(e: crate::store::StoreError) -> Rejection {
    tracing::error!(error = %e, "chat store failed");
    Rejection::internal("chat storage is unavailable")
}
