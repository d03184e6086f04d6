// Test harness: starts real livehub processes and drives them with the real
// socket.io-client (4.x and 2.x) and plain HTTP. No mocks.
import { spawn } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { io as ioV4 } from "socket.io-client";
import ioV2 from "socket.io-client-v2";

const here = path.dirname(fileURLToPath(import.meta.url));
export const ROOT = path.resolve(here, "../../..");
export const BIN = process.env.LIVEHUB_BIN ?? path.join(ROOT, "target/debug/livehub");
export const SECRET = "e2e-test-secret-0123456789abcdef";
export const API_KEY = "e2e-api-key";

/**
 * Runs `cleanup` when the test process exits. One listener for all of them:
 * a listener each warned past ten (MaxListenersExceededWarning), and a file
 * starts many servers.
 */
const cleanups = [];
process.on("exit", () => {
  // The newest first (a server before its directory); one failing stops none of the others.
  for (const cleanup of cleanups.reverse()) {
    try {
      cleanup();
    } catch (e) {
      console.error(`a cleanup at exit failed: ${e.message}`);
    }
  }
});
export function atExit(cleanup) {
  cleanups.push(cleanup);
}

/** A fresh temporary directory, removed at exit. */
export function tempDir(prefix = "livehub-e2e-") {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  atExit(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/**
 * Starts livehub. `env` overrides the defaults (a private SQLite file, PORT=0).
 * Resolves once it prints its address.
 */
export async function startServer(env = {}, { args = [] } = {}) {
  const dir = tempDir();
  const fullEnv = {
    PATH: process.env.PATH,
    HOST: "127.0.0.1",
    PORT: "0",
    JWT_SECRET: SECRET,
    API_KEYS: API_KEY,
    DATABASE_URL: `sqlite://${dir}/livehub.db`,
    LOG_LEVEL: "warn",
    ...env,
  };
  for (const [k, v] of Object.entries(fullEnv)) if (v === undefined) delete fullEnv[k];
  const proc = spawn(BIN, ["serve", ...args], { env: fullEnv, stdio: ["ignore", "pipe", "pipe"] });
  const server = { proc, env: fullEnv, dir, stdout: "", stderr: "", exited: null };
  proc.stdout.on("data", (d) => (server.stdout += d));
  proc.stderr.on("data", (d) => (server.stderr += d));
  server.exit = new Promise((resolve) =>
    proc.on("exit", (code, signal) => {
      server.exited = { code, signal };
      resolve(server.exited);
    }),
  );
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`livehub did not start:\n${server.stderr}`)), 20000);
    const check = () => {
      const m = server.stdout.match(/listening on (http:\/\/[0-9.:]+)/);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    };
    proc.stdout.on("data", check);
    server.exit.then((e) => {
      clearTimeout(timer);
      reject(new Error(`livehub exited (${JSON.stringify(e)}) before listening:\n${server.stderr}`));
    });
  });
  server.url = url;
  server.port = Number(new URL(url).port);
  /** Sends a signal and waits for the exit. */
  server.stop = async (signal = "SIGTERM") => {
    if (!server.exited) proc.kill(signal);
    return server.exit;
  };
  atExit(() => {
    if (!server.exited) proc.kill("SIGKILL");
  });
  return server;
}

/** Runs the livehub binary to completion (config errors, `token`, `migrate`). */
export function runBinary(args, env = {}) {
  return new Promise((resolve) => {
    const proc = spawn(BIN, args, { env: { PATH: process.env.PATH, ...env }, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    proc.stdout.on("data", (d) => (stdout += d));
    proc.stderr.on("data", (d) => (stderr += d));
    proc.on("exit", (code) => resolve({ code, stdout, stderr }));
  });
}

const b64 = (v) => Buffer.from(typeof v === "string" ? v : JSON.stringify(v)).toString("base64url");

/**
 * Signs a JWT. `alg` HS256 (with `secret`), RS256 or ES256 (with a private `key`),
 * or "none". `exp` defaults to ten minutes from now.
 */
export function token(claims, { secret = SECRET, alg = "HS256", key, kid, header = {} } = {}) {
  const body = { exp: Math.floor(Date.now() / 1000) + 600, ...claims };
  for (const [k, v] of Object.entries(body)) if (v === undefined) delete body[k];
  const h = b64({ alg, typ: "JWT", ...(kid ? { kid } : {}), ...header });
  const p = b64(body);
  const input = `${h}.${p}`;
  let sig;
  if (alg === "none") sig = "";
  else if (alg.startsWith("HS")) sig = crypto.createHmac(`sha${alg.slice(2)}`, secret).update(input).digest("base64url");
  else if (alg.startsWith("RS")) sig = crypto.sign(`sha${alg.slice(2)}`, Buffer.from(input), key).toString("base64url");
  else if (alg.startsWith("ES"))
    sig = crypto.sign(`sha${alg.slice(2)}`, Buffer.from(input), { key, dsaEncoding: "ieee-p1363" }).toString("base64url");
  else throw new Error(`unsupported alg ${alg}`);
  return `${input}.${sig}`;
}

/** A user token for `sub` with the usual claims. */
export function userToken(sub, extra = {}) {
  return token({ sub, name: `User ${sub}`, ...extra });
}

/**
 * Opens a socket and waits until it is connected. `version` 4 (default) or 2.
 * Rejects with the connect_error (4.x) / error (2.x) message.
 */
export function connect(url, { token: tok, version = 4, transports, auth, query, reconnection = false, timeout = 10000, extraHeaders, localAddress } = {}) {
  const socket =
    version === 2
      ? ioV2(url, { query: { ...(tok ? { token: tok } : {}), ...query }, transports, reconnection, forceNew: true, extraHeaders })
      : ioV4(url, {
          auth: typeof auth === "function" ? auth : { ...(tok ? { token: tok } : {}), ...auth },
          query,
          transports,
          reconnection,
          forceNew: true,
          extraHeaders,
          ...(localAddress ? { localAddress } : {}),
        });
  socket.__version = version;
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      socket.close();
      reject(new Error("connect timed out"));
    }, timeout);
    const fail = (err) => {
      clearTimeout(timer);
      socket.close();
      const message = typeof err === "string" ? err : err?.message;
      reject(Object.assign(new Error(message), { raw: err }));
    };
    socket.once("connect", () => {
      clearTimeout(timer);
      resolve(socket);
    });
    socket.once("connect_error", (e) => {
      if (!reconnection) fail(e);
    });
    if (version === 2) socket.once("error", fail);
  });
}

/** Emits with an acknowledgement and resolves with it. */
export function ack(socket, event, data, timeout = 5000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ack for ${event}`)), timeout);
    const done = (reply) => {
      clearTimeout(timer);
      resolve(reply);
    };
    if (data === undefined) socket.emit(event, done);
    else socket.emit(event, data, done);
  });
}

/** Resolves with the next `event` matching `filter`, or rejects after `timeout`. */
export function next(socket, event, { timeout = 5000, filter = () => true } = {}) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      socket.off(event, on);
      reject(new Error(`no ${event} within ${timeout} ms`));
    }, timeout);
    const on = (payload) => {
      if (!filter(payload)) return;
      clearTimeout(timer);
      socket.off(event, on);
      resolve(payload);
    };
    socket.on(event, on);
  });
}

/** Collects every `event` into an array (returned), until the socket is dropped. */
export function collect(socket, event) {
  const got = [];
  socket.on(event, (payload) => got.push(payload));
  return got;
}

/** Asserts that no `event` arrives within `ms`. */
export async function nothing(socket, event, ms = 300) {
  const got = [];
  const on = (p) => got.push(p);
  socket.on(event, on);
  await sleep(ms);
  socket.off(event, on);
  if (got.length) throw new Error(`unexpected ${event}: ${JSON.stringify(got)}`);
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls `predicate` until it returns truthy, or throws after `timeout`. */
export async function until(predicate, { timeout = 5000, interval = 25, what = "condition" } = {}) {
  const start = Date.now();
  for (;;) {
    const v = await predicate();
    if (v) return v;
    if (Date.now() - start > timeout) throw new Error(`timed out waiting for ${what}`);
    await sleep(interval);
  }
}

/** An HTTP request to livehub. `body` objects are sent as JSON; strings as they are. */
export async function http(server, method, pathname, { body, apiKey = API_KEY, bearer, headers = {} } = {}) {
  const h = { ...headers };
  const auth = bearer ?? apiKey;
  if (auth) h.authorization = `Bearer ${auth}`;
  let payload = body;
  if (body !== undefined && typeof body !== "string" && !(body instanceof Uint8Array)) {
    payload = JSON.stringify(body);
    h["content-type"] ??= "application/json";
  }
  const res = await fetch(`${server.url}${pathname}`, { method, headers: h, body: payload });
  const text = await res.text();
  let json;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.status, body: json, text, headers: res.headers };
}

/** `POST /api/v1/emit`. */
export function emit(server, body, opts = {}) {
  return http(server, "POST", "/api/v1/emit", { body, ...opts });
}

/** Closes every socket given (ignores undefined). */
export function closeAll(...sockets) {
  for (const s of sockets.flat()) s?.close?.();
}
