// The Node peer for livehub's benchmarks: a socket.io 4.x server with the
// slice of livehub's contract that the scenarios use, written the way a Node
// team would write it. One process (a Node team would need the Redis adapter
// and sticky sessions to use more), HS256 tokens checked in `io.use`, and a
// controller route `POST /api/v1/emit` that broadcasts with `io.to(rooms)`.
//
// Plain node:http instead of express: the router is three routes, and it
// keeps the peer's HTTP path as fast as Node allows, so the comparison does
// not flatter livehub.
//
// Configuration: HOST, PORT, JWT_SECRET, API_KEYS (comma-separated).
'use strict';

const http = require('node:http');
const { Server } = require('socket.io');
const jwt = require('jsonwebtoken');

const HOST = process.env.HOST || '127.0.0.1';
const PORT = Number(process.env.PORT || 3000);
const JWT_SECRET = process.env.JWT_SECRET;
const API_KEYS = new Set((process.env.API_KEYS || '').split(',').map((k) => k.trim()).filter(Boolean));
if (!JWT_SECRET || API_KEYS.size === 0) {
  console.error('JWT_SECRET and API_KEYS are required');
  process.exit(1);
}

// The contract's default rooms, for the events the benchmarks emit.
const SHIPMENT_EVENTS = new Set(['shipment:updated', 'shipment:rejected', 'document:uploaded', 'inspection:status_changed']);
const EVENT_NAME = /^[A-Za-z][A-Za-z0-9:_.-]{0,99}$/;
const ROOM_ID = /^[A-Za-z0-9:_.@-]{1,190}$/;

function defaultRooms(event, data) {
  if (SHIPMENT_EVENTS.has(event) && data.shipmentId != null) return [`shipment:${data.shipmentId}`];
  return [];
}

// ---------------------------------------------------------------- HTTP API

function send(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

function fail(res, status, code, message) {
  send(res, status, { ok: false, error: { code, message } });
}

function readJson(req, limit, done) {
  const chunks = [];
  let size = 0;
  req.on('data', (c) => {
    size += c.length;
    if (size <= limit) chunks.push(c);
  });
  req.on('end', () => {
    if (size > limit) return done(new Error('too_large'));
    try {
      done(null, JSON.parse(Buffer.concat(chunks).toString('utf8')));
    } catch {
      done(new Error('bad_request'));
    }
  });
}

function isController(req) {
  const h = req.headers.authorization || '';
  return h.startsWith('Bearer ') && API_KEYS.has(h.slice(7).trim());
}

function emit(req, res) {
  if (!isController(req)) return fail(res, 401, 'unauthorized', 'API key required');
  readJson(req, 1 << 20, (err, body) => {
    if (err) return fail(res, err.message === 'too_large' ? 413 : 400, err.message, 'bad body');
    const { event, data = {}, user } = body || {};
    if (typeof event !== 'string' || !EVENT_NAME.test(event)) return fail(res, 400, 'bad_request', '`event` is invalid');
    if (data === null || typeof data !== 'object' || Array.isArray(data)) return fail(res, 400, 'bad_request', '`data` must be an object');
    let rooms = Array.isArray(body.rooms) ? body.rooms : typeof body.rooms === 'string' ? [body.rooms] : [];
    if (user != null) rooms.push(`user:${user}`);
    if (rooms.length === 0) rooms = defaultRooms(event, data);
    if (rooms.length === 0) return fail(res, 400, 'bad_request', 'no target');
    const payload = { ...data, type: event, timestamp: data.timestamp || new Date().toISOString() };
    io.to(rooms).emit(event, payload);
    send(res, 202, { ok: true, rooms });
  });
}

const server = http.createServer((req, res) => {
  const path = req.url.split('?')[0];
  if (req.method === 'POST' && path === '/api/v1/emit') return emit(req, res);
  if (req.method === 'GET' && path === '/health') {
    return send(res, 200, { status: 'OK', ready: true, connections: io.engine.clientsCount, uptimeSeconds: Math.floor(process.uptime()) });
  }
  fail(res, 404, 'not_found', 'no such route');
});

// ---------------------------------------------------------------- Socket.IO

const io = new Server(server);

io.use((socket, next) => {
  const token = socket.handshake.auth && socket.handshake.auth.token;
  if (!token) return next(new Error('unauthorized: missing token'));
  jwt.verify(token, JWT_SECRET, { algorithms: ['HS256'] }, (err, claims) => {
    if (err) return next(new Error(err.name === 'TokenExpiredError' ? 'unauthorized: token expired' : 'unauthorized: invalid token'));
    if (!claims || typeof claims.sub !== 'string') return next(new Error('unauthorized: invalid token'));
    socket.data.user = claims;
    next();
  });
});

io.on('connection', (socket) => {
  const { sub, branchId } = socket.data.user;
  // The automatic rooms, as livehub joins them.
  socket.join(`user:${sub}`);
  if (branchId != null) socket.join(`branch:${branchId}`);

  socket.on('join:shipment', (payload, ack) => {
    const reply = typeof ack === 'function' ? ack : () => {};
    const id = payload && payload.shipmentId;
    if ((typeof id !== 'string' && typeof id !== 'number') || !ROOM_ID.test(String(id))) {
      return reply({ ok: false, error: { code: 'bad_request', message: '`shipmentId` is required' } });
    }
    const room = `shipment:${id}`;
    socket.join(room);
    const viewers = io.sockets.adapter.rooms.get(room)?.size ?? 1;
    reply({ ok: true, room, viewers });
  });

  socket.on('leave:shipment', (payload, ack) => {
    const id = payload && payload.shipmentId;
    if (id != null) socket.leave(`shipment:${id}`);
    if (typeof ack === 'function') ack({ ok: true });
  });
});

server.listen(PORT, HOST, () => {
  console.log(`node peer listening on http://${HOST}:${server.address().port} (pid ${process.pid})`);
});

function shutdown() {
  io.close();
  server.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 3000).unref();
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
