// An Engine.IO session that never sends CONNECT (socket.io-client 3.x/4.x
// protocol) is ended by the server's connect timeout (45 s, as Node's
// socket.io), even while the client answers every ping. Alone in its file:
// it takes most of a minute. (Refused 2.x sessions: attacks.test.mjs.)
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { sleep, startServer } from "../lib/harness.mjs";

describe("an Engine.IO session without CONNECT", () => {
  it("is ended within the connect timeout although its client answers every ping", async () => {
    const server = await startServer();
    try {
      const base = `${server.url}/socket.io/?EIO=4&transport=polling`;
      const open = await (await fetch(base)).text();
      const sid = /"sid":"([^"]+)"/.exec(open)?.[1];
      assert.ok(sid, open.slice(0, 100));
      const started = Date.now();
      let ended = null;
      while (ended === null && Date.now() - started < 70_000) {
        // A long poll: the server answers with its ping ("2") every 25 s, or a close.
        const res = await fetch(`${base}&sid=${sid}`).catch(() => null);
        const body = res ? await res.text() : "";
        if (!res || res.status !== 200 || body.split("\x1e").includes("1")) {
          ended = Date.now() - started;
          break;
        }
        if (body.split("\x1e").includes("2")) {
          await fetch(`${base}&sid=${sid}`, { method: "POST", body: "3" }).catch(() => {});
        }
        await sleep(100);
      }
      assert.ok(ended !== null, "the session was ended");
      assert.ok(ended < 55_000, `within the connect timeout (${ended} ms)`);
      console.log(`# a session without CONNECT ended after ${ended} ms`);
    } finally {
      await server.stop();
    }
  });
});
