#!/usr/bin/env python3
"""Builds livehub's OpenAPI 3.1 document (src/http/openapi.json) from the handlers' rules."""
import json
import sys

# Run from anywhere: `python3 scripts/openapi/gen.py` rewrites src/http/openapi.json;
# a test in src/http/mod.rs fails when a route is served but not described.
OUT = sys.argv[1] if len(sys.argv) > 1 else str(
    __import__("pathlib").Path(__file__).resolve().parents[2] / "src/http/openapi.json"
)

REF = lambda name: {"$ref": f"#/components/schemas/{name}"}
RESP = lambda name: {"$ref": f"#/components/responses/{name}"}

# ---------------------------------------------------------------- grammar bits
ID = "[A-Za-z0-9_.@-]"  # one room-id character (src/rooms.rs is_room_byte minus ':')
ID_NOU = "[-.0-9@A-Za-z]"  # an id character without '_' (seed 001's user_a_b names)
ENTITY_PREFIXES = ["user", "branch", "channel", "order", "shipment", "quote", "support", "equipment", "warehouse"]
ROOM_BODY = (
    "(?:" + "|".join(ENTITY_PREFIXES) + f"):{ID}+"
    f"|role:{ID}+(?::{ID}+)?"
    # dm:{a}:{b} needs a < b (byte order), which a regular expression cannot say in
    # general: this is the subset whose first characters already order them.
    f"|dm:[-.0-9@A-Z]{ID}*:[_a-z]{ID}*"
)
ROOM_PATTERN = f"^(?:{ROOM_BODY})$"
SEED_ROOM_PATTERN = (
    f"^(?:{ROOM_BODY}"
    f"|(?:order|quote|support|shipment|equipment|warehouse|channel)_{ID}+"
    f"|user_(?:[-.0-9@A-Z]{ID_NOU}*_[a-z]{ID_NOU}*|[a-z]{ID_NOU}*_[-.0-9@A-Z]{ID_NOU}*)"
    ")$"
)
INT64_MIN = -9223372036854775808
INT64_MAX = 9223372036854775807
UINT64_MAX = 18446744073709551615

ROOM_DESC = (
    "A room name: at most 200 bytes of `[A-Za-z0-9:_.@-]`, one of `user:{id}`, `branch:{id}`, `role:{role}`, "
    "`role:{role}:{branch}`, `order:` `shipment:` `quote:` `support:` `equipment:` `warehouse:{id}`, "
    "`channel:{name}`, `dm:{a}:{b}` (a < b in byte order); each id a non-empty run of `[A-Za-z0-9_.@-]`. "
    "Anything else is 400 `bad_request`. The pattern states the grammar exactly except for `dm:` rooms, of which "
    "it lists only those whose two ids already differ in their first character (`a < b` is not a regular language); "
    "every `dm:{a}:{b}` with `a < b` is accepted."
)

ERROR_CODES = ["bad_request", "unauthorized", "forbidden", "not_found", "rate_limited", "too_large", "internal"]
STATUS_CODE = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 413: "too_large",
               429: "rate_limited", 503: "internal"}

EVENT_NAME_PATTERN = "^[A-Za-z][A-Za-z0-9:_.-]{0,99}$"
RESERVED = [
    # Socket.IO (src/events.rs RESERVED_SOCKETIO)
    "connect", "connect_error", "connect_timeout", "connecting", "disconnect", "disconnecting", "error", "message",
    "newListener", "removeListener", "reconnect", "reconnect_attempt", "reconnect_error", "reconnect_failed",
    "reconnecting", "ping", "pong",
    # livehub's own (RESERVED_LIVEHUB)
    "user:viewing", "user:left", "user:disconnected", "viewers:count", "typing", "presence", "chat:message",
    "chat:read", "auth:expired", "replay:reset",
]
SHIPMENT_EVENTS = ["shipment:updated", "shipment:rejected", "document:uploaded", "inspection:status_changed"]
ORDER_EVENTS = ["order:created", "order:status_changed", "order:priority_changed", "order:assigned",
                "order:note_added", "order:completed"]
MACHINE_EVENTS = ["machine:status_changed", "machine:order_started", "machine:order_paused",
                  "machine:order_resumed", "machine:order_completed", "machine:error"]
OPERATOR_EVENTS = ["operator:logged_in", "operator:logged_out", "operator:assigned"]
BRANCH_DEFAULT_EVENTS = ["dashboard:refresh", "analytics:updated", "report:generated"]
SEVERITIES = ["info", "success", "warning", "error"]


def safe_id(max_len, desc=None):
    s = {"type": "string", "pattern": f"^{ID}+$", "maxLength": max_len}
    if desc:
        s["description"] = desc
    return s


INT_ID = {"type": "integer", "minimum": INT64_MIN, "maximum": UINT64_MAX}


def safe_id_or_int(max_len):
    return {"anyOf": [safe_id(max_len), INT_ID]}


NONBLANK = {"type": "string", "pattern": "\\S"}  # Rust `!s.trim().is_empty()`
NULL = {"type": "null"}
non_null = {"not": NULL}
ROOM = REF("RoomName")
ROOMS_STRICT = {"anyOf": [ROOM, {"type": "array", "items": ROOM}, NULL]}


def present(name, schema):
    return {"required": [name], "properties": {name: schema}}


# ---------------------------------------------------------------- schemas
schemas = {}

schemas["ErrorCode"] = {
    "type": "string",
    "enum": ERROR_CODES,
    "description": "400 bad_request, 401 unauthorized, 403 forbidden, 404 not_found, 413 too_large, "
                   "429 rate_limited, 503 internal (src/error.rs ErrorCode::http_status).",
}
schemas["Error"] = {
    "type": "object",
    "description": "Every refusal of the /api/v1 routes, of the router itself (404, 405), of the dev routes "
                   "and of the plain WebSocket upgrade: "
                   "`{ ok: false, error: { code, message } }`.",
    "required": ["ok", "error"],
    "properties": {
        "ok": {"const": False},
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {"code": REF("ErrorCode"), "message": {"type": "string", "minLength": 1}},
        },
    },
}
schemas["SeedError"] = {
    "type": "object",
    "description": "Seed 001's error envelope, used by the /ws/* REST routes: "
                   "`{ status: \"error\", error: { code, message } }` (same codes and statuses as `Error`).",
    "required": ["status", "error"],
    "properties": {
        "status": {"const": "error"},
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {"code": REF("ErrorCode"), "message": {"type": "string", "minLength": 1}},
        },
    },
}
schemas["RoomName"] = {"type": "string", "maxLength": 200, "pattern": ROOM_PATTERN, "description": ROOM_DESC,
                       "examples": ["order:123", "channel:general", "role:manager:north"]}
schemas["SeedRoomName"] = {
    "type": "string",
    "maxLength": 200,
    "pattern": SEED_ROOM_PATTERN,
    "description": "A room as seed 001's frontend names it: `order_123` for `order:123` (also `quote_`, `support_`, "
                   "`shipment_`, `equipment_`, `warehouse_`, `channel_`), `user_{a}_{b}` for `dm:{a}:{b}` (a ≠ b, "
                   "ids without `_`, either order), or any livehub room name (see `RoomName`). The pattern lists "
                   "the `user_{a}_{b}` and `dm:` names whose ids differ in their first character; every name "
                   "with distinct ids is accepted.",
    "examples": ["order_123", "user_ana_ben", "channel:general"],
}
schemas["EventName"] = {
    "type": "string",
    "pattern": EVENT_NAME_PATTERN,
    "not": {"enum": RESERVED},
    "description": "`^[A-Za-z][A-Za-z0-9:_.-]{0,99}$`, not a name Socket.IO reserves (connect, disconnect, error, "
                   "message, ping, …) nor one livehub emits itself (user:viewing, typing, presence, chat:message, "
                   "chat:read, auth:expired, replay:reset, …).",
}
schemas["IdValue"] = {
    "description": "An id: a non-empty string or an integer (never 1.5).",
    "anyOf": [{"type": "string", "minLength": 1}, INT_ID],
}

# -- the emit request ------------------------------------------------------
# Written as two `anyOf`s (one keyed by the event name, one for broadcast vs. named targets) rather than
# `if`/`then` per rule: schema canonicalizers (jsonschema-rs, used by Schemathesis) multiply `if`s out.
idv = REF("IdValue")
EXPLICIT = [
    present("broadcast", {"const": True}),
    present("rooms", {"anyOf": [{"type": "string"}, {"type": "array", "minItems": 1}]}),
    present("users", {"anyOf": [{"type": "string"}, {"type": "array", "minItems": 1}]}),
    present("user", non_null),
    present("branch", non_null),
    present("role", non_null),
]
# BranchIfGiven: a `branchId` that is an id must name a room; any other value is ignored.
BRANCH_IF_GIVEN = {"anyOf": [{"not": REF("IdValue")}, safe_id_or_int(193)]}


def with_data(required=(), **props):
    d = {"type": "object", "properties": props}
    if required:
        d["required"] = list(required)
    return {"required": ["data"], "properties": {"data": d}}


def event_rule(events, data_rule=None):
    """Events `events` and the catalog's required data."""
    cond = {"const": events[0]} if len(events) == 1 else {"enum": events}
    rule = {"required": ["event"], "properties": {"event": cond}}
    if data_rule:
        rule["required"] = ["event", "data"]
        rule["properties"]["data"] = data_rule["properties"]["data"]
    return rule


CATALOG_EVENTS = (SHIPMENT_EVENTS + ["warehouse:capacity_updated"] + ORDER_EVENTS + MACHINE_EVENTS + OPERATOR_EVENTS
                  + ["equipment_update", "session_update", "sample_update"] + BRANCH_DEFAULT_EVENTS
                  + ["notification", "upload_progress", "notification:broadcast"])
NO_REQUIRED_DATA = ["equipment_update", "session_update", "sample_update"] + BRANCH_DEFAULT_EVENTS
catalog_rules = [
    event_rule(SHIPMENT_EVENTS, with_data(["shipmentId"], shipmentId=idv)),
    event_rule(["warehouse:capacity_updated"], with_data(["warehouseId"], warehouseId=idv)),
    event_rule(ORDER_EVENTS, with_data(["orderId"], orderId=idv)),
    event_rule(MACHINE_EVENTS, with_data(["machineId"], machineId=idv)),
    event_rule(OPERATOR_EVENTS, with_data(["operatorId"], operatorId=idv)),
    event_rule(["notification"], with_data(["title", "message", "severity"], title=NONBLANK, message=NONBLANK,
                                           severity={"enum": SEVERITIES})),
    event_rule(["upload_progress"], with_data(["uploadId", "progress"], uploadId=idv,
                                              progress={"type": "number", "minimum": 0, "maximum": 100})),
    event_rule(["notification:broadcast"], with_data(["message"], message=NONBLANK)),
    # The catalog's events without required data, and every event outside the catalog.
    {"properties": {"event": {"anyOf": [{"enum": NO_REQUIRED_DATA}, {"not": {"enum": CATALOG_EVENTS}}]}}},
]
# The target: explicit, or else the catalog's default rooms, which must exist for this event and data.
target_rules = EXPLICIT + [
    event_rule(SHIPMENT_EVENTS, with_data(shipmentId=safe_id_or_int(191))),
    event_rule(["warehouse:capacity_updated"], with_data(warehouseId=safe_id_or_int(190), branchId=BRANCH_IF_GIVEN)),
    event_rule(ORDER_EVENTS, with_data(orderId=safe_id_or_int(194), branchId=BRANCH_IF_GIVEN)),
    event_rule(MACHINE_EVENTS + OPERATOR_EVENTS + BRANCH_DEFAULT_EVENTS,
               with_data(["branchId"], branchId=safe_id_or_int(193))),
    event_rule(["notification:broadcast"]),
]

emit_props = {
    "event": REF("EventName"),
    "data": {
        "type": ["object", "null"],
        "description": "The event's payload (absent or null: `{}`); its JSON must fit MAX_PAYLOAD_BYTES "
                       "(default 131072), else 413 `too_large`. Clients receive it with `type`, `timestamp` "
                       "(unless `data` has a string or number `timestamp`) and `offset` added.",
    },
    "rooms": {
        "description": "A room name or a list of them (see `RoomName`). Items must be room names unless "
                       "`broadcast` is true, which ignores them.",
        "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}, NULL],
    },
    "user": {
        "description": "One user id (a non-empty string or an integer) → `user:{id}`; the id must be room-safe "
                       "unless `broadcast` is true.",
        "anyOf": [{"type": "string", "minLength": 1}, INT_ID, NULL],
    },
    "users": {
        "description": "User ids (strings or integers), or one id as a string → `user:{id}` each.",
        "anyOf": [{"type": "string"}, {"type": "array", "items": {"anyOf": [{"type": "string"}, INT_ID]}}, NULL],
    },
    "branch": {
        "description": "→ `branch:{branch}`, or with `role`, `role:{role}:{branch}`.",
        "anyOf": [{"type": "string", "minLength": 1}, INT_ID, NULL],
    },
    "role": {
        "description": "→ `role:{role}`, or with `branch`, `role:{role}:{branch}`.",
        "anyOf": [{"type": "string", "minLength": 1}, INT_ID, NULL],
    },
    "broadcast": {"description": "true: every connected socket (the other targets are then ignored).",
                  "type": ["boolean", "null"]},
    "except": {"description": "Rooms whose sockets must not receive the event (room names, always checked).",
               "anyOf": [ROOM, {"type": "array", "items": ROOM}, NULL]},
}
# Unless `broadcast` is true, every target must name a room.
ROLE_MAYBE_PAIR = {"type": "string", "pattern": f"^{ID}+(?::{ID}+)?$", "maxLength": 195}
named_targets = {
    "properties": {
        "broadcast": {"enum": [False, None]},
        "rooms": ROOMS_STRICT,
        "user": {"anyOf": [safe_id(195), INT_ID, NULL]},
        "users": {"anyOf": [safe_id(195), {"type": "array", "items": {"anyOf": [safe_id(195), INT_ID]}}, NULL]},
    },
    "anyOf": [
        # no branch: `role:{role}` (the role may itself be `{a}:{b}`, making `role:{a}:{b}`)
        {"properties": {"branch": NULL, "role": {"anyOf": [ROLE_MAYBE_PAIR, INT_ID, NULL]}}},
        {"required": ["branch"],
         "properties": {"branch": {"anyOf": [safe_id(193), INT_ID]}, "role": {"anyOf": [safe_id(193), INT_ID, NULL]}}},
    ],
}
emit_all_of = [
    {"anyOf": [present("broadcast", {"const": True}), named_targets]},
    {"anyOf": catalog_rules},
    {"anyOf": target_rules},
]
EMIT_DESC = (
    "One event for `POST /api/v1/emit` (and each item of a batch). Validation, in order (all 400 `bad_request` "
    "unless noted): the body is a JSON object; `event` is a string matching `EventName`; `data` is an object or "
    "null (bigger than MAX_PAYLOAD_BYTES: 413 `too_large`); `rooms`/`users`/`except` are a string or a list "
    "(`users` items may be integers); `user`/`branch`/`role` are non-empty strings or integers; `broadcast` is a "
    "boolean; the event catalog's required data fields (e.g. `shipment:*` needs `data.shipmentId`, `notification` "
    "needs `title`, `message`, `severity`); then the target: with `broadcast: true` everyone, else the rooms "
    "named by `rooms`, `user(s)`, `branch`/`role` (each must be a valid room name), else the catalog's default "
    "rooms (`shipment:{shipmentId}`, `order:{orderId}` + `branch:{branchId}`, …; events without a default need "
    "an explicit target). At most 100 distinct rooms per emit, and `role:{role}:{branch}` at most 200 bytes "
    "(neither limit is expressible in this schema). `except` rooms must be valid room names."
)
schemas["Emit"] = {
    "type": "object",
    "description": EMIT_DESC,
    "required": ["event"],
    "properties": emit_props,
    "allOf": emit_all_of,
    "examples": [
        {"event": "shipment:updated", "data": {"shipmentId": "SH1", "status": "in_transit"}},
        {"event": "order:status_changed", "data": {"orderId": 42, "branchId": "north", "status": "done"}},
        {"event": "notification", "data": {"title": "Heads up", "message": "Dock 3 is closed",
                                           "severity": "warning"}, "user": "ana"},
        {"event": "custom.thing", "data": {}, "rooms": ["channel:ops"], "except": ["user:ana"]},
    ],
}
schemas["BatchEmit"] = {
    "description": "A batch item: an `Emit` plus an optional `idempotencyKey` (1-200 bytes; a repeat within "
                   "10 minutes returns the first receipt with `duplicate: true`).",
    "allOf": [
        REF("Emit"),
        {"properties": {"idempotencyKey": {"type": ["string", "null"], "minLength": 1, "maxLength": 200}}},
    ],
}
schemas["EmitBatch"] = {
    "type": "object",
    "required": ["events"],
    "properties": {
        "events": {
            "type": "array",
            "minItems": 1,
            "description": "1 to 1000 events (more: 413 `too_large`). Each item should be a `BatchEmit`, but an "
                           "item of any shape is accepted here: an invalid item gets an `Error` in its place in "
                           "`results` and does not affect the others (so items are not constrained by this "
                           "schema). The whole body may be 8 × MAX_PAYLOAD_BYTES.",
            "items": {"anyOf": [REF("BatchEmit"), {}]},
        }
    },
    "examples": [{"events": [
        {"event": "order:created", "data": {"orderId": "O1"}, "idempotencyKey": "order-O1-created"},
        {"event": "custom.thing", "data": {"n": 1}, "user": "ana"},
    ]}],
}
schemas["Receipt"] = {
    "type": "object",
    "required": ["ok", "offset", "rooms"],
    "properties": {
        "ok": {"const": True},
        "offset": {"type": "string", "description": "The event's log offset, `{epoch}-{seq:016}`.",
                   "examples": ["k3x9q2ab-0000000000000042"]},
        "rooms": {"type": "array", "items": {"type": "string"},
                  "description": "The rooms it was delivered to (`*` for a broadcast)."},
        "duplicate": {"const": True, "description": "Present (true) when an earlier emit had this idempotency key; "
                                                    "nothing was emitted again."},
    },
}
schemas["BatchResult"] = {
    "type": "object",
    "required": ["ok", "results"],
    "properties": {
        "ok": {"const": True},
        "results": {"type": "array", "description": "One per event, in order.",
                    "items": {"oneOf": [REF("Receipt"), REF("Error")]}},
    },
}
schemas["Event"] = {
    "type": "object",
    "description": "A logged event as clients receive it: the emitted `data` plus `type`, `timestamp` and `offset`.",
    "required": ["type", "offset"],
    "properties": {"type": {"type": "string"}, "offset": {"type": "string"},
                   "timestamp": {"type": ["string", "number"]}},
}
schemas["EventPage"] = {
    "type": "object",
    "required": ["ok", "room", "events", "latestOffset"],
    "properties": {
        "ok": {"const": True},
        "room": {"type": "string"},
        "events": {"type": "array", "items": REF("Event"), "description": "Oldest first; empty when the event log is off."},
        "latestOffset": {"type": "string", "description": "The log's newest offset: continue from it after a reset."},
    },
}
schemas["Viewer"] = {
    "type": "object",
    "required": ["userId", "name", "socketId"],
    "properties": {"userId": {"type": "string"}, "name": {"type": "string"}, "socketId": {"type": "string"}},
}
schemas["Presence"] = {
    "type": "object",
    "required": ["ok", "room", "viewersCount", "viewers"],
    "properties": {
        "ok": {"const": True},
        "room": {"type": "string"},
        "viewersCount": {"type": "integer", "minimum": 0, "description": "Distinct users viewing, in all."},
        "viewers": {"type": "array", "items": REF("Viewer"), "description": "Up to `limit` of them."},
    },
}
schemas["ReadBy"] = {
    "type": "object",
    "required": ["userId", "readAt"],
    "properties": {"userId": {"type": "string"}, "readAt": {"type": "string", "format": "date-time"}},
}
schemas["ChatMessage"] = {
    "type": "object",
    "required": ["id", "room", "senderId", "senderName", "content", "messageType", "clientId", "createdAt", "readBy"],
    "properties": {
        "id": {"type": "integer"},
        "room": {"type": "string"},
        "senderId": {"type": "string"},
        "senderName": {"type": ["string", "null"]},
        "content": {"type": ["string", "null"], "description": "null when sealed content cannot be opened."},
        "messageType": {"type": "string", "examples": ["text", "file", "image", "system"]},
        "clientId": {"type": ["string", "null"]},
        "createdAt": {"type": "string", "format": "date-time"},
        "readBy": {"type": "array", "items": REF("ReadBy")},
    },
}
schemas["History"] = {
    "type": "object",
    "required": ["ok", "room", "messages"],
    "properties": {"ok": {"const": True}, "room": {"type": "string"},
                   "messages": {"type": "array", "items": REF("ChatMessage"), "description": "Newest last."}},
}
schemas["ReadRequest"] = {
    "type": "object",
    "required": ["messageIds"],
    "properties": {"messageIds": REF("MessageIds")},
}
schemas["MessageIds"] = {
    "type": "array",
    "minItems": 1,
    "maxItems": 200,
    "description": "1-200 message ids: integers or strings of digits.",
    "items": {"anyOf": [{"type": "integer", "minimum": INT64_MIN, "maximum": INT64_MAX},
                        {"type": "string", "pattern": "^[+-]?0*[0-9]{1,18}$"}]},
}
schemas["ReadReceipt"] = {
    "type": "object",
    "required": ["ok", "room", "userId", "messageIds", "readAt"],
    "properties": {
        "ok": {"const": True},
        "room": {"type": "string"},
        "userId": {"type": "string"},
        "messageIds": {"type": "array", "items": {"type": "integer"},
                       "description": "The ids that exist in this room (the others are ignored)."},
        "readAt": {"type": "string", "format": "date-time"},
    },
}
schemas["SearchResult"] = {
    "type": "object",
    "required": ["ok", "messages", "search"],
    "properties": {
        "ok": {"const": True},
        "messages": {"type": "array", "items": REF("ChatMessage"), "description": "Newest first."},
        "search": {
            "type": "object",
            "required": ["mode", "note"],
            "properties": {"mode": {"enum": ["full-text", "exact-words"]}, "note": {"type": "string"}},
        },
    },
}
schemas["UserDisconnected"] = {
    "type": "object",
    "required": ["ok", "userId"],
    "properties": {"ok": {"const": True}, "userId": {"type": "string"}},
}
schemas["Health"] = {
    "type": "object",
    "required": ["status", "ready", "connections", "users", "rooms", "node", "uptimeSeconds", "eventLog", "offset"],
    "properties": {
        "status": {"enum": ["OK", "UNAVAILABLE"]},
        "ready": {"type": "boolean"},
        "connections": {"type": "integer", "minimum": 0, "description": "This node's connections of every kind."},
        "users": {"type": "integer", "minimum": 0, "description": "Users connected anywhere (cluster-wide with Redis)."},
        "rooms": {"type": "integer", "minimum": 0, "description": "Rooms with a socket on this node."},
        "node": {"type": "string"},
        "uptimeSeconds": {"type": "integer", "minimum": 0},
        "eventLog": {"enum": ["on", "off"]},
        "offset": {"type": "string", "description": "The newest log offset."},
        "cluster": {
            "type": "object",
            "description": "Only with Redis (clustered).",
            "required": ["ready", "redis", "nodes"],
            "properties": {"ready": {"type": "boolean"}, "redis": {"enum": ["up", "down"]},
                           "nodes": {"type": "integer", "minimum": 0}},
        },
    },
}
schemas["DemoUser"] = {
    "type": "object",
    "required": ["id", "name", "branchId", "role"],
    "properties": {"id": {"type": "string"}, "name": {"type": "string"}, "branchId": {"type": "string"},
                   "role": {"type": "string"}},
}
schemas["DevToken"] = {
    "type": "object",
    "required": ["ok", "token", "user"],
    "properties": {"ok": {"const": True}, "token": {"type": "string", "description": "HS256 JWT, valid 12 hours."},
                   "user": REF("DemoUser")},
}
schemas["DevConfig"] = {
    "type": "object",
    "required": ["ok", "apiKey", "users"],
    "properties": {"ok": {"const": True}, "apiKey": {"type": "string"},
                   "users": {"type": "array", "items": REF("DemoUser")}},
}

# -- seed 001 (/ws/*) ---------------------------------------------------------


def seed_success(data_schema):
    return {"type": "object", "required": ["status", "data"],
            "properties": {"status": {"const": "success"}, "data": data_schema}}


schemas["SeedMessage"] = {
    "type": "object",
    "required": ["id", "room", "sender_id", "sender_name", "content", "message_type", "client_id", "created_at",
                 "read_by"],
    "properties": {
        "id": {"type": "integer"},
        "room": {"type": "string", "description": "As the request named it (else seed 001's name for it)."},
        "sender_id": {"type": "string"},
        "sender_name": {"type": ["string", "null"]},
        "content": {"type": ["string", "null"]},
        "message_type": {"type": "string"},
        "client_id": {"type": ["string", "null"]},
        "created_at": {"type": "string", "format": "date-time"},
        "read_by": {"type": "array", "items": {
            "type": "object", "required": ["user_id", "read_at"],
            "properties": {"user_id": {"type": "string"}, "read_at": {"type": "string", "format": "date-time"}}}},
    },
}
schemas["SeedRooms"] = seed_success({"type": "object", "required": ["rooms"], "properties": {
    "rooms": {"type": "array", "items": {"type": "string"}, "description": "Sorted, in seed 001's names where they have one."}}})
schemas["SeedHistory"] = seed_success({"type": "object", "required": ["room", "messages"], "properties": {
    "room": {"type": "string"}, "messages": {"type": "array", "items": REF("SeedMessage")}}})
schemas["SeedMarkRead"] = seed_success({"type": "object", "required": ["room", "marked"], "properties": {
    "room": {"type": "string"}, "marked": {"type": "integer", "minimum": 0}}})
schemas["SeedSearch"] = seed_success({"type": "object", "required": ["messages"], "properties": {
    "messages": {"type": "array", "items": REF("SeedMessage")}}})
schemas["SeedMarkReadRequest"] = {
    "type": "object",
    "required": ["message_ids"],
    "properties": {"message_ids": REF("MessageIds")},
}
schemas["SeedHealth"] = {
    "type": "object",
    "required": ["health_status", "health_score", "redis_connected", "connection_stats"],
    "properties": {
        "health_status": {"enum": ["healthy", "degraded"]},
        "health_score": {"enum": [0, 50, 100]},
        "redis_connected": {"type": "boolean"},
        "connection_stats": {
            "type": "object",
            "required": ["total_connections", "unique_users", "total_rooms"],
            "properties": {"total_connections": {"type": "integer", "minimum": 0},
                           "unique_users": {"type": "integer", "minimum": 0},
                           "total_rooms": {"type": "integer", "minimum": 0}},
        },
    },
}

# ---------------------------------------------------------------- responses
JSON = "application/json"


def error_response(status, desc, schema="Error", headers=None):
    code = STATUS_CODE[status]
    body = {"allOf": [REF(schema), {"properties": {"error": {"properties": {"code": {"const": code}}}}}]}
    r = {"description": desc, "content": {JSON: {"schema": body}}}
    if headers:
        r["headers"] = headers
    return r


www = {"WWW-Authenticate": {"description": "Always `Bearer`.", "required": True,
                            "schema": {"type": "string", "const": "Bearer"}}}
responses = {
    "BadRequest": error_response(400, "`bad_request`: malformed input (body not JSON or not an object, wrong "
                                      "types, bad names, out-of-range parameters)."),
    "Unauthorized": error_response(401, "`unauthorized`: no `Authorization: Bearer …` header, or a key/token "
                                        "that is neither a configured API key nor a valid user token.", headers=www),
    "Forbidden": error_response(403, "`forbidden`: a valid credential that may not do this (a user token on a "
                                     "controller route, a room the user may not join)."),
    "NotFound": error_response(404, "`not_found`: nothing matches (also any path under /api/ that is not a "
                                    "route)."),
    "TooLarge": error_response(413, "`too_large`: the body is larger than MAX_PAYLOAD_BYTES (8× for a batch), "
                                    "or `data` is."),
    "Unavailable": error_response(503, "`internal`: the database or event log is unavailable (or did not answer "
                                       "within 15 s), or the node is shutting down. Never for bad input."),
    "BadRequestOrRejection": {
        "description": "`bad_request` as for `BadRequest`; or axum's own refusal of the path or query string "
                       "before the handler runs (a repeated query parameter such as `?limit=1&limit=2`, a path "
                       "segment that is not UTF-8 once decoded), which is plain text, not the contract's shape.",
        "content": {
            JSON: {"schema": error_response(400, "")["content"][JSON]["schema"]},
            "text/plain": {"schema": {"type": "string"}},
        },
    },
    "SeedBadRequestOrRejection": {
        "description": "`bad_request` in seed 001's envelope; or axum's plain-text refusal of the path or query "
                       "string (e.g. a repeated query parameter).",
        "content": {
            JSON: {"schema": error_response(400, "", "SeedError")["content"][JSON]["schema"]},
            "text/plain": {"schema": {"type": "string"}},
        },
    },
    "SeedUnauthorized": error_response(401, "`unauthorized`: no or invalid `Authorization: Bearer <user token>` "
                                            "(no WWW-Authenticate header on these routes).", "SeedError"),
    "SeedForbidden": error_response(403, "`forbidden`: an API key (these routes belong to a user), or a room "
                                         "the user may not join.", "SeedError"),
    "SeedTooLarge": error_response(413, "`too_large`: the body is larger than MAX_PAYLOAD_BYTES.", "SeedError"),
    "SeedUnavailable": error_response(503, "`internal`: chat storage is unavailable.", "SeedError"),
    "SeedNotFound": {
        "description": "`not_found` in seed 001's envelope (no such messages); a path that matches no route "
                       "(e.g. an empty room segment) is the router's 404 in the `Error` shape.",
        "content": {JSON: {"schema": {"anyOf": [REF("SeedError"), REF("Error")]}}},
    },
}

# ---------------------------------------------------------------- parameters
EMPTY = {"type": "string", "maxLength": 0}


def int_or_empty(minimum, maximum, desc):
    return {"anyOf": [{"type": "integer", "minimum": minimum, "maximum": maximum}, EMPTY], "description": desc}


parameters = {
    "RoomPath": {"name": "room", "in": "path", "required": True, "schema": ROOM,
                 "description": "The room (see `RoomName`); malformed → 400."},
    "SeedRoomPath": {"name": "room", "in": "path", "required": True, "schema": REF("SeedRoomName"),
                     "description": "The room, in seed 001's naming or livehub's; malformed → 400."},
}

# ---------------------------------------------------------------- operations
def op(op_id, summary, tags, responses_, description=None, security=None, parameters_=None, body=None):
    o = {"operationId": op_id, "summary": summary, "tags": tags}
    if description:
        o["description"] = description
    if parameters_:
        o["parameters"] = parameters_
    if body:
        o["requestBody"] = body
    o["security"] = security if security is not None else []
    o["responses"] = responses_
    return o


def ok(desc, schema, content_type=JSON):
    return {"description": desc, "content": {content_type: {"schema": schema}}}


API_KEY = [{"apiKey": []}]
KEY_OR_USER = [{"apiKey": []}, {"userToken": []}]
USER = [{"userToken": []}]


def json_body(schema_ref, desc):
    return {"required": True, "description": desc, "content": {JSON: {"schema": schema_ref}}}


BODY_NOTE = ("The body is read as JSON whatever its Content-Type (no 415): empty or malformed JSON is 400 "
             "`bad_request`; a body larger than the limit (by Content-Length or as read) is 413 `too_large`. "
             "Credentials are checked before the body.")

paths = {}

paths["/api/v1/emit"] = {"post": op(
    "emit", "Emit one event to rooms, users, a branch/role, or everyone", ["emit"],
    {
        "202": {"description": "Logged (committed) and being delivered.",
                "content": {JSON: {"schema": REF("Receipt")}}},
        "400": RESP("BadRequest"), "401": RESP("Unauthorized"), "403": RESP("Forbidden"),
        "413": RESP("TooLarge"), "503": RESP("Unavailable"),
    },
    description="Controllers only (API key; a valid user token is 403). " + BODY_NOTE + " A 503 after the 15 s "
                "deadline means the event may still be logged: retry with the same Idempotency-Key.",
    security=API_KEY,
    parameters_=[{
        "name": "Idempotency-Key", "in": "header", "required": False,
        "description": "Printable ASCII, 1-200 characters once trimmed. A retry within 10 minutes with the same "
                       "key returns the first receipt (`duplicate: true`) and emits nothing. Non-ASCII or empty: 400.",
        "schema": {"type": "string", "maxLength": 200, "pattern": "^[!-~](?:[ -~]*[!-~])?$"},
    }],
    body=json_body(REF("Emit"), "The event and its target."),
)}

paths["/api/v1/emit/batch"] = {"post": op(
    "emitBatch", "Emit up to 1000 events in one commit, one result per event", ["emit"],
    {
        "202": {"description": "Every valid event logged together, in order; `results[i]` is event i's receipt or "
                               "its refusal.", "content": {JSON: {"schema": REF("BatchResult")}}},
        "400": RESP("BadRequest"), "401": RESP("Unauthorized"), "403": RESP("Forbidden"),
        "413": RESP("TooLarge"), "503": RESP("Unavailable"),
    },
    description="Controllers only. The body must be `{ \"events\": [ … ] }` with 1-1000 items (none: 400; more: "
                "413). Invalid items do not fail the request: each gets its `Error` in `results`. The Idempotency-Key "
                "header is not read here; use each item's `idempotencyKey`. " + BODY_NOTE,
    security=API_KEY,
    body=json_body(REF("EmitBatch"), "The events."),
)}

paths["/api/v1/users/{id}/disconnect"] = {"post": op(
    "disconnectUser", "Close every connection of a user, both kinds, on every node", ["users"],
    {
        "200": ok("Done (also when the user had no connection).", REF("UserDisconnected")),
        "400": RESP("BadRequestOrRejection"), "401": RESP("Unauthorized"), "403": RESP("Forbidden"),
        "404": RESP("NotFound"), "503": RESP("Unavailable"),
    },
    description="Controllers only. No request body is read. Socket.IO clients see `io server disconnect`, plain "
                "WebSocket clients close code 4000. 503 when another node could not be reached.",
    security=API_KEY,
    parameters_=[{"name": "id", "in": "path", "required": True,
                  "description": "The user id; `user:{id}` must be a room name (1-195 characters of "
                                 "`[A-Za-z0-9_.@-]`), else 400.",
                  "schema": safe_id(195)}],
)}

paths["/api/v1/events"] = {"get": op(
    "listEvents", "Read a room's event log after an offset (for clients that poll)", ["rooms"],
    {
        "200": ok("The page, oldest first.", REF("EventPage")),
        "400": RESP("BadRequestOrRejection"), "401": RESP("Unauthorized"), "403": RESP("Forbidden"), "503": RESP("Unavailable"),
    },
    description="An API key reads any room; a user token the rooms the policy lets that user join (else 403).",
    security=KEY_OR_USER,
    parameters_=[
        {"name": "room", "in": "query", "required": True, "schema": ROOM,
         "description": "The room. Missing or malformed → 400."},
        {"name": "after", "in": "query", "required": False,
         "description": "An offset from this log (`{epoch}-{seq}`, as in receipts and events); empty or absent: "
                        "from the start of the retained log. A malformed offset, one of another log (other "
                        "epoch), one beyond the log's end, one older than retention, or any offset while the "
                        "event log is off → 400 `bad_request` naming `latestOffset`.",
         "schema": {"anyOf": [EMPTY, {"type": "string", "pattern": "^[A-Za-z0-9]+-[0-9]{1,18}$"}]}},
        {"name": "limit", "in": "query", "required": False,
         "description": "1-1000, default 100. Out of range, not a number, or empty → 400.",
         "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}},
    ],
)}

paths["/api/v1/rooms/{room}/presence"] = {"get": op(
    "getPresence", "Who is viewing a room", ["rooms"],
    {
        "200": ok("Viewers (200 with 0 when nobody).", REF("Presence")),
        "400": RESP("BadRequestOrRejection"), "401": RESP("Unauthorized"), "403": RESP("Forbidden"), "404": RESP("NotFound"),
    },
    description="API key or a user who may join the room.",
    security=KEY_OR_USER,
    parameters_=[
        {"$ref": "#/components/parameters/RoomPath"},
        {"name": "limit", "in": "query", "required": False,
         "schema": int_or_empty(0, 10000, "How many viewers to list: 0-10000, default 1000 (empty: default). "
                                          "Out of range or not an integer → 400.")},
    ],
)}

paths["/api/v1/rooms/{room}/messages"] = {"get": op(
    "getHistory", "A page of a room's chat history, newest last", ["chat"],
    {
        "200": ok("The page.", REF("History")),
        "400": RESP("BadRequestOrRejection"), "401": RESP("Unauthorized"), "403": RESP("Forbidden"), "404": RESP("NotFound"),
        "503": RESP("Unavailable"),
    },
    description="API key or a user who may join the room.",
    security=KEY_OR_USER,
    parameters_=[
        {"$ref": "#/components/parameters/RoomPath"},
        {"name": "before", "in": "query", "required": False,
         "schema": int_or_empty(INT64_MIN, INT64_MAX, "Only messages older than this message id (empty: the "
                                                      "newest). Not an integer → 400.")},
        {"name": "limit", "in": "query", "required": False,
         "schema": int_or_empty(1, 200, "1-200, default 50 (empty: default). Out of range or not an integer → 400.")},
    ],
)}

paths["/api/v1/rooms/{room}/read"] = {"post": op(
    "markRead", "Mark messages of a room as read by the calling user", ["chat"],
    {
        "200": ok("The receipt, also sent to the room as `chat:read`.", REF("ReadReceipt")),
        "400": RESP("BadRequestOrRejection"), "401": RESP("Unauthorized"), "403": RESP("Forbidden"),
        "404": {"description": "`not_found`: none of these messages are in this room (or the path matches no route).",
                "content": {JSON: {"schema": REF("Error")}}},
        "413": RESP("TooLarge"), "503": RESP("Unavailable"),
    },
    description="A user token of a user who may join the room; an API key is 403 (receipts belong to a user). "
                + BODY_NOTE,
    security=KEY_OR_USER,
    parameters_=[{"$ref": "#/components/parameters/RoomPath"}],
    body=json_body(REF("ReadRequest"), "`{ \"messageIds\": [...] }`"),
)}

def _alnum_class():
    # Rust's char::is_alphanumeric (Alphabetic, Nd, Nl, No), enumerated into alnum-ranges.txt
    # (one "first last" code point pair per line): \\p{…} escapes are not understood by every JSON Schema tool (Python's re among them).
    out = []
    ranges = __import__("pathlib").Path(__file__).with_name("alnum-ranges.txt")
    for line in open(ranges):
        a, b = map(int, line.split())
        one = lambda c: ("\\" + chr(c)) if chr(c) in "\\]^-[" else chr(c)
        out.append(one(a) if a == b else one(a) + ("-" if b > a + 1 else "") + one(b))
    return "[" + "".join(out) + "]"


schemas["SearchText"] = {
    "type": "string",
    "maxLength": 500,
    "pattern": _alnum_class(),
    "description": "Search words: at most 500 bytes (UTF-8; the schema can only count characters) containing at "
                   "least one letter or digit (Rust `char::is_alphanumeric`; the pattern lists those characters). "
                   "Words are the runs of letters and digits; the first 16 count, each up to 64 characters.",
}
SEARCH_Q = REF("SearchText")
paths["/api/v1/search"] = {"get": op(
    "searchMessages", "Search chat messages the caller may see, newest first", ["chat"],
    {
        "200": ok("Matches.", REF("SearchResult")),
        "400": RESP("BadRequestOrRejection"), "401": RESP("Unauthorized"), "403": RESP("Forbidden"), "503": RESP("Unavailable"),
    },
    description="API key (every room) or a user token (the rooms that user may join). Words match as prefixes, "
                "case- and accent-insensitively; with ENCRYPTION_KEY whole words only (`search.mode`).",
    security=KEY_OR_USER,
    parameters_=[
        {"name": "q", "in": "query", "required": True,
         "description": "The words (at most 500 bytes, at least one letter or digit; the first 16 words count). "
                        "Missing, blank, longer, or without a word → 400.",
         "schema": SEARCH_Q},
        {"name": "room", "in": "query", "required": False,
         "description": "Only this room (empty: every room the caller may see). Malformed → 400; a room the user "
                        "may not join → 403.",
         "schema": {"anyOf": [ROOM, EMPTY]}},
        {"name": "limit", "in": "query", "required": False,
         "schema": int_or_empty(1, 200, "1-200, default 50 (empty: default). Out of range or not an integer → 400.")},
    ],
)}

paths["/api/v1/openapi.json"] = {"get": op(
    "getOpenApi", "This OpenAPI document", ["ops"],
    {"200": ok("The OpenAPI 3.1 document.", {"type": "object", "required": ["openapi", "info", "paths"]})},
    description="No authentication.",
    security=[],
)}

paths["/health"] = {"get": op(
    "getHealth", "Liveness/readiness with this node's counts", ["ops"],
    {
        "200": ok("Ready.", REF("Health")),
        "503": ok("Starting or draining (`status: UNAVAILABLE`, `ready: false`), same body.", REF("Health")),
    },
    description="No authentication. `connections` and `rooms` are this node's; `users` is cluster-wide with Redis; "
                "`cluster` appears only when clustered (`cluster.ready` false while Redis is unreachable).",
    security=[],
)}

paths["/metrics"] = {"get": op(
    "getMetrics", "Prometheus metrics", ["ops"],
    {"200": {"description": "Prometheus text exposition format 0.0.4 (`text/plain; version=0.0.4; charset=utf-8`).",
             "content": {"text/plain": {"schema": {"type": "string"}}}}},
    description="No authentication. Every series is registered at start-up (see docs/operations.md).",
    security=[],
)}

# -- seed 001 ---------------------------------------------------------------
SEED_NOTE = ("Seed 001's route, in its envelope (`{\"status\":\"success\",\"data\":…}`, errors as `SeedError`). "
             "Only a user token: an API key is 403.")
paths["/ws/rooms"] = {"get": op(
    "seedListRooms", "The caller's rooms (live connections on this node + chat rooms written in)", ["seed-001"],
    {"200": ok("The rooms.", REF("SeedRooms")), "401": RESP("SeedUnauthorized"), "403": RESP("SeedForbidden"),
     "503": RESP("SeedUnavailable")},
    description=SEED_NOTE, security=USER,
)}
paths["/ws/rooms/{room}/messages"] = {"get": op(
    "seedGetHistory", "A page of chat history, newest last, in seed 001's shape", ["seed-001"],
    {"200": ok("The page; `data.room` and each message's `room` as the request named the room.", REF("SeedHistory")),
     "400": RESP("SeedBadRequestOrRejection"), "401": RESP("SeedUnauthorized"), "403": RESP("SeedForbidden"),
     "404": RESP("SeedNotFound"), "503": RESP("SeedUnavailable")},
    description=SEED_NOTE + " `offset` skips that many of the newest messages; `limit` + `offset` is capped at 200.",
    security=USER,
    parameters_=[
        {"$ref": "#/components/parameters/SeedRoomPath"},
        {"name": "limit", "in": "query", "required": False,
         "schema": int_or_empty(0, 200, "0-200 (0 counts as 1), default 50 (empty: default). Otherwise 400.")},
        {"name": "offset", "in": "query", "required": False,
         "schema": int_or_empty(0, 1000000, "How many of the newest messages to skip: 0-1000000, default 0 (empty: default). Otherwise 400.")},
    ],
)}
paths["/ws/rooms/{room}/mark-read"] = {"post": op(
    "seedMarkRead", "Mark messages as read by the calling user, in seed 001's shape", ["seed-001"],
    {"200": ok("How many of the ids were in the room.", REF("SeedMarkRead")),
     "400": RESP("SeedBadRequestOrRejection"), "401": RESP("SeedUnauthorized"), "403": RESP("SeedForbidden"),
     "404": RESP("SeedNotFound"), "413": RESP("SeedTooLarge"), "503": RESP("SeedUnavailable")},
    description=SEED_NOTE + " Checked in order: credentials, room, body. " + BODY_NOTE.replace(
        "Credentials are checked before the body.", "").strip() + " None of the ids in the room → 404.",
    security=USER,
    parameters_=[{"$ref": "#/components/parameters/SeedRoomPath"}],
    body=json_body(REF("SeedMarkReadRequest"), "`{ \"message_ids\": [...] }`"),
)}
paths["/ws/search"] = {"get": op(
    "seedSearch", "Search chat messages the user may see (up to 50, newest first)", ["seed-001"],
    {"200": ok("Matches.", REF("SeedSearch")), "400": RESP("SeedBadRequestOrRejection"), "401": RESP("SeedUnauthorized"),
     "403": RESP("SeedForbidden"), "503": RESP("SeedUnavailable")},
    description=SEED_NOTE,
    security=USER,
    parameters_=[
        {"name": "query", "in": "query", "required": True,
         "description": "The words (at most 500 bytes, at least one letter or digit). Missing, blank, longer, or "
                        "without a word → 400.",
         "schema": SEARCH_Q},
        {"name": "room_name", "in": "query", "required": False,
         "description": "Only this room (seed 001's or livehub's name; empty: every room). Malformed → 400; a "
                        "room the user may not join → 403.",
         "schema": {"anyOf": [REF("SeedRoomName"), EMPTY]}},
    ],
)}
paths["/ws/health"] = {"get": op(
    "seedHealth", "Seed 001's health summary (always 200)", ["seed-001"],
    {"200": ok("`degraded` (score 50, or 0 with both down) when the database or, clustered, Redis is unreachable.",
               REF("SeedHealth"))},
    description="No authentication, and not in seed 001's envelope: the object itself.",
    security=[],
)}

# -- plain WebSocket ----------------------------------------------------------
ws_params = [
    {"name": "Upgrade", "in": "header", "required": True, "description": "`websocket` (any case).",
     "schema": {"type": "string", "pattern": "^[Ww][Ee][Bb][Ss][Oo][Cc][Kk][Ee][Tt]$"}},
    {"name": "Connection", "in": "header", "required": True,
     "description": "Must contain the token `upgrade` (any case), e.g. `Upgrade`.",
     "schema": {"type": "string", "pattern": "^[\\t -~]*[Uu][Pp][Gg][Rr][Aa][Dd][Ee][\\t -~]*$"}},
    {"name": "Sec-WebSocket-Version", "in": "header", "required": True, "schema": {"type": "string", "enum": ["13"]}},
    {"name": "Sec-WebSocket-Key", "in": "header", "required": True,
     "description": "RFC 6455 nonce (base64 of 16 bytes); any value is accepted.", "schema": {"type": "string"}},
    {"name": "Origin", "in": "header", "required": False,
     "description": "When CORS_ORIGINS is a list, an Origin not in it → 403.", "schema": {"type": "string"}},
    {"name": "offset", "in": "query", "required": False,
     "description": "Replay from this log offset (as `auth.offset`).", "schema": {"type": "string"}},
    {"name": "client_type", "in": "query", "required": False, "schema": {"type": "string"}},
    {"name": "client_version", "in": "query", "required": False, "schema": {"type": "string"}},
    {"name": "device_id", "in": "query", "required": False, "schema": {"type": "string"}},
]
ws_responses = {
    "101": {"description": "Switching Protocols: the connection is now a WebSocket carrying JSON text frames "
                           "(docs/protocol.md, \"Plain WebSocket\").",
            "headers": {"Upgrade": {"schema": {"type": "string"}}, "Connection": {"schema": {"type": "string"}},
                        "Sec-WebSocket-Accept": {"schema": {"type": "string"}}}},
    "400": error_response(400, "`bad_request` \"this endpoint takes a WebSocket upgrade\": any request that is not "
                               "a valid HTTP/1.1 upgrade (missing/wrong Upgrade, Connection, Sec-WebSocket-Version or "
                               "Sec-WebSocket-Key). There is no 426."),
    "403": error_response(403, "`forbidden`: the Origin is not in CORS_ORIGINS."),
    "429": error_response(429, "`rate_limited`: too many connections from this address (MAX_CONNECTIONS_PER_IP)."),
    "503": error_response(503, "`internal`: the node is starting or draining."),
}
WS_DESC = ("The plain WebSocket front (contract v1.1). Refusals before the upgrade, in order: 503 (not ready), "
           "403 (Origin), 400 (not an upgrade), 429 (per-IP connection limit). Authentication happens after the "
           "upgrade (close 4401), so the HTTP exchange never answers 401.")
ws_security = [{"userToken": []}, {"queryToken": []}, {}]
paths["/ws"] = {"get": op("plainWebSocket", "Open a plain WebSocket connection", ["plain-websocket"],
                          ws_responses, description=WS_DESC, security=ws_security, parameters_=ws_params)}
paths["/ws/connect"] = {"get": op("plainWebSocketConnect", "Open a plain WebSocket connection (alias of /ws)",
                                  ["plain-websocket"], ws_responses, description=WS_DESC, security=ws_security,
                                  parameters_=ws_params)}

# -- Socket.IO Admin UI ------------------------------------------------------
ADMIN_NOTE = ("Only when the Admin UI's files are present (ADMIN_UI_DIR, or a built web-demo/dist/admin) and the "
              "`/admin` Socket.IO namespace is open to someone (ADMIN_USERNAME + ADMIN_PASSWORD_HASH, or --dev "
              "with generated secrets); otherwise the path is the usual 404. The UI itself talks to livehub over "
              "Socket.IO (namespace `/admin`), not over these routes.")
not_served = {"description": "`not_found`: the Admin UI is not served by this node.",
              "content": {JSON: {"schema": REF("Error")}}}
paths["/admin"] = {"get": op(
    "adminRedirect", "Redirect to the Socket.IO Admin UI (/admin/)", ["admin"],
    {"308": {"description": "Permanent redirect to `/admin/` (the UI loads its assets by relative paths).",
             "headers": {"Location": {"required": True, "schema": {"type": "string", "const": "/admin/"}}}},
     "404": not_served},
    description=ADMIN_NOTE, security=[],
)}
paths["/admin/"] = {"get": op(
    "adminUi", "The Socket.IO Admin UI (static files)", ["admin"],
    {"200": {"description": "The UI's index.html (other files under /admin/ are its assets).",
             "content": {"text/html": {"schema": {"type": "string"}}}},
     "404": not_served},
    description=ADMIN_NOTE + " Login happens in the UI (the namespace checks the credentials).", security=[],
)}

# -- dev ----------------------------------------------------------------------
DEV_NOTE = ("Only with --dev and generated secrets (no JWT_SECRET/API_KEYS configured); loopback only: from any "
            "other address, or without --dev, 404 `not_found`.")
paths["/dev/token"] = {"get": op(
    "devToken", "A 12-hour user token for a demo user (dev mode only)", ["dev"],
    {"200": ok("The token and its user.", REF("DevToken")),
     "400": {"description": "axum's plain-text refusal of the query string (a repeated `sub`).",
             "content": {"text/plain": {"schema": {"type": "string"}}}},
     "404": {"description": "`not_found`: not a demo user, not dev mode, or not from loopback.",
             "content": {JSON: {"schema": REF("Error")}}}},
    description=DEV_NOTE,
    security=[],
    parameters_=[{"name": "sub", "in": "query", "required": False,
                  "description": "The demo user (default `ana`); any other value, empty included, → 404.",
                  "schema": {"type": "string", "enum": ["ana", "ben", "chen", "dana"], "default": "ana"}}],
)}
paths["/dev/config"] = {"get": op(
    "devConfig", "The demo users and the controller API key (dev mode only)", ["dev"],
    {"200": ok("The dev configuration.", REF("DevConfig")),
     "404": {"description": "`not_found`: not dev mode, or not from loopback.",
             "content": {JSON: {"schema": REF("Error")}}}},
    description=DEV_NOTE,
    security=[],
)}

# ---------------------------------------------------------------- document
doc = {
    "openapi": "3.1.0",
    "info": {
        "title": "livehub",
        "version": "1.1",
        "description": (
            "livehub's HTTP routes: the controller API (emit, disconnect), room reads (event log, presence, chat "
            "history, read receipts, search), seed 001's chat routes under /ws, the plain WebSocket upgrade, "
            "/health, /metrics, and the dev-mode helpers. All on the same port as Socket.IO.\n\n"
            "Errors are `{ \"ok\": false, \"error\": { \"code\", \"message\" } }` (`Error`) with 400, 401 (plus "
            "`WWW-Authenticate: Bearer`), 403, 404, 413, 429 or 503 — never a 500 for bad input; seed 001's /ws/* "
            "REST routes use `{ \"status\": \"error\", … }` (`SeedError`). Any other path is 404 `not_found` "
            "(except in dev mode with a demo directory, where paths outside /api/ serve the demo page). A known "
            "/api/v1, /health, /metrics or /ws/* REST path with another method is 405 with an `Error` body (code "
            "`bad_request`); /ws, /ws/connect and /dev/* answer such a method with an empty 405.\n\n"
            "Any route may also answer 503 `internal` (\"too many connections, retry\", with Retry-After) when the "
            "node already holds MAX_CONNECTIONS open connections; that answer is written before HTTP parsing.\n\n"
            "Not described here: the Socket.IO / Engine.IO endpoint `/socket.io/` (use a Socket.IO client; see "
            "docs/protocol.md), CORS preflights (OPTIONS), the Admin UI's asset files under /admin/, and the dev-mode demo page (`/demo`, and with --demo-dir "
            "every unknown non-API path) which serves static files."
        ),
    },
    "servers": [{"url": "/"}],
    "tags": [
        {"name": "emit", "description": "Controllers emitting events (API key)."},
        {"name": "rooms", "description": "A room's event log and presence."},
        {"name": "chat", "description": "Chat history, read receipts and search."},
        {"name": "users", "description": "Acting on a user's connections."},
        {"name": "ops", "description": "Health, metrics, this document."},
        {"name": "seed-001", "description": "Seed 001's REST routes under /ws, in its envelope."},
        {"name": "plain-websocket", "description": "The plain WebSocket endpoint (HTTP upgrade)."},
        {"name": "admin", "description": "The Socket.IO Admin UI's page (when built and enabled)."},
        {"name": "dev", "description": "Only with --dev; loopback only."},
    ],
    "paths": paths,
    "components": {
        "securitySchemes": {
            "apiKey": {"type": "http", "scheme": "bearer",
                       "description": "A controller API key from API_KEYS, as `Authorization: Bearer <key>`. "
                                      "(No X-API-Key header and no query parameter are read.)"},
            "userToken": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                          "description": "A user JWT (HS256 with JWT_SECRET, RS256/ES256 with JWT_PUBLIC_KEY_FILE or "
                                         "JWKS_URL), as `Authorization: Bearer <token>`. Claims: sub, exp, branchId, "
                                         "role, name, rooms."},
            "queryToken": {"type": "apiKey", "in": "query", "name": "token",
                           "description": "A user JWT as `?token=`: read only by the plain WebSocket upgrade "
                                          "(/ws, /ws/connect; before `Authorization: Bearer` and an `auth` frame) and "
                                          "the Socket.IO handshake, not by the REST routes. On /ws it is checked "
                                          "after the upgrade: a refused token is an `error` frame and close 4401, "
                                          "never an HTTP 401."},
        },
        "schemas": schemas,
        "responses": responses,
        "parameters": parameters,
    },
}

with open(OUT, "w") as f:
    json.dump(doc, f, indent=2, ensure_ascii=False)
    f.write("\n")
print("wrote", OUT)
