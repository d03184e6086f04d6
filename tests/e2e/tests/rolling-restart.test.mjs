// A rolling restart of a three-node cluster behind a round-robin balancer
// without affinity (real PostgreSQL and Redis): each node in turn is drained
// with SIGTERM and started again while clients stay connected over polling,
// websocket and upgraded transports and a controller emits through the nodes
// that are up. The ledger: every event answered 202 reaches every client
// exactly once, in order.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { io } from "socket.io-client";
import { http, sleep, until, userToken } from "../lib/harness.mjs";
import { clusterName, createDatabase, roundRobinProxy, services, startNode } from "../lib/cluster.mjs";

const env = services();

/** A client that sends its last offset on every (re)connect and records what it gets. */
function trackingClient(url, user, opts) {
  const state = { user, last: null, seen: [], connects: 0 };
  state.socket = io(url, {
    auth: (cb) => cb({ token: userToken(user, { branchId: "roll" }), ...(state.last ? { offset: state.last } : {}) }),
    forceNew: true,
    reconnectionDelay: 100,
    reconnectionDelayMax: 500,
    ...opts,
  });
  state.socket.on("connect", () => state.connects++);
  state.socket.on("dashboard:refresh", (p) => {
    state.seen.push(p.n);
    state.last = p.offset;
  });
  return state;
}

describe("a rolling restart behind a round-robin balancer", { skip: env.skip }, () => {
  it("drains each node with SIGTERM in turn and brings it back: every 202 reaches every client once, in order", async () => {
    const db = createDatabase(env.pg);
    const cluster = clusterName();
    const names = ["roll-a", "roll-b", "roll-c"];
    const start = (name) => startNode({ db, redis: env.redis, cluster, node: name });
    const nodes = [];
    for (const name of names) nodes.push(await start(name));
    const lb = await roundRobinProxy(nodes.map((n) => n.port));
    const transports = { polling: { transports: ["polling"] }, websocket: { transports: ["websocket"] }, upgrade: {} };
    const clients = Object.entries(transports).flatMap(([kind, opts]) => [1, 2].map((i) => trackingClient(lb.url, `roll-${kind}-${i}`, opts)));
    const draining = new Set();
    let running = true;
    try {
      await until(() => clients.every((c) => c.connects === 1), { what: "every client connected", timeout: 10_000 });

      // The controller emits through the nodes that are up, the whole time.
      const acked = [];
      let attempt = 0;
      const stream = (async () => {
        while (running) {
          const up = nodes.filter((n) => !draining.has(n));
          const node = up[attempt % up.length];
          const n = attempt++;
          const res = await http(node, "POST", "/api/v1/emit", { body: { event: "dashboard:refresh", data: { branchId: "roll", n } } }).catch(() => null);
          if (res?.status === 202) acked.push(n);
          await sleep(15);
        }
      })();

      for (let i = 0; i < nodes.length; i++) {
        await sleep(1500);
        const old = nodes[i];
        draining.add(old);
        const exit = await old.stop("SIGTERM");
        assert.equal(exit.code, 0, `${names[i]} drained and exited cleanly`);
        nodes[i] = await start(names[i]);
        lb.replace(old.port, nodes[i].port);
      }
      await sleep(1500);
      running = false;
      await stream;

      const missing = (c) => acked.filter((n) => !c.seen.includes(n));
      await until(() => clients.every((c) => missing(c).length === 0), {
        timeout: 30_000,
        what: `every client to have all ${acked.length} acknowledged events (${clients.map((c) => `${c.user}: ${missing(c).length} missing`).join(", ")})`,
      });
      await sleep(500);
      for (const c of clients) {
        assert.equal(new Set(c.seen).size, c.seen.length, `${c.user}: no event twice`);
        assert.ok(c.seen.every((n, k) => k === 0 || n > c.seen[k - 1]), `${c.user}: in order`);
      }
      const moved = clients.filter((c) => c.connects > 1).length;
      console.log(`# rolling restart: ${acked.length} events acknowledged of ${attempt} sent; ${moved} of ${clients.length} clients reconnected at least once; all received each once, in order`);
      assert.ok(moved >= 1, "the drains moved clients");
    } finally {
      running = false;
      clients.forEach((c) => c.socket.close());
      await lb.close();
      for (const n of nodes) await n.stop();
    }
  });
});
