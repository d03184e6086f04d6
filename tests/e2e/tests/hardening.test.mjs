// Hostile and misconfigured inputs at the edges: tokens not yet valid, a JWKS
// endpoint over plain http or behind a redirect, dev mode beside real secrets,
// a user flooding the HTTP routes, a /ws query that cannot be read. (Floods of
// connections and slow readers are in attacks.test.mjs.)
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import crypto from "node:crypto";
import fs from "node:fs";
import http from "node:http";
import path from "node:path";
import { io } from "socket.io-client";
import { connect, http as request, runBinary, sleep, startServer, tempDir, token, userToken } from "../lib/harness.mjs";
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

describe("--dev beside a public key for real users' tokens (no secret, no API key)", () => {
  it("mints no dev tokens and keeps the Admin UI closed", async () => {
    const { publicKey } = crypto.generateKeyPairSync("ec", { namedCurve: "P-256" });
    const file = path.join(tempDir(), "public.pem");
    fs.writeFileSync(file, publicKey.export({ type: "spki", format: "pem" }));
    const server = await startServer({ JWT_SECRET: undefined, API_KEYS: undefined, JWT_PUBLIC_KEY_FILE: file }, { args: ["--dev"] });
    try {
      for (const route of ["/dev/config", "/dev/token?sub=dana"]) {
        assert.equal((await request(server, "GET", route, { apiKey: null })).status, 404, route);
      }
      const admin = io(`${server.url}/admin`, { forceNew: true, reconnection: false, transports: ["websocket"] });
      const refused = await new Promise((resolve) => {
        admin.once("connect", () => resolve("admitted"));
        admin.once("connect_error", (e) => resolve(e.message));
      });
      admin.close();
      assert.equal(refused, "invalid credentials");
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

