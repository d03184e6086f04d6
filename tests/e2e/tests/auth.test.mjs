// Authentication (connect middleware), checked with the real socket.io-client
// 4.x and 2.x against real livehub processes:
//  - the three exact refusal messages, on every client/transport;
//  - each token source (auth.token, ?token=, Authorization: Bearer) and their order;
//  - forged / wrong-key / alg:none / incomplete tokens, no leeway on exp;
//  - RS256 and ES256 with JWT_PUBLIC_KEY_FILE, algorithm confusion refused;
//  - JWKS_URL: kid lookup, unknown kid refused, a rotated-in key accepted within 15 s;
//  - JWT_ISSUER / JWT_AUDIENCE enforced;
//  - after all the refusals, the server still serves a valid client end to end.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import crypto from "node:crypto";
import fs from "node:fs";
import http from "node:http";
import path from "node:path";
import {
  SECRET,
  ack,
  closeAll,
  connect,
  emit,
  next,
  sleep,
  startServer,
  tempDir,
  token,
  userToken,
} from "../lib/harness.mjs";

process.setMaxListeners(50); // the harness adds an exit listener per server / temp dir

const MISSING = "unauthorized: missing token";
const INVALID = "unauthorized: invalid token";
const EXPIRED = "unauthorized: token expired";

const now = () => Math.floor(Date.now() / 1000);

/** Every client flavour a frontend may use, with where it can carry the token. */
const CLIENTS = [
  { name: "4.x websocket", version: 4, transports: ["websocket"] },
  { name: "4.x polling", version: 4, transports: ["polling"] },
  { name: "2.x websocket", version: 2, transports: ["websocket"] },
  { name: "2.x polling", version: 2, transports: ["polling"] },
];

/** Connects, or fails the test with a readable reason. */
async function mustConnect(url, opts) {
  try {
    return await connect(url, opts);
  } catch (e) {
    assert.fail(`expected the connection to be accepted, got: ${e.message}`);
  }
}

/** Asserts that the connection is refused with exactly `message`. */
async function refused(url, opts, message) {
  await assert.rejects(connect(url, opts), (e) => {
    assert.equal(e.message, message);
    return true;
  });
}

/** This socket's rooms, from the `rooms` ack. */
async function roomsOf(socket) {
  const reply = await ack(socket, "rooms");
  assert.equal(reply.ok, true, JSON.stringify(reply));
  return reply.rooms;
}

/** The socket authenticated as `sub`: its automatic `user:{sub}` room is there. */
async function assertUser(socket, sub) {
  const rooms = await roomsOf(socket);
  assert.ok(rooms.includes(`user:${sub}`), `expected user:${sub} in ${JSON.stringify(rooms)}`);
  for (const r of rooms) if (r.startsWith("user:")) assert.equal(r, `user:${sub}`, `socket is in another user's room: ${r}`);
}

/** End to end: join shipment:{id} with an ack and receive a shipment:updated emitted over HTTP. */
async function provesDelivery(server, socket, shipmentId) {
  const joined = await ack(socket, "join:shipment", { shipmentId });
  assert.equal(joined.ok, true, JSON.stringify(joined));
  assert.equal(joined.room, `shipment:${shipmentId}`);
  const received = next(socket, "shipment:updated", { timeout: 5000, filter: (p) => p.shipmentId === shipmentId });
  const res = await emit(server, { event: "shipment:updated", data: { shipmentId, status: "in_transit" } });
  assert.equal(res.status, 202, res.text);
  const payload = await received;
  assert.equal(payload.type, "shipment:updated");
  assert.equal(payload.status, "in_transit");
}

/** `header.payload.signature` → the same token with its payload replaced, signature kept. */
function withPayload(tok, claims) {
  const [h, , s] = tok.split(".");
  return `${h}.${Buffer.from(JSON.stringify(claims)).toString("base64url")}.${s}`;
}

/** The token with one character in the middle of its signature changed. */
function flipSignatureChar(tok) {
  const i = tok.lastIndexOf(".") + 10;
  return tok.slice(0, i) + (tok[i] === "A" ? "B" : "A") + tok.slice(i + 1);
}

function writeFile(dir, name, text) {
  const file = path.join(dir, name);
  fs.writeFileSync(file, text);
  return file;
}

// ---------------------------------------------------------------------------

describe("HS256 (JWT_SECRET): refusal messages and token sources", () => {
  let server;
  before(async () => (server = await startServer()));
  after(() => server?.stop());

  for (const c of CLIENTS) {
    it(`${c.name}: the three refusal messages are exact`, async () => {
      const opts = { version: c.version, transports: c.transports };
      await refused(server.url, opts, MISSING);
      await refused(server.url, { ...opts, token: "not-a-jwt" }, INVALID);
      await refused(server.url, { ...opts, token: userToken(`x-${c.version}`, { exp: now() - 30 }) }, EXPIRED);
    });
  }

  it("4.x: a token in auth.token is accepted (websocket and polling)", async () => {
    for (const transports of [["websocket"], ["polling"]]) {
      const socket = await mustConnect(server.url, { auth: { token: userToken("src-auth") }, transports });
      try {
        await assertUser(socket, "src-auth");
      } finally {
        closeAll(socket);
      }
    }
  });

  it("4.x and 2.x: a token in the ?token= query parameter is accepted", async () => {
    const sockets = [];
    try {
      for (const [version, transports] of [
        [4, ["websocket"]],
        [4, ["polling"]],
        [2, ["websocket"]],
        [2, ["polling"]],
      ]) {
        const sub = `src-query-${version}-${transports[0]}`;
        const socket = await mustConnect(server.url, { version, transports, query: { token: userToken(sub) } });
        sockets.push(socket);
        await assertUser(socket, sub);
      }
    } finally {
      closeAll(sockets);
    }
  });

  it("4.x and 2.x: a token in the Authorization: Bearer header is accepted (node clients can set it)", async () => {
    const sockets = [];
    try {
      for (const [version, transports] of [
        [4, ["websocket"]],
        [4, ["polling"]],
        [2, ["websocket"]],
        [2, ["polling"]],
      ]) {
        const sub = `src-header-${version}-${transports[0]}`;
        const socket = await mustConnect(server.url, {
          version,
          transports,
          extraHeaders: { Authorization: `Bearer ${userToken(sub)}` },
        });
        sockets.push(socket);
        await assertUser(socket, sub);
      }
    } finally {
      closeAll(sockets);
    }
  });

  it("a bad token in the Authorization header is refused as invalid, not missing", async () => {
    for (const [version, transports] of [
      [4, ["websocket"]],
      [2, ["polling"]],
    ]) {
      await refused(server.url, { version, transports, extraHeaders: { Authorization: "Bearer garbage.garbage.garbage" } }, INVALID);
      await refused(
        server.url,
        { version, transports, extraHeaders: { Authorization: `Bearer ${userToken("hdr-exp", { exp: now() - 30 })}` } },
        EXPIRED,
      );
    }
  });

  it("sources are read in order: auth.token, then ?token=, then Authorization", async () => {
    const headers = { Authorization: `Bearer ${userToken("order-header")}` };
    const sockets = [];
    try {
      // All three present: auth.token wins.
      let s = await mustConnect(server.url, {
        transports: ["websocket"],
        auth: { token: userToken("order-auth") },
        query: { token: userToken("order-query") },
        extraHeaders: headers,
      });
      sockets.push(s);
      await assertUser(s, "order-auth");
      // Query and header: the query wins.
      s = await mustConnect(server.url, { transports: ["websocket"], query: { token: userToken("order-query") }, extraHeaders: headers });
      sockets.push(s);
      await assertUser(s, "order-query");
      // Same with 2.x (no auth payload there).
      s = await mustConnect(server.url, { version: 2, transports: ["polling"], query: { token: userToken("order-query2") }, extraHeaders: headers });
      sockets.push(s);
      await assertUser(s, "order-query2");
    } finally {
      closeAll(sockets);
    }
  });

  it("forged signatures and wrong secrets are refused as invalid", async () => {
    const good = userToken("victim");
    const cases = {
      "payload swapped, signature kept": withPayload(good, { sub: "admin", role: "admin", exp: now() + 600 }),
      "signature altered": flipSignatureChar(good),
      "signature removed": good.slice(0, good.lastIndexOf(".") + 1),
      "signed with another secret": token({ sub: "victim" }, { secret: "some-other-secret-0123456789abcdef" }),
      "signed with the secret plus one char": token({ sub: "victim" }, { secret: `${SECRET}x` }),
      "HS512 with another secret": token({ sub: "victim" }, { alg: "HS512", secret: "some-other-secret-0123456789abcdef" }),
      // A forged token must not reveal whether it would be expired.
      "expired and signed with another secret": token({ sub: "victim", exp: now() - 30 }, { secret: "nope-nope-nope-nope-nope" }),
      "two segments only": good.split(".").slice(0, 2).join("."),
    };
    for (const [name, tok] of Object.entries(cases)) {
      await assert.rejects(connect(server.url, { token: tok, transports: ["websocket"] }), (e) => {
        assert.equal(e.message, INVALID, name);
        return true;
      });
    }
    // And through 2.x's query parameter.
    await refused(server.url, { version: 2, transports: ["websocket"], token: cases["payload swapped, signature kept"] }, INVALID);
  });

  it("alg: none is refused, with and without the trailing dot", async () => {
    const unsigned = token({ sub: "mallory", role: "admin" }, { alg: "none" }); // ends with "."
    assert.ok(unsigned.endsWith("."));
    const variants = {
      "none, trailing dot": unsigned,
      "none, no trailing dot": unsigned.slice(0, -1),
      "None, trailing dot": token({ sub: "mallory" }, { alg: "none", header: { alg: "None" } }),
      "none with the real signature of another token": `${unsigned}${userToken("mallory").split(".")[2]}`,
    };
    for (const [name, tok] of Object.entries(variants)) {
      for (const version of [4, 2]) {
        await assert.rejects(connect(server.url, { version, token: tok, transports: ["websocket"] }), (e) => {
          assert.equal(e.message, INVALID, `${name} (${version}.x)`);
          return true;
        });
      }
    }
  });

  it("a correctly signed token without sub or without exp is refused as invalid", async () => {
    const noSub = token({ name: "No Sub" });
    const noExp = token({ sub: "no-exp", exp: undefined });
    const stringExp = token({ sub: "str-exp", exp: String(now() + 600) });
    for (const version of [4, 2]) {
      await refused(server.url, { version, transports: ["websocket"], token: noSub }, INVALID);
      await refused(server.url, { version, transports: ["websocket"], token: noExp }, INVALID);
    }
    await refused(server.url, { transports: ["websocket"], token: stringExp }, INVALID);
  });

  it("there is no leeway on exp: a token expired two seconds ago is refused", async () => {
    // A typical JWT library default is 60 s of leeway; the contract says none.
    for (const version of [4, 2]) {
      await refused(server.url, { version, transports: ["websocket"], token: userToken("just-expired", { exp: now() - 2 }) }, EXPIRED);
    }
    // …while one that is still valid is accepted.
    const socket = await mustConnect(server.url, { transports: ["websocket"], token: userToken("not-yet", { exp: now() + 30 }) });
    closeAll(socket);
  });

  it("after all those refusals the server still serves valid 4.x and 2.x clients end to end", async () => {
    const sockets = [];
    try {
      for (const [i, version] of [4, 2].entries()) {
        const socket = await mustConnect(server.url, { version, token: userToken(`survivor-${version}`) });
        sockets.push(socket);
        await assertUser(socket, `survivor-${version}`);
        await provesDelivery(server, socket, `AUTH-HS-${i}`);
      }
    } finally {
      closeAll(sockets);
    }
  });
});

// ---------------------------------------------------------------------------

describe("RS256 with JWT_PUBLIC_KEY_FILE (no secret configured)", () => {
  let server;
  const { publicKey, privateKey } = crypto.generateKeyPairSync("rsa", { modulusLength: 2048 });
  const other = crypto.generateKeyPairSync("rsa", { modulusLength: 2048 });
  const pem = publicKey.export({ type: "spki", format: "pem" });
  const rs = (claims, key = privateKey) => token(claims, { alg: "RS256", key });

  before(async () => {
    const file = writeFile(tempDir(), "rsa-public.pem", pem);
    server = await startServer({ JWT_SECRET: undefined, JWT_PUBLIC_KEY_FILE: file });
  });
  after(() => server?.stop());

  it("accepts an RS256 token signed by the matching private key (4.x and 2.x)", async () => {
    const sockets = [];
    try {
      for (const [i, version] of [4, 2].entries()) {
        const socket = await mustConnect(server.url, { version, token: rs({ sub: `rsa-${version}`, branchId: "b1" }) });
        sockets.push(socket);
        await assertUser(socket, `rsa-${version}`);
        await provesDelivery(server, socket, `AUTH-RS-${i}`);
      }
    } finally {
      closeAll(sockets);
    }
  });

  it("refuses RS256 signed by another key, expired RS256 with the expiry message", async () => {
    await refused(server.url, { transports: ["websocket"], token: rs({ sub: "rsa-x" }, other.privateKey) }, INVALID);
    await refused(server.url, { version: 2, transports: ["polling"], token: rs({ sub: "rsa-x" }, other.privateKey) }, INVALID);
    await refused(server.url, { transports: ["websocket"], token: rs({ sub: "rsa-old", exp: now() - 30 }) }, EXPIRED);
    await refused(server.url, { transports: ["websocket"], token: withPayload(rs({ sub: "rsa-a" }), { sub: "rsa-admin", exp: now() + 600 }) }, INVALID);
  });

  it("refuses algorithm confusion: HS256/HS512 signed with the public key PEM text as the secret", async () => {
    const variants = [
      ["HS256", pem],
      ["HS256", pem.trim()],
      ["HS512", pem],
      ["HS256", Buffer.from(publicKey.export({ type: "pkcs1", format: "pem" }))],
    ];
    for (const [alg, secret] of variants) {
      for (const version of [4, 2]) {
        await assert.rejects(connect(server.url, { version, transports: ["websocket"], token: token({ sub: "mallory", role: "admin" }, { alg, secret }) }), (e) => {
          assert.equal(e.message, INVALID, `${alg} with the PEM as secret (${version}.x)`);
          return true;
        });
      }
    }
  });

  it("refuses HS256 (no secret configured), alg none and ES256 tokens", async () => {
    await refused(server.url, { transports: ["websocket"], token: userToken("hs") }, INVALID);
    await refused(server.url, { transports: ["websocket"], token: token({ sub: "none" }, { alg: "none" }) }, INVALID);
    const ec = crypto.generateKeyPairSync("ec", { namedCurve: "P-256" });
    await refused(server.url, { transports: ["websocket"], token: token({ sub: "ec" }, { alg: "ES256", key: ec.privateKey }) }, INVALID);
  });
});

// ---------------------------------------------------------------------------

describe("ES256 with an EC P-256 JWT_PUBLIC_KEY_FILE, beside JWT_SECRET", () => {
  let server;
  const { publicKey, privateKey } = crypto.generateKeyPairSync("ec", { namedCurve: "P-256" });
  const other = crypto.generateKeyPairSync("ec", { namedCurve: "P-256" });
  const pem = publicKey.export({ type: "spki", format: "pem" });
  const es = (claims, key = privateKey) => token(claims, { alg: "ES256", key });

  before(async () => {
    const file = writeFile(tempDir(), "ec-public.pem", pem);
    server = await startServer({ JWT_PUBLIC_KEY_FILE: file }); // JWT_SECRET stays set too
  });
  after(() => server?.stop());

  it("accepts ES256 tokens and, beside them, HS256 tokens signed with JWT_SECRET", async () => {
    const sockets = [];
    try {
      let s = await mustConnect(server.url, { token: es({ sub: "ec-4" }) });
      sockets.push(s);
      await assertUser(s, "ec-4");
      await provesDelivery(server, s, "AUTH-EC-0");
      s = await mustConnect(server.url, { version: 2, token: es({ sub: "ec-2" }) });
      sockets.push(s);
      await assertUser(s, "ec-2");
      await provesDelivery(server, s, "AUTH-EC-1");
      s = await mustConnect(server.url, { transports: ["websocket"], token: userToken("hs-beside") });
      sockets.push(s);
      await assertUser(s, "hs-beside");
    } finally {
      closeAll(sockets);
    }
  });

  it("refuses ES256 signed by another key, expired ES256, algorithm confusion and RS256", async () => {
    await refused(server.url, { transports: ["websocket"], token: es({ sub: "ec-x" }, other.privateKey) }, INVALID);
    await refused(server.url, { version: 2, transports: ["websocket"], token: es({ sub: "ec-x" }, other.privateKey) }, INVALID);
    await refused(server.url, { transports: ["websocket"], token: es({ sub: "ec-old", exp: now() - 30 }) }, EXPIRED);
    for (const secret of [pem, pem.trim()]) {
      await refused(server.url, { transports: ["websocket"], token: token({ sub: "mallory", role: "admin" }, { secret }) }, INVALID);
    }
    const rsa = crypto.generateKeyPairSync("rsa", { modulusLength: 2048 });
    await refused(server.url, { transports: ["websocket"], token: token({ sub: "rsa" }, { alg: "RS256", key: rsa.privateKey }) }, INVALID);
    await refused(server.url, { transports: ["websocket"], token: token({ sub: "none" }, { alg: "none" }) }, INVALID);
  });
});

// ---------------------------------------------------------------------------

describe("JWKS_URL: keys by kid, key rotation", () => {
  let server;
  let jwksServer;
  let jwks = { keys: [] };
  let fetches = 0;

  const rsa1 = crypto.generateKeyPairSync("rsa", { modulusLength: 2048 });
  const rsa2 = crypto.generateKeyPairSync("rsa", { modulusLength: 2048 });
  const ec1 = crypto.generateKeyPairSync("ec", { namedCurve: "P-256" });
  const stranger = crypto.generateKeyPairSync("rsa", { modulusLength: 2048 });
  const jwk = (pair, kid, alg) => ({ ...crypto.createPublicKey(pair.privateKey).export({ format: "jwk" }), kid, alg, use: "sig" });

  before(async () => {
    jwks = { keys: [jwk(rsa1, "rsa-key-1", "RS256"), jwk(ec1, "ec-key-1", "ES256")] };
    jwksServer = http.createServer((req, res) => {
      fetches++;
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify(jwks));
    });
    await new Promise((r) => jwksServer.listen(0, "127.0.0.1", r));
    const { port } = jwksServer.address();
    server = await startServer({ JWT_SECRET: undefined, JWKS_URL: `http://127.0.0.1:${port}/.well-known/jwks.json` });
  });
  after(async () => {
    await server?.stop();
    if (jwksServer) {
      const closed = new Promise((r) => jwksServer.close(r));
      jwksServer.closeAllConnections();
      await closed;
    }
  });

  it("accepts RS256 and ES256 tokens whose kid is in the key set (4.x and 2.x)", async () => {
    const sockets = [];
    try {
      let s = await mustConnect(server.url, { token: token({ sub: "jwks-rs" }, { alg: "RS256", key: rsa1.privateKey, kid: "rsa-key-1" }) });
      sockets.push(s);
      await assertUser(s, "jwks-rs");
      await provesDelivery(server, s, "AUTH-JWKS-0");
      s = await mustConnect(server.url, { version: 2, token: token({ sub: "jwks-es" }, { alg: "ES256", key: ec1.privateKey, kid: "ec-key-1" }) });
      sockets.push(s);
      await assertUser(s, "jwks-es");
      assert.ok(fetches >= 1, "the JWKS endpoint was fetched");
    } finally {
      closeAll(sockets);
    }
  });

  it("refuses an unknown kid, a known kid with the wrong key, and tokens with no usable key", async () => {
    const opts = { transports: ["websocket"] };
    await refused(server.url, { ...opts, token: token({ sub: "x" }, { alg: "RS256", key: stranger.privateKey, kid: "no-such-kid" }) }, INVALID);
    await refused(server.url, { ...opts, token: token({ sub: "x" }, { alg: "RS256", key: stranger.privateKey, kid: "rsa-key-1" }) }, INVALID);
    await refused(server.url, { version: 2, ...opts, token: token({ sub: "x" }, { alg: "RS256", key: stranger.privateKey, kid: "rsa-key-1" }) }, INVALID);
    // The EC key's kid used with an RS256 signature: the key type does not match.
    await refused(server.url, { ...opts, token: token({ sub: "x" }, { alg: "RS256", key: rsa1.privateKey, kid: "ec-key-1" }) }, INVALID);
    await refused(server.url, { ...opts, token: token({ sub: "x" }, { kid: "rsa-key-1" }) }, INVALID); // HS256, no secret configured
    await refused(server.url, { ...opts, token: token({ sub: "x" }, { alg: "none", kid: "rsa-key-1" }) }, INVALID);
    await refused(server.url, { ...opts, token: token({ sub: "x", exp: now() - 30 }, { alg: "RS256", key: rsa1.privateKey, kid: "rsa-key-1" }) }, EXPIRED);
  });

  it("accepts a key rotated in (new kid) within 15 s", async () => {
    const rotated = (sub) => token({ sub }, { alg: "RS256", key: rsa2.privateKey, kid: "rsa-key-2" });
    // Not yet published: refused.
    await refused(server.url, { transports: ["websocket"], token: rotated("rot-before") }, INVALID);
    // Rotate: the endpoint now serves the new key (and keeps the EC one).
    jwks = { keys: [jwk(rsa2, "rsa-key-2", "RS256"), jwk(ec1, "ec-key-1", "ES256")] };
    const started = Date.now();
    let socket;
    let last;
    while (!socket && Date.now() - started < 15000) {
      try {
        socket = await connect(server.url, { transports: ["websocket"], token: rotated("rot-after") });
      } catch (e) {
        last = e.message;
        assert.equal(last, INVALID, "while the new key is unknown the token is invalid, nothing else");
        await sleep(500);
      }
    }
    assert.ok(socket, `a token with the rotated-in kid was still refused after 15 s (last: ${last})`);
    try {
      await assertUser(socket, "rot-after");
      await provesDelivery(server, socket, "AUTH-JWKS-ROT");
      // 2.x too, now that the key is known.
      const s2 = await mustConnect(server.url, { version: 2, token: rotated("rot-after-2") });
      await assertUser(s2, "rot-after-2");
      closeAll(s2);
    } finally {
      closeAll(socket);
    }
  });
});

// ---------------------------------------------------------------------------

describe("JWT_ISSUER and JWT_AUDIENCE", () => {
  let server;
  const ISS = "https://issuer.e2e.example/pool-1";
  const AUD = "livehub-e2e-client";

  before(async () => (server = await startServer({ JWT_ISSUER: ISS, JWT_AUDIENCE: AUD })));
  after(() => server?.stop());

  it("accepts tokens whose iss and aud match (aud as a string or in a list)", async () => {
    const sockets = [];
    try {
      let s = await mustConnect(server.url, { token: token({ sub: "iss-ok", iss: ISS, aud: AUD }) });
      sockets.push(s);
      await assertUser(s, "iss-ok");
      await provesDelivery(server, s, "AUTH-ISS-0");
      s = await mustConnect(server.url, { version: 2, token: token({ sub: "iss-ok-2", iss: ISS, aud: AUD }) });
      sockets.push(s);
      await assertUser(s, "iss-ok-2");
      s = await mustConnect(server.url, { transports: ["websocket"], token: token({ sub: "aud-list", iss: ISS, aud: ["other-app", AUD] }) });
      sockets.push(s);
      await assertUser(s, "aud-list");
    } finally {
      closeAll(sockets);
    }
  });

  it("refuses a wrong or missing issuer or audience as invalid", async () => {
    const cases = {
      "wrong iss": { iss: "https://evil.example/pool-1", aud: AUD },
      "iss with a trailing slash": { iss: `${ISS}/`, aud: AUD },
      "missing iss": { aud: AUD },
      "wrong aud": { iss: ISS, aud: "some-other-client" },
      "aud list without ours": { iss: ISS, aud: ["a", "b"] },
      "missing aud": { iss: ISS },
      "neither": {},
    };
    for (const [name, claims] of Object.entries(cases)) {
      for (const version of [4, 2]) {
        await assert.rejects(connect(server.url, { version, transports: ["websocket"], token: token({ sub: "iss-bad", ...claims }) }), (e) => {
          assert.equal(e.message, INVALID, `${name} (${version}.x)`);
          return true;
        });
      }
    }
  });

  it("still serves a matching client after the refusals", async () => {
    const s = await mustConnect(server.url, { version: 2, transports: ["polling"], token: token({ sub: "iss-late", iss: ISS, aud: AUD }) });
    try {
      await assertUser(s, "iss-late");
      await provesDelivery(server, s, "AUTH-ISS-1");
    } finally {
      closeAll(s);
    }
  });
});
