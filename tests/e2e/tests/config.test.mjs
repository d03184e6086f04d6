// Configuration, as an operator meets it: malformed values (env or flag) stop
// start-up with exit code 2 and one stderr line naming the variable; no JWT
// configuration is refused unless --dev; --dev prints a token and API key that
// really work; `livehub token` mints tokens the server accepts (claims become
// automatic rooms); LOG_FORMAT=json makes every log line a JSON object and no
// line leaks the secret, the API key or a user token.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import {
  API_KEY,
  BIN,
  SECRET,
  ack,
  closeAll,
  connect,
  emit,
  http,
  next,
  runBinary,
  startServer,
  tempDir,
  token,
  until,
  userToken,
} from "../lib/harness.mjs";

process.setMaxListeners(50); // the harness adds an exit listener per server / temp dir

const INVALID = "unauthorized: invalid token";

/**
 * Runs the binary; resolves with its exit, or kills it after `timeout` ms and
 * reports `started: true` (it should have refused and did not).
 */
function run(args, env, { timeout = 10000 } = {}) {
  return new Promise((resolve) => {
    const proc = spawn(BIN, args, { env: { PATH: process.env.PATH, ...env }, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    let started = false;
    proc.stdout.on("data", (d) => (stdout += d));
    proc.stderr.on("data", (d) => (stderr += d));
    const timer = setTimeout(() => {
      started = true;
      proc.kill("SIGKILL");
    }, timeout);
    proc.on("exit", (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, started });
    });
  });
}

/** Asserts a refused start-up: exit code 2, nothing listening, one stderr line naming `variable`. */
function assertRefused(r, variable, what) {
  assert.equal(r.started, false, `${what}: livehub kept running instead of refusing (stdout: ${r.stdout})`);
  assert.doesNotMatch(r.stdout, /listening on/, `${what}: it announced a listening address`);
  assert.equal(r.code, 2, `${what}: exit code ${r.code}, stderr: ${r.stderr}`);
  const lines = r.stderr.split("\n").filter((l) => l.trim() !== "");
  assert.equal(lines.length, 1, `${what}: expected one stderr line, got ${JSON.stringify(r.stderr)}`);
  assert.ok(lines[0].includes(variable), `${what}: the error does not name ${variable}: ${lines[0]}`);
  return lines[0];
}

/** Decodes a JWT's payload (no verification). */
const claimsOf = (tok) => JSON.parse(Buffer.from(tok.split(".")[1], "base64url").toString());
const now = () => Math.floor(Date.now() / 1000);

// ---------------------------------------------------------------------------

describe("malformed configuration stops start-up", () => {
  const dir = tempDir();
  const garbagePem = path.join(dir, "garbage.pem");
  fs.writeFileSync(garbagePem, "-----BEGIN PUBLIC KEY-----\nbm90IGEga2V5\n-----END PUBLIC KEY-----\n");
  const base = { JWT_SECRET: SECRET, API_KEYS: API_KEY, PORT: "0", DATABASE_URL: `sqlite://${dir}/cfg.db`, LOG_LEVEL: "warn" };

  const cases = [
    ["PORT", "http"],
    ["PORT", "70000"],
    ["PORT", "-1"],
    ["HOST", "999.0.0.1"],
    ["MAX_PAYLOAD_BYTES", "lots"],
    ["MAX_PAYLOAD_BYTES", "-5"],
    ["MAX_PAYLOAD_BYTES", "1.5MB"],
    ["MAX_CONNECTIONS_PER_IP", "many"],
    ["RATE_LIMIT_PER_MINUTE", "fast"],
    ["LOG_FORMAT", "xml"],
    ["DATABASE_URL", "mysql://app@db.internal/livehub"],
    ["DATABASE_URL", "livehub.db"],
    ["DATABASE_URL", "sqlite://livehub.db?synchronous=off"],
    ["WS_PING_INTERVAL", "often"],
    ["WS_IDLE_TIMEOUT", "1ms"],
    ["REDIS_URL", "localhost:6379"],
    ["CORS_ORIGINS", "not an origin"],
    ["CORS_ORIGINS", "https://ok.example,app.example.com"],
    ["ENCRYPTION_KEY", "abc"],
    ["ENCRYPTION_KEY", "0".repeat(63)],
    ["ENCRYPTION_KEY", "z".repeat(64)],
    ["EVENT_RETENTION", "forever"],
    ["EVENT_RETENTION", "24 parsecs"],
    ["JWKS_URL", "ftp://keys.example/jwks.json"],
    ["JWT_PUBLIC_KEY_FILE", path.join(dir, "does-not-exist.pem")],
    ["JWT_PUBLIC_KEY_FILE", garbagePem],
    ["PRESENCE_BROADCAST_LIMIT", "several"],
  ];

  for (const [variable, value] of cases) {
    it(`${variable}=${JSON.stringify(value)} → exit 2, one line naming ${variable}`, async () => {
      const r = await run(["serve"], { ...base, [variable]: value });
      assertRefused(r, variable, `${variable}=${value}`);
    });
  }

  it("secrets in malformed values are not echoed (DATABASE_URL password, ENCRYPTION_KEY)", async () => {
    let r = await run(["serve"], { ...base, DATABASE_URL: "mysql://app:hunter2-db-password@db.internal/livehub" });
    let line = assertRefused(r, "DATABASE_URL", "mysql URL with a password");
    assert.ok(!line.includes("hunter2-db-password"), `the database password is printed: ${line}`);
    const almostKey = "ab12".repeat(15) + "xyz"; // 63 characters, one typo away from a real key
    r = await run(["serve"], { ...base, ENCRYPTION_KEY: almostKey });
    line = assertRefused(r, "ENCRYPTION_KEY", "63-character key");
    assert.ok(!line.includes(almostKey), `the encryption key is printed: ${line}`);
  });

  it("`livehub` without a subcommand validates the same way", async () => {
    assertRefused(await run([], { ...base, PORT: "http" }), "PORT", "livehub PORT=http");
    assertRefused(await run([], { ...base, LOG_FORMAT: "yaml" }), "LOG_FORMAT", "livehub LOG_FORMAT=yaml");
  });

  it("an SQLite database that cannot be opened stops start-up with one line naming DATABASE_URL", async () => {
    const r = await run(["serve"], { ...base, DATABASE_URL: `sqlite://${dir}/no/such/dir/x.db` });
    assert.equal(r.started, false, "livehub kept running");
    assert.notEqual(r.code, 0);
    const lines = r.stderr.split("\n").filter((l) => l.trim() !== "");
    assert.equal(lines.length, 1, JSON.stringify(r.stderr));
    assert.match(lines[0], /DATABASE_URL/);
  });
});

describe("no way to verify tokens", () => {
  it("without JWT_SECRET, JWT_PUBLIC_KEY_FILE and JWKS_URL start-up is refused naming JWT_SECRET", async () => {
    const dir = tempDir();
    for (const args of [["serve"], []]) {
      const r = await run(args, { PORT: "0", API_KEYS: API_KEY, DATABASE_URL: `sqlite://${dir}/nojwt.db` });
      assertRefused(r, "JWT_SECRET", `livehub ${args.join(" ")} without JWT config`);
    }
    // Blank values count as unset.
    const r = await run(["serve"], { PORT: "0", JWT_SECRET: "", JWKS_URL: " ", DATABASE_URL: `sqlite://${dir}/nojwt.db` });
    assertRefused(r, "JWT_SECRET", "blank JWT_SECRET / JWKS_URL");
  });
});

describe("flags mirror the environment", () => {
  const dir = tempDir();
  const base = { JWT_SECRET: SECRET, PORT: "0", DATABASE_URL: `sqlite://${dir}/flags.db`, LOG_LEVEL: "warn" };

  const flagCases = [
    [["--port", "abc"], "PORT"],
    [["--port=abc"], "PORT"],
    [["--max-payload-bytes", "lots"], "MAX_PAYLOAD_BYTES"],
    [["--log-format", "xml"], "LOG_FORMAT"],
    [["--encryption-key", "nothex"], "ENCRYPTION_KEY"],
    [["--event-retention", "forever"], "EVENT_RETENTION"],
    [["--database-url", "mysql://db/livehub"], "DATABASE_URL"],
    [["--cors-origins", "nope"], "CORS_ORIGINS"],
  ];
  for (const [args, variable] of flagCases) {
    it(`serve ${args.join(" ")} → exit 2, one line naming ${variable}`, async () => {
      // The environment holds a valid value; the bad flag must still be caught.
      assertRefused(await run(["serve", ...args], base), variable, `serve ${args.join(" ")}`);
    });
  }

  it("a bad flag is refused by `livehub --port abc` too (no subcommand)", async () => {
    assertRefused(await run(["--port", "abc"], base), "PORT", "livehub --port abc");
  });

  it("an unknown flag is refused, naming the flag", async () => {
    const r = await run(["serve", "--prot", "3000"], base);
    assert.equal(r.started, false, "livehub started with an unknown flag");
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /--prot/);
  });

  describe("a server configured only by flags", () => {
    const FLAG_SECRET = "flag-secret-abcdefghijklmnopqrstuvwxyz";
    const FLAG_KEY = "flag-api-key-123";
    let server;
    before(async () => {
      server = await startServer({ JWT_SECRET: undefined, API_KEYS: undefined }, { args: ["--jwt-secret", FLAG_SECRET, "--api-keys", FLAG_KEY] });
    });
    after(() => server?.stop());

    it("uses --jwt-secret and --api-keys", async () => {
      await assert.rejects(connect(server.url, { token: userToken("flag-user"), transports: ["websocket"] }), { message: INVALID });
      const socket = await connect(server.url, { token: token({ sub: "flag-user" }, { secret: FLAG_SECRET }), transports: ["websocket"] });
      try {
        const joined = await ack(socket, "join:shipment", { shipmentId: "CFG-FLAG" });
        assert.equal(joined.ok, true);
        const wrong = await emit(server, { event: "shipment:updated", data: { shipmentId: "CFG-FLAG" } }, { apiKey: API_KEY });
        assert.equal(wrong.status, 401, "the environment's usual API key is not configured here");
        const got = next(socket, "shipment:updated");
        const res = await emit(server, { event: "shipment:updated", data: { shipmentId: "CFG-FLAG", status: "flagged" } }, { apiKey: FLAG_KEY });
        assert.equal(res.status, 202, res.text);
        assert.equal((await got).status, "flagged");
      } finally {
        closeAll(socket);
      }
    });
  });
});

// ---------------------------------------------------------------------------

describe("--dev", () => {
  let server;
  let demoToken;
  let apiKey;
  before(async () => {
    server = await startServer({ JWT_SECRET: undefined, API_KEYS: undefined }, { args: ["--dev"] });
    // The demo token and API key are printed after the listening line.
    await until(() => /eyJ[\w-]+\.[\w-]+\.[\w-]+/.test(server.stdout) && /api key/i.test(server.stdout), {
      timeout: 10000,
      what: "the dev banner",
    });
    await until(() => /api key[^\n]*\n/i.test(server.stdout), { timeout: 5000, what: "the API key line" });
    demoToken = server.stdout.match(/eyJ[\w-]+\.[\w-]+\.[\w-]+/)[0];
    apiKey = server.stdout.match(/api key\s*:?\s*(\S+)/i)?.[1];
  });
  after(() => server?.stop());

  it("starts without any JWT configuration and prints a token and an API key", () => {
    assert.ok(demoToken, server.stdout);
    assert.ok(apiKey && apiKey.length >= 8, `no API key found in:\n${server.stdout}`);
    const claims = claimsOf(demoToken);
    assert.equal(typeof claims.sub, "string");
    assert.ok(claims.exp > now() + 60, "the demo token is usable for a while");
  });

  it("the printed token connects (4.x and 2.x) and the printed API key emits to it", async () => {
    const { sub } = claimsOf(demoToken);
    const sockets = [];
    try {
      for (const [i, version] of [4, 2].entries()) {
        const socket = await connect(server.url, { version, token: demoToken });
        sockets.push(socket);
        const { rooms } = await ack(socket, "rooms");
        assert.ok(rooms.includes(`user:${sub}`), JSON.stringify(rooms));
        const joined = await ack(socket, "join:shipment", { shipmentId: `CFG-DEV-${i}` });
        assert.equal(joined.ok, true);
        const got = next(socket, "shipment:updated");
        const res = await emit(server, { event: "shipment:updated", data: { shipmentId: `CFG-DEV-${i}`, status: "demo" } }, { apiKey });
        assert.equal(res.status, 202, res.text);
        const payload = await got;
        assert.equal(payload.shipmentId, `CFG-DEV-${i}`);
        assert.equal(payload.status, "demo");
      }
    } finally {
      closeAll(sockets);
    }
  });

  it("other keys and tokens are still refused in dev mode", async () => {
    const res = await emit(server, { event: "shipment:updated", data: { shipmentId: "CFG-DEV-X" } }, { apiKey: `${apiKey}x` });
    assert.equal(res.status, 401);
    await assert.rejects(connect(server.url, { token: userToken("dev-stranger"), transports: ["websocket"] }), { message: INVALID });
  });
});

// ---------------------------------------------------------------------------

describe("`livehub token` and LOG_FORMAT=json", () => {
  let server;
  const usedTokens = [];
  before(async () => {
    server = await startServer({ LOG_FORMAT: "json", LOG_LEVEL: "info" });
  });
  after(() => server?.stop("SIGKILL"));

  it("a minted token is accepted by a server with the same JWT_SECRET; its claims become automatic rooms", async () => {
    const r = await runBinary(["token", "--sub", "tok-user", "--branch", "b-7", "--role", "operator", "--name", "Tok User", "--ttl", "1h"], {
      JWT_SECRET: SECRET,
    });
    assert.equal(r.code, 0, r.stderr);
    const minted = r.stdout.trim();
    assert.match(minted, /^[\w-]+\.[\w-]+\.[\w-]+$/, `stdout is not just a token: ${JSON.stringify(r.stdout)}`);
    usedTokens.push(minted);
    const claims = claimsOf(minted);
    assert.equal(claims.sub, "tok-user");
    assert.equal(claims.name, "Tok User");
    assert.equal(claims.role, "operator");
    assert.equal(claims.branchId ?? claims.branch_id, "b-7");
    assert.ok(Math.abs(claims.exp - (now() + 3600)) <= 60, `--ttl 1h gave exp ${claims.exp}, now ${now()}`);

    const sockets = [];
    try {
      for (const [i, version] of [4, 2].entries()) {
        const socket = await connect(server.url, { version, token: minted });
        sockets.push(socket);
        const { ok, rooms } = await ack(socket, "rooms");
        assert.equal(ok, true);
        for (const room of ["user:tok-user", "branch:b-7", "role:operator", "role:operator:b-7"]) {
          assert.ok(rooms.includes(room), `${room} missing from ${JSON.stringify(rooms)} (${version}.x)`);
        }
        const joined = await ack(socket, "join:shipment", { shipmentId: `CFG-TOK-${i}` });
        assert.equal(joined.ok, true);
      }
      // An event for the branch reaches the minted token's sockets.
      const got = sockets.map((s) => next(s, "dashboard:refresh"));
      const res = await emit(server, { event: "dashboard:refresh", data: { branchId: "b-7" } });
      assert.equal(res.status, 202, res.text);
      for (const p of await Promise.all(got)) assert.equal(p.branchId, "b-7");
    } finally {
      closeAll(sockets);
    }
  });

  it("a token minted with another JWT_SECRET is refused", async () => {
    const r = await runBinary(["token", "--sub", "tok-other", "--ttl", "1h"], { JWT_SECRET: "another-secret-0123456789abcdef" });
    assert.equal(r.code, 0, r.stderr);
    const minted = r.stdout.trim();
    usedTokens.push(minted);
    await assert.rejects(connect(server.url, { token: minted, transports: ["websocket"] }), { message: INVALID });
  });

  it("every stderr line is a JSON object, and none carries the secret, the API key or a user token", async () => {
    // Traffic that could leak credentials into logs: tokens in the query string
    // (polling URLs), in the Authorization header, refused tokens, API calls.
    const t1 = userToken("log-query");
    const t2 = userToken("log-header");
    const t3 = token({ sub: "log-forged" }, { secret: "forged-secret-0123456789abcdef" });
    usedTokens.push(t1, t2, t3);
    const a = await connect(server.url, { version: 2, transports: ["polling"], token: t1 });
    const b = await connect(server.url, { transports: ["polling"], extraHeaders: { Authorization: `Bearer ${t2}` } });
    await assert.rejects(connect(server.url, { transports: ["polling"], query: { token: t3 } }), { message: INVALID });
    await ack(a, "join:shipment", { shipmentId: "CFG-LOG" });
    assert.equal((await emit(server, { event: "shipment:updated", data: { shipmentId: "CFG-LOG" } })).status, 202);
    assert.equal((await emit(server, { event: "shipment:updated", data: { shipmentId: "CFG-LOG" } }, { apiKey: "wrong-key" })).status, 401);
    assert.equal((await http(server, "GET", "/health")).status, 200);
    closeAll(a, b);

    const exit = await server.stop("SIGTERM");
    assert.deepEqual(exit, { code: 0, signal: null }, "SIGTERM → exit 0");

    const lines = server.stderr.split("\n").filter((l) => l.trim() !== "");
    assert.ok(lines.length >= 1, "LOG_LEVEL=info logged nothing at all");
    for (const line of lines) {
      let parsed;
      assert.doesNotThrow(() => (parsed = JSON.parse(line)), `not JSON: ${line}`);
      assert.ok(parsed && typeof parsed === "object" && !Array.isArray(parsed), `not a JSON object: ${line}`);
    }
    const output = `${server.stderr}\n${server.stdout}`;
    assert.ok(!output.includes(SECRET), "the JWT secret appears in the output");
    assert.ok(!output.includes(API_KEY), "the API key appears in the output");
    for (const t of usedTokens) {
      assert.ok(!output.includes(t), `a token appears in the output: ${t.slice(0, 20)}…`);
      // The signature alone is the secret part; a truncated or split token must not leak it either.
      assert.ok(!output.includes(t.split(".")[2]), `a token signature appears in the output: ${t.slice(0, 20)}…`);
    }
  });
});

describe("`livehub` alone starts the server", () => {
  it("serves /health and exits 0 on SIGTERM", async () => {
    const dir = tempDir();
    const proc = spawn(BIN, [], {
      env: { PATH: process.env.PATH, JWT_SECRET: SECRET, API_KEYS: API_KEY, PORT: "0", DATABASE_URL: `sqlite://${dir}/bare.db`, LOG_LEVEL: "warn" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    proc.stdout.on("data", (d) => (stdout += d));
    proc.stderr.on("data", (d) => (stderr += d));
    const exited = new Promise((r) => proc.on("exit", (code, signal) => r({ code, signal })));
    try {
      const url = await until(() => stdout.match(/listening on (http:\/\/[0-9.:]+)/)?.[1], { timeout: 20000, what: `listening (stderr: ${stderr})` });
      const res = await fetch(`${url}/health`);
      assert.equal(res.status, 200);
      assert.equal((await res.json()).status, "OK");
      const socket = await connect(url, { token: userToken("bare"), transports: ["websocket"] });
      closeAll(socket);
    } finally {
      proc.kill("SIGTERM");
    }
    assert.deepEqual(await exited, { code: 0, signal: null });
  });
});
