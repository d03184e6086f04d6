// Room access control, end to end, with the real socket.io-client (4.x and 2.x):
// the automatic rooms each token gets, every row of the contract's room table
// both allowed and refused (via `subscribe` and via `join:shipment`/`join:order`),
// malformed names and payloads with their exact error codes, leave/unsubscribe,
// one delivery per socket however many target rooms it is in, and the per-socket
// room cap. After every refusal the refused socket is still connected and still
// receives events for the rooms it did join, and a bystander socket is unaffected.
// "Joined" is never taken from the ack alone: an event emitted over HTTP to the
// room must arrive, and for refusals an event emitted to the refused room must not.
import { after, afterEach, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import crypto from "node:crypto";
import { ack, closeAll, collect, connect, emit, next, nothing, sleep, startServer, userToken } from "../lib/harness.mjs";

describe("rooms: automatic rooms, access control, malformed names, leave, dedupe, cap", () => {
  let server;
  let bystander;
  let opened = [];
  let seq = 0;

  before(async () => {
    // The rate limit is not under test here and some tests send >120 events.
    server = await startServer({ RATE_LIMIT_PER_MINUTE: "0" });
    bystander = await open("bystander", { branchId: "b1", role: "operator" });
  });
  after(async () => {
    closeAll(bystander);
    await server.stop();
  });
  afterEach(async () => {
    // Nothing emitted to a refused room may have reached the socket that was refused.
    await sleep(150);
    for (const s of [...opened, bystander]) {
      assert.deepEqual(s.leaks, [], `${s.label} received an event for a room it was refused`);
    }
    closeAll(opened);
    opened = [];
  });

  /**
   * Connects a user, records every `leak` event it gets, and joins a private
   * channel (`socket.home`) used to prove it still receives events.
   */
  async function open(sub, claims = {}, { version = 4, transports } = {}) {
    const socket = await connect(server.url, { token: userToken(sub, claims), version, transports });
    socket.label = `${sub} (${version === 2 ? "2.x" : "4.x"})`;
    socket.home = `channel:home-${++seq}`;
    // Leaks are emitted to a refused room naming the refused socket; other
    // members of that room (e.g. the real owner of a user room) may get them.
    socket.leaks = [];
    socket.on("leak", (p) => p.victim === socket.home && socket.leaks.push(p));
    const joined = await ack(socket, "subscribe", { room: socket.home });
    assert.equal(joined.ok, true, `${socket.label} could not join its home channel: ${JSON.stringify(joined)}`);
    if (sub !== "bystander") opened.push(socket);
    return socket;
  }

  /** Emits a fresh event to `room` over HTTP and waits for `socket` to get it. */
  async function receives(socket, room, event = "probe") {
    const nonce = crypto.randomUUID();
    const got = next(socket, event, { filter: (p) => p.nonce === nonce, timeout: 5000 });
    const res = await emit(server, { event, data: { nonce }, rooms: [room] });
    assert.equal(res.status, 202, JSON.stringify(res.body));
    const payload = await got;
    assert.equal(payload.type, event);
    return payload;
  }

  /** The socket is connected and still gets events for its rooms; the bystander too. */
  async function stillWorks(socket) {
    assert.equal(socket.connected, true, `${socket.label} was disconnected`);
    await receives(socket, socket.home);
    assert.equal(bystander.connected, true, "the bystander socket was disconnected");
    await receives(bystander, bystander.home);
    const pong = await ack(socket, "rooms");
    assert.equal(pong.ok, true);
  }

  async function roomsOf(socket) {
    const reply = await ack(socket, "rooms");
    assert.equal(reply.ok, true, JSON.stringify(reply));
    assert.ok(Array.isArray(reply.rooms));
    return reply.rooms;
  }

  /** An allowed join: ack names the room, `rooms` lists it, an emit to it arrives. */
  async function joins(socket, event, payload, room) {
    const reply = await ack(socket, event, payload);
    assert.equal(reply.ok, true, `${socket.label} ${event} ${JSON.stringify(payload)} → ${JSON.stringify(reply)}`);
    assert.equal(reply.room, room);
    assert.ok((await roomsOf(socket)).includes(room), `${room} missing from rooms`);
    await receives(socket, room);
  }

  /** A leave ack: `{ ok, room, left }` (other fields, e.g. presence counts, are not under test). */
  function leaves(reply, expected) {
    assert.deepEqual({ ok: reply.ok, room: reply.room, left: reply.left }, expected, JSON.stringify(reply));
  }

  /** A refusal with exactly `code`; the connection and other sockets are unaffected. */
  async function refused(socket, event, payload, code) {
    const before = await roomsOf(socket);
    const reply = await ack(socket, event, payload);
    const what = `${socket.label} ${event} ${JSON.stringify(payload)?.slice(0, 80)} → ${JSON.stringify(reply)}`;
    assert.equal(reply.ok, false, what);
    assert.equal(reply.error?.code, code, what);
    assert.equal(typeof reply.error.message, "string", what);
    assert.ok(reply.error.message.length > 0, what);
    assert.deepEqual(await roomsOf(socket), before, `${what}: the socket's rooms changed`);
    await stillWorks(socket);
    return reply;
  }

  /** A `forbidden` join of a well-formed room: refused, not joined, nothing from it arrives. */
  async function forbidden(socket, event, payload, room) {
    await refused(socket, event, payload, "forbidden");
    assert.ok(!(await roomsOf(socket)).includes(room), `${room} listed after a refusal`);
    // An event to the refused room must not reach this socket (checked in afterEach);
    // the probe after it shows the socket was listening meanwhile.
    const res = await emit(server, { event: "leak", data: { room, victim: socket.home }, rooms: [room] });
    assert.equal(res.status, 202, JSON.stringify(res.body));
    await receives(socket, socket.home);
  }

  describe("automatic rooms", () => {
    const cases = [
      {
        name: "sub + branchId + role",
        sub: "auto-full",
        claims: { branchId: "b1", role: "manager" },
        rooms: ["branch:b1", "role:manager", "role:manager:b1", "user:auto-full"],
      },
      { name: "sub only", sub: "auto-bare", claims: {}, rooms: ["user:auto-bare"] },
      { name: "role without branch", sub: "auto-role", claims: { role: "operator" }, rooms: ["role:operator", "user:auto-role"] },
      { name: "branch_id spelling", sub: "auto-branch", claims: { branch_id: "b7" }, rooms: ["branch:b7", "user:auto-branch"] },
      { name: "integer branchId", sub: "auto-int", claims: { branchId: 3, role: "driver" }, rooms: ["branch:3", "role:driver", "role:driver:3", "user:auto-int"] },
    ];
    for (const c of cases) {
      it(`${c.name}: joined on connect, listed by \`rooms\`, each receives emits`, async () => {
        const socket = await open(c.sub, c.claims);
        const rooms = await roomsOf(socket);
        assert.deepEqual(rooms, [...c.rooms, socket.home].sort());
        for (const room of c.rooms) await receives(socket, room);
        // Subscribing to a room the socket is already in is fine and changes nothing.
        for (const room of c.rooms) {
          const again = await ack(socket, "subscribe", { room });
          assert.equal(again.ok, true, `${room}: ${JSON.stringify(again)}`);
          assert.equal(again.room, room);
        }
        assert.deepEqual(await roomsOf(socket), rooms);
      });
    }

    it(
      "an integer `sub` (ids from SQL databases) is accepted and gets user:{sub}",
      async () => {
        const socket = await open(4242, { branchId: 3 });
        assert.deepEqual(await roomsOf(socket), ["branch:3", socket.home, "user:4242"].sort());
        await receives(socket, "user:4242");
      },
    );

    it("events for one user's automatic rooms do not reach another user", async () => {
      const a = await open("auto-a", { branchId: "ba", role: "clerk" });
      const b = await open("auto-b", { branchId: "bb", role: "picker" });
      const silent = nothing(b, "auto.only", 400);
      for (const room of ["user:auto-a", "branch:ba", "role:clerk", "role:clerk:ba"]) await receives(a, room, "auto.only");
      await silent;
    });
  });

  describe("the room table, allowed and refused", () => {
    it("user:{id}: only that user (not another user, not an admin)", async () => {
      const alice = await open("alice", { branchId: "b1", role: "operator" });
      const admin = await open("root", { branchId: "b1", role: "admin" });
      const again = await ack(alice, "subscribe", { room: "user:alice" });
      assert.equal(again.ok, true, JSON.stringify(again));
      await forbidden(alice, "subscribe", { room: "user:bob" }, "user:bob");
      await forbidden(alice, "subscribe", { room: "user:root" }, "user:root");
      await forbidden(admin, "subscribe", { room: "user:alice" }, "user:alice");
      // A user id that merely starts with the sub is another user.
      await forbidden(alice, "subscribe", { room: "user:alice2" }, "user:alice2");
    });

    it("branch:{id}: own branch only; admin role any branch", async () => {
      const alice = await open("br-alice", { branchId: "b1", role: "operator" });
      const nobranch = await open("br-none", { role: "operator" });
      const admin = await open("br-admin", { branchId: "b1", role: "admin" });
      const branchlessAdmin = await open("br-admin2", { role: "admin" });

      const own = await ack(alice, "subscribe", { room: "branch:b1" });
      assert.equal(own.ok, true, JSON.stringify(own));
      await forbidden(alice, "subscribe", { room: "branch:b2" }, "branch:b2");
      await forbidden(alice, "subscribe", { room: "branch:b10" }, "branch:b10");
      await forbidden(nobranch, "subscribe", { room: "branch:b1" }, "branch:b1");

      await joins(admin, "subscribe", { room: "branch:b2" }, "branch:b2");
      await joins(admin, "subscribe", { room: "branch:zz-99" }, "branch:zz-99");
      await joins(branchlessAdmin, "subscribe", { room: "branch:b1" }, "branch:b1");
      // The admin now hears branch b2; alice (b1) still does not.
      const silent = nothing(alice, "b2.only", 300);
      await receives(admin, "branch:b2", "b2.only");
      await silent;
    });

    it("role:{role} and role:{role}:{branch}: that role (and branch) only", async () => {
      const manager = await open("ro-manager", { branchId: "b1", role: "manager" });
      const norole = await open("ro-none", { branchId: "b1" });
      const admin = await open("ro-admin", { branchId: "b1", role: "admin" });
      const nobranch = await open("ro-nobranch", { role: "manager" });

      for (const room of ["role:manager", "role:manager:b1"]) {
        const r = await ack(manager, "subscribe", { room });
        assert.equal(r.ok, true, `${room}: ${JSON.stringify(r)}`);
      }
      await forbidden(manager, "subscribe", { room: "role:manager:b2" }, "role:manager:b2");
      await forbidden(manager, "subscribe", { room: "role:operator" }, "role:operator");
      await forbidden(manager, "subscribe", { room: "role:operator:b1" }, "role:operator:b1");
      await forbidden(norole, "subscribe", { room: "role:manager" }, "role:manager");
      await forbidden(norole, "subscribe", { room: "role:manager:b1" }, "role:manager:b1");
      // Admin is a role, not a wildcard, for role rooms.
      await forbidden(admin, "subscribe", { room: "role:manager" }, "role:manager");
      await forbidden(admin, "subscribe", { room: "role:manager:b1" }, "role:manager:b1");
      // A manager without a branch has role:manager but no per-branch room.
      assert.deepEqual((await roomsOf(nobranch)).filter((r) => r.startsWith("role:")), ["role:manager"]);
      await forbidden(nobranch, "subscribe", { room: "role:manager:b1" }, "role:manager:b1");
    });

    it("entity rooms: open to any user without a `rooms` claim, by subscribe and by join:*", async () => {
      const bare = await open("ent-bare");
      for (const room of ["order:1", "shipment:S-1", "quote:q_1", "support:5", "equipment:e.1", "warehouse:w@1"]) {
        await joins(bare, "subscribe", { room }, room);
      }
      await joins(bare, "join:shipment", { shipmentId: "S-2" }, "shipment:S-2");
      await joins(bare, "join:shipment", { shipmentId: 99 }, "shipment:99");
      await joins(bare, "join:order", { orderId: 77 }, "order:77");
      await joins(bare, "join:order", { orderId: "ORD-2026.1" }, "order:ORD-2026.1");
      const other = await open("ent-other", { branchId: "b1", role: "operator" });
      await joins(other, "join:shipment", { shipmentId: "S-2" }, "shipment:S-2");
    });

    it("entity rooms: a `rooms` claim (order:*, shipment:42) is the only grant", async () => {
      const r = await open("ent-restricted", { branchId: "b1", role: "operator", rooms: ["order:*", "shipment:42"] });
      await joins(r, "join:order", { orderId: 5 }, "order:5");
      await joins(r, "subscribe", { room: "order:abc" }, "order:abc");
      await joins(r, "join:shipment", { shipmentId: 42 }, "shipment:42");
      await forbidden(r, "join:shipment", { shipmentId: 43 }, "shipment:43");
      await forbidden(r, "join:shipment", { shipmentId: "420" }, "shipment:420");
      await forbidden(r, "subscribe", { room: "shipment:4" }, "shipment:4");
      await forbidden(r, "subscribe", { room: "quote:1" }, "quote:1");
      await forbidden(r, "subscribe", { room: "warehouse:1" }, "warehouse:1");
      await forbidden(r, "subscribe", { room: "support:1" }, "support:1");
      await forbidden(r, "subscribe", { room: "equipment:1" }, "equipment:1");
      // The claim restricts entity rooms only: channels, own branch and role rooms stay open.
      await joins(r, "subscribe", { room: "channel:ops" }, "channel:ops");
      const own = await ack(r, "subscribe", { room: "branch:b1" });
      assert.equal(own.ok, true, JSON.stringify(own));

      const none = await open("ent-none", { rooms: [] });
      await forbidden(none, "join:order", { orderId: 1 }, "order:1");
      await forbidden(none, "join:shipment", { shipmentId: 42 }, "shipment:42");
      await joins(none, "subscribe", { room: "channel:ops" }, "channel:ops");
    });

    it("dm:{a}:{b}: its two users only; dm:{b}:{a} is malformed", async () => {
      const alice = await open("alice");
      const bob = await open("bob");
      const carol = await open("carol");
      await joins(alice, "subscribe", { room: "dm:alice:bob" }, "dm:alice:bob");
      await joins(bob, "subscribe", { room: "dm:alice:bob" }, "dm:alice:bob");
      await forbidden(carol, "subscribe", { room: "dm:alice:bob" }, "dm:alice:bob");
      await refused(bob, "subscribe", { room: "dm:bob:alice" }, "bad_request");
      await refused(alice, "subscribe", { room: "dm:alice:alice" }, "bad_request");
      await refused(alice, "subscribe", { room: "dm:alice" }, "bad_request");
      await refused(alice, "subscribe", { room: "dm:alice:bob:carol" }, "bad_request");
      // Both members hear the DM room, carol does not.
      const nonce = crypto.randomUUID();
      const gotA = next(alice, "dm.note", { filter: (p) => p.nonce === nonce });
      const gotB = next(bob, "dm.note", { filter: (p) => p.nonce === nonce });
      const silent = nothing(carol, "dm.note", 400);
      const res = await emit(server, { event: "dm.note", data: { nonce }, rooms: ["dm:alice:bob"] });
      assert.equal(res.status, 202);
      await Promise.all([gotA, gotB, silent]);
    });

    it("channel:{name}: open to any user, with or without claims", async () => {
      const bare = await open("ch-bare");
      const restricted = await open("ch-restricted", { rooms: ["shipment:1"] });
      await joins(bare, "subscribe", { room: "channel:general" }, "channel:general");
      await joins(restricted, "subscribe", { room: "channel:general" }, "channel:general");
    });
  });

  describe("malformed names and payloads", () => {
    it("subscribe with a malformed room name → bad_request, room not joined", async () => {
      const s = await open("mal-sub", { branchId: "b1", role: "operator" });
      const longest = `channel:${"a".repeat(200 - "channel:".length)}`;
      assert.equal(Buffer.byteLength(longest), 200);
      const bad = [
        "channel:has space",
        " channel:x",
        "channel:ünïcode",
        "channel:日本",
        `${longest}a`, // 201 bytes
        `channel:${"é".repeat(100)}`, // 108 chars, 208 bytes, and not ASCII
        "foo:1", // unknown prefix
        "Shipment:1",
        "shipment:", // empty id
        "shipment",
        "",
        ":42",
        "shipment::42",
        "shipment:1:2",
        "shipment:a/b",
        "shipment:*",
        "*",
        "user:",
        "channel:x\n",
        "channel:<script>",
      ];
      for (const room of bad) await refused(s, "subscribe", { room }, "bad_request");
      await joins(s, "subscribe", { room: longest }, longest);
    });

    it("wrong payload types and missing fields → bad_request", async () => {
      const s = await open("mal-payload");
      const cases = [
        ["join:shipment", ["S1"]],
        ["join:shipment", 42],
        ["join:shipment", "S1"],
        ["join:shipment", null],
        ["join:shipment", undefined], // no payload at all, only the ack
        ["join:shipment", {}],
        ["join:shipment", { shipmentId: "" }],
        ["join:shipment", { shipmentId: null }],
        ["join:shipment", { shipmentId: 1.5 }],
        ["join:shipment", { shipmentId: true }],
        ["join:shipment", { shipmentId: ["S1"] }],
        ["join:shipment", { shipmentId: { id: 1 } }],
        ["join:shipment", { shipmentId: "has space" }],
        ["join:shipment", { shipmentId: "a:b" }],
        ["join:shipment", { orderId: 1 }],
        ["join:order", {}],
        ["join:order", { orderId: [] }],
        ["join:order", [1]],
        ["subscribe", {}],
        ["subscribe", undefined],
        ["subscribe", "channel:x"],
        ["subscribe", ["channel:x"]],
        ["subscribe", { room: 5 }],
        ["subscribe", { room: null }],
        ["subscribe", { room: ["channel:x"] }],
        ["subscribe", { name: "channel:x" }],
        ["unsubscribe", {}],
        ["unsubscribe", { room: "bad room" }],
        ["leave:shipment", {}],
        ["leave:order", { orderId: "" }],
      ];
      for (const [event, payload] of cases) await refused(s, event, payload, "bad_request");
    });

    it("unknown client events → not_found", async () => {
      const s = await open("mal-unknown");
      for (const event of ["frobnicate", "join:nothing", "subscribe:all", "JOIN:SHIPMENT"]) {
        await refused(s, event, { room: "channel:x" }, "not_found");
      }
    });

    it("a burst of refusals interleaved with good joins: every ack is right, the socket keeps its rooms", async () => {
      const s = await open("mal-burst");
      const sent = [];
      for (let i = 0; i < 10; i++) {
        sent.push([ack(s, "subscribe", { room: `channel:burst-${i}` }), true, null]);
        sent.push([ack(s, "subscribe", { room: `user:someone-${i}` }), false, "forbidden"]);
        sent.push([ack(s, "join:shipment", [i]), false, "bad_request"]);
        sent.push([ack(s, "subscribe", { room: `bad room ${i}` }), false, "bad_request"]);
      }
      for (const [promise, ok, code] of sent) {
        const reply = await promise;
        assert.equal(reply.ok, ok, JSON.stringify(reply));
        if (!ok) assert.equal(reply.error.code, code, JSON.stringify(reply));
      }
      const rooms = await roomsOf(s);
      assert.deepEqual(rooms.filter((r) => r.startsWith("channel:burst-")).length, 10);
      assert.ok(!rooms.some((r) => r.startsWith("user:someone")));
      await receives(s, "channel:burst-7");
      await stillWorks(s);
    });
  });

  describe("leave and unsubscribe", () => {
    it("leave:shipment / leave:order / unsubscribe stop delivery and report `left`", async () => {
      const s = await open("lv-1");
      const tab2 = await open("lv-1");
      await joins(s, "join:shipment", { shipmentId: "L1" }, "shipment:L1");
      await joins(s, "join:order", { orderId: 2 }, "order:2");
      await joins(s, "subscribe", { room: "channel:L3" }, "channel:L3");
      await joins(tab2, "join:shipment", { shipmentId: "L1" }, "shipment:L1");

      leaves(await ack(s, "leave:shipment", { shipmentId: "L1" }), { ok: true, room: "shipment:L1", left: true });
      leaves(await ack(s, "leave:order", { orderId: 2 }), { ok: true, room: "order:2", left: true });
      leaves(await ack(s, "unsubscribe", { room: "channel:L3" }), { ok: true, room: "channel:L3", left: true });
      // Leaving again, or a room never joined: still ok, left: false.
      leaves(await ack(s, "leave:shipment", { shipmentId: "L1" }), { ok: true, room: "shipment:L1", left: false });
      leaves(await ack(s, "unsubscribe", { room: "channel:never" }), { ok: true, room: "channel:never", left: false });

      const rooms = await roomsOf(s);
      for (const room of ["shipment:L1", "order:2", "channel:L3"]) assert.ok(!rooms.includes(room), room);
      const silent = nothing(s, "after.leave", 400);
      for (const room of ["shipment:L1", "order:2", "channel:L3"]) {
        const res = await emit(server, { event: "after.leave", data: {}, rooms: [room] });
        assert.equal(res.status, 202);
      }
      // The other tab of the same user did not leave: leaving is per socket.
      await receives(tab2, "shipment:L1", "after.leave");
      await silent;
      await stillWorks(s);
      // And it can join again.
      await joins(s, "join:shipment", { shipmentId: "L1" }, "shipment:L1");
    });
  });

  it("a socket in several target rooms receives one emit once", async () => {
    const s = await open("dup-1", { branchId: "bd", role: "operator" });
    await joins(s, "join:shipment", { shipmentId: "D1" }, "shipment:D1");
    await joins(s, "join:order", { orderId: "D2" }, "order:D2");
    const got = collect(s, "dup.check");
    const orders = collect(s, "order:status_changed");
    const res = await emit(server, {
      event: "dup.check",
      data: { n: 1 },
      rooms: ["shipment:D1", "order:D2", "user:dup-1", s.home],
      user: "dup-1",
      branch: "bd",
    });
    assert.equal(res.status, 202, JSON.stringify(res.body));
    // A catalog event whose default rooms (order + branch) both hold the socket.
    const res2 = await emit(server, { event: "order:status_changed", data: { orderId: "D2", branchId: "bd", status: "x" } });
    assert.equal(res2.status, 202, JSON.stringify(res2.body));
    await receives(s, s.home); // later than both
    await sleep(300);
    assert.equal(got.length, 1, JSON.stringify(got));
    assert.equal(orders.length, 1, JSON.stringify(orders));
  });

  describe("per-socket room cap (MAX_ROOMS_PER_SOCKET, default 100)", () => {
    async function fill(s) {
      let joined = 0;
      let refusal;
      for (let i = 0; i < 150; i++) {
        const reply = await ack(s, "subscribe", { room: `channel:cap-${s.label.split(" ")[0]}-${i}` });
        if (!reply.ok) {
          refusal = reply;
          break;
        }
        joined++;
      }
      return { joined, refusal };
    }

    it("refuses joins past the cap with forbidden; the socket keeps working and can leave to make space", async () => {
      const s = await open("capped");
      const { refusal } = await fill(s);
      assert.ok(refusal, "no join was ever refused");
      assert.equal(refusal.error.code, "forbidden", JSON.stringify(refusal));
      const rooms = await roomsOf(s);
      assert.ok(rooms.length <= 100, `in ${rooms.length} rooms`);
      assert.ok(rooms.length >= 95, `refused already at ${rooms.length} rooms`);
      // Entity joins and join:shipment are capped as well.
      await refused(s, "join:shipment", { shipmentId: "over-cap" }, "forbidden");
      await refused(s, "subscribe", { room: "channel:one-more" }, "forbidden");
      // A room it is already in is not a new room.
      const again = await ack(s, "subscribe", { room: s.home });
      assert.equal(again.ok, true, JSON.stringify(again));
      // Still receives events for rooms joined before the cap.
      await receives(s, "channel:cap-capped-0");
      await receives(s, rooms.filter((r) => r.startsWith("channel:cap-")).at(-1));
      // Leaving frees a slot.
      const left = await ack(s, "unsubscribe", { room: "channel:cap-capped-0" });
      assert.equal(left.left, true);
      await joins(s, "subscribe", { room: "channel:after-leave" }, "channel:after-leave");
      await refused(s, "subscribe", { room: "channel:one-more" }, "forbidden");
      // Another socket is not affected by this one's cap.
      const other = await open("capped-other");
      await joins(other, "subscribe", { room: "channel:one-more" }, "channel:one-more");
    });

    it(
      "a socket can be in exactly MAX_ROOMS_PER_SOCKET rooms as listed by `rooms`",
      async () => {
        const s = await open("capped-exact");
        const { refusal } = await fill(s);
        assert.ok(refusal);
        assert.equal(refusal.error.code, "forbidden");
        assert.equal((await roomsOf(s)).length, 100);
      },
    );
  });

  describe("socket.io-client 2.x", () => {
    it("automatic rooms, join + refusal basics, still connected and receiving", async () => {
      const s = await open("v2-user", { branchId: "b1", role: "operator", rooms: ["shipment:*"] }, { version: 2 });
      assert.deepEqual(await roomsOf(s), ["branch:b1", "role:operator", "role:operator:b1", s.home, "user:v2-user"].sort());
      await receives(s, "user:v2-user");
      await joins(s, "join:shipment", { shipmentId: "V2-1" }, "shipment:V2-1");
      await joins(s, "subscribe", { room: "shipment:V2-2" }, "shipment:V2-2");
      await forbidden(s, "join:order", { orderId: 1 }, "order:1");
      await forbidden(s, "subscribe", { room: "user:someone-else" }, "user:someone-else");
      await forbidden(s, "subscribe", { room: "branch:b2" }, "branch:b2");
      await refused(s, "subscribe", { room: "channel:bad name" }, "bad_request");
      await refused(s, "join:shipment", ["V2-1"], "bad_request");
      await refused(s, "join:shipment", {}, "bad_request");
      await refused(s, "no-such-event", {}, "not_found");
      leaves(await ack(s, "leave:shipment", { shipmentId: "V2-1" }), { ok: true, room: "shipment:V2-1", left: true });
      await receives(s, "shipment:V2-2");
    });

    it("2.x polling transport: join + refusal basics", async () => {
      const s = await open("v2-poll", {}, { version: 2, transports: ["polling"] });
      await joins(s, "join:order", { orderId: 12 }, "order:12");
      await forbidden(s, "subscribe", { room: "dm:a:b" }, "dm:a:b");
      await refused(s, "subscribe", { room: "x".repeat(201) }, "bad_request");
      await refused(s, "join:order", 12, "bad_request");
    });
  });
});
