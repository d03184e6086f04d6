// The controller HTTP API, end to end: real livehub, real socket.io-client
// sockets (4.x websocket and polling, 2.x), plain fetch.
//  - every refusal of POST /api/v1/emit with its exact status and error code,
//    and after each one the server still accepts emits and a connected socket
//    still receives them (and never receives the refused event);
//  - every target kind reaches exactly the right sockets (non-recipients are
//    checked with `nothing()`), default rooms from the catalog, explicit targets
//    replacing them;
//  - the envelope (type, timestamp, offset) and offsets sorting in emit order;
//  - POST /api/v1/emit/batch: per-event results in order, bad events do not sink
//    good ones, the 1000-event limit;
//  - POST /api/v1/users/{id}/disconnect; GET /health counts.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import crypto from "node:crypto";
import nodeHttp from "node:http";
import { API_KEY, ack, closeAll, connect, emit, http, next, nothing, startServer, token, until, userToken } from "../lib/harness.mjs";

const ISO = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$/;
const MAX = 131072;

describe("HTTP API", () => {
  let server;
  let ua1, ua2, um, uo, un, u42, v2;
  let all;
  const names = new Map();
  /** Every event the `un` socket received whose data carries a refused-* nonce. */
  const refusedSeen = [];

  before(async () => {
    server = await startServer();
    const open = async (label, sub, claims, opts = {}) => {
      const s = await connect(server.url, { token: userToken(sub, claims), ...opts });
      names.set(s, label);
      return s;
    };
    ua1 = await open("ua1", "ua", { branchId: "b1", role: "operator" }, { transports: ["websocket"] });
    ua2 = await open("ua2 (polling)", "ua", { branchId: "b1", role: "operator" }, { transports: ["polling"] });
    um = await open("um", "um", { branchId: "b1", role: "manager" });
    uo = await open("uo", "uo", { branchId: "b2", role: "operator" });
    un = await open("un", "un", {});
    u42 = await open("u42", "42", {});
    v2 = await open("v2 (2.x)", "uv2", { branchId: "b2", role: "manager" }, { version: 2 });
    all = [ua1, ua2, um, uo, un, u42, v2];
    un.onAny((_event, payload) => {
      if (typeof payload?.nonce === "string" && payload.nonce.startsWith("refused-")) refusedSeen.push([_event, payload]);
    });
    const joins = [
      [un, "join:shipment", { shipmentId: "SH1" }],
      [un, "join:shipment", { shipmentId: 7 }],
      [un, "join:order", { orderId: "O1" }],
      [un, "subscribe", { room: "warehouse:W1" }],
      [v2, "join:order", { orderId: "O1" }],
      [ua1, "subscribe", { room: "channel:t1" }],
      [uo, "subscribe", { room: "channel:t1" }],
    ];
    for (const [s, event, payload] of joins) {
      const reply = await ack(s, event, payload);
      assert.equal(reply.ok, true, `${names.get(s)} ${event}: ${JSON.stringify(reply)}`);
    }
  });
  after(async () => {
    closeAll(all);
    await server.stop();
  });

  /**
   * Emits `body` (with a fresh nonce in `data`) and checks that exactly the
   * sockets in `to` receive it, once each, and every other socket gets nothing.
   */
  async function delivery(body, to, { rooms } = {}) {
    const nonce = crypto.randomUUID();
    const sent = { ...body, data: { ...body.data, nonce } };
    const notTo = all.filter((s) => !to.includes(s));
    const counts = new Map(all.map((s) => [s, 0]));
    const listeners = all.map((s) => {
      const on = (p) => p?.nonce === nonce && counts.set(s, counts.get(s) + 1);
      s.on(body.event, on);
      return () => s.off(body.event, on);
    });
    try {
      const got = to.map((s) =>
        next(s, body.event, { filter: (p) => p?.nonce === nonce }).catch(() => {
          throw new Error(`${names.get(s)} did not receive ${body.event} ${JSON.stringify(body)}`);
        }),
      );
      const silent = notTo.map((s) =>
        nothing(s, body.event, 400).catch((e) => {
          throw new Error(`${names.get(s)} should not receive ${JSON.stringify(body)}: ${e.message}`);
        }),
      );
      const res = await emit(server, sent);
      assert.equal(res.status, 202, JSON.stringify(res.body));
      assert.equal(res.body.ok, true);
      assert.equal(typeof res.body.offset, "string");
      if (rooms) assert.deepEqual([...res.body.rooms].sort(), [...rooms].sort());
      const payloads = await Promise.all(got);
      await Promise.all(silent);
      for (const s of to) assert.equal(counts.get(s), 1, `${names.get(s)} received ${body.event} ${counts.get(s)} times`);
      for (const p of payloads) {
        assert.equal(p.type, body.event);
        assert.equal(p.offset, res.body.offset);
        for (const [k, v] of Object.entries(body.data ?? {})) if (k !== "timestamp") assert.deepEqual(p[k], v, k);
      }
      return { res, payloads };
    } finally {
      listeners.forEach((off) => off());
    }
  }

  /** The server still accepts emits and `un` (and the others) are connected and receive. */
  async function stillWorks() {
    for (const s of all) assert.equal(s.connected, true, `${names.get(s)} was disconnected`);
    const nonce = crypto.randomUUID();
    const got = next(un, "alive", { filter: (p) => p.nonce === nonce });
    const res = await emit(server, { event: "alive", data: { nonce }, user: "un" });
    assert.equal(res.status, 202, JSON.stringify(res.body));
    await got;
    assert.deepEqual(refusedSeen, [], "a refused emit was delivered");
  }

  /** An HTTP refusal with exactly `status` and `code` in the contract's shape. */
  function assertRefusal(res, status, code, what) {
    const info = `${what} → ${res.status} ${res.text.slice(0, 300)}`;
    assert.equal(res.status, status, info);
    assert.equal(res.body?.ok, false, info);
    assert.equal(res.body.error?.code, code, info);
    assert.equal(typeof res.body.error.message, "string", info);
    assert.ok(res.body.error.message.length > 0, info);
    assert.match(res.headers.get("content-type") ?? "", /application\/json/, info);
  }

  /** POSTs an emit that must be refused; its data carries a refused-* nonce. */
  async function refusedEmit(body, status = 400, code = "bad_request", opts = {}) {
    if (body && typeof body === "object" && !Array.isArray(body) && (body.data === undefined || isPlainObject(body.data))) {
      body = { ...body, data: { ...body.data, nonce: `refused-${crypto.randomUUID()}` } };
    }
    const res = await emit(server, body, opts);
    assertRefusal(res, status, code, JSON.stringify(body)?.slice(0, 200));
    await stillWorks();
    return res;
  }
  const isPlainObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);

  describe("POST /api/v1/emit refusals", () => {
    it("bad event names → 400 bad_request", async () => {
      for (const event of ["", "1abc", "has space", "a/b", "é", "-dash", ":colon", "_x", "a".repeat(101), "x\n"]) {
        await refusedEmit({ event, data: {}, user: "un" });
      }
      for (const event of [5, null, ["x"], { name: "x" }, true]) await refusedEmit({ event, data: {}, user: "un" });
      await refusedEmit({ data: {}, user: "un" }); // no event at all
      // The longest allowed name is fine.
      await delivery({ event: `A${"b".repeat(99)}`, data: {}, user: "un" }, [un]);
    });

    it("Socket.IO reserved names → 400 bad_request", async () => {
      const reserved = [
        "connect",
        "connect_error",
        "connect_timeout",
        "connecting",
        "disconnect",
        "disconnecting",
        "error",
        "newListener",
        "removeListener",
        "reconnect",
        "reconnect_attempt",
        "reconnect_error",
        "reconnect_failed",
        "reconnecting",
        "ping",
        "pong",
      ];
      for (const event of reserved) {
        await refusedEmit({ event, data: {}, user: "un" });
        await refusedEmit({ event, data: {}, broadcast: true });
      }
    });

    it("names livehub emits itself → 400 bad_request", async () => {
      const own = ["user:viewing", "user:left", "user:disconnected", "viewers:count", "typing", "presence", "chat:message", "chat:read", "auth:expired", "replay:reset"];
      for (const event of own) {
        await refusedEmit({ event, data: { room: "channel:t1", userId: "x" }, user: "un" });
        await refusedEmit({ event, data: { room: "channel:t1", userId: "x" }, rooms: ["shipment:SH1"] });
      }
    });

    it("missing or invalid catalog fields → 400 bad_request (with or without a target)", async () => {
      const cases = [
        ["shipment:updated", {}],
        ["shipment:updated", { shipmentId: "" }],
        ["shipment:updated", { shipmentId: null }],
        ["shipment:updated", { shipmentId: 1.5 }],
        ["shipment:updated", { shipmentId: ["SH1"] }],
        ["shipment:updated", { shipmentId: { id: "SH1" } }],
        ["shipment:updated", { shipmentId: true }],
        ["shipment:updated", { shipment_id: "SH1" }],
        ["shipment:rejected", {}],
        ["document:uploaded", {}],
        ["inspection:status_changed", { shipmentId: "" }],
        ["order:created", {}],
        ["order:status_changed", { order_id: 1 }],
        ["order:completed", { orderId: "" }],
        ["order:assigned", { orderId: 2.5 }],
        ["warehouse:capacity_updated", { branchId: "b1" }],
        ["machine:status_changed", { branchId: "b1" }],
        ["machine:error", { machineId: "", branchId: "b1" }],
        ["operator:logged_in", { branchId: "b1" }],
        ["notification:broadcast", {}],
        ["notification:broadcast", { message: "" }],
        ["notification:broadcast", { message: 5 }],
      ];
      for (const [event, data] of cases) {
        await refusedEmit({ event, data });
        await refusedEmit({ event, data, user: "un" });
      }
      // Ids that cannot name a room are refused, not sent to a mangled room.
      await refusedEmit({ event: "shipment:updated", data: { shipmentId: "PO 1/2" } });
      await refusedEmit({ event: "order:created", data: { orderId: "a:b" } });
    });

    it("notification: title, message, severity (info|success|warning|error) → 400 when wrong", async () => {
      const good = { title: "Heads up", message: "Dock 3 is closed", severity: "warning" };
      const bad = [
        { message: good.message, severity: "info" },
        { ...good, title: "" },
        { ...good, title: 5 },
        { title: good.title, severity: "info" },
        { ...good, message: null },
        { title: good.title, message: good.message },
        { ...good, severity: "fatal" },
        { ...good, severity: "INFO" },
        { ...good, severity: 1 },
        { ...good, severity: ["info"] },
      ];
      for (const data of bad) await refusedEmit({ event: "notification", data, user: "un" });
      for (const severity of ["info", "success", "warning", "error"]) {
        await delivery({ event: "notification", data: { ...good, severity }, user: "un" }, [un]);
      }
    });

    it("upload_progress: uploadId and progress 0–100 → 400 when wrong", async () => {
      const bad = [
        { uploadId: "up1", progress: 101 },
        { uploadId: "up1", progress: -1 },
        { uploadId: "up1", progress: 100.5 },
        { uploadId: "up1", progress: "50" },
        { uploadId: "up1", progress: null },
        { uploadId: "up1" },
        { progress: 50 },
        { uploadId: "", progress: 50 },
      ];
      for (const data of bad) await refusedEmit({ event: "upload_progress", data, user: "un" });
      for (const progress of [0, 42.5, 100]) {
        await delivery({ event: "upload_progress", data: { uploadId: "up1", progress }, user: "un" }, [un]);
      }
    });

    it("no target where the catalog has no default → 400 bad_request", async () => {
      const cases = [
        ["custom.thing", {}],
        ["notification", { title: "t", message: "m", severity: "info" }],
        ["upload_progress", { uploadId: "u", progress: 10 }],
        ["equipment_update", {}],
        ["session_update", {}],
        ["sample_update", {}],
        ["machine:status_changed", { machineId: "M1" }],
        ["operator:assigned", { operatorId: 1 }],
        ["dashboard:refresh", {}],
        ["report:generated", {}],
      ];
      for (const [event, data] of cases) await refusedEmit({ event, data });
      await refusedEmit({ event: "custom.thing", data: {}, rooms: [] });
      await refusedEmit({ event: "custom.thing", data: {}, users: [] });
      await refusedEmit({ event: "custom.thing", data: {}, broadcast: false });
      await refusedEmit({ event: "custom.thing", data: {}, except: ["user:ua"] });
    });

    it("wrong types for rooms, user, users, branch, role, broadcast, except, data → 400 bad_request", async () => {
      const cases = [
        { rooms: [1] },
        { rooms: { a: 1 } },
        { rooms: 5 },
        { rooms: [null] },
        { rooms: [""] },
        { rooms: ["bad room"] },
        { rooms: ["*"] },
        { rooms: ["nope:1"] },
        { user: "" },
        { user: 1.5 },
        { user: { id: "un" } },
        { user: ["un"] },
        { user: true },
        { user: "a b" },
        { users: [{}] },
        { users: 5 },
        { users: [null] },
        { users: ["a b"] },
        { branch: {} },
        { branch: [] },
        { branch: "x:y" },
        { role: [] },
        { role: "a b" },
        { broadcast: "yes" },
        { broadcast: 1 },
        { user: "un", except: 3 },
        { user: "un", except: [1] },
        { user: "un", except: ["bad room"] },
      ];
      for (const fields of cases) await refusedEmit({ event: "custom.thing", data: {}, ...fields });
      for (const data of [[], "s", 5, true]) {
        await refusedEmit({ event: "custom.thing", data, user: "un" });
        await refusedEmit({ event: "shipment:updated", data, user: "un" });
      }
    });

    it("malformed JSON, non-object JSON and an empty body → 400 bad_request", async () => {
      for (const body of ["{not json", '{"event": "x", ', "{'event': 'x'}", "[]", '"x"', "null", "42", ""]) {
        const res = await http(server, "POST", "/api/v1/emit", { body, headers: { "content-type": "application/json" } });
        assertRefusal(res, 400, "bad_request", JSON.stringify(body));
        await stillWorks();
      }
      // And with no body at all.
      const res = await http(server, "POST", "/api/v1/emit");
      assertRefusal(res, 400, "bad_request", "no body");
      await stillWorks();
    });

    it("a body over MAX_PAYLOAD_BYTES → 413 too_large; just under it is delivered", async () => {
      await refusedEmit({ event: "big.one", data: { blob: "a".repeat(MAX + 10) }, user: "un" }, 413, "too_large");
      await refusedEmit({ event: "big.one", data: { blob: "a".repeat(4 * MAX) }, user: "un" }, 413, "too_large");
      // The same without Content-Length (chunked): still refused, not read without bound.
      const res = await new Promise((resolve, reject) => {
        const req = nodeHttp.request(
          `${server.url}/api/v1/emit`,
          { method: "POST", headers: { authorization: `Bearer ${API_KEY}`, "content-type": "application/json", "transfer-encoding": "chunked" } },
          (r) => {
            let text = "";
            r.on("data", (d) => (text += d));
            r.on("end", () => resolve({ status: r.statusCode, text, body: JSON.parse(text), headers: new Headers({ "content-type": r.headers["content-type"] ?? "" }) }));
          },
        );
        req.on("error", reject);
        req.write(`{"event":"big.one","user":"un","data":{"nonce":"refused-chunked","blob":"`);
        for (let i = 0; i < 20; i++) req.write("a".repeat(10000));
        req.end(`"}}`);
      });
      assertRefusal(res, 413, "too_large", "chunked body of 200 kB");
      await stillWorks();
      // Just under the limit is accepted and delivered whole.
      const blob = "b".repeat(MAX - 500);
      const { payloads } = await delivery({ event: "big.ok", data: { blob }, user: "un" }, [un]);
      assert.equal(payloads[0].blob.length, blob.length);
    });

    it("authentication: missing or wrong key → 401 with WWW-Authenticate: Bearer; a user JWT → 403", async () => {
      const body = { event: "auth.check", data: {}, user: "un" };
      const noKey = await refusedEmit(body, 401, "unauthorized", { apiKey: "" });
      assert.match(noKey.headers.get("www-authenticate") ?? "", /^Bearer/);
      const wrong = await refusedEmit(body, 401, "unauthorized", { apiKey: "not-the-key" });
      assert.match(wrong.headers.get("www-authenticate") ?? "", /^Bearer/);
      await refusedEmit(body, 401, "unauthorized", { apiKey: `${API_KEY}x` });
      await refusedEmit(body, 401, "unauthorized", { apiKey: "", headers: { authorization: `Basic ${Buffer.from(`x:${API_KEY}`).toString("base64")}` } });
      await refusedEmit(body, 401, "unauthorized", { apiKey: "", headers: { authorization: API_KEY } });
      // A token signed with another secret is no credential at all.
      await refusedEmit(body, 401, "unauthorized", { bearer: token({ sub: "un" }, { secret: "some-other-secret-0123456789abcdef" }) });
      // A valid user token is a credential, but not for a controller route.
      await refusedEmit(body, 403, "forbidden", { bearer: userToken("un") });
      await refusedEmit(body, 403, "forbidden", { bearer: userToken("root", { role: "admin" }) });
      // Credentials are checked before the body: no key + garbage → 401, not 400.
      const garbage = await http(server, "POST", "/api/v1/emit", { body: "{not json", apiKey: "" });
      assertRefusal(garbage, 401, "unauthorized", "no key, bad JSON");
      await stillWorks();
    });

    it("unknown routes → 404 not_found in the JSON error shape", async () => {
      for (const [method, path] of [
        ["GET", "/api/v1/nope"],
        ["POST", "/api/v1/emits"],
        ["POST", "/api/v2/emit"],
        ["GET", "/nope"],
        ["POST", "/api/v1/users/un/kick"],
      ]) {
        const res = await http(server, method, path, { body: method === "POST" ? { event: "x", data: {}, user: "un" } : undefined });
        assertRefusal(res, 404, "not_found", `${method} ${path}`);
        await stillWorks();
      }
    });
  });

  describe("targets", () => {
    it("rooms: only the sockets in those rooms", async () => {
      await delivery({ event: "t.rooms", data: {}, rooms: ["channel:t1"] }, [ua1, uo], { rooms: ["channel:t1"] });
      await delivery({ event: "t.rooms", data: {}, rooms: ["channel:t1", "shipment:SH1"] }, [ua1, uo, un], { rooms: ["channel:t1", "shipment:SH1"] });
      await delivery({ event: "t.rooms", data: {}, rooms: ["channel:empty"] }, []);
    });

    it("user: every tab of that user, nobody else (string or integer id)", async () => {
      await delivery({ event: "t.user", data: {}, user: "ua" }, [ua1, ua2], { rooms: ["user:ua"] });
      await delivery({ event: "t.user", data: {}, user: 42 }, [u42], { rooms: ["user:42"] });
      await delivery({ event: "t.user", data: {}, user: "uv2" }, [v2], { rooms: ["user:uv2"] });
      await delivery({ event: "t.user", data: {}, user: "u" }, []);
    });

    it("users: each listed user", async () => {
      await delivery({ event: "t.users", data: {}, users: ["ua", "un"] }, [ua1, ua2, un], { rooms: ["user:ua", "user:un"] });
      await delivery({ event: "t.users", data: {}, users: ["un", 42] }, [un, u42], { rooms: ["user:un", "user:42"] });
    });

    it("branch: the users of that branch", async () => {
      await delivery({ event: "t.branch", data: {}, branch: "b1" }, [ua1, ua2, um], { rooms: ["branch:b1"] });
      await delivery({ event: "t.branch", data: {}, branch: "b2" }, [uo, v2], { rooms: ["branch:b2"] });
    });

    it("role: the users with that role; role + branch: that role in that branch", async () => {
      await delivery({ event: "t.role", data: {}, role: "operator" }, [ua1, ua2, uo], { rooms: ["role:operator"] });
      await delivery({ event: "t.role", data: {}, role: "manager" }, [um, v2], { rooms: ["role:manager"] });
      await delivery({ event: "t.role", data: {}, role: "operator", branch: "b1" }, [ua1, ua2], { rooms: ["role:operator:b1"] });
      await delivery({ event: "t.role", data: {}, role: "manager", branch: "b2" }, [v2], { rooms: ["role:manager:b2"] });
    });

    it("broadcast: everyone (4.x websocket, polling and 2.x)", async () => {
      await delivery({ event: "t.broadcast", data: {}, broadcast: true }, all);
    });

    it("except: leaves out the sockets of the excepted rooms", async () => {
      await delivery({ event: "t.except", data: {}, broadcast: true, except: ["user:ua"] }, [um, uo, un, u42, v2]);
      await delivery({ event: "t.except", data: {}, branch: "b1", except: ["role:manager"] }, [ua1, ua2]);
      await delivery({ event: "t.except", data: {}, rooms: ["channel:t1"], except: ["user:uo"] }, [ua1]);
      await delivery({ event: "t.except", data: {}, role: "operator", except: ["branch:b1", "branch:b2"] }, []);
    });

    it("explicit targets replace the catalog defaults", async () => {
      // un is in shipment:SH1 (the default room) but the emitter names channel:t1.
      await delivery({ event: "shipment:updated", data: { shipmentId: "SH1" }, rooms: ["channel:t1"] }, [ua1, uo], { rooms: ["channel:t1"] });
      await delivery({ event: "order:created", data: { orderId: "O1", branchId: "b1" }, user: "uo" }, [uo], { rooms: ["user:uo"] });
    });
  });

  describe("catalog default rooms", () => {
    it("shipment events → shipment:{shipmentId}", async () => {
      for (const event of ["shipment:updated", "shipment:rejected", "document:uploaded", "inspection:status_changed"]) {
        await delivery({ event, data: { shipmentId: "SH1", status: "x" } }, [un], { rooms: ["shipment:SH1"] });
      }
      await delivery({ event: "shipment:updated", data: { shipmentId: 7 } }, [un], { rooms: ["shipment:7"] });
      await delivery({ event: "shipment:updated", data: { shipmentId: "SH-nobody" } }, [], { rooms: ["shipment:SH-nobody"] });
    });

    it("order events → order:{orderId}, plus branch:{branchId} when given", async () => {
      await delivery({ event: "order:created", data: { orderId: "O1" } }, [un, v2], { rooms: ["order:O1"] });
      await delivery({ event: "order:status_changed", data: { orderId: "O1", branchId: "b1" } }, [un, v2, ua1, ua2, um], {
        rooms: ["order:O1", "branch:b1"],
      });
      await delivery({ event: "order:completed", data: { orderId: "O2", branchId: "b2" } }, [uo, v2], { rooms: ["order:O2", "branch:b2"] });
    });

    it("warehouse:capacity_updated → warehouse:{warehouseId}, plus branch:{branchId} when given", async () => {
      await delivery({ event: "warehouse:capacity_updated", data: { warehouseId: "W1" } }, [un], { rooms: ["warehouse:W1"] });
      await delivery({ event: "warehouse:capacity_updated", data: { warehouseId: "W1", branchId: "b2" } }, [un, uo, v2], {
        rooms: ["warehouse:W1", "branch:b2"],
      });
    });

    it("machine, operator and dashboard events → branch:{branchId}", async () => {
      await delivery({ event: "machine:status_changed", data: { machineId: "M1", branchId: "b2" } }, [uo, v2], { rooms: ["branch:b2"] });
      await delivery({ event: "machine:error", data: { machineId: 9, branchId: "b1" } }, [ua1, ua2, um], { rooms: ["branch:b1"] });
      await delivery({ event: "operator:logged_in", data: { operatorId: "op1", branchId: "b1" } }, [ua1, ua2, um], { rooms: ["branch:b1"] });
      await delivery({ event: "dashboard:refresh", data: { branchId: "b2" } }, [uo, v2], { rooms: ["branch:b2"] });
    });

    it("notification:broadcast → everyone", async () => {
      await delivery({ event: "notification:broadcast", data: { message: "Maintenance at 22:00" } }, all);
    });
  });

  describe("envelope", () => {
    it("payload = data + type + ISO timestamp + offset (string, same as the 202)", async () => {
      const data = { a: 1, nested: { x: [1, "two", null] }, s: "ünïcode ✓", flag: false };
      const { res, payloads } = await delivery({ event: "env.check", data, user: "un" }, [un]);
      const p = payloads[0];
      const { nonce, ...rest } = p;
      assert.equal(typeof nonce, "string");
      assert.deepEqual(Object.keys(rest).sort(), ["a", "flag", "nested", "offset", "s", "timestamp", "type"]);
      assert.deepEqual(rest.nested, data.nested);
      assert.equal(p.type, "env.check");
      assert.match(p.timestamp, ISO);
      assert.ok(Math.abs(Date.parse(p.timestamp) - Date.now()) < 10 * 60 * 1000, `timestamp ${p.timestamp} is not now`);
      assert.equal(typeof p.offset, "string");
      assert.equal(p.offset, res.body.offset);
    });

    it("keeps the data's own timestamp; type and offset are livehub's", async () => {
      const { payloads } = await delivery({ event: "env.ts", data: { timestamp: "2020-01-02T03:04:05.000Z" }, user: "un" }, [un]);
      assert.equal(payloads[0].timestamp, "2020-01-02T03:04:05.000Z");
      const nonce = crypto.randomUUID();
      const got = next(un, "env.spoof", { filter: (p) => p.nonce === nonce });
      const res = await emit(server, { event: "env.spoof", data: { nonce, type: "spoofed", offset: "zzz" }, user: "un" });
      assert.equal(res.status, 202);
      const p = await got;
      assert.equal(p.type, "env.spoof");
      assert.equal(p.offset, res.body.offset);
    });

    it("offsets are strings that sort in emit order, and events arrive in that order", async () => {
      const got = [];
      const on = (p) => got.push(p);
      un.on("seq.check", on);
      const offsets = [];
      for (let i = 0; i < 12; i++) {
        const res = await emit(server, { event: "seq.check", data: { n: i }, user: "un" });
        assert.equal(res.status, 202);
        offsets.push(res.body.offset);
      }
      await until(() => got.length >= 12, { what: "12 seq.check events" });
      un.off("seq.check", on);
      assert.deepEqual(got.map((p) => p.n), [...Array(12).keys()]);
      assert.deepEqual(got.map((p) => p.offset), offsets);
      for (const o of offsets) assert.equal(typeof o, "string");
      assert.deepEqual([...offsets].sort(), offsets);
      assert.equal(new Set(offsets).size, offsets.length);
    });
  });

  describe("POST /api/v1/emit/batch", () => {
    const batch = (body, opts) => http(server, "POST", "/api/v1/emit/batch", { body, ...opts });

    it("one result per event, in order; bad events do not sink the good ones", async () => {
      const tag = crypto.randomUUID();
      const events = [
        { event: "batch.a", data: { tag, n: 0 }, user: "un" },
        { event: "connect", data: { tag, n: 1 }, user: "un" },
        { event: "shipment:updated", data: { tag, n: 2, shipmentId: "SH1" } },
        { event: "batch.a", data: { tag, n: 3 } },
        { event: "notification", data: { tag, n: 4, title: "t", message: "m", severity: "fatal" }, user: "un" },
        { event: "batch.a", data: { tag, n: 5, blob: "x".repeat(MAX + 100) }, user: "un" },
        "not an object",
        { event: "batch.a", data: { tag, n: 7 }, rooms: ["bad room"] },
        { event: "batch.a", data: { tag, n: 8 }, users: ["un", "ua"] },
      ];
      const gotA = [];
      const onA = (p) => p.tag === tag && gotA.push(p);
      const gotShip = next(un, "shipment:updated", { filter: (p) => p.tag === tag });
      un.on("batch.a", onA);
      const uaGot = next(ua1, "batch.a", { filter: (p) => p.tag === tag && p.n === 8 });
      const res = await batch({ events });
      try {
        assert.equal(res.status, 202, res.text.slice(0, 500));
        assert.equal(res.body.ok, true);
        assert.equal(res.body.results.length, events.length);
        const r = res.body.results;
        const expect = [null, "bad_request", null, "bad_request", "bad_request", "too_large", "bad_request", "bad_request", null];
        for (const [i, code] of expect.entries()) {
          if (code === null) {
            assert.equal(r[i].ok, true, `result ${i}: ${JSON.stringify(r[i])}`);
            assert.equal(typeof r[i].offset, "string");
          } else {
            assert.equal(r[i].ok, false, `result ${i}: ${JSON.stringify(r[i])}`);
            assert.equal(r[i].error?.code, code, `result ${i}: ${JSON.stringify(r[i])}`);
          }
        }
        assert.deepEqual(r[0].rooms, ["user:un"]);
        assert.deepEqual(r[2].rooms, ["shipment:SH1"]);
        assert.deepEqual([...r[8].rooms].sort(), ["user:ua", "user:un"]);
        const goodOffsets = [r[0].offset, r[2].offset, r[8].offset];
        assert.deepEqual([...goodOffsets].sort(), goodOffsets, "offsets follow the batch order");
        const ship = await gotShip;
        assert.equal(ship.offset, r[2].offset);
        await uaGot;
        await until(() => gotA.length >= 2, { what: "the two good batch.a events" });
        await nothing(un, "batch.a", 300);
        assert.deepEqual(gotA.map((p) => p.n), [0, 8]);
        assert.deepEqual(gotA.map((p) => p.offset), [r[0].offset, r[8].offset]);
      } finally {
        un.off("batch.a", onA);
      }
      await stillWorks();
    });

    it("1000 events are accepted, one result each, and delivered in order to the right sockets", async () => {
      const tag = crypto.randomUUID();
      const subs = ["bulk-0", "bulk-1", "bulk-2", "bulk-3"];
      const sockets = await Promise.all(subs.map((sub) => connect(server.url, { token: userToken(sub) })));
      const got = sockets.map((s) => {
        const list = [];
        s.on("bulk", (p) => p.tag === tag && list.push(p));
        return list;
      });
      try {
        // 250 events per socket, interleaved.
        const events = Array.from({ length: 1000 }, (_, n) => ({ event: "bulk", data: { tag, n }, user: subs[n % 4] }));
        const res = await batch({ events });
        assert.equal(res.status, 202, res.text.slice(0, 300));
        assert.equal(res.body.ok, true);
        assert.equal(res.body.results.length, 1000);
        res.body.results.forEach((r, n) => {
          assert.equal(r.ok, true, `result ${n}: ${JSON.stringify(r)}`);
          assert.deepEqual(r.rooms, [`user:${subs[n % 4]}`]);
        });
        const offsets = res.body.results.map((r) => r.offset);
        assert.deepEqual([...offsets].sort(), offsets);
        assert.equal(new Set(offsets).size, 1000);
        await until(() => got.every((l) => l.length >= 250), { timeout: 20000, what: "250 bulk events on each socket" });
        got.forEach((list, i) => {
          assert.deepEqual(
            list.map((p) => p.n),
            Array.from({ length: 250 }, (_, k) => 4 * k + i),
          );
          assert.deepEqual(list.map((p) => p.offset), offsets.filter((_, n) => n % 4 === i));
        });
        await nothing(un, "bulk", 200);
        for (const s of sockets) assert.equal(s.connected, true);
      } finally {
        closeAll(sockets);
      }
      await stillWorks();
    });

    it("more than 1000 events → 413 too_large and nothing is sent", async () => {
      const silent = nothing(un, "bulk2", 500);
      const over = await batch({ events: Array.from({ length: 1001 }, (_, n) => ({ event: "bulk2", data: { n }, user: "un" })) });
      assertRefusal(over, 413, "too_large", "1001 events");
      await silent;
      await stillWorks();
    });

    it(
      "a batch of 1000 events for one socket reaches it, all of them, in order",
      async () => {
        const tag = crypto.randomUUID();
        const s = await connect(server.url, { token: userToken("bulk-one"), transports: ["websocket"] });
        try {
          const got = [];
          const outcome = new Promise((resolve) => {
            s.on("bulk", (p) => {
              if (p.tag !== tag) return;
              got.push(p.n);
              if (got.length === 1000) resolve("all 1000");
            });
            s.on("disconnect", (reason) => resolve(`disconnected (${reason}) after ${got.length} events`));
            setTimeout(() => resolve(`only ${got.length} events`), 15000);
          });
          const res = await batch({ events: Array.from({ length: 1000 }, (_, n) => ({ event: "bulk", data: { tag, n }, user: "bulk-one" })) });
          assert.equal(res.status, 202, res.text.slice(0, 300));
          assert.equal(await outcome, "all 1000");
          assert.deepEqual(got, [...Array(1000).keys()]);
        } finally {
          closeAll(s);
        }
      },
    );

    it("malformed batches and batch auth", async () => {
      for (const [body, what] of [
        [{ events: [] }, "empty"],
        [{}, "no events"],
        [{ events: "x" }, "events not a list"],
        [{ events: { event: "x" } }, "events an object"],
        [[], "a bare list"],
        ["{not json", "bad JSON"],
        ["", "empty body"],
      ]) {
        const res = await batch(body, { headers: { "content-type": "application/json" } });
        assertRefusal(res, 400, "bad_request", what);
        await stillWorks();
      }
      const huge = await batch({ events: [{ event: "huge", user: "un", data: { blob: "a".repeat(8 * MAX + 10) } }] });
      assertRefusal(huge, 413, "too_large", "body over 8× MAX_PAYLOAD_BYTES");
      await stillWorks();
      const body = { events: [{ event: "batch.auth", data: { nonce: `refused-${crypto.randomUUID()}` }, user: "un" }] };
      const noKey = await batch(body, { apiKey: "" });
      assertRefusal(noKey, 401, "unauthorized", "no key");
      assert.match(noKey.headers.get("www-authenticate") ?? "", /^Bearer/);
      await stillWorks();
      assertRefusal(await batch(body, { apiKey: "wrong" }), 401, "unauthorized", "wrong key");
      await stillWorks();
      assertRefusal(await batch(body, { bearer: userToken("un") }), 403, "forbidden", "user JWT");
      await stillWorks();
    });
  });

  describe("POST /api/v1/users/{id}/disconnect", () => {
    it("disconnects every tab of that user with 'io server disconnect', and nobody else", async () => {
      const tab1 = await connect(server.url, { token: userToken("dc", { branchId: "b9" }), transports: ["websocket"] });
      const tab2 = await connect(server.url, { token: userToken("dc", { branchId: "b9" }), transports: ["polling"] });
      const other = await connect(server.url, { token: userToken("dc2", { branchId: "b9" }) });
      const prefix = await connect(server.url, { token: userToken("d", { branchId: "b9" }) });
      try {
        // Refused calls disconnect nobody.
        assertRefusal(await http(server, "POST", "/api/v1/users/dc/disconnect", { apiKey: "" }), 401, "unauthorized", "no key");
        assertRefusal(await http(server, "POST", "/api/v1/users/dc/disconnect", { apiKey: "wrong" }), 401, "unauthorized", "wrong key");
        assertRefusal(await http(server, "POST", "/api/v1/users/dc/disconnect", { bearer: userToken("dc") }), 403, "forbidden", "user JWT");
        const n0 = crypto.randomUUID();
        const before = [tab1, tab2, other, prefix].map((s) => next(s, "dc.before", { filter: (p) => p.nonce === n0 }));
        assert.equal((await emit(server, { event: "dc.before", data: { nonce: n0 }, branch: "b9" })).status, 202);
        await Promise.all(before);
        for (const s of [tab1, tab2, other, prefix]) assert.equal(s.connected, true);

        const gone1 = next(tab1, "disconnect", { timeout: 5000 });
        const gone2 = next(tab2, "disconnect", { timeout: 5000 });
        const res = await http(server, "POST", "/api/v1/users/dc/disconnect");
        assert.ok(res.status >= 200 && res.status < 300, `${res.status} ${res.text}`);
        assert.equal(res.body.ok, true);
        assert.equal(await gone1, "io server disconnect");
        assert.equal(await gone2, "io server disconnect");
        assert.equal(tab1.connected, false);
        assert.equal(tab2.connected, false);

        // The others stay connected and keep receiving.
        const nonce = crypto.randomUUID();
        const gotOther = next(other, "dc.after", { filter: (p) => p.nonce === nonce });
        const gotPrefix = next(prefix, "dc.after", { filter: (p) => p.nonce === nonce });
        const sent = await emit(server, { event: "dc.after", data: { nonce }, branch: "b9" });
        assert.equal(sent.status, 202);
        await Promise.all([gotOther, gotPrefix]);
        assert.equal(other.connected, true);
        assert.equal(prefix.connected, true);
        await stillWorks();

        // The user is not banned: a new connection works and receives.
        const back = await connect(server.url, { token: userToken("dc", { branchId: "b9" }) });
        try {
          const n2 = crypto.randomUUID();
          const got = next(back, "dc.back", { filter: (p) => p.nonce === n2 });
          assert.equal((await emit(server, { event: "dc.back", data: { nonce: n2 }, user: "dc" })).status, 202);
          await got;
        } finally {
          closeAll(back);
        }
      } finally {
        closeAll(tab1, tab2, other, prefix);
      }
    });

    it("reaches a socket disconnected the moment its client sees `connect` (before its rooms are joined)", async () => {
      const missed = [];
      for (let round = 0; round < 20; round++) {
        const user = `dc-early-${round}`;
        const s = await connect(server.url, { token: userToken(user, { branchId: "b9" }), transports: [round % 2 ? "polling" : "websocket"] });
        const gone = next(s, "disconnect", { timeout: 3000 }).catch(() => null);
        assert.equal((await http(server, "POST", `/api/v1/users/${user}/disconnect`)).status, 200);
        if ((await gone) !== "io server disconnect") missed.push(user);
        s.close();
      }
      assert.deepEqual(missed, [], "every socket of a disconnected user goes, however new");
    });

    it("a user with no sockets: no error, nobody disconnected", async () => {
      const res = await http(server, "POST", "/api/v1/users/nobody-here/disconnect");
      assert.ok(res.status >= 200 && res.status < 300, `${res.status} ${res.text}`);
      await stillWorks();
    });
  });
});

describe("GET /health", () => {
  let server;
  before(async () => (server = await startServer()));
  after(() => server.stop());

  const health = async () => {
    const res = await http(server, "GET", "/health", { apiKey: "" });
    assert.equal(res.status, 200, res.text);
    return res.body;
  };

  it("counts this node's connections and users while sockets are open, back to 0 after they close", async () => {
    const idle = await health();
    assert.equal(idle.status, "OK");
    assert.equal(idle.ready, true);
    assert.equal(idle.connections, 0);
    assert.equal(idle.users, 0);
    assert.equal(typeof idle.node, "string");
    assert.ok(idle.node.length > 0);
    assert.equal(typeof idle.uptimeSeconds, "number");
    assert.equal(typeof idle.rooms, "number");

    const a1 = await connect(server.url, { token: userToken("h-a"), transports: ["websocket"] });
    const a2 = await connect(server.url, { token: userToken("h-a"), transports: ["polling"] });
    const b = await connect(server.url, { token: userToken("h-b", { branchId: "hb" }), version: 2 });
    let open;
    try {
      assert.equal((await ack(a1, "subscribe", { room: "channel:health" })).ok, true);
      open = await until(
        async () => {
          const h = await health();
          return h.connections === 3 && h.users === 2 ? h : null;
        },
        { what: "connections 3, users 2" },
      );
      assert.ok(open.rooms > idle.rooms, `rooms ${open.rooms} did not grow from ${idle.rooms}`);
      closeAll(a1);
      await until(
        async () => {
          const h = await health();
          return h.connections === 2 && h.users === 2;
        },
        { what: "connections 2, users still 2 (h-a has another tab)" },
      );
    } finally {
      closeAll(a1, a2, b);
    }
    const closed = await until(
      async () => {
        const h = await health();
        return h.connections === 0 && h.users === 0 ? h : null;
      },
      { timeout: 10000, what: "connections and users back to 0" },
    );
    assert.equal(closed.status, "OK");
  });
});
