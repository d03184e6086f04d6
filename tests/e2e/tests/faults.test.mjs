// Faults against a real livehub process, each followed by a ledger check:
// every event acknowledged with 202 reached the client owed it, exactly once,
// and nothing refused did. (Crashes mid-replay are in replay.test.mjs.)
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { atExit, http, sleep, startServer, until, userToken } from "../lib/harness.mjs";
import { plain } from "../lib/plain.mjs";
import { io } from "socket.io-client";

/** A size-limited tmpfs (root only), or why not. */
function smallDisk(megabytes) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "livehub-fulldisk-"));
  try {
    execFileSync("mount", ["-t", "tmpfs", "-o", `size=${megabytes}m`, "tmpfs", dir], { stdio: "pipe" });
  } catch (e) {
    return { skip: `skipped: cannot mount a small tmpfs here (${String(e.stderr || e.message).trim()}); the full-disk test needs root` };
  }
  atExit(() => {
    try {
      execFileSync("umount", ["-l", dir], { stdio: "pipe" });
    } catch {
      // best effort
    }
  });
  return { dir };
}

const disk = process.getuid?.() === 0 ? smallDisk(8) : { skip: "skipped: the full-disk test needs root (to mount a small tmpfs)" };
if (disk.skip && process.env.LIVEHUB_REQUIRE_SERVICES === "1" && process.getuid?.() === 0) throw new Error(disk.skip);

describe("a full disk under the SQLite log", { skip: disk.skip }, () => {
  let server;
  let filler;
  before(async () => {
    // Room for the database to start; the rest taken by a file we can delete.
    server = await startServer({ DATABASE_URL: `sqlite://${disk.dir}/livehub.db`, RATE_LIMIT_PER_MINUTE: "0" });
    filler = path.join(disk.dir, "filler");
    const free = () => Number(execFileSync("df", ["--output=avail", "-B1", disk.dir]).toString().split("\n")[1]);
    fs.writeFileSync(filler, Buffer.alloc(Math.max(0, free() - 512 * 1024)));
  });
  after(() => server?.stop());

  it("emits get 503 while the disk is full, the server stays up, and after space returns every 202 is delivered once", async () => {
    const client = await plain(server, userToken("disk-watcher", { branchId: "disk" }));
    const pad = "d".repeat(60_000);
    const acknowledged = [];
    let refused = 0;
    for (let i = 0; i < 60 && refused < 3; i++) {
      const res = await http(server, "POST", "/api/v1/emit", { body: { event: "dashboard:refresh", data: { branchId: "disk", i, pad } } });
      if (res.status === 202) acknowledged.push(res.body.offset);
      else {
        assert.equal(res.status, 503, `a full disk is 503, not ${res.status}: ${res.text.slice(0, 200)}`);
        assert.equal(res.body.error.code, "internal");
        refused++;
      }
    }
    assert.ok(refused > 0, "the disk filled up");
    assert.equal((await http(server, "GET", "/health")).status, 200, "the server is still serving");
    // Space comes back: emits work again without a restart.
    fs.rmSync(filler);
    await until(async () => {
      const res = await http(server, "POST", "/api/v1/emit", { body: { event: "dashboard:refresh", data: { branchId: "disk", i: "after" } } });
      if (res.status === 202) acknowledged.push(res.body.offset);
      return res.status === 202;
    }, { what: "an emit accepted after space returned", timeout: 15000, interval: 300 });
    // The ledger.
    await until(() => acknowledged.every((o) => client.frames.some((f) => f.offset === o)), { what: "every acknowledged event delivered" });
    await sleep(300);
    const got = client.all("dashboard:refresh").map((f) => f.offset);
    assert.equal(new Set(got).size, got.length, "each once");
    assert.deepEqual(got.filter((o) => !acknowledged.includes(o)), [], "nothing that was refused");
    client.close();
  });
});

/** A private PostgreSQL, or `null` after skipping `t` (required in CI as root). */
async function privatePostgresOrSkip(t) {
  const { privatePostgres } = await import("../lib/cluster.mjs");
  const pg = await privatePostgres();
  if (!pg.skip) return pg;
  if (process.env.LIVEHUB_REQUIRE_SERVICES === "1" && process.getuid?.() === 0) throw new Error(pg.skip);
  t.skip(pg.skip);
  return null;
}

describe("PostgreSQL stopped and restarted while emits flow", () => {
  it("emits wait or get 503, in bounded time, during the outage; delivery resumes after it; every 202 is delivered once, in order", async (t) => {
    const pg = await privatePostgresOrSkip(t);
    if (!pg) return;
    const server = await startServer({ DATABASE_URL: pg.url, RATE_LIMIT_PER_MINUTE: "0" });
    try {
      const client = await plain(server, userToken("pg-watcher", { branchId: "pg" }));
      const acknowledged = [];
      const refused = [];
      let slowest = 0;
      const outage = (async () => {
        await sleep(800);
        pg.stop();
        await sleep(2500);
        pg.start();
      })();
      const started = Date.now();
      for (let i = 0; Date.now() - started < 7000; i++) {
        const t0 = Date.now();
        const res = await http(server, "POST", "/api/v1/emit", { body: { event: "dashboard:refresh", data: { branchId: "pg", i } } });
        slowest = Math.max(slowest, Date.now() - t0);
        if (res.status === 202) acknowledged.push(res.body.offset);
        else {
          assert.equal(res.status, 503, `an outage is 503, not ${res.status}: ${res.text.slice(0, 200)}`);
          refused.push(i);
        }
        await sleep(50);
      }
      await outage;
      // An emit during the outage waits for the database (up to the pool's
      // 10 s) or is refused with 503; never a hang, never another status.
      assert.ok(refused.length > 0 || slowest > 1000, `the outage was felt (slowest ${slowest} ms, ${refused.length} refused)`);
      assert.ok(slowest < 15_000, `every emit was answered in bounded time (slowest ${slowest} ms)`);
      // After the outage, emits are accepted again without a restart of livehub.
      await until(async () => {
        const res = await http(server, "POST", "/api/v1/emit", { body: { event: "dashboard:refresh", data: { branchId: "pg", i: "after" } } });
        if (res.status === 202) acknowledged.push(res.body.offset);
        return res.status === 202;
      }, { what: "an emit accepted after the database came back", timeout: 15000, interval: 300 });
      await until(() => acknowledged.every((o) => client.frames.some((f) => f.offset === o)), {
        what: "every acknowledged event delivered",
        timeout: 15000,
      });
      await sleep(300);
      const got = client.all("dashboard:refresh").map((f) => f.offset);
      assert.equal(new Set(got).size, got.length, "each once");
      assert.deepEqual(got, [...got].sort(), "in offset order");
      assert.deepEqual(got.filter((o) => !acknowledged.includes(o)), [], "nothing refused was delivered");
      client.close();
    } finally {
      await server.stop();
    }
  });
});

describe("PostgreSQL down while a user owed an offline queue connects", () => {
  it("the connect cannot read the queue, so the client is told to reconnect; once the database is back the queue arrives, once", async (t) => {
    const pg = await privatePostgresOrSkip(t);
    if (!pg) return;
    const server = await startServer({ DATABASE_URL: pg.url, RATE_LIMIT_PER_MINUTE: "0" });
    const token = userToken("owed-in-outage");
    let client;
    try {
      const before = io(server.url, { auth: { token }, transports: ["websocket"], forceNew: true, reconnection: false });
      await new Promise((resolve) => before.once("connect", resolve));
      before.close();
      // Its departure is recorded, and its offline mark, written behind (within
      // 50 ms), reaches the database: the connect below must read it there.
      await until(async () => (await http(server, "GET", "/health")).body.users === 0, { what: "the user gone", timeout: 5000 });
      await sleep(1000);
      const queued = await http(server, "POST", "/api/v1/emit", {
        body: { event: "notification", user: "owed-in-outage", data: { title: "t", message: "queued", severity: "info" } },
      });
      assert.equal(queued.status, 202);
      pg.stop();
      // The connect waits for the database (the pool's 10 s) and cannot read the
      // queue. Left connected, the user would count as caught up and the queue
      // would never come.
      client = io(server.url, { auth: { token }, transports: ["websocket"], forceNew: true, reconnectionDelay: 200, reconnectionDelayMax: 500 });
      const got = [];
      let drops = 0;
      client.on("notification", (n) => got.push(n.message));
      client.on("disconnect", () => drops++);
      await sleep(12_000);
      pg.start();
      await until(() => got.length > 0, { what: "the queue delivered once the database is back", timeout: 30000, interval: 100 });
      await sleep(500);
      assert.deepEqual(got, ["queued"], "once");
      assert.ok(drops > 0, "it got the queue by reconnecting");
    } finally {
      client?.close();
      await server.stop();
    }
  });
});

describe("PostgreSQL frozen (SIGSTOP): it answers nothing", () => {
  it("an emit gets 503 within the deadline instead of hanging; after the thaw emits flow and are delivered", async (t) => {
    const pg = await privatePostgresOrSkip(t);
    if (!pg) return;
    const server = await startServer({ DATABASE_URL: pg.url, RATE_LIMIT_PER_MINUTE: "0" });
    let frozen = false;
    try {
      const client = await plain(server, userToken("frozen-watcher", { branchId: "ice" }));
      const before = await http(server, "POST", "/api/v1/emit", { body: { event: "dashboard:refresh", data: { branchId: "ice", i: 0 } } });
      assert.equal(before.status, 202);
      pg.freeze();
      frozen = true;
      const t0 = Date.now();
      const during = await http(server, "POST", "/api/v1/emit", {
        body: { event: "dashboard:refresh", data: { branchId: "ice", i: 1 } },
        headers: { "idempotency-key": "frozen-1" },
      });
      const waited = Date.now() - t0;
      assert.equal(during.status, 503, during.text.slice(0, 200));
      assert.equal(during.body.error.code, "internal");
      assert.ok(waited < 20_000, `answered within the deadline (${waited} ms)`);
      assert.equal((await http(server, "GET", "/health")).status, 200, "the node still serves");
      pg.thaw();
      frozen = false;
      // The retry with the same key is safe whether or not the first one was logged.
      const retried = await until(async () => {
        const res = await http(server, "POST", "/api/v1/emit", {
          body: { event: "dashboard:refresh", data: { branchId: "ice", i: 1 } },
          headers: { "idempotency-key": "frozen-1" },
        });
        return res.status === 202 && res;
      }, { what: "the retry accepted after the thaw", timeout: 40000, interval: 500 });
      await until(() => client.frames.some((f) => f.offset === retried.body.offset), { what: "the retried event delivered", timeout: 20000 });
      const ones = client.all("dashboard:refresh").filter((f) => f.data.i === 1);
      assert.equal(ones.length, 1, "the event emitted twice under one key reached the client once");
      client.close();
    } finally {
      if (frozen) pg.thaw();
      await server.stop();
    }
  });
});

describe("SIGTERM while PostgreSQL is frozen", () => {
  it("the node still exits within the contract's 10 s", async (t) => {
    const pg = await privatePostgresOrSkip(t);
    if (!pg) return;
    const server = await startServer({ DATABASE_URL: pg.url, RATE_LIMIT_PER_MINUTE: "0" });
    let frozen = false;
    try {
      const client = await plain(server, userToken("frozen-at-exit", { branchId: "ice2" }));
      pg.freeze();
      frozen = true;
      // Its departure's offline mark cannot be written now.
      client.close();
      await sleep(300);
      const asked = Date.now();
      const stopped = await Promise.race([server.stop("SIGTERM"), sleep(20_000).then(() => "still running")]);
      const took = Date.now() - asked;
      assert.notEqual(stopped, "still running", "it exited");
      // The contract says 10 s; a loaded test machine gets 2 s of slack.
      assert.ok(took < 12_000, `exited within 10 s (took ${took} ms)`);
    } finally {
      if (frozen) pg.thaw();
      await server.stop("SIGKILL");
    }
  });
});

describe("DATABASE_URL …?synchronous=normal", () => {
  it("a log not closed cleanly takes a new epoch: after kill -9 an older offset is told to refetch; after SIGTERM it resumes", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "livehub-relaxed-"));
    const env = { DATABASE_URL: `sqlite://${dir}/livehub.db?synchronous=normal` };
    const user = "epoch-user";
    const emitOne = (srv, n) => http(srv, "POST", "/api/v1/emit", { body: { event: "notification", user, data: { title: `n${n}`, message: "m", severity: "info" } } });
    let server = await startServer(env);
    try {
      const first = await emitOne(server, 1);
      assert.equal(first.status, 202);
      // A clean stop: the same epoch, the offset resumes.
      await server.stop("SIGTERM");
      server = await startServer(env);
      await emitOne(server, 2);
      const resumed = await plain(server, userToken(user), { query: { offset: first.body.offset } });
      const replayed = await resumed.next((f) => f.type === "notification");
      assert.deepEqual([replayed.data.title, replayed.replayed], ["n2", true]);
      assert.equal(resumed.all("replay:reset").length, 0);
      resumed.close();
      // A crash: it cannot be told from a power cut, so offsets from before it are refused.
      const last = await emitOne(server, 3);
      await server.stop("SIGKILL");
      server = await startServer(env);
      const after = await plain(server, userToken(user), { query: { offset: last.body.offset } });
      const reset = await after.next((f) => f.type === "replay:reset");
      assert.equal(reset.data.reason, "unknown_offset");
      assert.notEqual(reset.data.latestOffset.split("-")[0], last.body.offset.split("-")[0], "a new epoch");
      after.close();
    } finally {
      await server.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
