-- The durable event log: every emitted event, in offset order.
-- `seq` is the offset's position; it is allocated from log_meta.last_seq inside the
-- appending transaction, so offsets are gapless and visible in order.
CREATE TABLE log_meta (
    id             INTEGER PRIMARY KEY CHECK (id = 1),
    epoch          TEXT    NOT NULL,
    last_seq       INTEGER NOT NULL,
    pruned_through INTEGER NOT NULL
);

CREATE TABLE events (
    seq          INTEGER PRIMARY KEY,
    event        TEXT    NOT NULL,
    payload      TEXT    NOT NULL,   -- the envelope clients receive, as JSON
    rooms        TEXT    NOT NULL,   -- JSON array of target rooms
    except_rooms TEXT,               -- JSON array, or NULL
    created_at   INTEGER NOT NULL    -- unix milliseconds
);
CREATE INDEX events_created_at ON events (created_at);

-- One row per (room, event): replay reads a socket's rooms through this index.
CREATE TABLE event_rooms (
    room TEXT    NOT NULL,
    seq  INTEGER NOT NULL,
    PRIMARY KEY (room, seq)
) WITHOUT ROWID;
CREATE INDEX event_rooms_seq ON event_rooms (seq);

-- Idempotency keys of controller emits: a retry returns the first receipt.
CREATE TABLE idempotency (
    key        TEXT    PRIMARY KEY,
    seq        INTEGER NOT NULL,
    rooms      TEXT    NOT NULL,
    created_at INTEGER NOT NULL
);

-- Users with no connection anywhere, and the log position when they left:
-- events to user:{id} after it are delivered on their next connection.
CREATE TABLE offline_users (
    user_id    TEXT    PRIMARY KEY,
    since_seq  INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
