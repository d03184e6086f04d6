// The durable event log seen from a client: offsets, replay on reconnect and on
// join, the offline queue, idempotent emits, bad offsets — with the real
// socket.io-client 4.x using only its public API (`auth` as a function).
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { io } from "socket.io-client";
import ioV2 from "socket.io-client-v2";
import { ack, closeAll, collect, connect, emit, http, next, nothing, sleep, startServer, until, userToken } from "../lib/harness.mjs";
import { openPlain } from "../lib/plain.mjs";

/** A client that remembers the last offset it saw and sends it on every (re)connect. */
function trackingClient(url, token, opts = {}) {
  const state = { last: opts.offset, events: [] };
  const socket = io(url, {
    auth: (cb) => cb({ token, ...(state.last ? { offset: state.last } : {}) }),
    transports: ["websocket"],
    forceNew: true,
    reconnectionDelay: 50,
    reconnectionDelayMax: 200,
    ...opts.io,
  });
  socket.onAny((event, payload) => {
    if (payload && typeof payload.offset === "string") {
      state.events.push({ event, ...payload });
      state.last = payload.offset;
    }
  });
  state.socket = socket;
  state.connected = () => new Promise((resolve, reject) => {
    if (socket.connected) return resolve();
    socket.once("connect", resolve);
    socket.once("connect_error", reject);
  });
  return state;
}

/** The user connects once (so the server knows them) and leaves. */
async function knownThenAway(server, tok) {
  const once = await openPlain(server, { query: { token: tok } });
  await once.next((f) => f.type === "connection_established");
  once.close();
  await once.done;
  await sleep(200);
}

/** Emits `count` events (`make(i)`) in batches of 250; their offsets, in order. */
async function emitQueue(server, count, make) {
  const offsets = [];
  for (let start = 0; start < count; start += 250) {
    const events = Array.from({ length: Math.min(250, count - start) }, (_, i) => make(start + i));
    const res = await http(server, "POST", "/api/v1/emit/batch", { body: { events } });
    assert.equal(res.status, 202, JSON.stringify(res.body).slice(0, 300));
    offsets.push(...res.body.results.map((r) => r.offset));
  }
  return offsets;
}

/** Whether a plain client has received every one of `offsets`. */
function hasAll(client, offsets) {
  const got = new Set(client.frames.map((f) => f.offset));
  return offsets.every((o) => got.has(o));
}

const shipment = (server, shipmentId, seq, extra = {}) =>
  emit(server, { event: "shipment:updated", data: { shipmentId, seq, ...extra } });

describe("replay of missed events", () => {
  let server;
  before(async () => (server = await startServer()));
  after(() => server.stop());

  it("delivers exactly the missed events, in order, once, marked replayed, after a reconnect", async () => {
    const client = trackingClient(server.url, userToken("r1", { branchId: "b1" }));
    await client.connected();
    await ack(client.socket, "join:shipment", { shipmentId: "R1" });
    await emit(server, { event: "notification", user: "r1", data: { title: "t", message: "before", severity: "info" } });
    await until(() => client.events.length === 1, { what: "live event" });

    client.socket.disconnect();
    // Missed: to the user room, the branch room, everyone — and one for another user.
    await emit(server, { event: "notification", user: "r1", data: { title: "t", message: "m1", severity: "info" } });
    await emit(server, { event: "dashboard:refresh", data: { branchId: "b1", n: 2 } });
    await emit(server, { event: "notification", user: "someone-else", data: { title: "t", message: "not for r1", severity: "info" } });
    await emit(server, { event: "notification:broadcast", data: { message: "m3" } });

    client.socket.connect();
    await client.connected();
    await until(() => client.events.length === 4, { what: "3 replayed events" });
    const replayed = client.events.slice(1);
    assert.deepEqual(replayed.map((e) => e.event), ["notification", "dashboard:refresh", "notification:broadcast"]);
    assert.ok(replayed.every((e) => e.replayed === true));
    assert.deepEqual([...replayed.map((e) => e.offset)].sort(), replayed.map((e) => e.offset), "in offset order");
    // The shipment room is not an automatic room: the client rejoins it with `since`.
    await nothing(client.socket, "notification", 300);
    assert.equal(client.events.length, 4, "nothing twice");
    // Live events flow again, unmarked.
    await emit(server, { event: "notification", user: "r1", data: { title: "t", message: "live", severity: "info" } });
    await until(() => client.events.length === 5);
    assert.equal(client.events[4].replayed, undefined);
    closeAll(client.socket);
  });

  it("replays a room's missed events on join with `since`, before live ones", async () => {
    const a = await connect(server.url, { token: userToken("r2"), transports: ["websocket"] });
    await ack(a, "join:shipment", { shipmentId: "R2" });
    const live = next(a, "shipment:updated");
    const r0 = await shipment(server, "R2", 0);
    assert.equal((await live).seq, 0);
    a.close();
    for (let i = 1; i <= 5; i++) await shipment(server, "R2", i);
    await shipment(server, "OTHER", 99);

    const b = await connect(server.url, { token: userToken("r2"), transports: ["websocket"] });
    const got = collect(b, "shipment:updated");
    const joined = await ack(b, "join:shipment", { shipmentId: "R2", since: r0.body.offset });
    assert.equal(joined.ok, true);
    assert.equal(joined.replayed, 5);
    await shipment(server, "R2", 6);
    await until(() => got.length === 6, { what: "5 replayed + 1 live" });
    assert.deepEqual(got.map((e) => e.seq), [1, 2, 3, 4, 5, 6]);
    assert.deepEqual(got.map((e) => e.replayed ?? false), [true, true, true, true, true, false]);
    closeAll(b);
  });

  it("delivers events for an offline user on their next connection, once, even without an offset", async () => {
    const first = await connect(server.url, { token: userToken("off1"), transports: ["websocket"] });
    first.close();
    await sleep(200); // let the server see the disconnect
    await emit(server, { event: "notification", user: "off1", data: { title: "While away", message: "queued", severity: "warning" } });
    // Listen before connecting: the replay follows the connect immediately.
    const back = io(server.url, { auth: { token: userToken("off1") }, transports: ["websocket"], forceNew: true, reconnection: false });
    const got = await next(back, "notification", { timeout: 5000 });
    assert.equal(got.message, "queued");
    assert.equal(got.replayed, true);
    // Past the connect (the socket's requests run after it): the queue is through.
    // (Closing at the very moment it arrives may get it again: in flight, as the contract allows.)
    await ack(back, "rooms");
    back.close();
    await sleep(200);
    const again = await connect(server.url, { token: userToken("off1"), transports: ["websocket"] });
    await nothing(again, "notification", 400);
    closeAll(again);
  });

  it("queues nothing for a user who had another tab online", async () => {
    const tab1 = await connect(server.url, { token: userToken("tabs"), transports: ["websocket"] });
    const tab2 = await connect(server.url, { token: userToken("tabs"), transports: ["websocket"] });
    tab2.close();
    await sleep(150);
    const live = next(tab1, "notification");
    await emit(server, { event: "notification", user: "tabs", data: { title: "t", message: "live to tab1", severity: "info" } });
    await live;
    const tab3 = await connect(server.url, { token: userToken("tabs"), transports: ["websocket"] });
    await nothing(tab3, "notification", 400);
    closeAll(tab1, tab3);
  });

  it("a user who never connected gets what was sent to them on their first connection, once", async () => {
    await emit(server, { event: "notification", user: "newcomer", data: { title: "Assigned", message: "order O-9 is yours", severity: "info" } });
    await emit(server, { event: "notification", user: "newcomer-2", data: { title: "Assigned", message: "for 2.x", severity: "info" } });
    const first = io(server.url, { auth: { token: userToken("newcomer") }, transports: ["websocket"], forceNew: true, reconnection: false });
    const got = await next(first, "notification", { timeout: 5000 });
    assert.deepEqual([got.message, got.replayed], ["order O-9 is yours", true]);
    // A second tab while the first is online: nothing queued for it.
    const tab2 = await connect(server.url, { token: userToken("newcomer"), transports: ["websocket"] });
    await nothing(tab2, "notification", 400);
    closeAll(first, tab2);
    await sleep(200);
    const later = await connect(server.url, { token: userToken("newcomer"), transports: ["websocket"] });
    await nothing(later, "notification", 400);
    later.close();
    // socket.io-client 2.x, which never sends an offset, gets it the same way.
    const v2 = ioV2(server.url, { query: { token: userToken("newcomer-2") }, transports: ["websocket"], forceNew: true, reconnection: false });
    const got2 = await next(v2, "notification", { timeout: 5000 });
    assert.deepEqual([got2.message, got2.replayed], ["for 2.x", true]);
    v2.close();
  });

  it("an idempotent retry returns the first result and notifies nobody twice", async () => {
    const s = await connect(server.url, { token: userToken("idem"), transports: ["websocket"] });
    await ack(s, "join:order", { orderId: "I1" });
    const got = collect(s, "order:status_changed");
    const body = { event: "order:status_changed", data: { orderId: "I1", newStatus: "done" } };
    const headers = { "idempotency-key": "retry-123" };
    const one = await emit(server, body, { headers });
    const two = await emit(server, body, { headers });
    assert.equal(one.status, 202);
    assert.equal(two.status, 202);
    assert.equal(two.body.offset, one.body.offset);
    assert.deepEqual(two.body.rooms, one.body.rooms);
    assert.equal(two.body.duplicate, true);
    await until(() => got.length >= 1);
    await nothing(s, "order:status_changed", 400);
    assert.equal(got.length, 1);
    // Batch items carry their own keys.
    const batch = await http(server, "POST", "/api/v1/emit/batch", {
      body: { events: [{ ...body, idempotencyKey: "b-1" }, { ...body, idempotencyKey: "b-1" }, { ...body, idempotencyKey: "retry-123" }] },
    });
    assert.equal(batch.status, 202);
    const [x, y, z] = batch.body.results;
    assert.equal(y.offset, x.offset);
    assert.equal(y.duplicate, true);
    assert.equal(z.offset, one.body.offset);
    await until(() => got.length === 2);
    await nothing(s, "order:status_changed", 400);
    closeAll(s);
  });

  it("tells the client to refetch when its offset is malformed, unknown or too far behind", async () => {
    const latest = (await shipment(server, "BAD", 0)).body.offset;
    for (const [offset, reason] of [
      ["not-an-offset!", "malformed_offset"],
      ["zzzzzzzz-0000000000000001", "unknown_offset"],
      [latest.replace(/\d+$/, (d) => String(Number(d) + 1000).padStart(16, "0")), "unknown_offset"],
    ]) {
      const s = io(server.url, { auth: { token: userToken("bad"), offset }, transports: ["websocket"], forceNew: true, reconnection: false });
      const reset = await next(s, "replay:reset");
      assert.equal(reset.reason, reason, offset);
      assert.equal(reset.offset, offset);
      assert.equal(typeof reset.latestOffset, "string");
      // Still connected and working.
      await until(() => s.connected);
      assert.equal((await ack(s, "join:shipment", { shipmentId: "BAD", since: offset })).reset, reason);
      const live = next(s, "shipment:updated");
      await shipment(server, "BAD", 1);
      assert.equal((await live).seq, 1);
      s.close();
    }
  });

  it("GET /api/v1/events pages a room's log for clients that poll", async () => {
    const start = (await shipment(server, "POLL", 0)).body.offset;
    for (let i = 1; i <= 4; i++) await shipment(server, "POLL", i);
    const page = await http(server, "GET", `/api/v1/events?room=shipment:POLL&after=${start}&limit=3`);
    assert.equal(page.status, 200);
    assert.deepEqual(page.body.events.map((e) => e.seq), [1, 2, 3]);
    const rest = await http(server, "GET", `/api/v1/events?room=shipment:POLL&after=${page.body.events[2].offset}`);
    assert.deepEqual(rest.body.events.map((e) => e.seq), [4]);
    // A user may read rooms they may join, and no others.
    const member = await http(server, "GET", `/api/v1/events?room=shipment:POLL&after=${start}`, { bearer: userToken("u-poll") });
    assert.equal(member.status, 200);
    assert.equal(member.body.events.length, 4);
    const outsider = await http(server, "GET", "/api/v1/events?room=user:someone", { bearer: userToken("u-poll") });
    assert.equal(outsider.status, 403);
    const bad = await http(server, "GET", "/api/v1/events?room=shipment:POLL&after=garbage");
    assert.equal(bad.status, 400);
    assert.equal((await http(server, "GET", "/api/v1/events?room=shipment:POLL", { apiKey: "wrong" })).status, 401);
  });
});

describe("replay under load", () => {
  let server;
  before(async () => (server = await startServer()));
  after(() => server.stop());

  it("interleaves replay and live emits without loss or duplicates", async () => {
    const token = userToken("load", { branchId: "load-branch" });
    const client = trackingClient(server.url, token);
    await client.connected();
    await ack(client.socket, "join:shipment", { shipmentId: "L" });
    const seen = [];
    client.socket.on("dashboard:refresh", (p) => seen.push(p.n));

    // A controller emits a numbered stream to the client's branch room the whole time.
    let n = 0;
    let running = true;
    const stream = (async () => {
      while (running) {
        const batch = Array.from({ length: 20 }, () => ({ event: "dashboard:refresh", data: { branchId: "load-branch", n: n++ } }));
        const res = await http(server, "POST", "/api/v1/emit/batch", { body: { events: batch } });
        assert.equal(res.status, 202);
      }
    })();

    // Drop and reconnect several times while the stream runs, some long enough
    // to fall behind by hundreds of events.
    for (const pause of [10, 300, 50, 600, 0]) {
      await until(() => seen.length > 0);
      client.socket.io.engine.close(); // a network blip: the client reconnects by itself
      await sleep(pause);
      await client.connected();
      await sleep(100);
    }
    running = false;
    await stream;
    assert.ok(n > 200, `the stream emitted ${n} events`);
    await until(() => seen.length === n, { timeout: 15000, what: `${n} events (have ${seen.length})` });
    await sleep(300);
    assert.equal(seen.length, n, "no duplicates");
    assert.deepEqual(seen, Array.from({ length: n }, (_, i) => i), "every event once, in order");
    closeAll(client.socket);
  });

  it("delivers an offline user's queue after a server restart, without an offset", async () => {
    // The server reads users' last events from the log at start-up; a user it
    // believed had none would be connected without their queue.
    const first = await connect(server.url, { token: userToken("restart-q"), transports: ["websocket"] });
    first.close();
    await sleep(200);
    await emit(server, { event: "notification", user: "restart-q", data: { title: "t", message: "while down", severity: "info" } });
    await emit(server, { event: "notification", user: "never-seen-q", data: { title: "t", message: "first ever", severity: "info" } });
    const { DATABASE_URL } = server.env;
    assert.equal((await server.stop("SIGTERM")).code, 0);
    server = await startServer({ DATABASE_URL });

    const back = io(server.url, { auth: { token: userToken("restart-q") }, transports: ["websocket"], forceNew: true, reconnection: false });
    const got = await next(back, "notification", { timeout: 5000 });
    assert.deepEqual([got.message, got.replayed], ["while down", true]);
    const newcomer = io(server.url, { auth: { token: userToken("never-seen-q") }, transports: ["websocket"], forceNew: true, reconnection: false });
    const first2 = await next(newcomer, "notification", { timeout: 5000 });
    assert.deepEqual([first2.message, first2.replayed], ["first ever", true]);
    closeAll(back, newcomer);
  });

  it("replays across a server restart on the same database", async () => {
    const token = userToken("restart", { branchId: "rb" });
    const client = trackingClient(server.url, token, { io: { reconnection: false } });
    await client.connected();
    await emit(server, { event: "dashboard:refresh", data: { branchId: "rb", n: 0 } });
    await until(() => client.events.length === 1);
    client.socket.close();
    for (let i = 1; i <= 3; i++) await emit(server, { event: "dashboard:refresh", data: { branchId: "rb", n: i } });

    const { DATABASE_URL } = server.env;
    const stopped = await server.stop("SIGTERM");
    assert.equal(stopped.code, 0);
    server = await startServer({ DATABASE_URL });

    const again = trackingClient(server.url, token, { offset: client.last, io: { reconnection: false } });
    await again.connected();
    await until(() => again.events.length === 3, { what: "3 replayed after restart" });
    assert.deepEqual(again.events.map((e) => e.n), [1, 2, 3]);
    assert.ok(again.events.every((e) => e.replayed));
    closeAll(again.socket);
  });
});

describe("retention and replay limits", () => {
  it("an offset older than retention gets expired_offset; too many missed gets too_far_behind", async () => {
    const server = await startServer({ EVENT_RETENTION: "1s", REPLAY_LIMIT: "3" });
    try {
      const old = (await emit(server, { event: "notification", user: "ret", data: { title: "t", message: "old", severity: "info" } })).body.offset;
      await sleep(1500);
      await emit(server, { event: "notification", user: "ret", data: { title: "t", message: "new", severity: "info" } });
      // The pruner runs about ten times per retention window.
      await until(async () => {
        const s = io(server.url, { auth: { token: userToken("ret"), offset: old }, transports: ["websocket"], forceNew: true, reconnection: false });
        const reset = await next(s, "replay:reset", { timeout: 1500 }).catch(() => null);
        s.close();
        return reset?.reason === "expired_offset";
      }, { timeout: 10000, what: "expired_offset" });

      const start = (await emit(server, { event: "notification", user: "far", data: { title: "t", message: "0", severity: "info" } })).body.offset;
      // One more than the limit: the hub may skip its database count only
      // within the limit, so this takes the count and must reset.
      for (let i = 1; i <= 4; i++) await emit(server, { event: "notification", user: "far", data: { title: "t", message: String(i), severity: "info" } });
      const s = io(server.url, { auth: { token: userToken("far"), offset: start }, transports: ["websocket"], forceNew: true, reconnection: false });
      const got = collect(s, "notification");
      const reset = await next(s, "replay:reset");
      assert.equal(reset.reason, "too_far_behind");
      await nothing(s, "notification", 300);
      assert.equal(got.length, 0, "nothing partial is replayed");
      s.close();

      // Exactly the limit missed: replayed in full, no reset (the boundary the
      // hub decides without counting in the database).
      const edge = (await emit(server, { event: "notification", user: "edge", data: { title: "t", message: "0", severity: "info" } })).body.offset;
      for (let i = 1; i <= 3; i++) await emit(server, { event: "notification", user: "edge", data: { title: "t", message: String(i), severity: "info" } });
      const e = io(server.url, { auth: { token: userToken("edge"), offset: edge }, transports: ["websocket"], forceNew: true, reconnection: false });
      const resets = collect(e, "replay:reset");
      const replayed = collect(e, "notification");
      await until(async () => replayed.length === 3, { timeout: 5000, what: "three replayed" });
      await nothing(e, "notification", 300);
      assert.deepEqual(replayed.map((n) => n.message), ["1", "2", "3"]);
      assert.equal(resets.length, 0);
      e.close();
    } finally {
      await server.stop();
    }
  });
});

describe("the offline queue across a drop in the middle of its replay", () => {
  let server;
  before(async () => (server = await startServer({ RATE_LIMIT_PER_MINUTE: "0" })));
  after(() => server.stop());

  it("a connection that stops reading and drops mid-replay loses nothing: the next one gets the rest", async () => {
    const user = "dropper";
    const tok = userToken(user);
    await knownThenAway(server, tok);
    // More than the kernel's socket buffers and the connection's queue hold.
    const pad = "p".repeat(4000);
    const offsets = await emitQueue(server, 4000, (i) => ({ event: "upload_progress", user, data: { uploadId: `u${i}`, progress: 1, pad } }));
    // The first connection reads a little of its queue, stops reading, and drops.
    const slow = await openPlain(server, { query: { token: tok } });
    await until(() => slow.all("upload_progress").length >= 20, { what: "the start of the replay" });
    slow.ws._socket.pause();
    await sleep(1500);
    slow.ws.terminate();
    const seenFirst = new Set(slow.all("upload_progress").map((f) => f.offset));
    assert.ok(seenFirst.size < offsets.length, `the drop must land mid-replay (got ${seenFirst.size} of ${offsets.length})`);
    // Back at once: the server may not have noticed the drop yet.
    // The next connection gets everything the first may not have received, in order.
    const back = await openPlain(server, { query: { token: tok } });
    const owed = offsets.filter((o) => !seenFirst.has(o));
    await until(() => hasAll(back, owed), {
      what: `the rest of the queue (first saw ${seenFirst.size}, second ${back.all("upload_progress").length})`,
      timeout: 20000,
    });
    await sleep(300);
    const got = back.all("upload_progress").map((f) => f.offset);
    const missing = offsets.filter((o) => !seenFirst.has(o) && !got.includes(o));
    assert.deepEqual(missing, [], "every acknowledged event reached the user");
    assert.deepEqual(got, [...got].sort(), "in offset order");
    assert.equal(new Set(got).size, got.length, "each at most once on this connection");
    back.close();
    await back.done;
    await sleep(200);
    // Through now: a later connection gets none of it again.
    const after = await openPlain(server, { query: { token: tok } });
    await after.next((f) => f.type === "connection_established");
    await sleep(400);
    assert.equal(after.all("upload_progress").length, 0);
    after.close();
  });
});

describe("the offline queue across a crash in the middle of its replay", () => {
  it("kill -9 while a reconnecting user takes the queue: after the restart every acknowledged event reaches them", async () => {
    let server = await startServer({ RATE_LIMIT_PER_MINUTE: "0" });
    const env = server.env;
    const user = "crash-queue";
    const tok = userToken(user);
    try {
      await knownThenAway(server, tok);
      // The ledger: every offset a 202 acknowledged.
      const pad = "q".repeat(4000);
      const acknowledged = await emitQueue(server, 3000, (i) => ({ event: "notification", user, data: { title: `n${i}`, message: pad, severity: "info" } }));
      // The user comes back; while the queue streams in, the server dies.
      const taking = await openPlain(server, { query: { token: tok } });
      await until(() => taking.all("notification").length >= 20, { what: "the start of the queue" });
      taking.ws._socket.pause();
      await server.stop("SIGKILL");
      const seen = new Set(taking.all("notification").map((f) => f.offset));
      taking.ws.terminate();
      assert.ok(seen.size < acknowledged.length, `the crash must land mid-replay (${seen.size} of ${acknowledged.length})`);

      server = await startServer(env);
      const back = await openPlain(server, { query: { token: tok } });
      const owed = acknowledged.filter((o) => !seen.has(o));
      await until(() => hasAll(back, owed), { what: "every acknowledged event", timeout: 20000 });
      const got = back.all("notification").map((f) => f.offset);
      assert.equal(new Set(got).size, got.length, "each once on this connection");
      assert.deepEqual(got, [...got].sort(), "in offset order");
      back.close();
    } finally {
      await server.stop();
    }
  });
});
