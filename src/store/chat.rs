//! Chat rows: what the store keeps of a message, and how it is searched.

/// A message to store. Content arrives in its stored form: plaintext, or the
/// sealed text when encryption is on (the store never sees keys).
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// Room.
    pub room: String,
    /// Sender's user id.
    pub sender_id: String,
    /// Sender's display name.
    pub sender_name: Option<String>,
    /// Stored content.
    pub content: String,
    /// Whether `content` is sealed.
    pub encrypted: bool,
    /// `text`, `file`, `image` or `system`.
    pub message_type: String,
    /// The sender's idempotency id.
    pub client_id: Option<String>,
    /// Unix milliseconds.
    pub created_at_ms: i64,
    /// What goes in the full-text index (plaintext messages only).
    pub search_text: Option<String>,
    /// Blind-index tokens (encrypted messages only).
    pub tokens: Vec<String>,
}

/// A stored message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// Id, increasing within a room in send order.
    pub id: i64,
    /// Room.
    pub room: String,
    /// Sender.
    pub sender_id: String,
    /// Sender's display name at the time.
    pub sender_name: Option<String>,
    /// Stored content (sealed when `encrypted`).
    pub content: String,
    /// Whether `content` is sealed.
    pub encrypted: bool,
    /// Message type.
    pub message_type: String,
    /// The sender's idempotency id.
    pub client_id: Option<String>,
    /// Unix milliseconds.
    pub created_at_ms: i64,
    /// Who read it, and when (unix milliseconds).
    pub read_by: Vec<(String, i64)>,
}

impl NewMessage {
    /// The stored form of this message once the database gave it `id`.
    pub fn stored(&self, id: i64) -> StoredMessage {
        StoredMessage {
            id,
            room: self.room.clone(),
            sender_id: self.sender_id.clone(),
            sender_name: self.sender_name.clone(),
            content: self.content.clone(),
            encrypted: self.encrypted,
            message_type: self.message_type.clone(),
            client_id: self.client_id.clone(),
            created_at_ms: self.created_at_ms,
            read_by: Vec::new(),
        }
    }
}

/// The columns both backings select for a message, in [`super::message_row`]'s order.
pub(crate) const MESSAGE_COLUMNS: &str = "SELECT id, room, sender_id, sender_name, content, encrypted, message_type, client_id, created_at";

/// How to search.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SearchQuery {
    /// Every word must appear (as a word prefix), in plaintext messages.
    Words(Vec<String>),
    /// Every blind-index token must be present, in encrypted messages.
    Tokens(Vec<String>),
}
