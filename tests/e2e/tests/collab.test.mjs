// Collaboration with the real socket.io-client: who is viewing (counted by user,
// not tab), typing with expiry, presence status, chat with history, read
// receipts, search, idempotent clientId — and non-members refused everywhere.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import { ack, closeAll, collect, connect, http, next, nothing, sleep, startServer, until, userToken } from "../lib/harness.mjs";

const ws = { transports: ["websocket"] };
/** How long a status is held before its branch hears it (`HOLD`, src/presence/status.rs). */
const HOLD_MS = 50;

describe("who is viewing a shipment", () => {
  let server;
  before(async () => (server = await startServer()));
  after(() => server.stop());

  it("counts users, not tabs, and tells the others who came, left and disconnected", async () => {
    const annA = await connect(server.url, { token: userToken("ann", { name: "Ann" }), ...ws });
    const annB = await connect(server.url, { token: userToken("ann", { name: "Ann" }), ...ws });
    const bob = await connect(server.url, { token: userToken("bob", { name: "Bob" }), ...ws });
    const annSees = collect(annA, "user:viewing");
    const annTab2Sees = collect(annB, "user:viewing");

    const first = await ack(annA, "join:shipment", { shipmentId: "V1" });
    assert.equal(first.ok, true);
    assert.equal(first.viewersCount, 1);
    assert.deepEqual(first.viewers.map((v) => v.userId), ["ann"]);

    const bobSaw = collect(bob, "user:viewing");
    const joined = await ack(bob, "join:shipment", { shipmentId: "V1" });
    assert.equal(joined.viewersCount, 2);
    assert.deepEqual(joined.viewers.map((v) => [v.userId, v.name]), [["ann", "Ann"], ["bob", "Bob"]]);
    const viewing = await next(annA, "user:viewing");
    assert.equal(viewing.userId, "bob");
    assert.equal(viewing.name, "Bob");
    assert.equal(viewing.viewersCount, 2);
    assert.equal(viewing.shipmentId, "V1");
    assert.equal(viewing.room, "shipment:V1");
    assert.equal(typeof viewing.socketId, "string");
    assert.match(viewing.timestamp, /^\d{4}-/);
    await nothing(bob, "user:viewing", 200);
    assert.equal(bobSaw.length, 0, "not to the joiner");

    // Ann's second tab: still two viewers, nobody is told anything.
    const second = await ack(annB, "join:shipment", { shipmentId: "V1" });
    assert.equal(second.viewersCount, 2);
    await nothing(bob, "user:viewing", 300);
    // Closing one of Ann's tabs is not "left".
    assert.equal((await ack(annB, "leave:shipment", { shipmentId: "V1" })).ok, true);
    await nothing(bob, "user:left", 300);
    const left = next(bob, "user:left");
    await ack(annA, "leave:shipment", { shipmentId: "V1" });
    const l = await left;
    assert.deepEqual([l.userId, l.viewersCount, l.shipmentId], ["ann", 1, "V1"]);

    // Back in, then the tab closes: user:disconnected.
    await ack(annA, "join:shipment", { shipmentId: "V1" });
    await next(bob, "user:viewing", { filter: (p) => p.userId === "ann" });
    const gone = next(bob, "user:disconnected");
    annA.close();
    const d = await gone;
    assert.deepEqual([d.userId, d.name, d.viewersCount, d.shipmentId], ["ann", "Ann", 1, "V1"]);
    assert.equal(annSees.filter((e) => e.userId === "ann").length, 0);
    assert.equal(annTab2Sees.length, 0, "ann's other tab is not told about ann");

    const presence = await http(server, "GET", "/api/v1/rooms/shipment:V1/presence");
    assert.equal(presence.status, 200);
    assert.equal(presence.body.viewersCount, 1);
    assert.deepEqual(presence.body.viewers.map((v) => v.userId), ["bob"]);
    const empty = await http(server, "GET", "/api/v1/rooms/shipment:nobody/presence");
    assert.equal(empty.status, 200);
    assert.equal(empty.body.viewersCount, 0);
    const asMember = await http(server, "GET", "/api/v1/rooms/shipment:V1/presence", { bearer: userToken("carol") });
    assert.equal(asMember.status, 200);
    const notMember = await http(server, "GET", "/api/v1/rooms/shipment:V1/presence", { bearer: userToken("dan", { rooms: ["order:*"] }) });
    assert.equal(notMember.status, 403);
    closeAll(annB, bob);
  });

  it("typing goes to the others, stops on typing:stop, and expires by itself", async () => {
    const ann = await connect(server.url, { token: userToken("t-ann"), ...ws });
    const bob = await connect(server.url, { token: userToken("t-bob"), ...ws });
    await ack(ann, "join:order", { orderId: "T1" });
    await ack(bob, "join:order", { orderId: "T1" });
    const annSelf = collect(ann, "typing");

    const on = next(bob, "typing");
    assert.equal((await ack(ann, "typing:start", { room: "order:T1" })).ok, true);
    assert.deepEqual(await on, { ...(await on), room: "order:T1", userId: "t-ann", typing: true });
    const off = next(bob, "typing");
    await ack(ann, "typing:stop", { room: "order:T1" });
    assert.equal((await off).typing, false);

    // A closed tab never sends typing:stop: it must not stay "typing".
    const restarted = next(bob, "typing", { filter: (p) => p.typing });
    await ack(ann, "typing:start", { room: "order:T1" });
    await restarted;
    const expired = await next(bob, "typing", { timeout: 10000 });
    assert.equal(expired.typing, false);
    assert.equal(annSelf.length, 0, "not to the typist");

    const notIn = await ack(ann, "typing:start", { room: "order:elsewhere" });
    assert.equal(notIn.error.code, "forbidden");
    assert.equal((await ack(ann, "typing:start", { room: "bad room" })).error.code, "bad_request");
    closeAll(ann, bob);
  });

  it("announces presence status and online/offline to the branch room", async () => {
    const watcher = await connect(server.url, { token: userToken("p-watch", { branchId: "pb" }), ...ws });
    // Statuses are not logged: they reach a socket once its connect has put it
    // in its rooms, which an ack (handled after the connect) guarantees.
    await ack(watcher, "rooms");
    const online = next(watcher, "presence", { filter: (p) => p.userId === "p-user" });
    const user = await connect(server.url, { token: userToken("p-user", { branchId: "pb", name: "Pat" }), ...ws });
    assert.deepEqual([(await online).status, (await online).name], ["online", "Pat"]);
    const away = next(watcher, "presence", { filter: (p) => p.userId === "p-user" });
    assert.equal((await ack(user, "presence:set", { status: "away" })).ok, true);
    assert.equal((await away).status, "away");
    assert.equal((await ack(user, "presence:set", { status: "asleep" })).error.code, "bad_request");
    const offline = next(watcher, "presence", { filter: (p) => p.userId === "p-user" });
    user.close();
    assert.equal((await offline).status, "offline");
    closeAll(watcher);
  });

  it("does not announce users who come and go within the 50 ms a status is held", async () => {
    const watcher = await connect(server.url, { token: userToken("burst-watch", { branchId: "burst" }), ...ws });
    await ack(watcher, "rooms");
    const statuses = collect(watcher, "presence");
    // A burst: 20 users connect, each leaving as soon as it is connected.
    await Promise.all(
      Array.from({ length: 20 }, async (_, i) => {
        const s = await connect(server.url, { token: userToken(`flash-${i}`, { branchId: "burst" }), ...ws });
        s.close();
      }),
    );
    // Statuses still flow: a user who stays is announced.
    const stayer = await connect(server.url, { token: userToken("stayer", { branchId: "burst" }), ...ws });
    await until(() => statuses.some((p) => p.userId === "stayer" && p.status === "online"), { what: "the stayer online" });
    await sleep(300);
    // A close can reach the server after the stayer's connect: wait for the
    // offline of every flash user the branch heard come online.
    const heard = (status) => new Set(statuses.filter((p) => p.userId.startsWith("flash-") && p.status === status).map((p) => p.userId));
    await until(() => [...heard("online")].every((id) => heard("offline").has(id)), { what: "the flash users heard online going offline" });
    const flashes = statuses.filter((p) => p.userId.startsWith("flash-"));
    console.log(`# 20 users connected and left at once; the branch heard ${flashes.length} statuses of theirs`);
    // How many pairs straddle the hold depends on how fast this machine runs
    // the burst, so the count is not asserted. What holds on any machine: a
    // user the branch heard come online stayed online at least the hold
    // (each status carries when it changed, to the millisecond), and left.
    const times = (id, status) => flashes.filter((p) => p.userId === id && p.status === status).map((p) => Date.parse(p.timestamp));
    for (const id of new Set(flashes.map((p) => p.userId))) {
      const [online, offline] = [times(id, "online"), times(id, "offline")];
      assert.deepEqual([online.length, offline.length], [1, 1], `${id}: one online and one offline, heard ${JSON.stringify(flashes.filter((p) => p.userId === id))}`);
      assert.ok(offline[0] - online[0] >= HOLD_MS - 1, `${id} was announced though it left ${offline[0] - online[0]} ms after it came`);
    }
    closeAll(watcher, stayer);
  });
});

describe("chat", () => {
  let server;
  before(async () => (server = await startServer()));
  after(() => server.stop());

  it("send → ack with id → broadcast → history → read receipts → search", async () => {
    const ann = await connect(server.url, { token: userToken("c-ann", { name: "Ann" }), ...ws });
    const bob = await connect(server.url, { token: userToken("c-bob", { name: "Bob" }), ...ws });
    await ack(ann, "join:order", { orderId: "C1" });
    await ack(bob, "join:order", { orderId: "C1" });

    const broadcast = next(bob, "chat:message");
    const sent = await ack(ann, "chat:send", { room: "order:C1", content: "Pallet 7 is damaged at dock 4", clientId: "m-1" });
    assert.equal(sent.ok, true);
    const m = sent.message;
    assert.equal(typeof m.id, "number");
    assert.deepEqual([m.room, m.senderId, m.senderName, m.messageType, m.clientId], ["order:C1", "c-ann", "Ann", "text", "m-1"]);
    const got = await broadcast;
    assert.equal(got.id, m.id);
    assert.equal(got.content, "Pallet 7 is damaged at dock 4");
    assert.equal(typeof got.offset, "string", "chat messages are logged events");

    // The same clientId again: one message, one broadcast.
    const again = await ack(ann, "chat:send", { room: "order:C1", content: "Pallet 7 is damaged at dock 4", clientId: "m-1" });
    assert.equal(again.message.id, m.id);
    await nothing(bob, "chat:message", 300);

    await ack(ann, "chat:send", { room: "order:C1", content: "second", messageType: "file" });
    await ack(ann, "chat:send", { room: "order:C1", content: "third" });
    const history = await ack(bob, "chat:history", { room: "order:C1" });
    assert.deepEqual(history.messages.map((x) => x.content), ["Pallet 7 is damaged at dock 4", "second", "third"], "newest last");
    const page = await ack(bob, "chat:history", { room: "order:C1", before: history.messages[2].id, limit: 1 });
    assert.deepEqual(page.messages.map((x) => x.content), ["second"]);

    const receipt = next(ann, "chat:read");
    const read = await ack(bob, "chat:read", { room: "order:C1", messageIds: [m.id, 999999] });
    assert.equal(read.ok, true);
    const r = await receipt;
    assert.deepEqual([r.room, r.userId, r.messageIds], ["order:C1", "c-bob", [m.id]]);
    assert.match(r.readAt, /^\d{4}-/);
    const withReads = await http(server, "GET", "/api/v1/rooms/order:C1/messages", { bearer: userToken("c-ann") });
    assert.equal(withReads.status, 200);
    assert.deepEqual(withReads.body.messages[0].readBy.map((x) => x.userId), ["c-bob"]);
    const restRead = await http(server, "POST", "/api/v1/rooms/order:C1/read", { bearer: userToken("c-ann"), body: { messageIds: [history.messages[2].id] } });
    assert.equal(restRead.status, 200);
    assert.deepEqual(restRead.body.messageIds, [history.messages[2].id]);

    const search = await http(server, "GET", "/api/v1/search?q=damag%20dock", { bearer: userToken("c-bob") });
    assert.equal(search.status, 200);
    assert.deepEqual(search.body.messages.map((x) => x.id), [m.id]);
    assert.equal(search.body.search.mode, "full-text");
    const inRoom = await http(server, "GET", "/api/v1/search?q=third&room=order:C1", { bearer: userToken("c-bob") });
    assert.deepEqual(inRoom.body.messages.map((x) => x.content), ["third"]);
    closeAll(ann, bob);
  });

  it("refuses a non-member on every chat event and route", async () => {
    const member = await connect(server.url, { token: userToken("nm-ann"), ...ws });
    await ack(member, "chat:send", { room: "shipment:SECRET", content: "only for shipment people" });
    const outsider = await connect(server.url, { token: userToken("nm-out", { rooms: ["order:*"] }), ...ws });
    const token = userToken("nm-out", { rooms: ["order:*"] });
    for (const [event, data] of [
      ["chat:send", { room: "shipment:SECRET", content: "hi" }],
      ["chat:history", { room: "shipment:SECRET" }],
      ["chat:read", { room: "shipment:SECRET", messageIds: [1] }],
      ["join:shipment", { shipmentId: "SECRET" }],
      ["chat:send", { room: "dm:a:b", content: "hi" }],
      ["chat:send", { room: "user:nm-ann", content: "hi" }],
    ]) {
      const reply = await ack(outsider, event, data);
      assert.equal(reply.error?.code, "forbidden", `${event} ${JSON.stringify(data)}`);
    }
    for (const [method, path, body] of [
      ["GET", "/api/v1/rooms/shipment:SECRET/messages"],
      ["POST", "/api/v1/rooms/shipment:SECRET/read", { messageIds: [1] }],
      ["GET", "/api/v1/rooms/shipment:SECRET/presence"],
      ["GET", "/api/v1/search?q=shipment&room=shipment:SECRET"],
      ["GET", "/api/v1/events?room=shipment:SECRET"],
    ]) {
      const res = await http(server, method, path, { bearer: token, body });
      assert.equal(res.status, 403, `${method} ${path}`);
    }
    const everywhere = await http(server, "GET", "/api/v1/search?q=shipment", { bearer: token });
    assert.equal(everywhere.status, 200);
    assert.equal(everywhere.body.messages.length, 0, "search never shows rooms the user may not join");
    // Bad input to chat events.
    for (const [data, code] of [
      [{ room: "order:1" }, "bad_request"],
      [{ room: "order:1", content: "" }, "bad_request"],
      [{ room: "order:1", content: 5 }, "bad_request"],
      [{ room: "order:1", content: "x", messageType: "video" }, "bad_request"],
      [{ room: "order:1", content: "x", messageType: "system" }, "forbidden"],
      [{ room: "order:1", content: "x".repeat(10001) }, "too_large"],
      [{ room: 7, content: "x" }, "bad_request"],
    ]) {
      assert.equal((await ack(outsider, "chat:send", data)).error?.code, code, JSON.stringify(data).slice(0, 80));
    }
    assert.equal((await ack(outsider, "chat:read", { room: "order:1", messageIds: "all" })).error?.code, "bad_request");
    assert.equal((await ack(outsider, "chat:history", { room: "order:1", limit: 100000 })).error?.code, "bad_request");
    assert.equal((await ack(outsider, "chat:read", { room: "order:1", messageIds: [123456] })).error?.code, "not_found");
    assert.equal((await http(server, "GET", "/api/v1/search?q=", { bearer: token })).status, 400);
    closeAll(member, outsider);
  });
});

describe("large rooms", () => {
  it("switch to viewers:count above PRESENCE_BROADCAST_LIMIT", async () => {
    const server = await startServer({ PRESENCE_BROADCAST_LIMIT: "3" });
    const sockets = [];
    try {
      for (let i = 0; i < 3; i++) {
        const s = await connect(server.url, { token: userToken(`big-${i}`), ...ws });
        sockets.push(s);
        await ack(s, "join:shipment", { shipmentId: "BIG" });
      }
      await sleep(200);
      const viewing = collect(sockets[0], "user:viewing");
      const counts = collect(sockets[0], "viewers:count");
      for (let i = 3; i < 8; i++) {
        const s = await connect(server.url, { token: userToken(`big-${i}`), ...ws });
        sockets.push(s);
        await ack(s, "join:shipment", { shipmentId: "BIG" });
      }
      await until(() => counts.some((c) => c.viewersCount === 8), { what: "viewers:count 8" });
      assert.equal(viewing.length, 0, "no per-user events above the limit");
      assert.ok(counts.length <= 2, `a burst of joins gives at most one count a second (${counts.length})`);
      assert.equal(counts.at(-1).room, "shipment:BIG");
    } finally {
      closeAll(sockets);
      await server.stop();
    }
  });

  it("automatic online/offline statuses stop in a branch with more than PRESENCE_BROADCAST_LIMIT sockets; presence:set still goes out", async () => {
    const server = await startServer({ PRESENCE_BROADCAST_LIMIT: "3" });
    const sockets = [];
    const join = async (user) => {
      const s = await connect(server.url, { token: userToken(user, { branchId: "crowd" }), ...ws });
      sockets.push(s);
      return s;
    };
    try {
      const watcher = await join("crowd-0");
      await ack(watcher, "rooms"); // in its branch room from here on
      const statuses = collect(watcher, "presence");
      await join("crowd-1");
      const third = await join("crowd-2");
      await until(() => statuses.some((p) => p.userId === "crowd-2" && p.status === "online"), { what: "online within the limit" });
      const fourth = await join("crowd-3");
      await sleep(300);
      assert.ok(!statuses.some((p) => p.userId === "crowd-3"), "no automatic status above the limit");
      assert.equal((await ack(fourth, "presence:set", { status: "busy" })).ok, true);
      await until(() => statuses.some((p) => p.userId === "crowd-3" && p.status === "busy"), { what: "presence:set above the limit" });
      fourth.close();
      await sleep(300);
      assert.ok(!statuses.some((p) => p.userId === "crowd-3" && p.status === "offline"), "the 4th leaving is not announced (the branch was over the limit)");
      third.close();
      await until(() => statuses.some((p) => p.userId === "crowd-2" && p.status === "offline"), { what: "offline back within the limit" });
    } finally {
      closeAll(sockets);
      await server.stop();
    }
  });
});

describe("chat encrypted at rest", () => {
  it("stores no plaintext and searches whole words only", async () => {
    const server = await startServer({ ENCRYPTION_KEY: "ab".repeat(32) });
    try {
      const s = await connect(server.url, { token: userToken("enc"), ...ws });
      const secret = "Zanzibar-unique-plaintext-marker";
      const sent = await ack(s, "chat:send", { room: "quote:Q1", content: `${secret} about the quote` });
      assert.equal(sent.message.content, `${secret} about the quote`);
      const history = await ack(s, "chat:history", { room: "quote:Q1" });
      assert.equal(history.messages[0].content, `${secret} about the quote`, "readable through livehub");
      const exact = await http(server, "GET", "/api/v1/search?q=quote", { bearer: userToken("enc") });
      assert.deepEqual(exact.body.messages.map((m) => m.id), [sent.message.id]);
      assert.equal(exact.body.search.mode, "exact-words");
      const prefix = await http(server, "GET", "/api/v1/search?q=quo", { bearer: userToken("enc") });
      assert.equal(prefix.body.messages.length, 0, "no prefix matching on encrypted content");
      s.close();
      // The database files (and the WAL) never hold the plaintext.
      const dbPath = server.env.DATABASE_URL.replace("sqlite://", "");
      const files = [dbPath, `${dbPath}-wal`].filter((f) => fs.existsSync(f));
      assert.ok(files.length > 0);
      for (const f of files) assert.equal(fs.readFileSync(f).includes(Buffer.from("Zanzibar")), false, f);
    } finally {
      await server.stop();
    }
  });
});
