-- The durable event log: every emitted event, in offset order.
-- `seq` is allocated from log_meta.last_seq under a row lock inside the appending
-- transaction, so offsets are gapless and commit in order across every node.
CREATE TABLE log_meta (
    id             INTEGER PRIMARY KEY CHECK (id = 1),
    epoch          TEXT    NOT NULL,
    last_seq       BIGINT  NOT NULL,
    pruned_through BIGINT  NOT NULL
);

CREATE TABLE events (
    seq          BIGINT PRIMARY KEY,
    event        TEXT   NOT NULL,
    payload      TEXT   NOT NULL,
    rooms        TEXT   NOT NULL,
    except_rooms TEXT,
    created_at   BIGINT NOT NULL
);
CREATE INDEX events_created_at ON events (created_at);

CREATE TABLE event_rooms (
    room TEXT   NOT NULL,
    seq  BIGINT NOT NULL,
    PRIMARY KEY (room, seq)
);
CREATE INDEX event_rooms_seq ON event_rooms (seq);

CREATE TABLE idempotency (
    key        TEXT   PRIMARY KEY,
    seq        BIGINT NOT NULL,
    rooms      TEXT   NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE offline_users (
    user_id    TEXT   PRIMARY KEY,
    since_seq  BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
