// TLS to the cluster's services: a node reaches Redis over rediss:// with an
// ACL user and password, and PostgreSQL over verified TLS (a server that
// refuses plain TCP), both with certificates of a private CA made here. A
// node that does not trust that CA refuses to start instead of connecting
// unverified.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { atExit, collect, connect, http, startServer, tempDir, until, userToken } from "../lib/harness.mjs";
import { clusterName, freePort, hasRedisServer, privatePostgres, startNode } from "../lib/cluster.mjs";

/** A private CA and a server certificate for 127.0.0.1 signed by it. */
function makeCertificates() {
  const dir = tempDir("livehub-tls-");
  const f = (name) => path.join(dir, name);
  const ssl = (...args) => execFileSync("openssl", args, { stdio: "pipe" });
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
  ssl("req", "-x509", ...ec, "-keyout", f("ca.key"), "-out", f("ca.pem"), "-days", "1", "-subj", "/CN=livehub test CA");
  ssl("req", ...ec, "-keyout", f("server.key"), "-out", f("server.csr"), "-subj", "/CN=127.0.0.1");
  fs.writeFileSync(f("san.ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n");
  ssl("x509", "-req", "-in", f("server.csr"), "-CA", f("ca.pem"), "-CAkey", f("ca.key"), "-CAcreateserial", "-out", f("server.pem"), "-days", "1", "-extfile", f("san.ext"));
  return { ca: f("ca.pem"), cert: f("server.pem"), key: f("server.key") };
}

/** redis-server speaking only TLS, with the default user off and one ACL user. */
async function tlsRedis(certs, password) {
  const port = await freePort();
  const proc = spawn(
    "redis-server",
    ["--port", "0", "--tls-port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
      "--tls-cert-file", certs.cert, "--tls-key-file", certs.key, "--tls-ca-cert-file", certs.ca, "--tls-auth-clients", "no",
      "--user", "default", "off", "--user", "livehub", "on", `>${password}`, "~*", "&*", "+@all"],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  let out = "";
  proc.stdout.on("data", (d) => (out += d));
  proc.stderr.on("data", (d) => (out += d));
  await until(() => /Ready to accept connections/.test(out), { timeout: 10_000, what: `redis-server with TLS: ${out}` });
  atExit(() => proc.kill("SIGKILL"));
  return { port, stop: () => proc.kill("SIGKILL") };
}

const skip = !hasRedisServer() ? "skipped: redis-server is not installed" : false;

describe("TLS to Redis and PostgreSQL", { skip }, () => {
  let certs, redis, pg;
  const password = "s3cret-redis-pw";
  before(async () => {
    certs = makeCertificates();
    redis = await tlsRedis(certs, password);
    pg = await privatePostgres({ tls: certs });
  });
  after(() => {
    redis?.stop();
    pg?.stop?.();
  });

  it("a node reaches both over verified TLS, with Redis's ACL user, and serves clients", async (t) => {
    if (pg.skip) return t.skip(pg.skip);
    const db = `${pg.url}?sslmode=verify-full&sslrootcert=${encodeURIComponent(certs.ca)}`;
    const node = await startNode({
      db,
      redis: `rediss://livehub:${password}@127.0.0.1:${redis.port}`,
      cluster: clusterName(),
      node: "tls-a",
      env: { REDIS_CA_FILE: certs.ca },
    });
    try {
      const health = await http(node, "GET", "/health");
      assert.equal(health.status, 200);
      assert.equal(health.body.cluster?.redis, "up", JSON.stringify(health.body));
      const s = await connect(node.url, { token: userToken("tls-user", { branchId: "t1" }) });
      const got = collect(s, "dashboard:refresh");
      const res = await http(node, "POST", "/api/v1/emit", { body: { event: "dashboard:refresh", data: { branchId: "t1" } } });
      assert.equal(res.status, 202, JSON.stringify(res.body));
      await until(() => got.length === 1, { what: "the emit, logged in PostgreSQL over TLS" });
      s.close();
      assert.doesNotMatch(node.stdout + node.stderr, new RegExp(password), "the password is never logged");
    } finally {
      await node.stop();
    }
  });

  it("a node that does not trust the servers' CA refuses to start", async (t) => {
    if (pg.skip) return t.skip(pg.skip);
    // Redis over TLS without REDIS_CA_FILE: the system's roots do not know the CA.
    await assert.rejects(
      startNode({
        db: `${pg.url}?sslmode=verify-full&sslrootcert=${encodeURIComponent(certs.ca)}`,
        redis: `rediss://livehub:${password}@127.0.0.1:${redis.port}`,
        cluster: clusterName(),
        node: "tls-untrusting",
      }),
      /exited .*before listening[\s\S]*Redis/i,
    );
    // PostgreSQL with verification and the system's roots only.
    await assert.rejects(
      startServer({ DATABASE_URL: `${pg.url}?sslmode=verify-full` }),
      /exited .*before listening/i,
    );
    // And plain TCP to that PostgreSQL is refused by the server itself.
    await assert.rejects(startServer({ DATABASE_URL: `${pg.url}?sslmode=disable` }), /exited .*before listening/i);
  });
});
