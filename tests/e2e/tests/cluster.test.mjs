// Several livehub nodes as one, on a real PostgreSQL and a real Redis
// (TEST_DATABASE_URL, TEST_REDIS_URL): cross-node delivery of every target kind,
// offsets ordered across nodes, presence with one user's tabs on two nodes, a
// node killed with SIGKILL and its clients replaying on another node, and Redis
// restarted while the nodes run.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { io } from "socket.io-client";
import { ack, closeAll, collect, connect, emit, http, next, nothing, sleep, token, until, userToken } from "../lib/harness.mjs";
import { plain, request } from "../lib/plain.mjs";
import { clusterName, hasRedisServer, privateRedis, services, startCluster, tcpProxy } from "../lib/cluster.mjs";

const env = services();
const ws = { transports: ["websocket"] };

describe("a two-node cluster", { skip: env.skip }, () => {
  let a;
  let b;
  before(async () => {
    ({ nodes: [a, b] } = await startCluster({ pg: env.pg, redis: env.redis, nodes: ["node-a", "node-b"] }));
  });
  after(async () => {
    await a?.stop();
    await b?.stop();
  });

  it("delivers an emit on either node to sockets on both, for every target kind, once", async () => {
    const claims = { branchId: "br", role: "manager" };
    const onA = await connect(a.url, { token: userToken("x-a", claims), ...ws });
    const onB = await connect(b.url, { token: userToken("x-b", claims), ...ws });
    const other = await connect(b.url, { token: userToken("x-other", { branchId: "elsewhere" }), ...ws });
    await ack(onA, "join:shipment", { shipmentId: "XS" });
    await ack(onB, "join:shipment", { shipmentId: "XS" });
    const targets = [
      [{ event: "shipment:updated", data: { shipmentId: "XS" } }, ["a", "b"]],
      [{ event: "note", rooms: ["shipment:XS"], data: {} }, ["a", "b"]],
      [{ event: "note", user: "x-b", data: {} }, ["b"]],
      [{ event: "note", users: ["x-a", "x-b"], data: {} }, ["a", "b"]],
      [{ event: "note", branch: "br", data: {} }, ["a", "b"]],
      [{ event: "note", role: "manager", data: {} }, ["a", "b"]],
      [{ event: "note", role: "manager", branch: "br", data: {} }, ["a", "b"]],
      [{ event: "note", broadcast: true, data: {} }, ["a", "b", "other"]],
      [{ event: "note", branch: "br", except: ["user:x-a"], data: {} }, ["b"]],
    ];
    const sockets = { a: onA, b: onB, other };
    for (const [i, [body, expected]] of targets.entries()) {
      for (const via of [a, b]) {
        const tag = `${i}-${via === a ? "A" : "B"}`;
        const event = body.event;
        const got = Object.fromEntries(Object.entries(sockets).map(([k, s]) => [k, collect(s, event)]));
        const res = await emit(via, { ...body, data: { ...body.data, tag } });
        assert.equal(res.status, 202, JSON.stringify(res.body));
        await until(() => expected.every((k) => got[k].some((p) => p.tag === tag)), { what: `${tag} delivered` });
        await sleep(150);
        for (const [k, list] of Object.entries(got)) {
          assert.equal(list.filter((p) => p.tag === tag).length, expected.includes(k) ? 1 : 0, `${tag} to ${k}`);
          sockets[k].removeAllListeners(event);
        }
      }
    }
    closeAll(onA, onB, other);
  });

  it("keeps offsets unique and in order across nodes", async () => {
    const watcher = await connect(a.url, { token: userToken("ord", { branchId: "ob" }), ...ws });
    const seen = collect(watcher, "dashboard:refresh");
    const burst = (node, who) =>
      Promise.all(Array.from({ length: 30 }, (_, i) => emit(node, { event: "dashboard:refresh", data: { branchId: "ob", who, i } })));
    const [fromA, fromB] = await Promise.all([burst(a, "A"), burst(b, "B")]);
    const offsets = [...fromA, ...fromB].map((r) => r.body.offset);
    assert.equal(new Set(offsets).size, 60, "unique");
    await until(() => seen.length === 60, { what: "60 events on node A" });
    const received = seen.map((e) => e.offset);
    assert.deepEqual(received, [...received].sort(), "delivered in offset order, whichever node emitted");
    closeAll(watcher);
  });

  it("counts one user's tabs on two nodes as one viewer, cluster-wide", async () => {
    const tabA = await connect(a.url, { token: userToken("multi", { name: "Multi" }), ...ws });
    const tabB = await connect(b.url, { token: userToken("multi", { name: "Multi" }), ...ws });
    const observer = await connect(a.url, { token: userToken("obs"), ...ws });
    await ack(observer, "join:shipment", { shipmentId: "MP" });
    const arrived = next(observer, "user:viewing", { filter: (p) => p.userId === "multi" });
    assert.equal((await ack(tabA, "join:shipment", { shipmentId: "MP" })).viewersCount, 2);
    await arrived;
    const second = await ack(tabB, "join:shipment", { shipmentId: "MP" });
    assert.equal(second.viewersCount, 2, "the second tab, on the other node, is the same viewer");
    await nothing(observer, "user:viewing", 300);
    for (const node of [a, b]) {
      const p = await http(node, "GET", "/api/v1/rooms/shipment:MP/presence");
      assert.equal(p.body.viewersCount, 2);
      assert.deepEqual(p.body.viewers.map((v) => v.userId), ["multi", "obs"]);
    }
    // Closing the tab on node A is not "left": the tab on node B still views.
    tabA.close();
    await nothing(observer, "user:disconnected", 500);
    const gone = next(observer, "user:disconnected", { filter: (p) => p.userId === "multi" });
    tabB.close();
    assert.equal((await gone).viewersCount, 1);
    const health = await http(a, "GET", "/health");
    assert.equal(health.body.cluster.ready, true);
    assert.ok(health.body.cluster.nodes >= 2);
    closeAll(observer);
  });

  it("disconnects a user's sockets on every node", async () => {
    const s1 = await connect(a.url, { token: userToken("kick"), ...ws });
    const s2 = await connect(b.url, { token: userToken("kick"), ...ws });
    const bystander = await connect(b.url, { token: userToken("stay"), ...ws });
    const d1 = new Promise((r) => s1.once("disconnect", r));
    const d2 = new Promise((r) => s2.once("disconnect", r));
    assert.equal((await http(a, "POST", "/api/v1/users/kick/disconnect")).status, 200);
    assert.deepEqual(await Promise.all([d1, d2]), ["io server disconnect", "io server disconnect"]);
    assert.equal(bystander.connected, true);
    closeAll(bystander);
  });
});

describe("a node killed with SIGKILL", { skip: env.skip }, () => {
  it("its clients reconnect to another node and replay what they missed, no loss, no duplicates", async () => {
    const { nodes: [a, b] } = await startCluster({ pg: env.pg, redis: env.redis, nodes: ["doomed", "survivor"] });
    const lb = await tcpProxy(a.port); // the load balancer, pointing at node A for now
    try {
      let last;
      const seen = [];
      const client = io(lb.url, {
        auth: (cb) => cb({ token: userToken("killed", { branchId: "kb" }), ...(last ? { offset: last } : {}) }),
        ...ws,
        forceNew: true,
        reconnectionDelay: 100,
        reconnectionDelayMax: 300,
      });
      client.on("dashboard:refresh", (p) => {
        seen.push(p.n);
        last = p.offset;
      });
      await new Promise((r) => client.once("connect", r));
      // A viewer on node B watches the doomed user's presence, in the branch of
      // a second user of node A who will not come back.
      const watcher = await connect(b.url, { token: userToken("watcher", { branchId: "kb" }), ...ws });
      const statuses = collect(watcher, "presence");
      const stranded = await connect(a.url, { token: userToken("stranded", { branchId: "kb" }), ...ws });
      await until(() => statuses.some((p) => p.userId === "stranded" && p.status === "online"), { what: "stranded online" });
      await ack(watcher, "join:shipment", { shipmentId: "K" });
      await ack(client, "join:shipment", { shipmentId: "K" });

      // The controller emits through node B the whole time.
      let n = 0;
      let running = true;
      const stream = (async () => {
        while (running) {
          await emit(b, { event: "dashboard:refresh", data: { branchId: "kb", n: n++ } });
          await sleep(5);
        }
      })();
      await until(() => seen.length > 20);
      const disconnected = next(watcher, "user:disconnected", { timeout: 40000, filter: (p) => p.userId === "killed" });
      await a.stop("SIGKILL");
      lb.retarget(b.port); // the balancer notices the dead node
      lb.dropAll();
      await until(() => client.connected && seen.length > n / 2, { timeout: 15000, what: "reconnected to node B" });
      await sleep(500);
      running = false;
      await stream;
      await until(() => seen.length >= n, { timeout: 15000, what: `all ${n} events (have ${seen.length})` });
      await sleep(300);
      assert.deepEqual(seen, Array.from({ length: n }, (_, i) => i), "every event exactly once, in order");
      // The dead node took its viewer with it: the room hears it within the entry expiry.
      const d = await disconnected;
      assert.equal(d.room, "shipment:K");
      // And the branch hears that the user left with the node, once.
      await until(() => statuses.some((p) => p.userId === "stranded" && p.status === "offline"), { timeout: 10000, what: "stranded offline" });
      await sleep(300);
      assert.deepEqual(
        statuses.filter((p) => p.userId === "stranded").map((p) => p.status),
        ["online", "offline"],
      );
      closeAll(client, watcher, stranded);
    } finally {
      await lb.close();
      await a.stop("SIGKILL");
      await b.stop();
    }
  });
});

describe("a node drained with SIGTERM", { skip: env.skip }, () => {
  it("its viewers' departures reach the rooms on the other node, every one, on both fronts", async () => {
    const { nodes: [a, b] } = await startCluster({ pg: env.pg, redis: env.redis, nodes: ["stays", "drains"] });
    const viewers = [];
    try {
      // An observer of each kind on the node that stays: Socket.IO signals
      // cross in the adapter, plain ones in the relay, each from its own queue.
      const shipments = ["DR0", "DR1", "DR2", "DR3"];
      const observer = await connect(a.url, { token: userToken("observer"), ...ws });
      viewers.push(observer);
      const plainObserver = await plain(a, userToken("plain-observer"));
      viewers.push(plainObserver);
      for (const shipmentId of shipments) {
        await ack(observer, "join:shipment", { shipmentId });
        await request(plainObserver, { action: "subscribeToShipment", data: { shipmentId } });
      }
      const arrivals = collect(observer, "user:viewing");
      const gone = collect(observer, "user:disconnected");
      // Enough viewers and rooms that, when the drain ends, departures are
      // still in their rooms' windows, in a flush awaiting its count, or
      // queued for the cluster. A node that closed without waiting for them
      // lost some (seen in CI with four viewers in one room).
      const names = Array.from({ length: 12 }, (_, i) => `v${String(i).padStart(2, "0")}`);
      for (const name of names) {
        const v = await connect(b.url, { token: userToken(name), ...ws });
        viewers.push(v);
        for (const shipmentId of shipments) await ack(v, "join:shipment", { shipmentId });
      }
      const owed = names.flatMap((u) => shipments.map((id) => `shipment:${id} ${u}`)).sort();
      const heard = (payloads) => payloads.filter((p) => names.includes(p.userId)).map((p) => `${p.room} ${p.userId}`).sort();
      await until(() => heard(arrivals).length === owed.length, { what: "every viewer announced" });
      // They leave together as the node drains: in each room one departure
      // goes out at once, the others wait in the room's 50 ms window.
      await b.stop("SIGTERM");
      const plainGone = () => plainObserver.all("user:disconnected").map((f) => f.data);
      await until(() => heard(gone).length >= owed.length && heard(plainGone()).length >= owed.length, {
        timeout: 5000,
        what: "every departure",
      }).catch(() => {});
      assert.deepEqual(heard(gone), owed, "the Socket.IO observer heard each departure once");
      assert.deepEqual(heard(plainGone()), owed, "the plain observer heard each departure once");
      assert.equal(b.exited.code, 0, b.stderr);
    } finally {
      closeAll(...viewers);
      await a.stop();
      await b.stop();
    }
  });
});

describe("a node frozen (SIGSTOP) while it holds the log lock", { skip: env.skip }, () => {
  it("the other node appends again within the database's timeouts; after the thaw every 202 from either node is delivered once, in order", async () => {
    const { db, nodes: [a, b] } = await startCluster({ pg: env.pg, redis: env.redis, nodes: ["frozen", "awake"] });
    // Is node A's connection inside an append, holding the log_meta row lock?
    // Only A's own sessions count (found by their client ports): node B's
    // pruner or heartbeat can sit idle in a transaction on log_meta for a
    // moment too, and catching B's would freeze A at a moment it holds nothing.
    // And only a transaction that has locked the row (locking a row gives it a
    // transaction id): a new connection that has only prepared its
    // `SELECT … FOR UPDATE` holds the table's RowShareLock and no row, so B
    // would append past it and the test would judge a freeze that blocked nothing.
    const portsOfA = () =>
      execFileSync("ss", ["-tnpH", "state", "established", "( dport = :5432 )"])
        .toString()
        .split("\n")
        .filter((line) => line.includes(`pid=${a.proc.pid},`))
        .map((line) => Number(line.trim().split(/\s+/)[2].split(":").pop()));
    const holdsLock = () => {
      const ports = portsOfA();
      if (ports.length === 0) return false;
      return execFileSync("psql", [db, "-tAq", "-c",
        `SELECT count(*) FROM pg_locks l JOIN pg_stat_activity s USING (pid) WHERE l.relation = 'log_meta'::regclass AND l.mode = 'RowShareLock' AND s.state = 'idle in transaction' AND s.backend_xid IS NOT NULL AND s.client_port IN (${ports.join(",")})`,
      ]).toString().trim() !== "0";
    };
    let frozen = false;
    try {
      const watcher = await plain(b, userToken("frozen-watcher", { branchId: "fz" }));
      const acknowledged = [];
      // Emits whose fate the controller cannot know: a 503 past the emit
      // deadline while the event was in a commit ("may still be logged"), or a
      // request caught in A's socket buffers whose connection is closed at the
      // thaw (every timer fires at once). The ledger neither counts nor forbids them.
      const unanswered = new Set();
      const answered = (tag) => (res) => {
        if (res.status === 202) acknowledged.push(res.body.offset);
        else {
          assert.equal(res.status, 503, `only 202 or 503, not ${res.status}: ${res.text.slice(0, 200)}`);
          if (/may still be logged/.test(res.body.error.message)) unanswered.add(tag);
        }
        return res;
      };
      const emitTo = (node, i) => http(node, "POST", "/api/v1/emit", { body: { event: "dashboard:refresh", data: { branchId: "fz", i } } }).then(answered(i));
      // Keep node A appending, and stop it at a moment it holds the lock.
      let running = true;
      let i = 0;
      const load = Array.from({ length: 6 }, async () => {
        while (running) {
          const tag = `a${i++}`;
          await emitTo(a, tag).catch(() => unanswered.add(tag));
        }
      });
      for (let attempt = 0; !frozen && attempt < 50; attempt++) {
        await sleep(20 + attempt * 3);
        a.proc.kill("SIGSTOP");
        await sleep(150);
        if (holdsLock()) frozen = true;
        else a.proc.kill("SIGCONT");
      }
      assert.ok(frozen, "node A was caught holding the log lock");
      running = false;
      // Node B's emits wait on the lock (lock_timeout) or are refused, until
      // PostgreSQL ends A's idle transaction; then they are accepted again.
      const t0 = Date.now();
      let firstAccepted = null;
      let slowest = 0;
      for (let k = 0; firstAccepted === null && Date.now() - t0 < 40_000; k++) {
        const s = Date.now();
        const res = await emitTo(b, `b${k}`);
        slowest = Math.max(slowest, Date.now() - s);
        if (res.status === 202) firstAccepted = Date.now() - t0;
      }
      assert.ok(firstAccepted !== null && firstAccepted < 30_000, `node B appended within the timeouts (after ${firstAccepted} ms)`);
      console.log(`# node A frozen holding the log lock: node B appended again after ${firstAccepted} ms (slowest emit ${slowest} ms)`);
      assert.ok(slowest < 20_000, `each emit on B answered in bounded time (slowest ${slowest} ms)`);
      for (let k = 0; k < 5; k++) assert.equal((await emitTo(b, `b-after${k}`)).status, 202, "B keeps appending while A stays frozen");
      assert.ok(!holdsLock(), "the frozen node no longer holds the lock");
      // Thaw: A's interrupted append is refused or completes; either way A serves again.
      a.proc.kill("SIGCONT");
      frozen = false;
      await Promise.all(load);
      await until(async () => (await emitTo(a, "a-thawed")).status === 202, { what: "node A appends after the thaw", timeout: 20000, interval: 300 });
      // The ledger: every 202 from either node reached the watcher once, in order.
      await until(() => acknowledged.every((o) => watcher.frames.some((f) => f.offset === o)), { what: "every acknowledged event delivered", timeout: 20000 });
      await sleep(300);
      const got = watcher.all("dashboard:refresh").map((f) => f.offset);
      assert.equal(new Set(got).size, got.length, "each once");
      assert.deepEqual(got, [...got].sort(), "in offset order");
      const refusedButDelivered = watcher.all("dashboard:refresh").filter((f) => !acknowledged.includes(f.offset) && !unanswered.has(f.data.i));
      assert.deepEqual(refusedButDelivered, [], "nothing refused was delivered");
      watcher.close();
    } finally {
      if (frozen) a.proc.kill("SIGCONT");
      await a.stop("SIGKILL");
      await b.stop();
    }
  });
});

describe("Redis restarted while the nodes run", { skip: env.skip ?? (!hasRedisServer() && "skipped: no redis-server binary to run a private Redis") }, () => {
  it("keeps serving, reports the cluster not ready, heals by itself, loses nothing logged", async () => {
    const redis = await privateRedis();
    const { nodes: [a, b] } = await startCluster({ pg: env.pg, redis: redis.url, nodes: ["ra", "rb"] });
    let restarted;
    try {
      const onA = await connect(a.url, { token: userToken("r-a", { branchId: "rr" }), ...ws });
      const onB = await connect(b.url, { token: userToken("r-b", { branchId: "rr" }), ...ws });
      await ack(onA, "join:order", { orderId: "R" });
      await ack(onB, "join:order", { orderId: "R" });
      const gotA = collect(onA, "order:status_changed");
      const gotB = collect(onB, "order:status_changed");

      await redis.stop();
      // Logged events still cross nodes: they ride the shared PostgreSQL log.
      for (let i = 0; i < 5; i++) await emit(a, { event: "order:status_changed", data: { orderId: "R", i } });
      await until(() => gotA.length === 5 && gotB.length === 5, { what: "delivery with Redis down" });
      await until(async () => (await http(a, "GET", "/health")).body.cluster?.ready === false, { timeout: 15000, what: "cluster.ready false" });
      const health = await http(a, "GET", "/health");
      assert.equal(health.status, 200, "the node itself stays ready for its own sockets");
      assert.equal(health.body.ready, true);
      // Local signals still work while Redis is down.
      const localTyping = next(onA, "typing");
      const other = await connect(a.url, { token: userToken("r-c"), ...ws });
      await ack(other, "join:order", { orderId: "R" });
      await ack(other, "typing:start", { room: "order:R" });
      await localTyping;

      restarted = await privateRedis(redis.port);
      await until(async () => (await http(a, "GET", "/health")).body.cluster?.ready === true, { timeout: 20000, what: "cluster.ready again" });
      await until(async () => (await http(b, "GET", "/health")).body.cluster?.ready === true, { timeout: 20000, what: "node B ready again" });
      // Cross-node signals work again after the adapter re-subscribed.
      await until(async () => {
        const typing = next(onB, "typing", { timeout: 1000 }).catch(() => null);
        await ack(other, "typing:stop", { room: "order:R" });
        await ack(other, "typing:start", { room: "order:R" });
        return (await typing) !== null;
      }, { timeout: 20000, what: "typing across nodes after Redis returned" });
      for (let i = 5; i < 10; i++) await emit(b, { event: "order:status_changed", data: { orderId: "R", i } });
      await until(() => gotA.length === 10 && gotB.length === 10);
      assert.deepEqual(gotA.map((e) => e.i), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
      assert.deepEqual(gotB.map((e) => e.i), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
      closeAll(onA, onB, other);
    } finally {
      await a.stop();
      await b.stop();
      await restarted?.stop();
    }
  });
});

describe("cluster configuration", () => {
  it("refuses REDIS_URL with SQLite unless ALLOW_SQLITE_CLUSTER", async () => {
    const { runBinary } = await import("../lib/harness.mjs");
    const r = await runBinary(["serve"], { JWT_SECRET: "a-long-enough-secret-123", REDIS_URL: "redis://127.0.0.1:6379", DATABASE_URL: "sqlite:///tmp/never.db" });
    assert.equal(r.code, 2);
    assert.match(r.stderr, /REDIS_URL.*PostgreSQL/);
    void token;
  });
});

describe("ALLOW_SQLITE_CLUSTER (each node its own log)", { skip: env.skip }, () => {
  it("events emitted on one node reach the other node's sockets in commit order", async () => {
    const cluster = clusterName();
    const { startServer } = await import("../lib/harness.mjs");
    const node = (name) =>
      startServer({ REDIS_URL: env.redis, CLUSTER_NAME: cluster, NODE_ID: name, ALLOW_SQLITE_CLUSTER: "true", RATE_LIMIT_PER_MINUTE: "0" });
    const a = await node("lite-a");
    const b = await node("lite-b");
    try {
      const onB = await connect(b.url, { token: userToken("lite-user", { branchId: "lite" }), ...ws });
      const got = collect(onB, "dashboard:refresh");
      const events = Array.from({ length: 300 }, (_, i) => ({ event: "dashboard:refresh", data: { branchId: "lite", i } }));
      const res = await http(a, "POST", "/api/v1/emit/batch", { body: { events } });
      assert.equal(res.status, 202);
      await until(() => got.length >= 300, { what: `all 300 on the other node (got ${got.length})`, timeout: 10000 });
      assert.deepEqual(got.map((p) => p.i), events.map((e) => e.data.i), "in commit order, once");
      onB.close();
    } finally {
      await a.stop();
      await b.stop();
    }
  });
});
