// Plain WebSocket clients (the `ws` package from npm) against /ws, as the
// seed teams' frontends connect: JSON text frames, no Socket.IO.
import WebSocket from "ws";

/**
 * Opens a plain connection and resolves once it is open (not yet
 * authenticated). `query` goes on the URL; `headers` on the upgrade.
 * The returned client records every frame it receives.
 */
export function openPlain(server, { path = "/ws", query = {}, headers = {}, origin, autoPong = true } = {}) {
  const url = new URL(path, server.url.replace(/^http/, "ws"));
  for (const [k, v] of Object.entries(query)) if (v !== undefined) url.searchParams.set(k, v);
  const ws = new WebSocket(url, { headers, origin, autoPong });
  const client = {
    ws,
    frames: [],
    waiters: [],
    closed: null,
    send(obj) {
      ws.send(typeof obj === "string" ? obj : JSON.stringify(obj));
    },
    /** The next frame (already received or to come) matching `filter`. */
    next(filter = () => true, { timeout = 5000, what = "frame" } = {}) {
      const i = client.frames.findIndex((f) => !f.__taken && filter(f));
      if (i >= 0) {
        client.frames[i].__taken = true;
        return Promise.resolve(client.frames[i]);
      }
      return new Promise((resolve, reject) => {
        const waiter = { filter, resolve };
        client.waiters.push(waiter);
        setTimeout(() => {
          const k = client.waiters.indexOf(waiter);
          if (k >= 0) {
            client.waiters.splice(k, 1);
            reject(new Error(`no ${what} within ${timeout} ms; got ${JSON.stringify(client.frames.slice(-5))}`));
          }
        }, timeout);
      });
    },
    /** Frames of `type` received so far. */
    all(type) {
      return client.frames.filter((f) => f.type === type);
    },
    close() {
      ws.close();
    },
  };
  client.done = new Promise((resolve) => {
    ws.on("close", (code, reason) => {
      client.closed = { code, reason: reason.toString() };
      resolve(client.closed);
    });
  });
  ws.on("message", (data, isBinary) => {
    if (isBinary) return;
    const frame = JSON.parse(data.toString());
    client.frames.push(frame);
    const k = client.waiters.findIndex((w) => w.filter(frame));
    if (k >= 0) {
      frame.__taken = true;
      client.waiters.splice(k, 1)[0].resolve(frame);
    }
  });
  return new Promise((resolve, reject) => {
    ws.once("open", () => resolve(client));
    ws.once("unexpected-response", (_req, res) => {
      let body = "";
      res.on("data", (d) => (body += d));
      res.on("end", () => reject(Object.assign(new Error(`HTTP ${res.statusCode}`), { status: res.statusCode, body })));
    });
    ws.once("error", reject);
  });
}

/** Opens a connection with `?token=` and waits for `connection_established`. */
export async function plain(server, tok, opts = {}) {
  const client = await openPlain(server, { ...opts, query: { token: tok, ...opts.query } });
  client.hello = await client.next((f) => f.type === "connection_established", { what: "connection_established" });
  return client;
}

/** Sends a request with a fresh requestId and resolves with the reply carrying it. */
let nextId = 1;
export async function request(client, frame, opts) {
  const requestId = `r${nextId++}`;
  client.send({ ...frame, requestId });
  return client.next((f) => f.requestId === requestId, { what: `reply to ${JSON.stringify(frame)}`, ...opts });
}
