// Cluster test helpers: real PostgreSQL and Redis (TEST_DATABASE_URL,
// TEST_REDIS_URL), a private database per test file, a private Redis when a
// test needs to restart it, and a TCP proxy standing in for a load balancer.
import { execFileSync, spawn } from "node:child_process";
import crypto from "node:crypto";
import http from "node:http";
import net from "node:net";
import { atExit, startServer } from "./harness.mjs";

const required = process.env.LIVEHUB_REQUIRE_SERVICES === "1";

/**
 * The external services, or `{ skip }` with a message saying why not. In CI
 * (LIVEHUB_REQUIRE_SERVICES=1) missing services throw instead of skipping.
 */
export function services() {
  const pg = process.env.TEST_DATABASE_URL;
  const redis = process.env.TEST_REDIS_URL;
  const missing = [!pg && "TEST_DATABASE_URL", !redis && "TEST_REDIS_URL"].filter(Boolean);
  if (missing.length) {
    const message = `skipped: ${missing.join(" and ")} not set (cluster tests need PostgreSQL and Redis)`;
    if (required) throw new Error(message.replace("skipped", "required"));
    return { skip: message };
  }
  return { pg, redis };
}

/** A fresh PostgreSQL database for one test file; dropped at exit. */
export function createDatabase(baseUrl) {
  const name = `livehub_t_${crypto.randomBytes(5).toString("hex")}`;
  execFileSync("psql", [baseUrl, "-q", "-c", `CREATE DATABASE ${name}`], { stdio: "pipe" });
  atExit(() => {
    try {
      execFileSync("psql", [baseUrl, "-q", "-c", `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`], { stdio: "pipe" });
    } catch {
      // best effort
    }
  });
  const url = new URL(baseUrl);
  url.pathname = `/${name}`;
  return url.toString();
}

/** Starts one node of a cluster. */
export function startNode({ db, redis, cluster, node, env = {} }) {
  return startServer({
    DATABASE_URL: db,
    REDIS_URL: redis,
    CLUSTER_NAME: cluster,
    NODE_ID: node,
    RATE_LIMIT_PER_MINUTE: "0",
    ...env,
  });
}

/**
 * Nodes of one new cluster, started in order on a fresh database (migrations
 * run once; the later nodes find them applied). Returns the database too.
 */
export async function startCluster({ pg, redis, nodes }) {
  const db = createDatabase(pg);
  const cluster = clusterName();
  const started = [];
  for (const node of nodes) started.push(await startNode({ db, redis, cluster, node }));
  return { db, nodes: started };
}

/** A unique cluster name, so concurrent test files never hear each other on a shared Redis. */
export const clusterName = () => `t${crypto.randomBytes(4).toString("hex")}`;

/**
 * A TCP proxy on a free port forwarding to `target` (a port). `retarget(port)`
 * sends new connections elsewhere; `dropAll()` cuts the open ones; `delayMs`
 * delays every chunk each way (a slow link).
 */
export async function tcpProxy(target, { delayMs = 0 } = {}) {
  const state = { target, sockets: new Set() };
  // Each chunk waits `delayMs` each way (in order): a slow network link.
  const forward = (from, to) => {
    if (!delayMs) return from.pipe(to);
    from.on("data", (chunk) => setTimeout(() => to.writable && to.write(chunk), delayMs));
  };
  const server = net.createServer((client) => {
    const upstream = net.connect(state.target, "127.0.0.1");
    state.sockets.add(client);
    state.sockets.add(upstream);
    const close = () => {
      client.destroy();
      upstream.destroy();
      state.sockets.delete(client);
      state.sockets.delete(upstream);
    };
    client.on("error", close).on("close", close);
    upstream.on("error", close).on("close", close);
    forward(client, upstream);
    forward(upstream, client);
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  const port = server.address().port;
  return {
    url: `http://127.0.0.1:${port}`,
    retarget: (p) => (state.target = p),
    dropAll: () => state.sockets.forEach((s) => s.destroy()),
    close: () => new Promise((r) => { state.sockets.forEach((s) => s.destroy()); server.close(r); }),
  };
}

/** A private redis-server on a free port (for tests that restart Redis). */
export async function privateRedis(port) {
  const p = port ?? (await freePort());
  const proc = spawn("redis-server", ["--port", String(p), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  proc.stdout.on("data", (d) => (out += d));
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`redis-server did not start: ${out}`)), 10000);
    const check = () => {
      if (/Ready to accept connections/.test(out)) {
        clearTimeout(timer);
        resolve();
      }
    };
    proc.stdout.on("data", check);
    proc.on("exit", () => reject(new Error(`redis-server exited: ${out}`)));
  });
  const exited = new Promise((r) => proc.on("exit", r));
  atExit(() => proc.kill("SIGKILL"));
  return { url: `redis://127.0.0.1:${p}`, port: p, stop: () => { proc.kill("SIGKILL"); return exited; } };
}

export function hasRedisServer() {
  try {
    execFileSync("redis-server", ["--version"], { stdio: "pipe" });
    return true;
  } catch {
    return false;
  }
}

/** A port nothing listens on, for a server to take. */
export function freePort() {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/**
 * A private PostgreSQL server (its own data directory and port, fsync off),
 * for tests that stop and restart the database. Needs root (the server runs
 * as the `postgres` user) and Debian's PostgreSQL binaries; `{ skip }` otherwise.
 * `tls: { cert, key }` (PEM files) turns TLS on and refuses TCP clients without it.
 */
export async function privatePostgres({ tls } = {}) {
  const fs = await import("node:fs");
  const os = await import("node:os");
  const path = await import("node:path");
  const versions = fs.existsSync("/usr/lib/postgresql") ? fs.readdirSync("/usr/lib/postgresql") : [];
  const bin = versions.map((v) => `/usr/lib/postgresql/${v}/bin`).find((b) => fs.existsSync(`${b}/initdb`));
  if (!bin || process.getuid?.() !== 0) {
    return { skip: "skipped: a private PostgreSQL needs root and Debian's PostgreSQL binaries" };
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "livehub-pg-"));
  execFileSync("chown", ["postgres", dir]);
  const as = (cmd, args) => execFileSync("runuser", ["-u", "postgres", "--", `${bin}/${cmd}`, ...args], { stdio: "pipe" });
  as("initdb", ["-D", dir, "-A", "trust", "-U", "postgres", "--no-sync"]);
  const port = await freePort();
  let opts = `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off`;
  if (tls) {
    for (const [name, file] of [["server.crt", tls.cert], ["server.key", tls.key]]) {
      fs.copyFileSync(file, `${dir}/${name}`);
      execFileSync("chown", ["postgres", `${dir}/${name}`]);
      fs.chmodSync(`${dir}/${name}`, 0o600);
    }
    fs.writeFileSync(`${dir}/pg_hba.conf`, "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostnossl all all 127.0.0.1/32 reject\n");
    opts += " -c ssl=on";
  }
  const start = () => as("pg_ctl", ["-D", dir, "-o", opts, "-l", `${dir}/log`, "-w", "start"]);
  const stop = () => as("pg_ctl", ["-D", dir, "-m", "fast", "-w", "stop"]);
  start();
  atExit(() => {
    try {
      stop();
    } catch {
      // already stopped
    }
    fs.rmSync(dir, { recursive: true, force: true });
  });
  /** SIGSTOP (or SIGCONT) the server and its backends: a database that answers nothing. */
  const signalAll = (sig) => {
    const postmaster = fs.readFileSync(`${dir}/postmaster.pid`, "utf8").split("\n")[0].trim();
    let children = [];
    try {
      children = execFileSync("pgrep", ["-P", postmaster]).toString().split("\n").filter(Boolean);
    } catch {
      // no children
    }
    execFileSync("kill", [`-${sig}`, postmaster, ...children]);
  };
  return {
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    start,
    stop,
    freeze: () => signalAll("STOP"),
    thaw: () => signalAll("CONT"),
  };
}

/**
 * An HTTP load balancer without affinity: every request, and every websocket
 * upgrade, goes to the next of `ports` in turn (a node that refuses the
 * connection is skipped). `counts` says how many requests each port got;
 * `replace(old, new)` swaps a node's port (a restarted node); `close()` stops it.
 */
export async function roundRobinProxy(initial) {
  const ports = [...initial];
  let turn = 0;
  const counts = Object.fromEntries(ports.map((p) => [p, 0]));
  const agent = new http.Agent({ keepAlive: true });
  const nextPort = () => ports[turn++ % ports.length];
  const sockets = new Set();
  const server = http.createServer((req, res) => {
    const body = [];
    req.on("data", (c) => body.push(c));
    req.on("end", () => {
      const send = (attempt) => {
        const port = nextPort();
        const up = http.request({ host: "127.0.0.1", port, method: req.method, path: req.url, headers: req.headers, agent }, (answer) => {
          counts[port]++;
          res.writeHead(answer.statusCode, answer.headers);
          answer.pipe(res);
        });
        up.on("error", (e) => {
          if (e.code === "ECONNREFUSED" && attempt < ports.length) send(attempt + 1);
          else res.destroy();
        });
        up.end(Buffer.concat(body));
      };
      send(1);
    });
  });
  server.on("connection", (s) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
  });
  server.on("upgrade", (req, client, head) => {
    const connect = (attempt) => {
      const port = nextPort();
      const up = net.connect(port, "127.0.0.1", () => {
        counts[port]++;
        const lines = [`${req.method} ${req.url} HTTP/1.1`];
        for (let i = 0; i < req.rawHeaders.length; i += 2) lines.push(`${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}`);
        up.write(lines.join("\r\n") + "\r\n\r\n");
        if (head.length) up.write(head);
        client.pipe(up).pipe(client);
      });
      sockets.add(up);
      up.on("close", () => {
        sockets.delete(up);
        client.destroy();
      });
      up.on("error", (e) => {
        if (e.code === "ECONNREFUSED" && attempt < ports.length) connect(attempt + 1);
        else client.destroy();
      });
      client.on("error", () => up.destroy());
      client.on("close", () => up.destroy());
    };
    connect(1);
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = server.address().port;
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    counts,
    replace: (old, port) => {
      ports[ports.indexOf(old)] = port;
      counts[port] ??= 0;
    },
    close: () => {
      for (const s of sockets) s.destroy();
      agent.destroy();
      return new Promise((resolve) => server.close(resolve));
    },
  };
}
