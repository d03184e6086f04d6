// The Socket.IO Admin UI's server side on the /admin namespace, driven with
// socket.io-client exactly as the UI (`@socket.io/admin-ui`) drives it:
// credentials checked against a bcrypt hash, `session`, `config`,
// `all_sockets` and `server_stats`, and the `join`, `leave`, `_disconnect` and
// `emit` commands acting on real user sockets. (The UI itself, in Chromium, is
// in web-demo/tests/admin-ui.e2e.mjs.)
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { io } from "socket.io-client";
import { closeAll, collect, connect, emit, http, next, nothing, sleep, startServer, until, userToken } from "../lib/harness.mjs";
import { clusterName, createDatabase, services, startNode } from "../lib/cluster.mjs";

// bcrypt (cost 4, to keep the test quick) of "correct horse battery".
const PASSWORD = "correct horse battery";
const HASH = "$2a$04$dcvyym/mZ9P2NhpO7rofl.ODQ1OJOv2pjpUszW1LM142pmI23hG7i";
const CREDENTIALS = { ADMIN_USERNAME: "ops", ADMIN_PASSWORD_HASH: HASH };

/** An admin connection with its listeners attached before CONNECT, as the UI's store does. */
function admin(server, auth) {
  const socket = io(`${server.url}/admin`, { auth, forceNew: true, reconnection: false, transports: ["websocket"] });
  const got = { session: [], config: [], all_sockets: [], server_stats: [], socket_connected: [], socket_disconnected: [], room_joined: [], room_left: [] };
  for (const ev of Object.keys(got)) socket.on(ev, (...args) => got[ev].push(args));
  const ready = new Promise((resolve, reject) => {
    socket.once("connect", () => resolve(socket));
    socket.once("connect_error", (e) => {
      socket.close();
      reject(e);
    });
  });
  return { socket, got, ready };
}

describe("the /admin namespace", () => {
  it("is closed when no admin credentials are configured, and the UI's files are not served", async () => {
    const server = await startServer();
    try {
      await assert.rejects(admin(server, {}).ready, { message: "invalid credentials" });
      await assert.rejects(admin(server, { username: "ops", password: PASSWORD }).ready, { message: "invalid credentials" });
      assert.equal((await http(server, "GET", "/admin/")).status, 404);
    } finally {
      await server.stop();
    }
  });

  it("refuses configuration that cannot work: a username without a hash, a hash that is not bcrypt's", async () => {
    for (const env of [{ ADMIN_USERNAME: "ops" }, { ADMIN_USERNAME: "ops", ADMIN_PASSWORD_HASH: "hunter2" }]) {
      await assert.rejects(startServer(env), /ADMIN_PASSWORD_HASH/);
    }
  });

  it("is open in dev mode with generated secrets, and closed in dev mode beside real ones", async () => {
    const dev = await startServer({ JWT_SECRET: undefined, API_KEYS: undefined }, { args: ["--dev"] });
    try {
      const a = admin(dev, {});
      await a.ready;
      await until(() => a.got.config.length === 1, { what: "config" });
      a.socket.close();
    } finally {
      await dev.stop();
    }
    const beside = await startServer({}, { args: ["--dev"] });
    try {
      await assert.rejects(admin(beside, {}).ready, { message: "invalid credentials" });
    } finally {
      await beside.stop();
    }
  });
});

describe("the Admin UI protocol, with credentials", () => {
  let server;
  let user;
  const userTok = userToken("ada", { branchId: "north", role: "manager" });
  before(async () => {
    server = await startServer({ ...CREDENTIALS, NODE_ID: "admin-node-1" });
    // The token travels in the query and in auth: neither may reach the UI.
    user = await connect(server.url, { token: userTok, query: { token: userTok }, transports: ["websocket"] });
    await new Promise((r) => user.emit("join:shipment", { shipmentId: "ADM" }, r));
  });
  after(async () => {
    closeAll(user);
    await server?.stop();
  });

  it("refuses a wrong password, a wrong name and an unknown session with the message the UI recognises", async () => {
    for (const auth of [{ username: "ops", password: "wrong" }, { username: "Ops", password: PASSWORD }, { sessionId: "deadbeef" }, {}]) {
      await assert.rejects(admin(server, auth).ready, { message: "invalid credentials" }, JSON.stringify(auth));
    }
  });

  it("after a login: session, config, then this node's sockets with their rooms and no credentials; stats every 2 s", async () => {
    const a = admin(server, { username: "ops", password: PASSWORD });
    await a.ready;
    await until(() => a.got.all_sockets.length >= 1, { what: "all_sockets" });
    assert.equal(a.got.session.length, 1);
    assert.match(a.got.session[0][0], /^[0-9a-f]{32}$/);
    assert.ok(a.got.config[0][0].supportedFeatures.includes("DISCONNECT"));
    const [sockets] = a.got.all_sockets[0];
    const ada = sockets.find((s) => s.id === user.id);
    assert.ok(ada, `the user's socket is listed: ${JSON.stringify(sockets).slice(0, 300)}`);
    assert.equal(ada.nsp, "/");
    assert.equal(ada.transport, "websocket");
    assert.equal(ada.clientId, user.id.slice(0, 12));
    assert.equal(ada.data.userId, "ada");
    for (const room of ["user:ada", "branch:north", "shipment:ADM"]) assert.ok(ada.rooms.includes(room), `${room} in ${ada.rooms}`);
    assert.ok(Number.isFinite(new Date(ada.handshake.issued).getTime()));
    assert.equal(ada.handshake.address, "127.0.0.1");
    assert.ok(!JSON.stringify(sockets).includes(userTok.split(".")[2]), "the token is not shown");
    await until(() => a.got.server_stats.length >= 1, { what: "server_stats", timeout: 5000 });
    const [stats] = a.got.server_stats[0];
    assert.equal(stats.serverId, "admin-node-1");
    assert.ok(stats.clientsCount >= 1);
    assert.deepEqual(stats.namespaces.map((n) => n.name), ["/", "/admin"]);
    // A reload comes back with the session id instead of the password.
    const again = admin(server, { sessionId: a.got.session[0][0] });
    await again.ready;
    closeAll(a.socket, again.socket);
  });

  it("join and leave act on the socket's real rooms; emit goes through the log; _disconnect ends the socket", async () => {
    const a = admin(server, { username: "ops", password: PASSWORD });
    await a.ready;
    // join: a controller's emit to the room now reaches the user.
    a.socket.emit("join", "/", "channel:ops", user.id);
    await until(() => a.got.room_joined.some(([nsp, room, id, at]) => nsp === "/" && room === "channel:ops" && id === user.id && Date.parse(at) > 0), {
      what: "room_joined for the joined room",
      timeout: 5000,
    });
    const notes = collect(user, "ops:note");
    assert.equal((await emit(server, { event: "ops:note", rooms: ["channel:ops"], data: { n: 1 } })).status, 202);
    await until(() => notes.length === 1, { what: "the controller's emit to the joined room" });
    // emit: logged, with an offset, to the room.
    a.socket.emit("emit", "/", "channel:ops", "ops:note", { n: 2 });
    await until(() => notes.length === 2, { what: "the admin's emit" });
    assert.match(notes[1].offset, /^[a-z0-9]+-\d+$/, "an admin emit is logged like any other");
    // leave: the room's events stop reaching the user.
    a.socket.emit("leave", "/", "channel:ops", user.id);
    await until(() => a.got.room_left.some(([, room, id]) => room === "channel:ops" && id === user.id), { what: "room_left", timeout: 5000 });
    assert.equal((await emit(server, { event: "ops:note", rooms: ["channel:ops"], data: { n: 3 } })).status, 202);
    await nothing(user, "ops:note", 500);
    assert.equal(notes.length, 2);
    // A socket that connects now is announced.
    const late = await connect(server.url, { token: userToken("bo"), transports: ["websocket"] });
    await until(() => a.got.socket_connected.some(([s]) => s.id === late.id && s.data.userId === "bo"), { what: "socket_connected", timeout: 5000 });
    // _disconnect one socket.
    const id = user.id; // the client forgets it on disconnect
    const gone = next(user, "disconnect");
    a.socket.emit("_disconnect", "/", false, user.id);
    assert.equal(await gone, "io server disconnect");
    await until(() => a.got.socket_disconnected.some(([nsp, sid]) => nsp === "/" && sid === id), { what: "socket_disconnected", timeout: 5000 });
    closeAll(a.socket, late);
  });
});

const clustered = services();

describe("Admin UI commands in a two-node cluster", { skip: clustered.skip }, () => {
  let a;
  let b;
  before(async () => {
    const db = createDatabase(clustered.pg);
    const cluster = clusterName();
    a = await startNode({ db, redis: clustered.redis, cluster, node: "admin-a", env: CREDENTIALS });
    b = await startNode({ db, redis: clustered.redis, cluster, node: "admin-b", env: CREDENTIALS });
  });
  after(async () => {
    await a?.stop();
    await b?.stop();
  });

  it("join, emit to and _disconnect a socket on the other node, named by its id", async () => {
    const far = await connect(b.url, { token: userToken("far-away"), transports: ["websocket"] });
    const adm = admin(a, { username: "ops", password: PASSWORD });
    await adm.ready;
    // The UI lists it from the other node's tick, then joins it to a room.
    await until(() => adm.got.socket_connected.some(([s]) => s.id === far.id), { what: "the other node's socket listed", timeout: 8000 });
    adm.socket.emit("join", "/", "channel:far", far.id);
    await until(() => adm.got.room_joined.some(([, room, id]) => room === "channel:far" && id === far.id), {
      what: "room_joined from the other node",
      timeout: 8000,
    });
    const notes = collect(far, "ops:note");
    assert.equal((await emit(a, { event: "ops:note", rooms: ["channel:far"], data: { n: 1 } })).status, 202);
    await until(() => notes.length === 1, { what: "an emit to the room it was joined to", timeout: 5000 });
    const direct = next(far, "ops:direct", { timeout: 5000 });
    adm.socket.emit("emit", "/", far.id, "ops:direct", { n: 2 });
    assert.deepEqual(await direct, { n: 2 });
    const gone = next(far, "disconnect", { timeout: 5000 });
    adm.socket.emit("_disconnect", "/", false, far.id);
    assert.equal(await gone, "io server disconnect");
    closeAll(adm.socket, far);
  });
});
