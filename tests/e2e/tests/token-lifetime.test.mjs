// Token lifetime of live sockets: `auth:expired` then a disconnect at `exp`,
// `auth:refresh` with a later token for the same user extends it, and a refresh
// for another user (or with a bad token) is refused.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { ack, closeAll, connect, emit, next, sleep, startServer, token } from "../lib/harness.mjs";

const nowSecs = () => Math.floor(Date.now() / 1000);

describe("token lifetime", () => {
  let server;
  before(async () => (server = await startServer()));
  after(() => server.stop());

  it("sends auth:expired and disconnects at exp, for good", async () => {
    const exp = nowSecs() + 2;
    const s = await connect(server.url, { token: token({ sub: "short", exp }), transports: ["websocket"] });
    const expired = next(s, "auth:expired", { timeout: 10000 });
    const gone = new Promise((resolve) => s.once("disconnect", resolve));
    const notice = await expired;
    assert.equal(notice.exp, exp);
    assert.equal(notice.message, "unauthorized: token expired");
    assert.equal(await gone, "io server disconnect", "a Socket.IO disconnect: the client does not retry with a dead token");
    assert.ok(Date.now() / 1000 >= exp, "not before exp");
  });

  it("keeps a socket whose user sent a later token with auth:refresh", async () => {
    const s = await connect(server.url, { token: token({ sub: "renew", exp: nowSecs() + 2 }), transports: ["websocket"] });
    const later = nowSecs() + 120;
    const reply = await ack(s, "auth:refresh", { token: token({ sub: "renew", exp: later }) });
    assert.deepEqual(reply, { ok: true, exp: later });
    let expired = false;
    s.on("auth:expired", () => (expired = true));
    await sleep(3500);
    assert.equal(s.connected, true);
    assert.equal(expired, false);
    const got = next(s, "notification");
    await emit(server, { event: "notification", user: "renew", data: { title: "t", message: "still here", severity: "info" } });
    assert.equal((await got).message, "still here");
    closeAll(s);
  });

  it("refuses a refresh for another user, an invalid or expired token, and garbage", async () => {
    const s = await connect(server.url, { token: token({ sub: "mine", exp: nowSecs() + 60 }), transports: ["websocket"] });
    const cases = [
      [{ token: token({ sub: "someone-else", exp: nowSecs() + 600 }) }, "forbidden"],
      [{ token: token({ sub: "mine", exp: nowSecs() - 10 }) }, "forbidden"],
      [{ token: token({ sub: "mine", exp: nowSecs() + 600 }, { secret: "not-the-server-secret-xx" }) }, "forbidden"],
      [{ token: "garbage" }, "forbidden"],
      [{}, "bad_request"],
      [{ token: 42 }, "bad_request"],
      ["just a string", "bad_request"],
    ];
    for (const [data, code] of cases) {
      const reply = await ack(s, "auth:refresh", data);
      assert.equal(reply.error?.code, code, JSON.stringify(data).slice(0, 60));
    }
    assert.equal(s.connected, true);
    closeAll(s);
  });
});
