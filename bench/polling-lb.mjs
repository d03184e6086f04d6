#!/usr/bin/env node
// Long-polling behind a load balancer without affinity (not part of bench/run.sh).
//
//   node bench/polling-lb.mjs [--clients N] [--rate R] [--duration S] [--rounds K] [--skip-build]
//
// N socket.io-client 4.x clients on the polling transport only, all in one
// branch room; a controller emits at R/s for S seconds; each client measures
// emit → receive. Three cases, each on fresh release nodes sharing a
// PostgreSQL log and a Redis:
//
//   one-node      clients connect to one node directly;
//   lb-one-node   through the round-robin balancer of the e2e tests, to that
//                 one node (what the balancer itself costs);
//   lb-two-nodes  through the balancer to two nodes, every request to the
//                 next one: half of each session's requests land on the node
//                 that does not own it and are forwarded to the one that does.
//
// Needs `npm ci` in tests/e2e (done here), PostgreSQL at BENCH_DATABASE_URL
// (default postgres://postgres@127.0.0.1:5432/test; the database
// livehub_polling_bench is dropped and created) and Redis at BENCH_REDIS_URL
// (default redis://127.0.0.1:6379). The clients run in this process, on the
// same cores as the servers: compare the cases with each other, not with
// other machines.
import { execFileSync } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const args = process.argv.slice(2);
const option = (name, fallback) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : fallback;
};
const CLIENTS = option("clients", 200);
const RATE = option("rate", 20);
const DURATION = option("duration", 10);
const ROUNDS = option("rounds", 2);

if (!args.includes("--skip-build")) execFileSync("cargo", ["build", "--release", "--quiet"], { cwd: repo, stdio: "inherit" });
execFileSync("npm", ["ci", "--no-audit", "--no-fund", "--loglevel=error"], { cwd: path.join(repo, "tests/e2e"), stdio: "inherit" });
process.env.LIVEHUB_BIN = path.join(repo, "target/release/livehub");

const { io } = await import(path.join(repo, "tests/e2e/node_modules/socket.io-client/build/esm-debug/index.js"));
const { http, sleep, until, userToken } = await import(path.join(repo, "tests/e2e/lib/harness.mjs"));
const { roundRobinProxy, startNode } = await import(path.join(repo, "tests/e2e/lib/cluster.mjs"));

const PG = process.env.BENCH_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/test";
const REDIS = process.env.BENCH_REDIS_URL ?? "redis://127.0.0.1:6379";
const DB = "livehub_polling_bench";

function freshDatabase() {
  execFileSync("psql", ["-q", PG, "-c", `DROP DATABASE IF EXISTS ${DB} WITH (FORCE)`, "-c", `CREATE DATABASE ${DB}`], { stdio: "pipe" });
  const url = new URL(PG);
  url.pathname = `/${DB}`;
  return url.toString();
}

const quantile = (sorted, q) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];

async function runCase(name, round) {
  const db = freshDatabase();
  const cluster = `pb${process.pid}${round}${name.length}`;
  const env = { LOG_LEVEL: "error" };
  const nodes = [await startNode({ db, redis: REDIS, cluster, node: "pb-a", env })];
  if (name === "lb-two-nodes") nodes.push(await startNode({ db, redis: REDIS, cluster, node: "pb-b", env }));
  const lb = name === "one-node" ? null : await roundRobinProxy(nodes.map((n) => n.port));
  const url = lb ? lb.url : nodes[0].url;
  const latencies = [];
  const clients = [];
  try {
    for (let i = 0; i < CLIENTS; i++) {
      const socket = io(url, { auth: { token: userToken(`pb-${i}`, { branchId: "pb" }) }, transports: ["polling"], forceNew: true, reconnection: false });
      socket.on("dashboard:refresh", (p) => latencies.push(performance.now() - p.sentAt));
      clients.push(socket);
    }
    await until(() => clients.every((c) => c.connected), { timeout: 60_000, what: "every client connected" });
    await sleep(1000);
    const total = RATE * DURATION;
    const started = performance.now();
    for (let n = 0; n < total; n++) {
      const due = started + (n * 1000) / RATE;
      const wait = due - performance.now();
      if (wait > 0) await sleep(wait);
      const node = nodes[n % nodes.length];
      http(node, "POST", "/api/v1/emit", { body: { event: "dashboard:refresh", data: { branchId: "pb", n, sentAt: performance.now() } } });
    }
    const expected = total * CLIENTS;
    await until(() => latencies.length >= expected, { timeout: 15_000, what: "deliveries" }).catch(() => {});
    const elapsed = (performance.now() - started) / 1000;
    const sorted = [...latencies].sort((x, y) => x - y);
    let forwarded = 0;
    for (const node of nodes) {
      const text = (await http(node, "GET", "/metrics")).text;
      for (const m of text.matchAll(/^livehub_forwarded_requests_total\{[^}]*\} (\d+)/gm)) forwarded += Number(m[1]);
    }
    const dropped = clients.filter((c) => !c.connected).length;
    return { name, round, perSec: latencies.length / elapsed, lost: expected - latencies.length, p50: quantile(sorted, 0.5), p99: quantile(sorted, 0.99), max: sorted.at(-1), forwarded, dropped };
  } finally {
    clients.forEach((c) => c.close());
    await lb?.close();
    for (const node of nodes) await node.stop();
  }
}

const rows = [];
for (let round = 1; round <= ROUNDS; round++) {
  for (const name of ["one-node", "lb-one-node", "lb-two-nodes"]) {
    console.error(`==> round ${round}: ${name}`);
    rows.push(await runCase(name, round));
  }
}
const f = (x, digits = 1) => (typeof x === "number" ? x.toFixed(digits) : "?");
console.log(`${CLIENTS} polling clients, ${RATE} emits/s for ${DURATION} s\n`);
console.log("| case | round | deliveries/s | lost | p50 ms | p99 ms | max ms | forwarded requests | clients dropped |");
console.log("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
for (const r of rows) console.log(`| ${r.name} | ${r.round} | ${f(r.perSec, 0)} | ${r.lost} | ${f(r.p50)} | ${f(r.p99)} | ${f(r.max)} | ${r.forwarded} | ${r.dropped} |`);
process.exit(0);
