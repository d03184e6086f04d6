// Hostile and misconfigured inputs at the edges: tokens not yet valid, a JWKS
// endpoint over plain http or behind a redirect, dev mode beside real secrets,
// and clients that trickle their request headers. A legitimate client keeps
// working throughout.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import crypto from "node:crypto";
import http from "node:http";
import net from "node:net";
import fs from "node:fs";
import { connect, http as request, runBinary, sleep, startServer, token, until, userToken } from "../lib/harness.mjs";
import { openPlain } from "../lib/plain.mjs";

const INVALID = "unauthorized: invalid token";
const now = () => Math.floor(Date.now() / 1000);

describe("nbf", () => {
  let server;
  before(async () => (server = await startServer()));
  after(() => server.stop());

  it("a token not valid yet is refused on both fronts; one valid since a moment ago is accepted", async () => {
    const early = token({ sub: "early", nbf: now() + 3600 });
    await assert.rejects(connect(server.url, { token: early }), (e) => e.message === INVALID);
    const plain = await openPlain(server, { query: { token: early } });
    assert.deepEqual(await plain.done, { code: 4401, reason: INVALID });
    const ok = await connect(server.url, { token: token({ sub: "on-time", nbf: now() - 5 }) });
    ok.close();
  });
});

describe("JWKS_URL", () => {
  const pair = crypto.generateKeyPairSync("rsa", { modulusLength: 2048 });
  const jwks = { keys: [{ ...crypto.createPublicKey(pair.privateKey).export({ format: "jwk" }), kid: "k1", alg: "RS256", use: "sig" }] };
  let keys;
  let redirector;
  before(async () => {
    keys = http.createServer((_req, res) => res.end(JSON.stringify(jwks)));
    await new Promise((r) => keys.listen(0, "127.0.0.1", r));
    redirector = http.createServer((_req, res) => {
      res.writeHead(302, { location: `http://127.0.0.1:${keys.address().port}/jwks.json` });
      res.end();
    });
    await new Promise((r) => redirector.listen(0, "127.0.0.1", r));
  });
  after(() => {
    keys.close();
    redirector.close();
  });

  it("must be https unless it is on this machine", async () => {
    const r = await runBinary(["serve"], { JWKS_URL: "http://keys.example.com/jwks.json" });
    assert.equal(r.code, 2);
    assert.match(r.stderr, /JWKS_URL/);
    assert.match(r.stderr, /https/);
  });

  it("does not follow redirects: keys behind one are not trusted", async () => {
    const tok = token({ sub: "jwks-user" }, { alg: "RS256", key: pair.privateKey, kid: "k1" });
    const direct = await startServer({ JWT_SECRET: undefined, JWKS_URL: `http://127.0.0.1:${keys.address().port}/jwks.json` });
    try {
      const s = await connect(direct.url, { token: tok });
      s.close();
    } finally {
      await direct.stop();
    }
    const redirected = await startServer({ JWT_SECRET: undefined, JWKS_URL: `http://127.0.0.1:${redirector.address().port}/jwks.json` });
    try {
      await assert.rejects(connect(redirected.url, { token: tok }), (e) => e.message === INVALID);
    } finally {
      await redirected.stop();
    }
  });
});

describe("--dev beside real secrets", () => {
  let server;
  before(async () => (server = await startServer({}, { args: ["--dev"] })));
  after(() => server.stop());

  it("never hands out or prints the configured secret or API key", async () => {
    for (const route of ["/dev/config", "/dev/token?sub=ana"]) {
      const res = await request(server, "GET", route, { apiKey: null });
      assert.equal(res.status, 404, route);
      assert.ok(!res.text.includes(server.env.API_KEYS) && !res.text.includes(server.env.JWT_SECRET), route);
    }
    await sleep(200);
    const printed = server.stdout + server.stderr;
    assert.ok(!printed.includes(server.env.API_KEYS), "the API key is not printed");
    assert.ok(!printed.includes(server.env.JWT_SECRET), "the secret is not printed");
  });
});

describe("clients that trickle their request headers", () => {
  let server;
  before(async () => (server = await startServer()));
  after(() => server.stop());

  it("are closed within the header timeout while a legitimate client is served", async () => {
    const COUNT = 300;
    const started = Date.now();
    const closing = Promise.all(
      Array.from({ length: COUNT }, () =>
        new Promise((resolve) => {
          const sock = net.connect(server.port, "127.0.0.1", () => sock.write("GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: "));
          // One byte a second, never the end of the headers.
          const drip = setInterval(() => sock.writable && sock.write("a"), 1000);
          const done = () => {
            clearInterval(drip);
            resolve(Date.now() - started);
          };
          sock.on("close", done);
          sock.on("error", () => {});
          setTimeout(() => sock.destroy(), 20_000); // the bound of the test itself
        }),
      ),
    );
    // While they drip, a real client gets its answers.
    await sleep(2000);
    const health = await request(server, "GET", "/health");
    assert.equal(health.status, 200);
    const s = await connect(server.url, { token: userToken("legit") });
    s.close();
    const worst = Math.max(...(await closing));
    assert.ok(worst < 15_000, `every trickling connection was closed by the server (slowest after ${worst} ms)`);
  });
});

describe("MAX_CONNECTIONS", () => {
  it("past the cap new connections get a 503 and are closed; once some close, clients are served again", async () => {
    const server = await startServer({ MAX_CONNECTIONS: "20" });
    const held = [];
    try {
      // Twenty silent connections fill the node.
      for (let i = 0; i < 20; i++) {
        held.push(await new Promise((resolve) => {
          const sock = net.connect(server.port, "127.0.0.1", () => resolve(sock));
          sock.on("error", () => {});
        }));
      }
      await sleep(200);
      const refused = await request(server, "GET", "/health");
      assert.equal(refused.status, 503);
      assert.equal(refused.body.error.code, "internal");
      const metricsRefused = await request(server, "GET", "/metrics");
      assert.equal(metricsRefused.status, 503, "every route is behind the cap");
      // They go; the node serves again.
      for (const sock of held.splice(0)) sock.destroy();
      await sleep(300);
      assert.equal((await request(server, "GET", "/health")).status, 200);
      const metrics = await request(server, "GET", "/metrics");
      assert.match(metrics.text, /livehub_rejected_total\{reason="too_many_connections"\} [1-9]/);
      const s = await connect(server.url, { token: userToken("after-the-cap") });
      s.close();
    } finally {
      for (const sock of held) sock.destroy();
      await server.stop();
    }
  });
});

describe("handshakes that never become sockets", () => {
  it("leave no state behind: after a thousand polling-then-upgrade cycles without CONNECT (v4 and v3), tracked sessions return to zero", async () => {
    const { default: WebSocket } = await import("ws");
    const server = await startServer({ MAX_CONNECTIONS_PER_IP: "5" });
    const rss = () => Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${server.proc.pid}/status`, "utf8"))[1]);
    const scrape = async () => Number(/^livehub_transport_sessions (\d+)/m.exec((await request(server, "GET", "/metrics")).text)?.[1]);
    /** Opens a polling session, upgrades it to websocket, and leaves without CONNECT. */
    const cycle = async (eio) => {
      const open = await fetch(`${server.url}/socket.io/?EIO=${eio}&transport=polling`);
      const text = await open.text();
      const sid = /"sid":"([^"]+)"/.exec(text)?.[1];
      assert.ok(sid, `an Engine.IO session: ${text.slice(0, 100)}`);
      const ws = new WebSocket(`${server.url.replace("http", "ws")}/socket.io/?EIO=${eio}&transport=websocket&sid=${sid}`);
      await new Promise((resolve) => {
        ws.on("open", () => ws.send("2probe"));
        ws.on("message", (m) => {
          if (String(m) === "3probe") {
            ws.send("5"); // upgrade done; no "40" (CONNECT) ever follows
            setTimeout(() => ws.terminate(), 5);
          }
        });
        ws.on("close", resolve);
        ws.on("error", resolve);
      });
    };
    try {
      const rssBefore = rss();
      const CYCLES = 1000;
      let done = 0;
      const started = Date.now();
      await Promise.all(
        Array.from({ length: 20 }, async (_, w) => {
          while (done < CYCLES) {
            done++;
            await cycle(w % 2 === 0 ? 4 : 3);
          }
        }),
      );
      // The gauge is sampled every 5 s: wait for a sample taken after the cycles.
      await sleep(6000);
      // Meanwhile and after, a legitimate client is served.
      assert.equal((await request(server, "GET", "/health")).status, 200);
      const s = await connect(server.url, { token: userToken("legit-after-handshakes") });
      s.close();
      await until(async () => (await scrape()) === 0, { what: "tracked sessions back to zero", timeout: 20_000, interval: 500 });
      console.log(`# ${CYCLES} handshakes without CONNECT in ${Date.now() - started} ms; server RSS ${rssBefore} KiB before, ${rss()} KiB after`);
    } finally {
      await server.stop();
    }
  });
});

describe("the user HTTP routes", () => {
  it("have a per-user budget (RATE_LIMIT_PER_MINUTE): past it 429 rate_limited, other users and controllers unaffected", async () => {
    const server = await startServer({ RATE_LIMIT_PER_MINUTE: "10" });
    try {
      const greedy = userToken("greedy", { branchId: "rl" });
      const path = "/api/v1/rooms/branch:rl/messages";
      const statuses = [];
      for (let i = 0; i < 14; i++) statuses.push((await request(server, "GET", path, { bearer: greedy })).status);
      assert.deepEqual(statuses.slice(0, 10), Array(10).fill(200), `the budget first: ${statuses}`);
      assert.ok(statuses.slice(10).every((s) => s === 429), `then 429: ${statuses}`);
      const refused = await request(server, "GET", "/ws/rooms", { bearer: greedy });
      assert.equal(refused.status, 429, "seed 001's routes share the budget");
      assert.equal(refused.body.error.code, "rate_limited");
      assert.equal((await request(server, "GET", path, { bearer: userToken("patient", { branchId: "rl" }) })).status, 200);
      assert.equal((await request(server, "GET", path)).status, 200, "a controller (API key) is not a user");
    } finally {
      await server.stop();
    }
  });
});

describe("/ws with a query it cannot read", () => {
  it("is refused with a 400 that says why, instead of dropping the token and offset with it", async () => {
    const { default: WebSocket } = await import("ws");
    const server = await startServer();
    try {
      const tok = userToken("twice");
      const url = `${server.url.replace("http", "ws")}/ws?token=${tok}&token=${tok}`;
      const res = await new Promise((resolve, reject) => {
        const ws = new WebSocket(url);
        ws.on("unexpected-response", (_, r) => {
          let body = "";
          r.on("data", (d) => (body += d));
          r.on("end", () => resolve({ status: r.statusCode, body: JSON.parse(body) }));
        });
        ws.on("open", () => reject(new Error("upgraded")));
        ws.on("error", () => {});
      });
      assert.equal(res.status, 400);
      assert.equal(res.body.error.code, "bad_request");
      assert.match(res.body.error.message, /query string/);
    } finally {
      await server.stop();
    }
  });
});

describe("clients that connect and say nothing", () => {
  it("are closed within the header timeout, a few hundred of them, while a legitimate client is served", async () => {
    const server = await startServer();
    try {
      const COUNT = 300;
      const started = Date.now();
      const closed = Promise.all(
        Array.from({ length: COUNT }, () =>
          new Promise((resolve) => {
            const sock = net.connect(server.port, "127.0.0.1");
            sock.on("close", () => resolve(Date.now() - started));
            sock.on("error", () => {});
            setTimeout(() => sock.destroy(), 25_000); // the bound of the test itself
          }),
        ),
      );
      await sleep(1000);
      assert.equal((await request(server, "GET", "/health")).status, 200);
      const s = await connect(server.url, { token: userToken("legit-among-silent") });
      s.close();
      const times = await closed;
      const worst = Math.max(...times);
      console.log(`# ${COUNT} silent connections closed by the server after ${Math.min(...times)}-${worst} ms`);
      assert.ok(worst < 20_000, `every silent connection was closed by the server (slowest after ${worst} ms)`);
    } finally {
      await server.stop();
    }
  });
});
