// A cluster behind a load balancer without affinity: every HTTP request and
// every websocket upgrade goes to the next node in turn. Long-polling clients
// (socket.io-client 4.x and 2.x) stay connected, receive what any node emits
// and chat, because each node forwards a session's requests to the node that
// owns it (real PostgreSQL and Redis).
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { ack, collect, connect, http, sleep, until, userToken } from "../lib/harness.mjs";
import { roundRobinProxy, services, startCluster } from "../lib/cluster.mjs";

const env = services();

describe("two nodes behind a round-robin load balancer, no sticky sessions", { skip: env.skip }, () => {
  let a;
  let b;
  let lb;
  before(async () => {
    ({ nodes: [a, b] } = await startCluster({ pg: env.pg, redis: env.redis, nodes: ["rr-a", "rr-b"] }));
    lb = await roundRobinProxy([a.port, b.port]);
  });
  after(async () => {
    await lb?.close();
    await a?.stop();
    await b?.stop();
  });

  /**
   * Connects `user` through the balancer, checks that emits from both nodes
   * and a chat message arrive, and that it stays on its first session for a
   * while (no reconnect loop).
   */
  async function staysConnected(user, opts, { spread = true } = {}) {
    const branchId = `rr-${user}`;
    const before = { ...lb.counts };
    const socket = await connect(lb.url, { token: userToken(user, { branchId }), ...opts });
    const firstSession = socket.io?.engine?.id;
    let drops = 0;
    socket.on("disconnect", () => drops++);
    const refreshes = collect(socket, "dashboard:refresh");
    const offsets = [];
    for (let i = 0; i < 8; i++) {
      const node = i % 2 === 0 ? a : b;
      const res = await http(node, "POST", "/api/v1/emit", { body: { event: "dashboard:refresh", data: { branchId, i } } });
      assert.equal(res.status, 202, JSON.stringify(res.body));
      offsets.push(res.body.offset);
      await sleep(400);
    }
    await until(() => refreshes.length === offsets.length, { what: `${user}: the 8 emits`, timeout: 10_000 });
    assert.deepEqual(refreshes.map((r) => r.offset), offsets, "each once, in order");
    assert.equal((await ack(socket, "subscribe", { room: `channel:${branchId}` })).ok, true);
    const messages = collect(socket, "chat:message");
    const sent = await ack(socket, "chat:send", { room: `channel:${branchId}`, content: "over the balancer" });
    assert.equal(sent.ok, true, JSON.stringify(sent));
    await until(() => messages.length === 1, { what: `${user}: its chat message` });
    assert.equal(drops, 0, `${user} was never disconnected`);
    assert.equal(socket.io?.engine?.id, firstSession, `${user} kept its first Engine.IO session`);
    if (spread) {
      const served = Object.entries(lb.counts).filter(([port, n]) => n > (before[port] ?? 0));
      assert.equal(served.length, 2, `both nodes got ${user}'s requests: ${JSON.stringify(lb.counts)}`);
    }
    return socket;
  }

  it("socket.io-client 4.x, polling only", async () => {
    const s = await staysConnected("v4-polling", { transports: ["polling"] });
    assert.equal(s.io.engine.transport.name, "polling");
    s.close();
  });

  it("socket.io-client 2.x, polling only", async () => {
    const s = await staysConnected("v2-polling", { version: 2, transports: ["polling"] });
    s.close();
  });

  it("socket.io-client 4.x, polling then upgraded to websocket wherever the upgrade lands", async () => {
    const s = await staysConnected("v4-upgrade", {});
    assert.equal(s.io.engine.transport.name, "websocket", "the upgrade went through");
    s.close();
  });

  it("socket.io-client 4.x, websocket only", async () => {
    // One connection: it lands on one node and stays there.
    const s = await staysConnected("v4-websocket", { transports: ["websocket"] }, { spread: false });
    s.close();
  });

  it("polling clients of both versions stay on their session through a heartbeat (ping every 25 s)", async () => {
    const clients = await Promise.all(
      [4, 2].map((version) => connect(lb.url, { token: userToken(`hb-v${version}`, { branchId: "rr-hb" }), version, transports: ["polling"] })),
    );
    const sessions = clients.map((c) => c.io.engine.id);
    const drops = [0, 0];
    clients.forEach((c, i) => c.on("disconnect", () => drops[i]++));
    await sleep(30_000);
    const got = clients.map((c) => collect(c, "dashboard:refresh"));
    const res = await http(a, "POST", "/api/v1/emit", { body: { event: "dashboard:refresh", data: { branchId: "rr-hb" } } });
    assert.equal(res.status, 202);
    await until(() => got.every((g) => g.length === 1), { what: "the emit after the heartbeat" });
    assert.deepEqual(drops, [0, 0], "neither was disconnected");
    assert.deepEqual(clients.map((c) => c.io.engine.id), sessions, "each kept its session");
    clients.forEach((c) => c.close());
  });

  it("forwarded requests are counted", async () => {
    const scrape = async (node) => (await http(node, "GET", "/metrics")).text;
    const forwarded = (text) => [...text.matchAll(/^livehub_forwarded_requests_total\{transport="(\w+)"\} (\d+)/gm)].reduce((n, m) => n + Number(m[2]), 0);
    assert.ok(forwarded(await scrape(a)) + forwarded(await scrape(b)) > 0, "some requests were forwarded");
  });

  it("a request that only claims to be forwarded is handled as an outside one", async () => {
    // A request that claims to be forwarded, with a made-up signature, for a
    // session node B owns, sent to node A. Trusted, A would take it as its
    // own and answer "Session ID unknown"; untrusted, A forwards it to B,
    // which takes the packet.
    const open = await (await fetch(`${b.url}/socket.io/?EIO=4&transport=polling`)).text();
    const sid = /"sid":"([^"]+)"/.exec(open)?.[1];
    assert.ok(sid, open.slice(0, 100));
    const res = await fetch(`${a.url}/socket.io/?EIO=4&transport=polling&sid=${sid}`, {
      method: "POST",
      body: "40",
      headers: { "content-type": "text/plain;charset=UTF-8", "x-livehub-forwarded": `${Math.floor(Date.now() / 1000)};10.9.9.9;${"00".repeat(32)}` },
    });
    assert.equal(res.status, 200, await res.text());
  });
});
