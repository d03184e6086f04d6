// The plain WebSocket endpoint (/ws, contract v1.1): the four seed teams whose
// frontends open a browser WebSocket connect to livehub unchanged. Each seed's
// own client code runs here against a real livehub process, over the `ws`
// package; Socket.IO clients share rooms, chat, typing and presence with them.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";

import { ack, closeAll, connect, emit, http, next, sleep, startServer, token, until, userToken } from "../lib/harness.mjs";
import { services, startCluster } from "../lib/cluster.mjs";
import { openPlain, plain, request } from "../lib/plain.mjs";
import { WebSocketClient, labWebSocketProvider, recordingQueryClient, useUploadSocket } from "../lib/seed-clients.mjs";

const clusterEnv = services();
const wsBase = (server) => server.url.replace(/^http/, "ws");
const isFrame = (type) => (f) => f.type === type;

describe("seed 000 (manufacturing): action-style requests", () => {
  let server;
  before(async () => (server = await startServer()));
  after(() => server.stop());

  it("ping, subscribeToOrder, getRooms, getStatus, and events as {type, data, timestamp, offset}", async () => {
    const jwt = userToken("op-7", { branchId: "plant-2", role: "operator" });
    // The seed's browser-console test, against livehub's URL.
    const ws = await openPlain(server, { query: { token: jwt, client_type: "web", client_version: "3.1", device_id: "tab-9" } });
    const hello = await ws.next(isFrame("connection_established"));
    assert.equal(hello.user_id, "op-7");
    assert.deepEqual([...hello.rooms].sort(), ["branch:plant-2", "role:operator", "role:operator:plant-2", "user:op-7"]);
    ws.send({ action: "ping" });
    const pong = await ws.next((f) => f.action === "pong");
    assert.ok(!Number.isNaN(Date.parse(pong.timestamp)));
    ws.send({ action: "subscribeToOrder", data: { orderId: "ORD-1001" } });
    assert.deepEqual(
      { ...(await ws.next((f) => f.action === "subscribeToOrder")), __taken: undefined },
      { action: "subscribeToOrder", success: true, orderId: "ORD-1001", __taken: undefined },
    );

    const data = { orderId: "ORD-1001", oldStatus: "queued", newStatus: "running", branchId: "plant-2" };
    const res = await emit(server, { event: "order:status_changed", data });
    assert.equal(res.status, 202);
    const event = await ws.next(isFrame("order:status_changed"));
    assert.deepEqual(event.data, data, "data is exactly what the controller emitted");
    assert.equal(event.offset, res.body.offset);
    assert.ok(!Number.isNaN(Date.parse(event.timestamp)));
    assert.equal(event.replayed, undefined);
    // The branch room got it too, but a connection receives an event once.
    await sleep(200);
    assert.equal(ws.all("order:status_changed").length, 1);

    const rooms = await request(ws, { action: "getRooms" });
    assert.deepEqual(rooms.rooms, ["branch:plant-2", "order:ORD-1001", "role:operator", "role:operator:plant-2", "user:op-7"]);
    assert.equal(rooms.count, 5);
    const status = await request(ws, { action: "getStatus" });
    assert.equal(status.connectionId, hello.connection_id);
    assert.deepEqual(
      [status.userId, status.branchId, status.role, status.clientType, status.clientVersion, status.deviceId],
      ["op-7", "plant-2", "operator", "web", "3.1", "tab-9"],
    );
    ws.close();
  });

  it("subscribe / unsubscribe any room the policy allows; a controller's data keeps its own timestamp", async () => {
    const ws = await plain(server, userToken("op-8", { branchId: "plant-2" }));
    const sub = await request(ws, { action: "subscribe", data: { room: "machine-room:x" } }).catch((e) => e);
    assert.equal(sub.success, false, "an unknown room kind is refused");
    assert.equal(sub.error.code, "bad_request");
    const other = await request(ws, { action: "subscribe", data: { room: "branch:plant-9" } });
    assert.deepEqual([other.success, other.error.code], [false, "forbidden"]);
    const ok = await request(ws, { action: "subscribeToShipment", data: { shipmentId: 77 } });
    assert.deepEqual([ok.success, ok.shipmentId], [true, "77"]);
    const own = { shipmentId: "77", status: "loaded", timestamp: "2020-02-02T00:00:00.000Z" };
    await emit(server, { event: "shipment:updated", data: own });
    const got = await ws.next(isFrame("shipment:updated"));
    assert.deepEqual(got.data, own);
    assert.equal(got.timestamp, own.timestamp);
    const off = await request(ws, { action: "unsubscribeFromShipment", data: { shipmentId: "77" } });
    assert.equal(off.success, true);
    await emit(server, { event: "shipment:updated", data: { shipmentId: "77", status: "gone" } });
    await sleep(300);
    assert.equal(ws.all("shipment:updated").length, 1, "nothing after unsubscribing");
    ws.close();
  });
});

describe("seed 001 (chat platform): WebSocketClient, chat across both kinds of client, REST under /ws", () => {
  let server;
  before(async () => (server = await startServer({ RATE_LIMIT_PER_MINUTE: "0" })));
  after(() => server.stop());

  it("joins order_123, chats and types with a Socket.IO client in order:123", async () => {
    const client = new WebSocketClient(userToken("chat-ann", { name: "Ann" }), wsBase(server));
    client.connect();
    await until(() => client.received.find((m) => m.type === "connection_established"), { what: "connection_established" });
    const sio = await connect(server.url, { token: userToken("chat-bob", { name: "Bob" }) });
    await ack(sio, "join:order", { orderId: "123" });

    const viewing = next(sio, "user:viewing");
    client.joinRoom("order_123");
    const joined = await until(() => client.received.find((m) => m.type === "room_joined"));
    assert.deepEqual([joined.room, joined.viewers_count], ["order_123", 2]);
    assert.equal((await viewing).userId, "chat-ann", "a plain client is a viewer Socket.IO clients see");

    const onSio = next(sio, "chat:message");
    client.sendMessage("order_123", "Hello, how is the order progressing?");
    const sioMessage = await onSio;
    assert.deepEqual([sioMessage.room, sioMessage.senderId, sioMessage.content], ["order:123", "chat-ann", "Hello, how is the order progressing?"]);
    const mine = await until(() => client.received.find((m) => m.type === "chat_message"));
    assert.deepEqual(
      [mine.data.room, mine.data.sender_id, mine.data.content, mine.data.message_type, mine.data.id],
      ["order_123", "chat-ann", "Hello, how is the order progressing?", "text", sioMessage.id],
    );
    assert.equal(mine.offset, sioMessage.offset, "one logged event, two renderings");

    const reply = await ack(sio, "chat:send", { room: "order:123", content: "Running on line 2" });
    assert.equal(reply.ok, true);
    const fromSio = await until(() => client.received.find((m) => m.type === "chat_message" && m.data.sender_id === "chat-bob"));
    assert.equal(fromSio.data.content, "Running on line 2");

    const typing = next(sio, "typing");
    client.ws.send(JSON.stringify({ type: "typing_start", room: "order_123" }));
    assert.deepEqual(
      (({ room, userId, typing }) => ({ room, userId, typing }))(await typing),
      { room: "order:123", userId: "chat-ann", typing: true },
    );
    await ack(sio, "typing:start", { room: "order:123" });
    const plainTyping = await until(() => client.received.find((m) => m.type === "typing" && m.data.user_id === "chat-bob"));
    assert.deepEqual([plainTyping.data.room, plainTyping.data.typing], ["order_123", true]);

    const read = next(sio, "chat:read");
    client.ws.send(JSON.stringify({ type: "mark_read", room: "order_123", message_ids: [reply.message.id] }));
    assert.deepEqual((await read).messageIds, [reply.message.id]);
    const receipt = await until(() => client.received.find((m) => m.type === "messages_read"));
    assert.deepEqual([receipt.data.user_id, receipt.data.message_ids, receipt.data.room], ["chat-ann", [reply.message.id], "order_123"]);

    const left = next(sio, "user:left");
    client.ws.send(JSON.stringify({ type: "leave_room", room: "order_123" }));
    assert.equal((await left).userId, "chat-ann");
    client.stopped = true;
    client.ws.close();
    sio.close();
  });

  it("a room left under its seed name (order_55) and joined again as order:55 is called order:55", async () => {
    const client = await plain(server, userToken("renamer"));
    assert.equal((await request(client, { type: "join_room", room: "order_55" })).type, "room_joined");
    assert.equal((await request(client, { type: "leave_room", room: "order_55" })).type, "room_left");
    assert.equal((await request(client, { type: "join_room", room: "order:55" })).room, "order:55");
    client.send({ type: "chat_message", room: "order:55", content: "named as joined" });
    const chat = await client.next((f) => f.type === "chat_message", { what: "its own chat message" });
    assert.equal(chat.data.room, "order:55", "not the name of a join it left");
    client.close();
  });

  it("the chat frontend's REST routes: history, mark-read, search, rooms, health", async () => {
    const jwt = userToken("rest-ann");
    const ws = await plain(server, jwt);
    for (const text of ["first pallet", "second pallet", "third crate"]) {
      await request(ws, { type: "chat_message", room: "support_55", content: text });
    }
    await request(ws, { type: "join_room", room: "quote_9" });
    const page = await http(server, "GET", "/ws/rooms/support_55/messages?limit=2&offset=1", { bearer: jwt });
    assert.equal(page.status, 200);
    assert.equal(page.body.status, "success");
    assert.equal(page.body.data.room, "support_55");
    assert.deepEqual(page.body.data.messages.map((m) => m.content), ["first pallet", "second pallet"], "newest last, the newest skipped");
    assert.equal(page.body.data.messages[0].sender_id, "rest-ann");
    const ids = page.body.data.messages.map((m) => m.id);
    const marked = await http(server, "POST", "/ws/rooms/support_55/mark-read", { bearer: jwt, body: { message_ids: ids } });
    assert.deepEqual(marked.body, { status: "success", data: { room: "support_55", marked: 2 } });
    const found = await http(server, "GET", "/ws/search?query=pallet&room_name=support_55", { bearer: jwt });
    assert.deepEqual(found.body.data.messages.map((m) => m.content).sort(), ["first pallet", "second pallet"]);
    const rooms = await http(server, "GET", "/ws/rooms", { bearer: jwt });
    assert.ok(rooms.body.data.rooms.includes("support_55") && rooms.body.data.rooms.includes("quote_9"), JSON.stringify(rooms.body));
    const health = await http(server, "GET", "/ws/health", { apiKey: null });
    assert.equal(health.body.health_status, "healthy");
    assert.ok(health.body.connection_stats.total_connections >= 1);
    const denied = await http(server, "GET", "/ws/rooms/user_x_y/messages", { bearer: jwt });
    assert.deepEqual([denied.status, denied.body.status, denied.body.error.code], [403, "error", "forbidden"]);
    const anonymous = await http(server, "GET", "/ws/rooms", { apiKey: null });
    assert.deepEqual([anonymous.status, anonymous.body.status], [401, "error"]);
    ws.close();
  });

  it("history pages past the newest 200 with offset", async () => {
    const jwt = userToken("long-talk");
    const ws = await plain(server, jwt);
    for (let i = 0; i < 230; i++) await request(ws, { type: "chat_message", room: "support_230", content: `m${i}` });
    const page = async (offset) => {
      const res = await http(server, "GET", `/ws/rooms/support_230/messages?limit=10&offset=${offset}`, { bearer: jwt });
      assert.equal(res.status, 200, res.text);
      return res.body.data.messages.map((m) => m.content);
    };
    assert.deepEqual(await page(210), ["m10", "m11", "m12", "m13", "m14", "m15", "m16", "m17", "m18", "m19"]);
    assert.deepEqual(await page(225), ["m0", "m1", "m2", "m3", "m4"]);
    assert.deepEqual(await page(230), [], "past the oldest");
    ws.close();
  });
});

describe("seed 002 (uploads and notifications): the useWebSocket hook", () => {
  let server;
  before(async () => (server = await startServer()));
  after(() => server.stop());

  it("upload_progress and notification reach the user's every tab", async () => {
    const tabs = [useUploadSocket(`${wsBase(server)}/ws`, userToken("uploader")), useUploadSocket(`${wsBase(server)}/ws`, userToken("uploader"))];
    await until(() => tabs.every((t) => t.messages.some((m) => m.type === "connection_established")), { what: "both tabs connected" });
    for (const progress of [10, 55, 100]) {
      const r = await emit(server, {
        event: "upload_progress",
        user: "uploader",
        data: { uploadId: "up-1", fileName: "orders.csv", progress, message: `row ${progress}` },
      });
      assert.equal(r.status, 202);
    }
    await emit(server, { event: "notification", user: "uploader", data: { title: "Import done", message: "3 rows", severity: "success" } });
    for (const tab of tabs) {
      await until(() => tab.toasts.length === 1, { what: "the toast" });
      assert.deepEqual(tab.progress, [10, 55, 100]);
      assert.deepEqual(tab.uploadMessages, ["row 10", "row 55", "row 100"]);
      assert.deepEqual(tab.toasts[0], { title: "Import done", description: "3 rows", variant: "success" });
    }
    // The hook's `error` case sees livehub's error frames.
    tabs[0].socket.send("not json");
    await until(() => tabs[0].errors.length === 1);
    assert.equal(tabs[0].errors[0].code, "bad_request");
    tabs.forEach((t) => t.socket.close());
  });
});

describe("seed 003 (lab equipment): auth in the first frame, reconnect after 5 s", () => {
  let server;
  before(async () => (server = await startServer()));
  after(() => server.stop());

  it("authenticates with {type:'auth'}, invalidates queries, and catches up after a restart", async () => {
    const queryClient = recordingQueryClient();
    const lab = labWebSocketProvider({ token: userToken("lab-tech", { branchId: "lab-1" }), WS_URL: `${wsBase(server)}/ws`, queryClient });
    // Nothing tells this client it is authenticated; wait until an event for it lands.
    await until(async () => {
      await emit(server, { event: "equipment_update", user: "lab-tech", data: { equipmentId: "centrifuge-2", status: "in_use" } });
      return queryClient.invalidated.includes("equipment");
    }, { what: "equipment invalidated", interval: 200 });
    await emit(server, { event: "session_update", rooms: ["branch:lab-1"], data: { sessionId: "s1" } });
    await emit(server, { event: "sample_update", user: "lab-tech", data: { sampleId: "x" } });
    await until(() => queryClient.invalidated.includes("unread-count") && queryClient.invalidated.includes("active-sessions"));

    // Restart livehub on the same database and port; the seed's own code
    // reconnects 5 s later and authenticates again.
    const port = server.port;
    await server.stop();
    server = await startServer({ ...server.env, PORT: String(port) });
    queryClient.invalidated.length = 0;
    // Emitted while the client waits to reconnect: its user's offline queue holds it.
    await emit(server, { event: "sample_update", user: "lab-tech", data: { sampleId: "while-away" } });
    await until(() => lab.connects === 2, { what: "the seed's reconnect", timeout: 15000 });
    await until(() => queryClient.invalidated.includes("inbox"), { what: "the queued sample_update" });
    assert.deepEqual(queryClient.invalidated, ["inbox", "unread-count"], "delivered once");
    lab.cleanup();
  });
});

describe("replay, the offline queue, token lifetime", () => {
  let server;
  before(async () => (server = await startServer({ RATE_LIMIT_PER_MINUTE: "0" })));
  after(() => server.stop());

  it("?offset= replays what was missed across a restart, in order, once, marked replayed", async () => {
    const jwt = userToken("replayer", { branchId: "r-1" });
    const ws = await plain(server, jwt);
    const first = await emit(server, { event: "dashboard:refresh", data: { branchId: "r-1", n: 0 } });
    assert.equal((await ws.next(isFrame("dashboard:refresh"))).offset, first.body.offset);
    ws.close();
    await ws.done;
    const env = server.env;
    await server.stop();
    server = await startServer(env);
    const missed = [];
    for (let n = 1; n <= 5; n++) missed.push((await emit(server, { event: "dashboard:refresh", data: { branchId: "r-1", n } })).body.offset);
    const back = await plain(server, jwt, { query: { offset: first.body.offset } });
    const live = emit(server, { event: "dashboard:refresh", data: { branchId: "r-1", n: 6 } });
    await until(() => back.all("dashboard:refresh").length >= 6, { what: "replay and live" });
    await live;
    await sleep(200);
    const got = back.all("dashboard:refresh");
    assert.deepEqual(got.map((f) => f.data.n), [1, 2, 3, 4, 5, 6]);
    assert.deepEqual(got.slice(0, 5).map((f) => f.offset), missed);
    assert.ok(got.slice(0, 5).every((f) => f.replayed === true));
    assert.equal(got[5].replayed, undefined, "live events are not marked");
    back.close();
  });

  it("an unknown offset gets replay:reset; the auth frame may carry the offset", async () => {
    const ws = await openPlain(server);
    ws.send({ type: "auth", token: userToken("resetter"), offset: "nonsense" });
    const reset = await ws.next(isFrame("replay:reset"));
    assert.equal(reset.data.offset, "nonsense");
    assert.ok(reset.data.reason);
    ws.close();
  });

  it("events for a user while all their connections were gone wait for the next one", async () => {
    const jwt = userToken("away-user");
    const ws = await plain(server, jwt);
    ws.close();
    await ws.done;
    await until(async () => (await http(server, "GET", "/health")).body.connections === 0, { what: "the close to land" }).catch(() => {});
    await sleep(200);
    await emit(server, { event: "notification", user: "away-user", data: { title: "Queued", message: "while away", severity: "info" } });
    const back = await plain(server, jwt);
    const queued = await back.next(isFrame("notification"));
    assert.equal(queued.data.message, "while away");
    back.close();
  });

  it("at exp the connection gets auth:expired and closes with 4401, unless refreshed", async () => {
    const exp = Math.floor(Date.now() / 1000) + 2;
    const expiring = await plain(server, token({ sub: "short", exp }));
    const refreshed = await plain(server, token({ sub: "short2", exp }));
    const ack1 = await request(refreshed, { type: "auth:refresh", token: token({ sub: "short2", exp: exp + 600 }) });
    assert.equal(ack1.type, "ack");
    const bad = await request(refreshed, { action: "refreshToken", data: { token: token({ sub: "someone-else" }) } });
    assert.deepEqual([bad.success, bad.error.code], [false, "unauthorized"]);
    const closed = await expiring.done;
    assert.deepEqual(closed, { code: 4401, reason: "unauthorized: token expired" });
    assert.ok(expiring.all("auth:expired").length === 1, "auth:expired before the close");
    await sleep(500);
    assert.equal(refreshed.closed, null, "the refreshed connection stays");
    refreshed.close();
  });
});

describe("bad input on a plain connection", () => {
  let server;
  const MAX = 4096;
  before(async () => (server = await startServer({ MAX_PAYLOAD_BYTES: String(MAX), RATE_LIMIT_PER_MINUTE: "600" })));
  after(() => server.stop());

  it("every bad frame gets an error in its style; the connection stays usable and others never notice", async () => {
    const ws = await plain(server, userToken("fuzzer", { branchId: "bad" }));
    const bystander = await plain(server, userToken("bystander", { branchId: "bad" }));
    const cases = [
      ["not json", "type"],
      ["[1,2,3]", "type"],
      ['"just a string"', "type"],
      ["{}", "type"],
      ['{"type":42}', "type"],
      ['{"type":"teleport"}', "type"],
      ['{"action":"teleport"}', "action"],
      ['{"action":7}', "action"],
      ['{"action":"subscribe"}', "action"],
      ['{"action":"subscribe","data":{"room":"order_1"}}', "action"],
      ['{"action":"subscribeToOrder","data":{"orderId":1.5}}', "action"],
      ['{"action":"subscribe","data":{"room":"x".repeat(300)}}'.replace('"x".repeat(300)', `"${"x".repeat(300)}"`), "action"],
      ['{"type":"join_room"}', "type"],
      ['{"type":"join_room","room":"order 1"}', "type"],
      ['{"type":"chat_message","room":"order:1"}', "type"],
      ['{"type":"chat_message","room":"order:1","content":"  "}', "type"],
      ['{"type":"mark_read","room":"order:1","message_ids":"all"}', "type"],
      ['{"type":"presence","status":"offline"}', "type"],
      ['{"type":"typing_start","room":"order:9"}', "type"],
    ];
    for (const [text, style] of cases) {
      ws.send(text);
      const reply = await ws.next((f) => f.type === "error" || f.success === false, { what: `the error for ${text}` });
      if (style === "action") {
        assert.equal(reply.success, false, text);
        assert.match(reply.error.code, /^(bad_request|forbidden)$/, text);
      } else {
        assert.equal(reply.type, "error", text);
        assert.match(reply.data.code, /^(bad_request|forbidden)$/, text);
        assert.ok(reply.data.message.length > 0);
      }
    }
    ws.ws.send(Buffer.from([1, 2, 3]), { binary: true });
    assert.equal((await ws.next(isFrame("error"))).data.code, "bad_request");
    ws.send({ type: "chat_message", room: "order:1", content: "x".repeat(MAX + 10) });
    assert.equal((await ws.next(isFrame("error"))).data.code, "too_large");
    // Still usable, and the bystander saw none of it.
    assert.equal((await request(ws, { type: "ping" })).type, "pong");
    await emit(server, { event: "dashboard:refresh", data: { branchId: "bad", n: 1 } });
    assert.equal((await bystander.next(isFrame("dashboard:refresh"))).data.n, 1);
    assert.equal((await ws.next(isFrame("dashboard:refresh"))).data.n, 1);
    assert.equal(bystander.all("error").length, 0);

    // Far over the cap: this connection closes with 1009, the bystander stays.
    ws.send("x".repeat(MAX * 3));
    assert.equal((await ws.done).code, 1009);
    assert.equal((await request(bystander, { action: "ping" })).action, "pong");
    bystander.close();
  });

  it("a flood gets rate_limited replies, and the connection survives it", async () => {
    const ws = await plain(server, userToken("flooder"));
    for (let i = 0; i < 700; i++) ws.send({ type: "ping" });
    const limited = await ws.next((f) => f.type === "error" && f.data.code === "rate_limited", { timeout: 10000 });
    assert.equal(limited.request, "ping");
    assert.equal(ws.closed, null);
    ws.close();
  });

  it("before authentication only the auth frame counts; a bad token is refused with 4401", async () => {
    const early = await openPlain(server);
    early.send({ action: "getRooms" });
    const refused = await early.next(isFrame("error"));
    assert.deepEqual(refused.data, { code: "unauthorized", message: "unauthorized: missing token" });
    early.send({ type: "auth", token: userToken("late") });
    assert.equal((await early.next(isFrame("connection_established"))).user_id, "late");
    early.close();

    for (const [tok, message] of [
      ["garbage", "unauthorized: invalid token"],
      [token({ sub: "old", exp: Math.floor(Date.now() / 1000) - 60 }), "unauthorized: token expired"],
      [token({ sub: "forged" }, { secret: "another-secret-0123456789abcdef" }), "unauthorized: invalid token"],
    ]) {
      const ws = await openPlain(server, { query: { token: tok } });
      const frame = await ws.next(isFrame("error"));
      assert.deepEqual(frame.data, { code: "unauthorized", message });
      assert.deepEqual(await ws.done, { code: 4401, reason: message });
      assert.equal(ws.all("connection_established").length, 0);
    }
    // The Authorization header works as well.
    const byHeader = await openPlain(server, { headers: { authorization: `Bearer ${userToken("header-user")}` } });
    assert.equal((await byHeader.next(isFrame("connection_established"))).user_id, "header-user");
    byHeader.close();
  });

  it("no auth frame within 10 s: refused with 4401 missing token", async () => {
    const silent = await openPlain(server);
    const closed = await silent.done;
    assert.deepEqual(closed, { code: 4401, reason: "unauthorized: missing token" });
  });
});

describe("around the socket: caps, CORS, health, metrics, disconnects, shutdown", () => {
  let server;
  before(
    async () =>
      (server = await startServer({ MAX_CONNECTIONS_PER_IP: "3", CORS_ORIGINS: "https://ops.example.com", RATE_LIMIT_PER_MINUTE: "0" })),
  );
  after(() => server.stop());

  it("refuses over MAX_CONNECTIONS_PER_IP (429) and a foreign Origin (403) before the upgrade", async () => {
    const foreign = await openPlain(server, { query: { token: userToken("o") }, origin: "https://evil.example.com" }).catch((e) => e);
    assert.equal(foreign.status, 403);
    assert.equal(JSON.parse(foreign.body).error.code, "forbidden");
    const a = await plain(server, userToken("cap"), { origin: "https://ops.example.com" });
    const b = await plain(server, userToken("cap"));
    const c = await connect(server.url, { token: userToken("cap") }); // Socket.IO shares the cap
    const over = await openPlain(server, { query: { token: userToken("cap") } }).catch((e) => e);
    assert.equal(over.status, 429);
    assert.equal(JSON.parse(over.body).error.code, "rate_limited");
    closeAll(c);
    a.close();
    b.close();
    await until(async () => (await openPlain(server, { query: { token: userToken("cap") } }).then((w) => (w.close(), true)).catch(() => false)), {
      what: "a slot to free up",
    });
  });

  it("/health and /metrics count plain connections; a controller's disconnect closes them with 4000", async () => {
    await until(async () => (await http(server, "GET", "/health")).body.connections === 0, { what: "no connections left" });
    const ws = await plain(server, userToken("kick-me"));
    // The user is counted by the connect's own job, just after `connection_established`.
    const health = await until(async () => {
      const h = await http(server, "GET", "/health");
      return h.body.users >= 1 && h;
    }, { what: "the user counted" });
    assert.equal(health.body.connections, 1);
    const metrics = await http(server, "GET", "/metrics");
    assert.match(metrics.text, /livehub_connections\{transport="plain"\} 1/);
    const kicked = await http(server, "POST", "/api/v1/users/kick-me/disconnect");
    assert.equal(kicked.status, 200);
    assert.equal((await ws.done).code, 4000);
  });

  it("a non-upgrade GET /ws is a JSON 400", async () => {
    const res = await http(server, "GET", "/ws", { apiKey: null });
    assert.equal(res.status, 400);
    assert.equal(res.body.error.code, "bad_request");
  });
});

describe("SIGTERM", () => {
  it("closes plain connections with 1012 so that they reconnect, and refuses new ones", async () => {
    const server = await startServer();
    const ws = await plain(server, userToken("draining"));
    const [closed, exited] = await Promise.all([ws.done, server.stop("SIGTERM")]);
    await new Promise((resolve) => (server.proc.stderr.readableEnded ? resolve() : server.proc.stderr.on("close", resolve)));
    // Both at once, with the server's output. (A SIGTERM right after start
    // once met the default action: killed, no output, 1006.)
    assert.deepEqual([closed.code, exited], [1012, { code: 0, signal: null }], `the server said:\n${server.stdout}${server.stderr}`);
  });
});

describe("plain connections in a cluster", { skip: clusterEnv.skip }, () => {
  let a;
  let b;
  before(async () => {
    ({ nodes: [a, b] } = await startCluster({ pg: clusterEnv.pg, redis: clusterEnv.redis, nodes: ["plain-a", "plain-b"] }));
  });
  after(async () => {
    await a?.stop();
    await b?.stop();
  });

  it("emits, chat, typing, presence and disconnects cross nodes between plain and Socket.IO clients", async () => {
    const onB = await plain(b, userToken("px-b", { branchId: "pbr" }));
    const onA = await connect(a.url, { token: userToken("px-a", { branchId: "pbr" }), transports: ["websocket"] });
    // A controller's emit through node A reaches the plain client on node B.
    const res = await emit(a, { event: "machine:status_changed", data: { machineId: "M1", status: "down", branchId: "pbr" } });
    const got = await onB.next(isFrame("machine:status_changed"));
    assert.deepEqual([got.offset, got.data.status], [res.body.offset, "down"]);

    await ack(onA, "join:order", { orderId: "X1" });
    const viewing = next(onA, "user:viewing");
    const joined = await request(onB, { type: "join_room", room: "order_X1" });
    assert.equal(joined.viewers_count, 2, "viewers counted across nodes");
    assert.equal((await viewing).userId, "px-b");

    const typing = next(onA, "typing");
    onB.send({ type: "typing_start", room: "order_X1" });
    assert.equal((await typing).userId, "px-b");
    await ack(onA, "typing:start", { room: "order:X1" });
    const typed = await onB.next((f) => f.type === "typing" && f.data.user_id === "px-a");
    assert.equal(typed.data.room, "order_X1");

    const sent = await ack(onA, "chat:send", { room: "order:X1", content: "across nodes" });
    const chat = await onB.next(isFrame("chat_message"));
    assert.deepEqual([chat.data.id, chat.data.room], [sent.message.id, "order_X1"]);

    const kicked = await http(a, "POST", "/api/v1/users/px-b/disconnect");
    assert.equal(kicked.status, 200);
    assert.equal((await onB.done).code, 4000);
    onA.close();
  });
});

describe("heartbeat", () => {
  let server;
  before(async () => (server = await startServer({ WS_PING_INTERVAL: "300ms", WS_IDLE_TIMEOUT: "1s" })));
  after(() => server.stop());

  it("pings; a client that answers stays, one that answers nothing is closed with 4408", async () => {
    const alive = await plain(server, userToken("beating"));
    let pings = 0;
    alive.ws.on("ping", () => pings++);
    // ws answers pings by itself, as browsers do.
    const silent = await openPlain(server, { query: { token: userToken("silent") }, autoPong: false });
    await sleep(2500);
    assert.ok(pings >= 3, `pings every 300 ms (got ${pings})`);
    assert.equal(alive.closed, null, "a client that answers pings stays");
    assert.deepEqual(await silent.done, { code: 4408, reason: "idle timeout" });
    alive.close();
  });
});
