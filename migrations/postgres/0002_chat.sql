-- Chat: messages per room, read receipts, and two search indexes — tsvector over
-- plaintext, and a blind index of keyed word hashes for encrypted content.
CREATE TABLE messages (
    id           BIGSERIAL PRIMARY KEY,
    room         TEXT     NOT NULL,
    sender_id    TEXT     NOT NULL,
    sender_name  TEXT,
    content      TEXT     NOT NULL,
    encrypted    BOOLEAN  NOT NULL DEFAULT false,
    message_type TEXT     NOT NULL,
    client_id    TEXT,
    created_at   BIGINT   NOT NULL,
    search       TSVECTOR           -- NULL for encrypted messages
);
CREATE INDEX messages_room_id ON messages (room, id);
CREATE UNIQUE INDEX messages_client_id ON messages (room, sender_id, client_id) WHERE client_id IS NOT NULL;
CREATE INDEX messages_search ON messages USING GIN (search);

CREATE TABLE message_tokens (
    token      TEXT   NOT NULL,
    message_id BIGINT NOT NULL,
    PRIMARY KEY (token, message_id)
);

CREATE TABLE message_reads (
    message_id BIGINT NOT NULL,
    user_id    TEXT   NOT NULL,
    read_at    BIGINT NOT NULL,
    PRIMARY KEY (message_id, user_id)
);
