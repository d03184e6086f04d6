// Presence order across nodes (real PostgreSQL and Redis): a user who reloads
// onto another node must not be left `offline` in their branch after
// `online`. Node A reaches Redis over a slow link (120 ms each way), so its
// `offline` for the closed tab crosses Redis after node B's `online` for the
// new one, as a slow node's would. The branch must still settle on `online`.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { collect, connect, sleep, until, userToken } from "../lib/harness.mjs";
import { clusterName, createDatabase, services, startNode, tcpProxy } from "../lib/cluster.mjs";

const env = services();
const ws = { transports: ["websocket"] };

describe("presence order across nodes", { skip: env.skip }, () => {
  let a;
  let b;
  let slowLink;
  before(async () => {
    const db = createDatabase(env.pg);
    const cluster = clusterName();
    slowLink = await tcpProxy(Number(new URL(env.redis).port || 6379), { delayMs: 120 });
    a = await startNode({ db, redis: `redis://127.0.0.1:${new URL(slowLink.url).port}`, cluster, node: "slow-a" });
    b = await startNode({ db, redis: env.redis, cluster, node: "fast-b" });
  });
  after(async () => {
    await a?.stop();
    await b?.stop();
    await slowLink?.close();
  });

  it("a reload racing from node A to node B leaves the branch seeing `online`, then `offline` once the user leaves", async () => {
    const watcher = await connect(b.url, { token: userToken("po-watcher", { branchId: "po" }), ...ws });
    const statuses = collect(watcher, "presence");
    const last = (user) => statuses.filter((p) => p.userId === user).at(-1)?.status;
    await sleep(500); // the watcher's own rooms are joined just after its connect
    // Redis learns the presence scripts from fast node B first, so that node
    // A's first calls take one slow round trip, not three.
    const warm = await connect(b.url, { token: userToken("po-warm-up", { branchId: "po" }), ...ws });
    await until(() => last("po-warm-up") === "online", { what: "warm-up online" });
    warm.close();
    await until(() => last("po-warm-up") === "offline", { what: "warm-up offline" });
    const users = [150, 200, 250].map((gap) => ({ id: `po-reload-${gap}`, gap }));
    const tabs = [];
    await Promise.all(
      users.map(async ({ id, gap }) => {
        const token = userToken(id, { branchId: "po" });
        const old = await connect(a.url, { token, ...ws });
        await until(() => last(id) === "online", { what: `${id} online`, timeout: 5000 });
        // The reload: the old tab closes on node A, the new one opens on node B.
        old.close();
        await sleep(gap);
        tabs.push(await connect(b.url, { token, ...ws }));
      }),
    );
    // Every transition has been announced, and repeated once it settled.
    await sleep(2500);
    console.log(`# presence seen by the branch: ${users.map(({ id }) => `${id}: ${statuses.filter((p) => p.userId === id).map((p) => p.status).join(" → ")}`).join("; ")}`);
    for (const { id } of users) {
      const seen = statuses.filter((p) => p.userId === id).map((p) => p.status);
      assert.equal(last(id), "online", `${id} is connected on node B; the branch saw ${seen.join(" → ")}`);
    }
    tabs.forEach((t) => t.close());
    for (const { id } of users) await until(() => last(id) === "offline", { what: `${id} offline after leaving`, timeout: 5000 });
    await sleep(1500);
    for (const { id } of users) assert.equal(last(id), "offline", `${id} stays offline`);
    watcher.close();
  });
});
