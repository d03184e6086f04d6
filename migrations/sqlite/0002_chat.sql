-- Chat: messages per room, read receipts, and two search indexes — FTS5 over
-- plaintext, and a blind index of keyed word hashes for encrypted content.
CREATE TABLE messages (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    room         TEXT    NOT NULL,
    sender_id    TEXT    NOT NULL,
    sender_name  TEXT,
    content      TEXT    NOT NULL,  -- plaintext, or base64(nonce || ciphertext) when encrypted
    encrypted    INTEGER NOT NULL DEFAULT 0,
    message_type TEXT    NOT NULL,
    client_id    TEXT,
    created_at   INTEGER NOT NULL   -- unix milliseconds
);
CREATE INDEX messages_room_id ON messages (room, id);
-- The same clientId from the same sender in the same room is one message.
CREATE UNIQUE INDEX messages_client_id ON messages (room, sender_id, client_id) WHERE client_id IS NOT NULL;

-- Contentless full-text index of plaintext messages; rowid = messages.id.
CREATE VIRTUAL TABLE messages_fts USING fts5 (content, content = '', tokenize = 'unicode61 remove_diacritics 2');

-- Blind index: HMAC of each word of an encrypted message.
CREATE TABLE message_tokens (
    token      TEXT    NOT NULL,
    message_id INTEGER NOT NULL,
    PRIMARY KEY (token, message_id)
) WITHOUT ROWID;

CREATE TABLE message_reads (
    message_id INTEGER NOT NULL,
    user_id    TEXT    NOT NULL,
    read_at    INTEGER NOT NULL,
    PRIMARY KEY (message_id, user_id)
);
