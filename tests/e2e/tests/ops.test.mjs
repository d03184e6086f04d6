// Operating livehub, seen from outside: real processes, real signals, the real
// socket.io-client, raw HTTP where headers matter.
//  - SIGTERM while websocket and polling clients are connected and a controller
//    has just emitted: /health turns 503 ready:false (or the port is closed),
//    clients lose their transport (never "io server disconnect") and come back
//    by themselves, exit 0 within the contract's 10 s, and after a restart on
//    the same database every client gets every event it had not yet received;
//    SIGINT likewise; the offline queue across a restart;
//  - CORS: allowed and refused origins on the API and on the polling transport,
//    credentials, preflights, `*` mode, no CORS at all;
//  - security headers on API, /health, /metrics and Engine.IO responses;
//  - /metrics: Prometheus text whose counters and histograms move with traffic;
//  - LOG_FORMAT=json: one JSON object per line, and no secrets in any of them.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import nodeHttp from "node:http";
import path from "node:path";
import { io as ioV4 } from "socket.io-client";
import { API_KEY, ROOT, ack, runBinary, closeAll, collect, connect, emit, http, next, sleep, startServer, token, until, userToken } from "../lib/harness.mjs";

process.setMaxListeners(50); // the harness adds an exit hook per server

/** A raw HTTP request: any method and headers (Origin included); never throws on a status. */
function raw(server, { method = "GET", path = "/", headers = {}, body } = {}) {
  return new Promise((resolve, reject) => {
    const req = nodeHttp.request(`${server.url}${path}`, { method, headers, agent: false }, (res) => {
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (d) => (text += d));
      res.on("end", () => resolve({ status: res.statusCode, headers: res.headers, text }));
    });
    req.on("error", reject);
    if (body !== undefined) req.write(body);
    req.end();
  });
}

/**
 * A socket.io-client 4.x client that remembers the last offset it saw and sends
 * it on every (re)connect — `auth` as a function, the standard client API.
 */
function trackingClient(url, tok, { transports, reconnection = true } = {}) {
  const state = { last: undefined, seen: [], reasons: [] };
  const socket = ioV4(url, {
    auth: (cb) => cb({ token: tok, ...(state.last ? { offset: state.last } : {}) }),
    transports,
    forceNew: true,
    reconnection,
    reconnectionDelay: 100,
    reconnectionDelayMax: 300,
    randomizationFactor: 0,
  });
  socket.onAny((event, payload) => {
    if (payload && typeof payload.offset === "string") {
      state.seen.push({ event, ...payload });
      state.last = payload.offset;
    }
  });
  socket.on("disconnect", (reason) => state.reasons.push(reason));
  state.socket = socket;
  state.connected = () =>
    new Promise((resolve, reject) => {
      if (socket.connected) return resolve();
      socket.once("connect", resolve);
      if (!reconnection) socket.once("connect_error", reject);
    });
  return state;
}

/** Polls /health from the moment of a signal until the port closes. */
async function watchHealthDuringDrain(server) {
  const seen = [];
  while (!server.exited) {
    try {
      const res = await raw(server, { path: "/health" });
      let body;
      try {
        body = JSON.parse(res.text);
      } catch {}
      seen.push({ status: res.status, ready: body?.ready });
    } catch (e) {
      seen.push({ error: e.code ?? e.message });
      if (e.code === "ECONNREFUSED") break;
    }
    await sleep(5);
  }
  return seen;
}

const dashboard = (n) => ({ event: "dashboard:refresh", data: { branchId: "ops", n } });

describe("graceful shutdown", () => {
  it("SIGTERM: /health 503 while draining, transports closed (not a Socket.IO disconnect), exit 0 in time, nothing lost after a restart", async () => {
    let server = await startServer();
    const { DATABASE_URL } = server.env;
    const port = server.port;
    const clients = {
      websocket: trackingClient(server.url, userToken("ops-ws", { branchId: "ops" }), { transports: ["websocket"] }),
      polling: trackingClient(server.url, userToken("ops-poll", { branchId: "ops" }), { transports: ["polling"] }),
      upgraded: trackingClient(server.url, userToken("ops-up", { branchId: "ops" })),
      // This one is away (disconnected by itself) during the burst and the restart.
      away: trackingClient(server.url, userToken("ops-away", { branchId: "ops" }), { transports: ["websocket"] }),
    };
    const all = Object.values(clients);
    try {
      await Promise.all(all.map((c) => c.connected()));
      // Live events first, so that every client has an offset.
      for (let n = 0; n < 5; n++) assert.equal((await emit(server, dashboard(n))).status, 202);
      await until(() => all.every((c) => c.seen.length === 5), { what: "5 live events for everyone" });
      clients.away.socket.disconnect();

      // A controller's burst, committed (202), then the signal — without waiting
      // for the clients to have received it.
      const burst = await http(server, "POST", "/api/v1/emit/batch", {
        body: { events: Array.from({ length: 300 }, (_, i) => dashboard(5 + i)) },
      });
      assert.equal(burst.status, 202);
      assert.ok(burst.body.results.every((r) => typeof r.offset === "string"));
      const total = 305;
      const signalled = Date.now();
      server.proc.kill("SIGTERM");
      const health = await watchHealthDuringDrain(server);
      const exited = await server.exit;
      const took = Date.now() - signalled;
      console.log(`# SIGTERM: exit ${JSON.stringify(exited)} after ${took} ms; /health while draining: ${JSON.stringify(health.slice(0, 8))}`);
      assert.equal(exited.code, 0, `exit code 0, got ${JSON.stringify(exited)}\n${server.stderr.slice(-2000)}`);
      assert.ok(took < 15000, `exited within the deadline (${took} ms)`);
      // /health never claims to be ready once draining; when it answers at all it is 503 ready:false.
      const answered = health.filter((h) => h.status !== undefined);
      const firstDown = answered.findIndex((h) => h.status === 503);
      if (firstDown >= 0) {
        assert.ok(answered.slice(firstDown).every((h) => h.status === 503 && h.ready === false), JSON.stringify(health));
      }
      for (const h of answered) assert.ok(h.status === 503 ? h.ready === false : h.status === 200, JSON.stringify(h));

      // Every connected client lost its transport and none got "io server disconnect".
      for (const [name, c] of Object.entries(clients)) {
        if (name === "away") continue;
        await until(() => c.reasons.length > 0, { what: `${name} to notice the shutdown` });
        assert.ok(!c.reasons.includes("io server disconnect"), `${name}: ${c.reasons}`);
        assert.ok(["transport close", "transport error"].includes(c.reasons[0]), `${name}: ${c.reasons}`);
      }
      assert.equal(clients.websocket.reasons[0], "transport close", "a websocket client sees the Engine.IO close");
      console.log(`# disconnect reasons: ${JSON.stringify(Object.fromEntries(Object.entries(clients).map(([k, c]) => [k, c.reasons])))}`);

      // Same database, same port: the clients reconnect by themselves with their offsets.
      server = await startServer({ DATABASE_URL, PORT: String(port) });
      clients.away.socket.connect();
      await until(() => all.every((c) => c.seen.length >= total), {
        timeout: 20000,
        what: `all ${total} events everywhere (${all.map((c) => c.seen.length)})`,
      });
      await sleep(300);
      const expected = Array.from({ length: total }, (_, n) => n);
      for (const [name, c] of Object.entries(clients)) {
        assert.deepEqual(c.seen.map((e) => e.n), expected, `${name}: every event once, in order`);
        assert.ok(c.socket.connected, `${name} is back`);
      }
      assert.ok(clients.away.seen.slice(5).every((e) => e.replayed === true), "the away client's events were replayed");
      // And live delivery works on the new process.
      assert.equal((await emit(server, dashboard(total))).status, 202);
      await until(() => all.every((c) => c.seen.length === total + 1), { what: "a live event after the restart" });
    } finally {
      closeAll(all.map((c) => c.socket));
      await server.stop();
    }
  });

  it("SIGINT: exit 0, clients lose only their transport", async () => {
    const server = await startServer();
    const ws = trackingClient(server.url, userToken("int-ws"), { transports: ["websocket"] });
    const poll = trackingClient(server.url, userToken("int-poll"), { transports: ["polling"] });
    try {
      await Promise.all([ws.connected(), poll.connected()]);
      const signalled = Date.now();
      server.proc.kill("SIGINT");
      const exited = await server.exit;
      assert.equal(exited.code, 0, JSON.stringify(exited));
      assert.ok(Date.now() - signalled < 15000);
      await until(() => ws.reasons.length && poll.reasons.length, { what: "both clients to notice" });
      assert.equal(ws.reasons[0], "transport close");
      assert.notEqual(poll.reasons[0], "io server disconnect");
    } finally {
      closeAll(ws.socket, poll.socket);
      await server.stop();
    }
  });

  it("/health (and /metrics) answer 503 ready:false during the drain, never a dropped connection", async () => {
    const server = await startServer();
    const sockets = [];
    try {
      // Some connected clients, so that the drain has transports to close.
      for (let i = 0; i < 6; i++) sockets.push(await connect(server.url, { token: userToken(`drain${i}`), transports: [i % 2 ? "polling" : "websocket"] }));
      await http(server, "POST", "/api/v1/emit/batch", { body: { events: Array.from({ length: 300 }, (_, i) => dashboard(i)) } });
      server.proc.kill("SIGTERM");
      const probes = [];
      while (!server.exited) {
        for (const path of ["/health", "/metrics"]) {
          probes.push(
            raw(server, { path }).then(
              (res) => ({ path, status: res.status, ready: path === "/health" ? JSON.parse(res.text).ready : undefined }),
              (e) => ({ path, error: e.code ?? e.message }),
            ),
          );
        }
        await sleep(5);
      }
      const results = await Promise.all(probes);
      const dropped = results.filter((r) => r.error && r.error !== "ECONNREFUSED");
      console.log(`# drain probes: ${results.length}, ${results.filter((r) => r.status === 503).length} × 503, ${dropped.length} dropped`);
      assert.deepEqual(dropped, [], "every request accepted during the drain gets an answer");
      assert.doesNotMatch(server.stderr, /panicked/);
      for (const r of results.filter((r) => r.path === "/health" && r.status === 503)) assert.equal(r.ready, false);
    } finally {
      closeAll(sockets);
      await server.stop();
    }
  });

  it("users connected at shutdown get the events sent to them while away after a restart (offline queue, no offset)", async () => {
    let server = await startServer();
    const users = ["oq-ws", "oq-poll", "oq-viewer"];
    const sockets = [
      await connect(server.url, { token: userToken("oq-ws"), transports: ["websocket"] }),
      await connect(server.url, { token: userToken("oq-poll"), transports: ["polling"] }),
      await connect(server.url, { token: userToken("oq-viewer", { branchId: "oq" }), transports: ["websocket"] }),
    ];
    try {
      assert.equal((await ack(sockets[2], "join:shipment", { shipmentId: "OQ" })).ok, true);
      assert.equal((await server.stop("SIGTERM")).code, 0);
      closeAll(sockets);
      server = await startServer({ DATABASE_URL: server.env.DATABASE_URL });
      // While they are away (no connection at all), a controller notifies each of them.
      for (const u of users) {
        assert.equal((await emit(server, { event: "notification", user: u, data: { title: "t", message: `for ${u}`, severity: "info" } })).status, 202);
      }
      const missing = [];
      for (const u of users) {
        // Listen before connecting: the queue follows the connect immediately.
        const s = ioV4(server.url, { auth: { token: userToken(u, u === "oq-viewer" ? { branchId: "oq" } : {}) }, transports: ["websocket"], forceNew: true, reconnection: false });
        const got = await next(s, "notification", { timeout: 2000 }).catch(() => null);
        s.close();
        if (got?.message !== `for ${u}`) missing.push(u);
        else assert.equal(got.replayed, true);
      }
      assert.deepEqual(missing, [], "each user gets what was sent while they were away");
    } finally {
      closeAll(sockets);
      await server.stop();
    }
  });
});

describe("CORS", () => {
  const A = "https://a.example";
  const B = "https://b.example";
  const EVIL = "https://evil.example";

  describe("with a list of origins", () => {
    let server;
    before(async () => (server = await startServer({ CORS_ORIGINS: `${A},${B}` })));
    after(() => server.stop());

    it("echoes an allowed origin with credentials on the API, /health and the polling transport", async () => {
      const requests = [
        { path: "/health" },
        { path: "/api/v1/rooms/shipment:1/presence", headers: { authorization: `Bearer ${API_KEY}` } },
        { path: "/api/v1/rooms/shipment:1/presence" }, // 401: a browser must be able to read the error too
        {
          method: "POST",
          path: "/api/v1/emit",
          headers: { authorization: `Bearer ${API_KEY}`, "content-type": "application/json" },
          body: JSON.stringify({ event: "shipment:updated", data: { shipmentId: "C1" } }),
        },
        { path: "/socket.io/?EIO=4&transport=polling" },
        { path: "/socket.io/?EIO=3&transport=polling" },
      ];
      for (const origin of [A, B]) {
        for (const r of requests) {
          const res = await raw(server, { ...r, headers: { ...r.headers, origin } });
          assert.ok(res.status < 500, `${r.path}: ${res.status}`);
          assert.equal(res.headers["access-control-allow-origin"], origin, `${r.method ?? "GET"} ${r.path} from ${origin}`);
          assert.equal(res.headers["access-control-allow-credentials"], "true", `${r.path}: credentials`);
          assert.match(res.headers.vary ?? "", /origin/i, `${r.path}: Vary: Origin, so caches keep origins apart`);
        }
      }
      // A polling session's own requests (POST and GET with a sid) too.
      const hs = await raw(server, { path: "/socket.io/?EIO=4&transport=polling", headers: { origin: A } });
      const { sid } = JSON.parse(hs.text.slice(1));
      const post = await raw(server, {
        method: "POST",
        path: `/socket.io/?EIO=4&transport=polling&sid=${sid}`,
        headers: { origin: A, "content-type": "text/plain;charset=UTF-8" },
        body: `40${JSON.stringify({ token: userToken("cors") })}`,
      });
      assert.equal(post.status, 200);
      assert.equal(post.headers["access-control-allow-origin"], A);
      assert.equal(post.headers["access-control-allow-credentials"], "true");
      // A poll may carry the heartbeat's ping first: poll again, as a client does.
      let poll;
      const seen = [];
      for (let i = 0; i < 3; i++) {
        poll = await raw(server, { path: `/socket.io/?EIO=4&transport=polling&sid=${sid}`, headers: { origin: A } });
        assert.equal(poll.status, 200);
        seen.push(poll.text);
        if (poll.text.split("\x1e").some((packet) => packet.startsWith("40{"))) break;
      }
      assert.ok(poll.text.split("\x1e").some((packet) => packet.startsWith("40{")), `the CONNECT reply arrives over the cross-origin poll: ${seen.join(" | ")}`);
      assert.equal(poll.headers["access-control-allow-origin"], A);
      assert.equal(poll.headers["access-control-allow-credentials"], "true");
    });

    it("gives a refused origin no Access-Control-Allow-Origin", async () => {
      for (const origin of [EVIL, "null", "https://a.example.evil.example", "http://a.example", `${A}:8443`]) {
        for (const path of ["/health", "/api/v1/rooms/shipment:1/presence", "/socket.io/?EIO=4&transport=polling"]) {
          const res = await raw(server, { path, headers: { origin, authorization: `Bearer ${API_KEY}` } });
          // (Without Access-Control-Allow-Origin the browser refuses the response,
          // whatever else is there.)
          assert.equal(res.headers["access-control-allow-origin"], undefined, `${path} from ${origin}`);
        }
      }
    });

    it("answers preflights for allowed origins only", async () => {
      for (const path of ["/api/v1/emit", "/api/v1/emit/batch", "/socket.io/?EIO=4&transport=polling"]) {
        const ok = await raw(server, {
          method: "OPTIONS",
          path,
          headers: { origin: A, "access-control-request-method": "POST", "access-control-request-headers": "authorization, content-type, idempotency-key" },
        });
        assert.ok(ok.status === 200 || ok.status === 204, `${path}: preflight status ${ok.status}`);
        assert.equal(ok.headers["access-control-allow-origin"], A, path);
        assert.equal(ok.headers["access-control-allow-credentials"], "true", path);
        assert.match(ok.headers["access-control-allow-methods"] ?? "", /POST/, path);
        const allowed = (ok.headers["access-control-allow-headers"] ?? "").toLowerCase();
        for (const h of ["authorization", "content-type", "idempotency-key"]) assert.ok(allowed.includes(h), `${path}: allows ${h} (${allowed})`);
        const refused = await raw(server, {
          method: "OPTIONS",
          path,
          headers: { origin: EVIL, "access-control-request-method": "POST", "access-control-request-headers": "authorization" },
        });
        assert.equal(refused.headers["access-control-allow-origin"], undefined, `${path}: preflight from ${EVIL}`);
      }
    });
  });

  it("`*` allows any origin, without credentials", async () => {
    const server = await startServer({ CORS_ORIGINS: "*" });
    try {
      for (const path of ["/health", "/api/v1/rooms/shipment:1/presence", "/socket.io/?EIO=4&transport=polling"]) {
        const res = await raw(server, { path, headers: { origin: EVIL, authorization: `Bearer ${API_KEY}` } });
        assert.equal(res.headers["access-control-allow-origin"], "*", path);
        assert.notEqual(res.headers["access-control-allow-credentials"], "true", `${path}: * never with credentials`);
      }
      const pre = await raw(server, {
        method: "OPTIONS",
        path: "/api/v1/emit",
        headers: { origin: EVIL, "access-control-request-method": "POST", "access-control-request-headers": "authorization, content-type" },
      });
      assert.ok(pre.status === 200 || pre.status === 204, `preflight status ${pre.status}`);
      assert.equal(pre.headers["access-control-allow-origin"], "*");
      assert.notEqual(pre.headers["access-control-allow-credentials"], "true");
    } finally {
      await server.stop();
    }
  });

  it("without CORS_ORIGINS no origin is allowed", async () => {
    const server = await startServer();
    try {
      for (const path of ["/health", "/api/v1/rooms/shipment:1/presence", "/socket.io/?EIO=4&transport=polling"]) {
        const res = await raw(server, { path, headers: { origin: A, authorization: `Bearer ${API_KEY}` } });
        assert.ok(res.status < 500);
        assert.equal(res.headers["access-control-allow-origin"], undefined, path);
      }
      const pre = await raw(server, {
        method: "OPTIONS",
        path: "/api/v1/emit",
        headers: { origin: A, "access-control-request-method": "POST" },
      });
      assert.equal(pre.headers["access-control-allow-origin"], undefined);
      assert.ok(pre.status < 500, `a preflight is refused cleanly (${pre.status})`);
    } finally {
      await server.stop();
    }
  });
});

describe("security headers", () => {
  it("are on API responses (success and errors), /health, /metrics and Engine.IO responses", async () => {
    const server = await startServer();
    try {
      const hs = await raw(server, { path: "/socket.io/?EIO=4&transport=polling" });
      const { sid } = JSON.parse(hs.text.slice(1));
      const responses = {
        "emit 202": await raw(server, {
          method: "POST",
          path: "/api/v1/emit",
          headers: { authorization: `Bearer ${API_KEY}`, "content-type": "application/json" },
          body: JSON.stringify({ event: "shipment:updated", data: { shipmentId: "S" } }),
        }),
        "emit 400": await raw(server, { method: "POST", path: "/api/v1/emit", headers: { authorization: `Bearer ${API_KEY}`, "content-type": "application/json" }, body: "{" }),
        "emit 401": await raw(server, { method: "POST", path: "/api/v1/emit", body: "{}" }),
        "emit 413": await raw(server, {
          method: "POST",
          path: "/api/v1/emit",
          headers: { authorization: `Bearer ${API_KEY}`, "content-type": "application/json" },
          body: JSON.stringify({ event: "x", data: { pad: "x".repeat(140000) } }),
        }),
        "api 404": await raw(server, { path: "/api/v1/nope", headers: { authorization: `Bearer ${API_KEY}` } }),
        "presence 200": await raw(server, { path: "/api/v1/rooms/shipment:S/presence", headers: { authorization: `Bearer ${API_KEY}` } }),
        "messages 403": await raw(server, { path: "/api/v1/rooms/user:other/messages", headers: { authorization: `Bearer ${userToken("me")}` } }),
        health: await raw(server, { path: "/health" }),
        metrics: await raw(server, { path: "/metrics" }),
        "polling handshake": hs,
        "polling post": await raw(server, {
          method: "POST",
          path: `/socket.io/?EIO=4&transport=polling&sid=${sid}`,
          headers: { "content-type": "text/plain;charset=UTF-8" },
          body: `40${JSON.stringify({ token: userToken("hdr") })}`,
        }),
        "polling get": await raw(server, { path: `/socket.io/?EIO=4&transport=polling&sid=${sid}` }),
        "polling unknown sid": await raw(server, { path: "/socket.io/?EIO=4&transport=polling&sid=nope" }),
        "polling v3 handshake": await raw(server, { path: "/socket.io/?EIO=3&transport=polling" }),
      };
      for (const [what, res] of Object.entries(responses)) {
        assert.equal(res.headers["x-content-type-options"], "nosniff", `${what} (${res.status})`);
        assert.equal(res.headers["x-frame-options"], "DENY", `${what} (${res.status})`);
        assert.equal(res.headers["referrer-policy"], "no-referrer", `${what} (${res.status})`);
      }
      assert.equal(responses["emit 202"].status, 202);
      assert.equal(responses["emit 413"].status, 413);
      assert.equal(responses["polling post"].status, 200);
    } finally {
      await server.stop();
    }
  });
});

// ---------------------------------------------------------------------------
// Metrics

/** Parses Prometheus text exposition, checking its syntax line by line. */
function parseMetrics(text) {
  const samples = new Map();
  const types = new Map();
  const line = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*\})?\s+(-?(?:[0-9.eE+-]+|NaN|\+Inf|-Inf))(\s+-?\d+)?$/;
  for (const l of text.split("\n")) {
    if (l === "") continue;
    if (l.startsWith("#")) {
      const m = l.match(/^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) ?(.*)$/);
      assert.ok(m, `a valid comment line: ${l}`);
      if (m[1] === "TYPE") {
        assert.ok(["counter", "gauge", "histogram", "summary", "untyped"].includes(m[3]), l);
        types.set(m[2], m[3]);
      }
      continue;
    }
    const m = l.match(line);
    assert.ok(m, `a valid sample line: ${l}`);
    const value = Number(m[3].replace("+Inf", "Infinity").replace("-Inf", "-Infinity"));
    samples.set(`${m[1]}${m[2] ?? ""}`, value);
  }
  return { samples, types, text };
}

/** A sample's value, matching labels given as `{a="b"}` (order-insensitive); 0 when absent. */
function value(metrics, name, labels = {}) {
  let total = 0;
  let found = false;
  for (const [key, v] of metrics.samples) {
    const m = key.match(/^([^{]+)(\{.*\})?$/);
    if (m[1] !== name) continue;
    const have = Object.fromEntries([...(m[2] ?? "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)].map((x) => [x[1], x[2]]));
    if (Object.entries(labels).every(([k, want]) => have[k] === want)) {
      total += v;
      found = true;
    }
  }
  return found ? total : 0;
}

function checkHistogram(metrics, name) {
  assert.equal(metrics.types.get(name), "histogram", `${name} is a histogram`);
  const buckets = [...metrics.samples]
    .filter(([k]) => k.startsWith(`${name}_bucket{`))
    .map(([k, v]) => [k.match(/le="([^"]+)"/)[1], v]);
  assert.ok(buckets.length >= 2, `${name} has buckets`);
  const les = buckets.map(([le]) => (le === "+Inf" ? Infinity : Number(le)));
  assert.deepEqual([...les].sort((a, b) => a - b), les, `${name}: buckets in order`);
  assert.equal(les.at(-1), Infinity, `${name}: a +Inf bucket`);
  for (let i = 1; i < buckets.length; i++) assert.ok(buckets[i][1] >= buckets[i - 1][1], `${name}: cumulative buckets`);
  const count = value(metrics, `${name}_count`);
  assert.equal(buckets.at(-1)[1], count, `${name}: +Inf bucket equals _count`);
  assert.ok(metrics.samples.has(`${name}_sum`), `${name}_sum`);
  return count;
}

describe("/metrics", () => {
  it("on a fresh node, before any traffic, has every series docs/operations.md lists, at zero, with help text", async () => {
    const doc = fs.readFileSync(path.join(ROOT, "docs/operations.md"), "utf8");
    // The table rows: | `name` | type | labels | meaning |
    const rows = [...doc.matchAll(/^\| `(livehub_[a-z_]+)` \| (counter|gauge|histogram) \| ([^|]*) \|/gm)];
    assert.ok(rows.length >= 14, `the metrics table lists the series (found ${rows.length})`);
    const server = await startServer();
    try {
      const res = await raw(server, { path: "/metrics" });
      const m = parseMetrics(res.text);
      for (const [, name, type, labels] of rows) {
        assert.equal(m.types.get(name), type, `${name} is a ${type}`);
        assert.match(res.text, new RegExp(`^# HELP ${name} \\S`, "m"), `${name} has help text`);
        const sample = type === "histogram" ? `${name}_count` : name;
        if (labels.startsWith("`class`")) continue; // the classes, checked below
        const label = labels.match(/^`([a-z]+)`: (.*)$/);
        const values = label ? [...label[2].matchAll(/`([^`]+)`/g)].map((v) => v[1]) : [null];
        for (const v of values) {
          const key = v === null ? sample : `${sample}{${label[1]}="${v}"}`;
          assert.equal(m.samples.get(key), 0, `${key} exists at zero`);
        }
      }
      // The event classes the table points to are series too.
      const classes = [...doc.match(/Event classes \(`class`\):([\s\S]*?)\n\n/)[1].matchAll(/`([a-z_]+)`/g)].map((c) => c[1]);
      assert.ok(classes.includes("custom") && classes.length > 20);
      for (const c of classes) {
        for (const name of ["livehub_events_in_total", "livehub_events_out_total"]) assert.equal(m.samples.get(`${name}{class="${c}"}`), 0, `${name}{class=${c}}`);
      }
    } finally {
      await server.stop();
    }
  });

  it("is Prometheus text whose counters, gauges and histograms follow the traffic", async () => {
    const server = await startServer({ RATE_LIMIT_PER_MINUTE: "20", MAX_CONNECTIONS_PER_IP: "3" });
    const sockets = [];
    const scrape = async () => {
      const res = await raw(server, { path: "/metrics" });
      assert.equal(res.status, 200);
      assert.match(res.headers["content-type"], /^text\/plain/);
      return parseMetrics(res.text);
    };
    try {
      const m0 = await scrape();

      const ws = trackingClient(server.url, userToken("m-ws", { branchId: "mb" }), { transports: ["websocket"], reconnection: false });
      await ws.connected();
      const poll = await connect(server.url, { token: userToken("m-poll", { branchId: "mb" }), transports: ["polling"] });
      sockets.push(ws.socket, poll);
      const m1 = await scrape();
      assert.equal(m1.types.get("livehub_connections"), "gauge");
      assert.equal(value(m1, "livehub_connections", { transport: "websocket" }), 1);
      assert.equal(value(m1, "livehub_connections", { transport: "polling" }), 1);
      assert.equal(value(m1, "livehub_sockets"), 2);
      assert.equal(value(m1, "livehub_users"), 2);
      assert.ok(value(m1, "livehub_rooms") >= 2, "user and branch rooms");

      // Client events of several classes, one refused.
      for (const s of [ws.socket, poll]) assert.equal((await ack(s, "join:shipment", { shipmentId: "M" })).ok, true);
      for (let i = 0; i < 3; i++) assert.equal((await ack(ws.socket, "ping", {})).ok, true);
      assert.equal((await ack(poll, "subscribe", { room: "channel:m" })).ok, true);
      assert.equal((await ack(poll, "chat:send", { room: "channel:m", content: "metrics" })).ok, true);
      assert.equal((await ack(poll, "join:shipment", 42)).error.code, "bad_request");
      // Controller events to the shipment room: both sockets receive each.
      const got = collect(poll, "shipment:updated");
      for (let n = 0; n < 4; n++) assert.equal((await emit(server, { event: "shipment:updated", data: { shipmentId: "M", n } })).status, 202);
      await until(() => got.length === 4);
      // A refused connection (cap 3: the third fits, the fourth does not).
      sockets.push(await connect(server.url, { token: userToken("m-3") }));
      await assert.rejects(connect(server.url, { token: userToken("m-4") }), { message: "rate_limited: too many connections from this address" });
      // Over the event budget (20 per minute).
      const burst = await Promise.all(Array.from({ length: 30 }, () => ack(ws.socket, "rooms")));
      assert.ok(burst.some((a) => a.error?.code === "rate_limited"));
      const m2 = await scrape();

      const inDelta = (cls) => value(m2, "livehub_events_in_total", { class: cls }) - value(m0, "livehub_events_in_total", { class: cls });
      assert.equal(m2.types.get("livehub_events_in_total"), "counter");
      assert.ok(inDelta("join") >= 3, `events_in{class=join} +${inDelta("join")}`);
      assert.ok(inDelta("ping") >= 3, `events_in{class=ping} +${inDelta("ping")}`);
      assert.ok(inDelta("chat") >= 1, `events_in{class=chat} +${inDelta("chat")}`);
      assert.ok(inDelta("rooms") >= 30, `events_in{class=rooms} +${inDelta("rooms")}`);
      const outDelta = value(m2, "livehub_events_out_total", { class: "shipment" }) - value(m0, "livehub_events_out_total", { class: "shipment" });
      assert.ok(outDelta >= 8, `events_out{class=shipment} +${outDelta} (4 events × 2 sockets)`);
      const rejected = (m, reason) => value(m, "livehub_rejected_total", { reason });
      assert.ok(rejected(m2, "bad_request") > rejected(m0, "bad_request"), "rejected{reason=bad_request} moved");
      assert.ok(rejected(m2, "rate_limited") > rejected(m0, "rate_limited"), "rejected{reason=rate_limited} moved");
      assert.ok(
        Object.keys(Object.fromEntries(m2.samples)).some((k) => k.startsWith("livehub_rejected_total{") && /too_many_connections|rate_limited/.test(k)),
        "the refused connection is counted",
      );
      assert.ok(value(m2, "livehub_events_logged_total") - value(m0, "livehub_events_logged_total") >= 4, "events_logged moved");
      const emitCount = checkHistogram(m2, "livehub_emit_to_flush_seconds");
      const appendCount = checkHistogram(m2, "livehub_log_append_seconds");
      assert.ok(emitCount >= 4, `emit_to_flush observed ${emitCount}`);
      assert.ok(appendCount >= 1, `log_append observed ${appendCount}`);
      // Every logged event is fanned out once, after waiting for the deliverer.
      const fanouts = checkHistogram(m2, "livehub_fanout_seconds");
      const waits = checkHistogram(m2, "livehub_delivery_wait_seconds");
      assert.ok(fanouts >= 4 && waits >= 4, `fanout observed ${fanouts}, delivery_wait ${waits}`);

      // A replay: the websocket client misses 3 events and comes back with its offset.
      ws.socket.disconnect();
      await until(async () => value(await scrape(), "livehub_connections", { transport: "websocket" }) === 1, { what: "the websocket socket to go" });
      for (let n = 0; n < 3; n++) await emit(server, { event: "notification", user: "m-ws", data: { title: "t", message: `m${n}`, severity: "info" } });
      const before = ws.seen.length;
      ws.socket.connect();
      await until(() => ws.seen.length === before + 3, { what: "3 replayed events" });
      const m3 = await scrape();
      const replayed = value(m3, "livehub_events_replayed_total") - value(m2, "livehub_events_replayed_total");
      assert.ok(replayed >= 3, `events_replayed +${replayed}`);
      console.log(
        `# metrics: events_in join+${inDelta("join")} ping+${inDelta("ping")} rooms+${inDelta("rooms")}, events_out shipment+${outDelta}, replayed+${replayed}, emit_to_flush count ${emitCount}`,
      );
    } finally {
      closeAll(sockets);
      await server.stop();
    }
  });
});

// ---------------------------------------------------------------------------
// Logs

describe("LOG_FORMAT=json", () => {
  const secret = "json-log-jwt-secret-7f3a9c1e5b2d4f60";
  const apiKey = "json-log-api-key-c0ffee-5e5a3e";
  const wrongApiKey = `${apiKey}-typo`;

  /** Runs traffic that carries every kind of credential through every door; returns the server (stopped) and the tokens. */
  async function credentialTraffic(logLevel) {
    const server = await startServer({ LOG_FORMAT: "json", LOG_LEVEL: logLevel, JWT_SECRET: secret, API_KEYS: apiKey });
    const tok = (sub, extra = {}) => token({ sub, name: `User ${sub}`, branchId: "lg", ...extra }, { secret });
    const tokens = {
      "handshake auth": tok("log-auth"),
      "query parameter": tok("log-query"),
      "Authorization header": tok("log-header"),
      "auth:refresh": tok("log-auth", { exp: Math.floor(Date.now() / 1000) + 1200 }),
      "HTTP bearer": tok("log-http"),
      expired: tok("log-expired", { exp: Math.floor(Date.now() / 1000) - 60 }),
      "wrongly signed": token({ sub: "log-wrong" }, { secret: "some-other-secret-entirely-000000" }),
    };
    const sockets = [];
    try {
      const a = await connect(server.url, { token: tokens["handshake auth"], transports: ["websocket"] });
      const q = await connect(server.url, { query: { token: tokens["query parameter"] }, transports: ["polling"] });
      const h = await connect(server.url, { extraHeaders: { authorization: `Bearer ${tokens["Authorization header"]}` }, transports: ["polling"] });
      sockets.push(a, q, h);
      await assert.rejects(connect(server.url, { token: tokens.expired }), { message: "unauthorized: token expired" });
      await assert.rejects(connect(server.url, { token: tokens["wrongly signed"] }), { message: "unauthorized: invalid token" });
      assert.equal((await ack(a, "auth:refresh", { token: tokens["auth:refresh"] })).ok, true);
      assert.equal((await ack(a, "auth:refresh", { token: tokens["wrongly signed"] })).error.code, "forbidden");
      assert.equal((await ack(a, "join:shipment", { shipmentId: "LOG" })).ok, true);
      assert.equal((await ack(q, "subscribe", { room: "channel:log" })).ok, true);
      assert.equal((await ack(q, "chat:send", { room: "channel:log", content: "hello logs" })).ok, true);
      assert.equal((await ack(h, "join:shipment", [1])).error.code, "bad_request");
      await ack(a, "no:such", {});
      assert.equal((await http(server, "POST", "/api/v1/emit", { apiKey, body: { event: "shipment:updated", data: { shipmentId: "LOG" } } })).status, 202);
      assert.equal((await http(server, "POST", "/api/v1/emit", { apiKey: wrongApiKey, body: { event: "shipment:updated", data: { shipmentId: "LOG" } } })).status, 401);
      assert.equal((await http(server, "GET", "/api/v1/rooms/channel:log/messages", { bearer: tokens["HTTP bearer"] })).status, 200);
      assert.ok((await http(server, "GET", `/api/v1/search?q=hello&token=${tokens["HTTP bearer"]}`, { apiKey: null })).status < 500);
      assert.equal((await http(server, "GET", "/api/v1/rooms/channel:log/messages", { bearer: tokens.expired })).status, 401);
      await http(server, "GET", "/health");
      await http(server, "GET", "/metrics");
      closeAll(sockets);
      await sleep(200);
    } finally {
      closeAll(sockets);
      assert.equal((await server.stop("SIGTERM")).code, 0);
    }
    return { server, tokens };
  }

  /** Asserts none of `secrets` ({what: text}) appears in the process's output. */
  function noSecrets(server, secrets) {
    const leaks = [];
    for (const [stream, out] of [["stderr", server.stderr], ["stdout", server.stdout]]) {
      for (const [what, s] of Object.entries(secrets)) {
        const at = out.indexOf(s);
        if (at >= 0) {
          const line = out.slice(out.lastIndexOf("\n", at) + 1, out.indexOf("\n", at));
          let where = line.slice(0, 160);
          try {
            const j = JSON.parse(line);
            where = `${j.target} ${j.level}: ${String(j.fields?.message ?? j.message ?? "").slice(0, 100)}`;
          } catch {}
          leaks.push(`${what} on ${stream} (${where})`);
        }
      }
    }
    assert.deepEqual(leaks, [], "credentials in the log");
  }

  const tokenSecrets = (tokens) =>
    Object.fromEntries(Object.entries(tokens).flatMap(([k, t]) => [[`${k} token`, t], [`${k} token's signature`, t.split(".")[2]]]));

  let debugRun;
  before(async () => (debugRun = await credentialTraffic("debug")));

  it("LOG_LEVEL=debug: every line on stderr and stdout, the start-up banner included, is one JSON object", () => {
    const out = debugRun.server.stdout.split("\n").filter((l) => l.trim() !== "");
    assert.ok(out.some((l) => JSON.parse(l).message?.startsWith("livehub listening on http://")), `the banner: ${out[0]}`);
    const lines = [...debugRun.server.stderr.split("\n"), ...out].filter((l) => l.trim() !== "");
    console.log(`# json log (debug): ${lines.length} lines on stderr`);
    assert.ok(lines.length >= 20, `LOG_LEVEL=debug gives many lines (${lines.length})`);
    for (const l of lines) {
      let parsed;
      assert.doesNotThrow(() => (parsed = JSON.parse(l)), `not JSON: ${l.slice(0, 200)}`);
      assert.ok(parsed && typeof parsed === "object" && !Array.isArray(parsed), `not an object: ${l.slice(0, 200)}`);
      assert.equal(typeof parsed.level, "string", l.slice(0, 200));
      assert.equal(typeof parsed.timestamp, "string", l.slice(0, 200));
    }
  });

  it("LOG_LEVEL=debug: neither the JWT secret nor an API key (right or mistyped) is logged", () => {
    noSecrets(debugRun.server, { "JWT secret": secret, "API key": apiKey, "mistyped API key": wrongApiKey });
  });

  it("LOG_LEVEL=debug: no user token is logged, whichever way it came", () => {
    noSecrets(debugRun.server, tokenSecrets(debugRun.tokens));
  });

  it("pretty logs into a pipe carry no colour codes; LOG_COLOR=always asks for them", async () => {
    const plainRun = await startServer({ LOG_LEVEL: "info" });
    await until(() => /livehub started/.test(plainRun.stderr), { what: "the start-up log line" });
    await plainRun.stop("SIGTERM");
    assert.doesNotMatch(plainRun.stderr + plainRun.stdout, /\x1b\[/, "no ANSI escapes in a pipe");
    const colourRun = await startServer({ LOG_LEVEL: "info", LOG_COLOR: "always" });
    await until(() => /livehub/.test(colourRun.stderr), { what: "a log line" });
    await colourRun.stop("SIGTERM");
    assert.match(colourRun.stderr, /\x1b\[/, "LOG_COLOR=always colours");
  });

  it("a refused configuration is one JSON line on stderr", async () => {
    const r = await runBinary(["serve"], { LOG_FORMAT: "json", PORT: "not-a-port", JWT_SECRET: secret, API_KEYS: apiKey });
    assert.equal(r.code, 2);
    const lines = r.stderr.split("\n").filter((l) => l.trim() !== "");
    assert.equal(lines.length, 1, r.stderr);
    const line = JSON.parse(lines[0]);
    assert.equal(line.level, "ERROR");
    assert.match(line.message, /PORT/);
  });

  it("at the default level: JSON lines, and no credential of any kind", async () => {
    const { server, tokens } = await credentialTraffic(undefined);
    const lines = server.stderr.split("\n").filter((l) => l.trim() !== "");
    for (const l of lines) assert.ok(JSON.parse(l) && typeof JSON.parse(l) === "object", l.slice(0, 200));
    noSecrets(server, { "JWT secret": secret, "API key": apiKey, "mistyped API key": wrongApiKey, ...tokenSecrets(tokens) });
  });
});
