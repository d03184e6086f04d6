// Attacks on loopback, bounded in count and time: clients that trickle their
// headers or say nothing at all, handshakes that never become sockets, more
// connections than the node takes, and a reader that stops reading. A
// legitimate client keeps working throughout.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import net from "node:net";
import http from "node:http";
import { io } from "socket.io-client";
import { collect, connect, http as request, sleep, startServer, until, userToken } from "../lib/harness.mjs";

/** A TCP connection from `from` that says nothing, once it is open. */
function silentFrom(port, from) {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ port, host: "127.0.0.1", localAddress: from }, () => resolve(sock));
    sock.on("error", reject);
  });
}

/** Whatever the server writes to a new connection from `from` that sends a request, until it closes. */
function answerTo(port, from) {
  return new Promise((resolve) => {
    let text = "";
    const sock = net.connect({ port, host: "127.0.0.1", localAddress: from }, () => sock.write("GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"));
    sock.on("data", (d) => (text += d));
    sock.on("close", () => resolve(text));
    sock.on("error", () => {});
  });
}

/** `count` events of 100 KB to branch `big`, one after the other; their offsets. */
async function emitLarge(server, count) {
  const pad = "x".repeat(100_000);
  const offsets = [];
  for (let i = 0; i < count; i++) {
    const res = await request(server, "POST", "/api/v1/emit", { body: { event: "dashboard:refresh", data: { branchId: "big", i, pad } } });
    assert.equal(res.status, 202);
    offsets.push(res.body.offset);
  }
  return offsets;
}

/** `GET /health` over a connection from `from`. */
function healthFrom(server, from) {
  return new Promise((resolve, reject) => {
    http
      .get({ host: "127.0.0.1", port: server.port, path: "/health", localAddress: from, agent: false }, (res) => {
        let body = "";
        res.on("data", (d) => (body += d));
        res.on("end", () => resolve({ status: res.statusCode, body: JSON.parse(body) }));
      })
      .on("error", reject);
  });
}

describe("clients that trickle their request headers", () => {
  let server;
  before(async () => (server = await startServer()));
  after(() => server.stop());

  it("are closed within the header timeout while a legitimate client is served", async () => {
    const COUNT = 300;
    const closing = Promise.all(
      Array.from({ length: COUNT }, () =>
        new Promise((resolve) => {
          let connectedAt = null;
          const sock = net.connect(server.port, "127.0.0.1", () => {
            connectedAt = Date.now();
            sock.write("GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ");
          });
          // One byte a second, never the end of the headers.
          const drip = setInterval(() => sock.writable && sock.write("a"), 1000);
          const done = () => {
            clearInterval(drip);
            resolve(connectedAt ? Date.now() - connectedAt : Infinity);
          };
          sock.on("close", done);
          sock.on("error", () => {});
          setTimeout(() => sock.destroy(), 40_000); // the bound of the test itself
        }),
      ),
    );
    // While they drip, a real client gets its answers.
    await sleep(2000);
    const health = await request(server, "GET", "/health");
    assert.equal(health.status, 200);
    const s = await connect(server.url, { token: userToken("legit") });
    s.close();
    const worst = Math.max(...(await closing));
    assert.ok(worst < 15_000, `every trickling connection was closed by the server (slowest after ${worst} ms)`);
  });
});

describe("MAX_CONNECTIONS", () => {
  it("past the cap new connections get a 503 and are closed; once some close, clients are served again", async () => {
    const server = await startServer({ MAX_CONNECTIONS: "20" });
    const held = [];
    try {
      // Twenty silent connections fill the node.
      for (let i = 0; i < 20; i++) {
        held.push(await new Promise((resolve) => {
          const sock = net.connect(server.port, "127.0.0.1", () => resolve(sock));
          sock.on("error", () => {});
        }));
      }
      await sleep(200);
      const refused = await request(server, "GET", "/health");
      assert.equal(refused.status, 503);
      assert.equal(refused.body.error.code, "internal");
      const metricsRefused = await request(server, "GET", "/metrics");
      assert.equal(metricsRefused.status, 503, "every route is behind the cap");
      // They go; the node serves again.
      for (const sock of held.splice(0)) sock.destroy();
      await sleep(300);
      assert.equal((await request(server, "GET", "/health")).status, 200);
      const metrics = await request(server, "GET", "/metrics");
      assert.match(metrics.text, /livehub_rejected_total\{reason="too_many_connections"\} [1-9]/);
      const s = await connect(server.url, { token: userToken("after-the-cap") });
      s.close();
    } finally {
      for (const sock of held) sock.destroy();
      await server.stop();
    }
  });
});

describe("handshakes that never become sockets", () => {
  it("leave no state behind: after a thousand polling-then-upgrade cycles without CONNECT (v4 and v3), tracked sessions return to zero", async () => {
    const { default: WebSocket } = await import("ws");
    // 20 workers hold about 40 connections at once; the address's cap
    // (2 × 30 + 8) stays above that, so every handshake goes through.
    const server = await startServer({ MAX_CONNECTIONS_PER_IP: "30" });
    const rss = () => Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${server.proc.pid}/status`, "utf8"))[1]);
    const scrape = async () => Number(/^livehub_transport_sessions (\d+)/m.exec((await request(server, "GET", "/metrics")).text)?.[1]);
    /** Opens a polling session, upgrades it to websocket, and leaves without CONNECT. */
    const cycle = async (eio) => {
      const open = await fetch(`${server.url}/socket.io/?EIO=${eio}&transport=polling`);
      const text = await open.text();
      const sid = /"sid":"([^"]+)"/.exec(text)?.[1];
      assert.ok(sid, `an Engine.IO session: ${text.slice(0, 100)}`);
      const ws = new WebSocket(`${server.url.replace("http", "ws")}/socket.io/?EIO=${eio}&transport=websocket&sid=${sid}`);
      await new Promise((resolve) => {
        ws.on("open", () => ws.send("2probe"));
        ws.on("message", (m) => {
          if (String(m) === "3probe") {
            ws.send("5"); // upgrade done; no "40" (CONNECT) ever follows
            setTimeout(() => ws.terminate(), 5);
          }
        });
        ws.on("close", resolve);
        ws.on("error", resolve);
      });
    };
    try {
      const rssBefore = rss();
      const CYCLES = 1000;
      let done = 0;
      const started = Date.now();
      await Promise.all(
        Array.from({ length: 20 }, async (_, w) => {
          while (done < CYCLES) {
            done++;
            await cycle(w % 2 === 0 ? 4 : 3);
          }
        }),
      );
      // The gauge is sampled every 5 s: wait for a sample taken after the cycles.
      await sleep(6000);
      // Meanwhile and after, a legitimate client is served.
      assert.equal((await request(server, "GET", "/health")).status, 200);
      const s = await connect(server.url, { token: userToken("legit-after-handshakes") });
      s.close();
      await until(async () => (await scrape()) === 0, { what: "tracked sessions back to zero", timeout: 20_000, interval: 500 });
      console.log(`# ${CYCLES} handshakes without CONNECT in ${Date.now() - started} ms; server RSS ${rssBefore} KiB before, ${rss()} KiB after`);
    } finally {
      await server.stop();
    }
  });
});

describe("clients that connect and say nothing", () => {
  it("are closed within the header timeout, a few hundred of them, while a legitimate client is served", async () => {
    const server = await startServer();
    try {
      const COUNT = 300;
      // Opened one after the other (a burst of SYNs can overflow the
      // machine's listen queues under a loaded CI run, leaving half-open
      // connections the server never saw); each timed from its own connect.
      const pending = [];
      for (let i = 0; i < COUNT; i++) {
        pending.push(
          await new Promise((opened) => {
            const sock = net.connect(server.port, "127.0.0.1", () => {
              const connectedAt = Date.now();
              // Wrapped: resolving with a promise itself would wait for it.
              opened({ closed: new Promise((resolve) => sock.on("close", () => resolve(Date.now() - connectedAt))) });
            });
            sock.on("error", () => {});
            setTimeout(() => sock.destroy(), 40_000); // the bound of the test itself
          }),
        );
      }
      const closed = Promise.all(pending.map((p) => p.closed));
      await sleep(1000);
      assert.equal((await request(server, "GET", "/health")).status, 200);
      const s = await connect(server.url, { token: userToken("legit-among-silent") });
      s.close();
      const times = await closed;
      const worst = Math.max(...times);
      console.log(`# ${COUNT} silent connections closed by the server after ${Math.min(...times)}-${worst} ms`);
      assert.ok(worst < 20_000, `every silent connection was closed by the server (slowest after ${worst} ms)`);
    } finally {
      await server.stop();
    }
  });
});

describe("a plain connection that stops reading, in a room of large events", () => {
  it("is closed once it holds too many bytes (4 MiB), while a reading client gets every event", async () => {
    const { plain } = await import("../lib/plain.mjs");
    const server = await startServer({ RATE_LIMIT_PER_MINUTE: "0" });
    try {
      const stalled = await plain(server, userToken("stalled", { branchId: "big" }));
      const reader = await plain(server, userToken("reader", { branchId: "big" }));
      // The stalled client's process stops reading its socket: the kernel's
      // buffers fill, then livehub's queue for it.
      stalled.ws._socket.pause();
      const offsets = await emitLarge(server, 150);
      await until(() => offsets.every((o) => reader.frames.some((f) => f.offset === o)), { what: "the reader got all 150", timeout: 20_000 });
      stalled.ws._socket.resume();
      const closed = await stalled.done;
      // The close frame (1013) is queued behind megabytes the client never
      // read, so it rarely gets through: the client sees the cut (1006).
      assert.ok([1013, 1006].includes(closed.code), `closed, not ${closed.code}`);
      const got = stalled.all("dashboard:refresh").length;
      assert.ok(got < 150, `the stalled client was cut off before the end (it read ${got} of 150)`);
      const metrics = (await request(server, "GET", "/metrics")).text;
      assert.match(metrics, /livehub_lagging_disconnects_total\{front="plain"\} [1-9]/);
      reader.close();
    } finally {
      await server.stop();
    }
  });
});

describe("a plain connection that never authenticates and never reads", () => {
  it("is closed at the auth deadline although the answers to its frames back up unread", async () => {
    const { WebSocket } = await import("ws");
    const server = await startServer({});
    const ws = new WebSocket(`ws://127.0.0.1:${server.port}/ws`);
    try {
      await new Promise((resolve, reject) => {
        ws.once("open", resolve);
        ws.once("error", reject);
      });
      ws.on("error", () => {});
      const closed = new Promise((resolve) => ws.once("close", () => resolve("closed")));
      // It stops reading, and sends frames that are not an auth frame: each is
      // answered `unauthorized`, and unread, the answers fill the buffers
      // until livehub's writes wait.
      ws._socket.pause();
      for (let i = 0; i < 200_000; i++) ws.send("{}");
      // Writing on is how a paused client learns that its connection went.
      const poke = setInterval(() => ws.readyState === WebSocket.OPEN && ws.send("{}"), 250);
      const outcome = await Promise.race([closed, sleep(25_000).then(() => "still open")]);
      clearInterval(poke);
      assert.equal(outcome, "closed", "closed by the 10 s auth deadline (plus the close's patience)");
    } finally {
      ws.terminate();
      await server.stop();
    }
  });
});

describe("a refused 2.x (EIO3) session", () => {
  it("ends shortly after its error, even while the client keeps answering the protocol", async () => {
    const server = await startServer();
    try {
      const base = `${server.url}/socket.io/?EIO=3&transport=polling`;
      const open = await (await fetch(`${base}&token=not-a-token`)).text();
      const sid = /"sid":"([^"]+)"/.exec(open)?.[1];
      assert.ok(sid, open.slice(0, 100));
      // A 2.x client pings ("2"; the server answers "3") and polls, as it would forever.
      const started = Date.now();
      let refusedWith = null;
      let sawError = false;
      while (refusedWith === null && Date.now() - started < 30_000) {
        await fetch(`${base}&sid=${sid}`, { method: "POST", body: "1:2", headers: { "content-type": "text/plain;charset=UTF-8" } }).catch(() => {});
        const res = await fetch(`${base}&sid=${sid}`).catch(() => null);
        const body = res ? await res.text() : "";
        if (body.includes("unauthorized")) sawError = true;
        if (!res || res.status !== 200) refusedWith = res?.status ?? "network error";
        else await sleep(500);
      }
      assert.ok(sawError, "the client was told why");
      assert.equal(refusedWith, 400, "then the session was ended (its requests refused)");
      assert.ok(Date.now() - started < 15_000, `within seconds (${Date.now() - started} ms)`);
    } finally {
      await server.stop();
    }
  });
});

describe("one address holding many connections, authenticated or not", () => {
  it("is refused (429) past 2 × MAX_CONNECTIONS_PER_IP + 8 open connections, while another address is served", async () => {
    // MAX_CONNECTIONS_PER_IP=2: two sockets, and twelve TCP connections open at once.
    const server = await startServer({ MAX_CONNECTIONS_PER_IP: "2" });
    const silent = [];
    try {
      for (let i = 0; i < 12; i++) silent.push(await silentFrom(server.port, "127.0.0.3"));
      const refused = await answerTo(server.port, "127.0.0.3");
      assert.match(refused, /^HTTP\/1\.1 429 /, refused.slice(0, 80));
      assert.match(refused, /"code":"rate_limited","message":"too many connections from this address"/);

      // Another address connects, joins its rooms, gets an emit and /health.
      const legit = await connect(server.url, { token: userToken("legit", { branchId: "b9" }), transports: ["websocket"], localAddress: "127.0.0.4" });
      const got = collect(legit, "dashboard:refresh");
      const res = await request(server, "POST", "/api/v1/emit", { body: { event: "dashboard:refresh", data: { branchId: "b9" } } });
      assert.equal(res.status, 202);
      await until(() => got.length === 1, { what: "the emit" });
      const health = await healthFrom(server, "127.0.0.4");
      assert.equal(health.status, 200);
      assert.equal(health.body.connections, 1, "the silent connections never became sockets");
      legit.close();

      // Once the silent ones close, the address is served again.
      for (const sock of silent) sock.destroy();
      await until(async () => /^HTTP\/1\.1 200 /.test(await answerTo(server.port, "127.0.0.3")), { what: "the address to be served again" });
      const metrics = (await request(server, "GET", "/metrics")).text;
      assert.match(metrics, /livehub_rejected_total\{reason="too_many_connections_per_address"\} [1-9]/);
    } finally {
      for (const sock of silent) sock.destroy();
      await server.stop();
    }
  });
});

describe("a Socket.IO websocket client that stops reading, in a room of large events", () => {
  it("is cut off once it holds too many bytes (4 MiB), then reconnects and replays each event once", async () => {
    const server = await startServer({ RATE_LIMIT_PER_MINUTE: "0" });
    const state = { last: null, offsets: [], disconnects: 0 };
    const stalled = io(server.url, {
      auth: (cb) => cb({ token: userToken("stalled", { branchId: "big" }), ...(state.last ? { offset: state.last } : {}) }),
      transports: ["websocket"],
      forceNew: true,
      reconnectionDelay: 100,
      reconnectionDelayMax: 500,
    });
    try {
      stalled.on("dashboard:refresh", (p) => {
        state.offsets.push(p.offset);
        state.last = p.offset;
      });
      stalled.on("disconnect", () => state.disconnects++);
      await new Promise((resolve) => stalled.once("connect", resolve));
      const reader = await connect(server.url, { token: userToken("reader", { branchId: "big" }), transports: ["websocket"] });
      const read = collect(reader, "dashboard:refresh");
      // 200 events of 100 KB: 20 MB, far fewer packets than socketioxide's
      // 2,048-packet buffer, far more bytes than the budget.
      const rss = () => Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${server.proc.pid}/status`, "utf8"))[1]);
      const rssBefore = rss();
      stalled.io.engine.transport.ws._socket.pause();
      const offsets = await emitLarge(server, 200);
      await until(() => read.length === 200, { what: "the reader got all 200", timeout: 20_000 });
      assert.equal(state.disconnects, 0, "the stalled client has not noticed anything yet");
      console.log(`# Socket.IO slow reader: 20 MB emitted, server VmRSS ${(rssBefore / 1024).toFixed(1)} → ${(rss() / 1024).toFixed(1)} MB while it stalled`);
      stalled.io.engine.transport.ws._socket.resume();
      await until(() => offsets.every((o) => state.offsets.includes(o)), { what: "the stalled client to catch up", timeout: 30_000 });
      assert.ok(state.disconnects >= 1, "its transport was closed (it reconnected by itself)");
      assert.equal(new Set(state.offsets).size, state.offsets.length, "no event twice");
      const order = state.offsets.map((o) => offsets.indexOf(o));
      assert.ok(order.every((n, k) => k === 0 || n > order[k - 1]), "in order");
      const metrics = (await request(server, "GET", "/metrics")).text;
      assert.match(metrics, /livehub_lagging_disconnects_total\{front="socketio"\} [1-9]/);
      reader.close();
    } finally {
      stalled.close();
      await server.stop();
    }
  });
});
