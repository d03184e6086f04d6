// Existing Socket.IO clients connect unchanged: 4.x over websocket, polling only
// and the default polling→websocket upgrade; 2.x with the token in the query.
// Each joins a shipment room and receives a shipment:updated emitted over HTTP.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { ack, closeAll, connect, emit, next, startServer, userToken } from "../lib/harness.mjs";

describe("unchanged socket.io-client frontends", () => {
  let server;
  before(async () => (server = await startServer()));
  after(() => server.stop());

  const cases = [
    { name: "4.x websocket", version: 4, transports: ["websocket"], expect: "websocket" },
    { name: "4.x polling only", version: 4, transports: ["polling"], expect: "polling" },
    { name: "4.x default (polling, then upgrade)", version: 4, transports: undefined, expect: "websocket" },
    { name: "2.x websocket, token in query", version: 2, transports: ["websocket"], expect: "websocket" },
    { name: "2.x polling, token in query", version: 2, transports: ["polling"], expect: "polling" },
    { name: "2.x default (polling, then upgrade)", version: 2, transports: undefined, expect: "websocket" },
  ];

  for (const [i, c] of cases.entries()) {
    it(`${c.name}: joins a shipment and receives shipment:updated`, async () => {
      const shipmentId = `S-${i}`;
      const socket = await connect(server.url, { token: userToken(`compat-${i}`), version: c.version, transports: c.transports });
      try {
        const joined = await ack(socket, "join:shipment", { shipmentId });
        assert.equal(joined.ok, true);
        assert.equal(joined.room, `shipment:${shipmentId}`);
        if (c.expect === "websocket" && !c.transports) {
          // Wait for the upgrade so the delivery below really uses the websocket.
          const engine = c.version === 2 ? socket.io.engine : socket.io.engine;
          if (engine.transport.name !== "websocket") await new Promise((r) => engine.once("upgrade", r));
        }
        const received = next(socket, "shipment:updated");
        const res = await emit(server, { event: "shipment:updated", data: { shipmentId, status: "received", eta: "2026-12-01" } });
        assert.equal(res.status, 202);
        assert.equal(res.body.ok, true);
        assert.deepEqual(res.body.rooms, [`shipment:${shipmentId}`]);
        const payload = await received;
        assert.equal(payload.type, "shipment:updated");
        assert.equal(payload.shipmentId, shipmentId);
        assert.equal(payload.status, "received");
        assert.equal(payload.offset, res.body.offset);
        assert.match(payload.timestamp, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/);
        assert.equal(socket.io.engine.transport.name, c.expect);
      } finally {
        closeAll(socket);
      }
    });
  }

  it("handles events emitted in the same tick as `connect` (no lost joins)", async () => {
    // socketioxide 0.18 sends CONNECT before an async connect handler has
    // registered anything; livehub registers in its middleware. 20 rounds.
    for (let round = 0; round < 20; round++) {
      const socket = await new Promise((resolve, reject) => {
        import("socket.io-client").then(({ io }) => {
          const s = io(server.url, { auth: { token: userToken(`eager-${round}`) }, transports: ["websocket"], forceNew: true, reconnection: false });
          s.on("connect", () => {
            s.emit("join:shipment", { shipmentId: `E${round}` }, (reply) => resolve([s, reply]));
          });
          s.on("connect_error", reject);
        });
      });
      const [s, reply] = socket;
      assert.equal(reply.ok, true, `round ${round}`);
      closeAll(s);
    }
  });

  it("handles one socket's events in the order it sent them", async () => {
    const socket = await connect(server.url, { token: userToken("order-check"), transports: ["websocket"] });
    try {
      // Fire-and-forget joins and leaves interleaved; the final state must be the last word.
      const replies = [];
      for (let i = 0; i < 30; i++) {
        socket.emit("join:order", { orderId: i }, (r) => replies.push(["join", i, r.ok]));
        if (i % 2 === 0) socket.emit("leave:order", { orderId: i }, (r) => replies.push(["leave", i, r.ok]));
      }
      const { rooms } = await ack(socket, "rooms");
      const orders = rooms.filter((r) => r.startsWith("order:")).map((r) => Number(r.slice(6))).sort((a, b) => a - b);
      assert.deepEqual(orders, Array.from({ length: 15 }, (_, k) => 2 * k + 1));
      assert.equal(replies.length, 45, "every event was acknowledged before `rooms`");
      assert.deepEqual(
        replies.map(([kind, i]) => `${kind}${i}`),
        Array.from({ length: 30 }, (_, i) => (i % 2 === 0 ? [`join${i}`, `leave${i}`] : [`join${i}`])).flat(),
      );
    } finally {
      closeAll(socket);
    }
  });
});
