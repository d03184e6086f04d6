// livehub demo: an operations board fed by Socket.IO, with a controller panel
// that emits events through livehub's HTTP API, so one visitor plays both the
// backend and the people watching the board.
//
// How state stays correct:
// - At sign-in the page reads its branch room's event log once
//   (GET /api/v1/events) on top of the fixed seed data.
// - Then it connects with `auth` as a function, so every (re)connect sends the
//   last `offset` it saw; livehub replays what was missed (`replayed: true`).
//   The page never refetches after a reconnect: it counts the replayed events.
// - The open shipment's room is re-joined with `since` after a reconnect.
// - Events are deduplicated by `offset` (an event may reach a socket through
//   two rooms, or through the log and a replay).

import { io } from "socket.io-client";
import "./style.css";
import * as api from "./api.js";
import {
  SHIPMENTS,
  ORDERS,
  MACHINES,
  SHIPMENT_STATUSES,
  ORDER_STATUSES,
  MACHINE_STATUSES,
  SAMPLE_DOCUMENTS,
  label,
} from "./seed.js";
import { h, byTestId as $, fill, initials, colorClass, clock, flash, randomId, bytes } from "./dom.js";
import { startLab, setLabToken, stopLab } from "./lab.js";

const USER_KEY = "livehub-demo:user";
const ACK_TIMEOUT_MS = 10_000;
const ACTIVITY_MAX = 40;

const S = {
  config: null,
  users: new Map(),
  user: null,
  token: null,
  socket: null,
  lastOffset: null,
  offsetAtDisconnect: null,
  seen: new Set(),
  connectedOnce: false,
  replay: { count: 0, total: 0, reconnect: false },
  shipments: new Map(),
  orders: new Map(),
  machines: new Map(),
  presence: new Map(),
  open: null,
  uploads: new Map(),
  sampleIndex: 0,
};

// ---------------------------------------------------------------------------
// Offsets

function noteOffset(offset) {
  if (typeof offset !== "string" || !offset) return;
  if (!S.lastOffset || offsetAfter(offset, S.lastOffset)) S.lastOffset = offset;
}

/** Offsets of one log sort as strings (`{epoch}-{seq, zero-padded}`). */
function offsetAfter(a, b) {
  if (!b) return true;
  if (!a) return false;
  return a.length === b.length ? a > b : a.length > b.length;
}

function shortOffset(offset) {
  if (typeof offset !== "string") return String(offset ?? "—");
  const seq = offset.split("-").pop();
  return seq ? `#${Number(seq) || seq}` : offset;
}

// ---------------------------------------------------------------------------
// Connection

function connect() {
  const socket = io(location.origin, {
    // A function, so each reconnect sends the offset seen so far.
    auth: (cb) => cb(S.lastOffset ? { token: S.token, offset: S.lastOffset } : { token: S.token }),
    reconnectionDelay: 500,
    reconnectionDelayMax: 4000,
  });
  S.socket = socket;
  setConn("connecting");

  socket.on("connect", onConnect);
  socket.on("disconnect", onDisconnect);
  socket.on("connect_error", onConnectError);
  socket.io.on("open", hookEngine);
  socket.io.on("reconnect_attempt", () => setConn(isBrowserOnline() ? "reconnecting" : "offline"));
  socket.onAny(onServerEvent);
}

function isBrowserOnline() {
  return navigator.onLine !== false;
}

function onConnect() {
  const again = S.connectedOnce;
  S.connectedOnce = true;
  setConn("connected");
  hookEngine();
  S.replay.count = 0;
  S.replay.reconnect = again;
  renderReplay();
  if (S.open) joinOpen(S.open, again ? S.offsetAtDisconnect : null);
  const status = $("presence-select").value;
  if (status !== "online") S.socket.emit("presence:set", { status });
}

function onDisconnect(reason) {
  S.offsetAtDisconnect = S.lastOffset;
  setTransport(null);
  $("replay-info").hidden = true;
  if (S.open) {
    S.open.joined = false;
    S.open.typing.clear();
    renderTyping();
  }
  if (reason === "io server disconnect") {
    // The server closed this socket on purpose (an operator disconnected the
    // user, or the token ran out): socket.io-client does not come back by
    // itself. The badge offers to reconnect; the offset replays what was missed.
    setConn("error", "disconnected · tap to reconnect");
    return;
  }
  setConn(isBrowserOnline() ? "reconnecting" : "offline");
}

function onConnectError(err) {
  const msg = String(err?.message || "");
  if (msg === "unauthorized: token expired") {
    refreshToken()
      .then(() => S.socket?.connect())
      .catch((e) => setConn("error", `error: ${e.message}`));
  } else if (msg.startsWith("unauthorized")) {
    setConn("error", msg);
  } else {
    setConn(isBrowserOnline() ? "reconnecting" : "offline");
  }
}

async function refreshToken() {
  const { token } = await api.devToken(S.user.id);
  S.token = token;
  return token;
}

function hookEngine() {
  const engine = S.socket?.io?.engine;
  if (!engine) return;
  setTransport(engine.transport?.name);
  if (!engine.__livehubHooked) {
    engine.__livehubHooked = true;
    engine.on("upgrade", (transport) => setTransport(transport?.name));
  }
}

// The browser knows it lost the network before any heartbeat does: close the
// socket at once, and reconnect (with the offset) as soon as it is back.
window.addEventListener("offline", () => {
  if (!S.socket) return;
  // Also when already disconnected: this stops socket.io-client's own
  // reconnection attempts, which would only fail until the network is back.
  S.socket.disconnect();
  setConn("offline");
});
window.addEventListener("online", () => {
  if (!S.socket) return;
  if (!S.socket.connected) {
    setConn("reconnecting");
    S.socket.connect();
  }
});

const CONN_TEXT = {
  idle: "not connected",
  connecting: "connecting…",
  connected: "connected",
  reconnecting: "reconnecting…",
  offline: "offline",
  error: "error",
};

function setConn(state, detail) {
  const el = $("conn-status");
  el.dataset.state = state;
  $("conn-text").textContent = detail || CONN_TEXT[state];
  el.title = detail || CONN_TEXT[state];
}

function setTransport(name) {
  const el = $("conn-transport");
  el.dataset.transport = name || "";
  el.textContent = name || "—";
}

function renderReplay() {
  const el = $("replay-info");
  const { count, total, reconnect } = S.replay;
  el.dataset.count = String(count);
  el.dataset.total = String(total);
  if (!reconnect && count === 0) {
    el.hidden = true;
    return;
  }
  el.hidden = false;
  el.dataset.state = count > 0 ? "caught-up" : "nothing-missed";
  const text = reconnect ? "Reconnected" : "Connected";
  fill(
    el,
    h("strong", {}, text),
    count > 0
      ? ` — caught up on ${count} missed event${count === 1 ? "" : "s"} by replay, no refetch needed.`
      : " — nothing was missed.",
  );
}

// ---------------------------------------------------------------------------
// Server events

const SPECIAL = {
  "user:viewing": onViewing,
  "user:left": onViewerGone,
  "user:disconnected": onViewerGone,
  "viewers:count": onViewersCount,
  typing: onTyping,
  "chat:message": onChatMessage,
  "chat:read": onChatRead,
  presence: onPresence,
  pong: () => {},
  "replay:reset": onReplayReset,
  "auth:expired": onAuthExpired,
};

function onServerEvent(name, payload) {
  const p = payload && typeof payload === "object" ? payload : { value: payload };
  if (typeof p.offset === "string") {
    if (S.seen.has(p.offset)) return; // already applied (two rooms, or log + replay)
    S.seen.add(p.offset);
    noteOffset(p.offset);
  }
  if (p.replayed === true) {
    S.replay.count += 1;
    S.replay.total += 1;
    renderReplay();
  }
  const special = SPECIAL[name];
  if (special) {
    special(p);
    return;
  }
  applyEvent(name, p, true);
}

/** Applies a business event. `live` is false for events read from the log at sign-in. */
function applyEvent(name, p, live) {
  if (name.startsWith("shipment:") || name === "inspection:status_changed") shipmentEvent(name, p, live);
  else if (name === "document:uploaded") documentEvent(p, live);
  else if (name.startsWith("order:")) orderEvent(name, p, live);
  else if (name.startsWith("machine:")) machineEvent(name, p, live);
  else if (name === "upload_progress") {
    if (live) uploadProgress(p);
  } else if (name === "notification") {
    if (live) toast(p.severity, p.title || "Notification", p.message);
  } else if (name === "notification:broadcast") {
    if (live) toast(p.severity || "info", "Broadcast", p.message);
  }
  if (live && !(name === "upload_progress" && Number(p.progress) < 100)) addActivity(name, p);
}

function shipmentEvent(name, p, live) {
  const id = p.shipmentId != null ? String(p.shipmentId) : "";
  if (!id) return;
  const s = ensureShipment(id, p);
  // A replayed or logged event older than what the row shows changes nothing.
  if (p.offset && s.offset && !offsetAfter(p.offset, s.offset)) return;
  if (p.offset) s.offset = p.offset;
  if (name === "shipment:updated") {
    const status = p.status ?? p.shipment?.status;
    if (status) s.status = String(status);
    const eta = p.eta ?? p.shipment?.eta;
    if (eta) s.eta = String(eta);
  } else if (name === "shipment:rejected") {
    s.status = "rejected";
  } else if (name === "inspection:status_changed") {
    s.inspection = p.status ?? p.inspection?.status;
  }
  s.updatedBy = p.changedBy ?? p.updatedBy ?? s.updatedBy;
  s.updatedAt = p.timestamp;
  renderShipmentRow(s, live);
  if (S.open?.id === id) renderDetailHead();
}

function documentEvent(p, live) {
  const id = p.shipmentId != null ? String(p.shipmentId) : "";
  if (!id || !p.document) return;
  const s = ensureShipment(id, p);
  s.documents.push({ ...p.document, offset: p.offset, at: p.timestamp });
  renderShipmentRow(s, live);
  if (S.open?.id === id) renderDocuments();
}

function ensureShipment(id, p) {
  let s = S.shipments.get(id);
  if (!s) {
    s = {
      id,
      branchId: p.branchId ?? S.user.branchId,
      poNumber: p.shipment?.poNumber ?? "—",
      supplier: p.shipment?.supplier ?? "—",
      route: p.shipment?.route ?? "—",
      eta: p.shipment?.eta ?? "",
      status: p.status ?? "booked",
      documents: [],
      offset: null,
    };
    S.shipments.set(id, s);
    renderControllerOptions();
  }
  return s;
}

function orderEvent(name, p, live) {
  const id = p.orderId != null ? String(p.orderId) : "";
  if (!id) return;
  let o = S.orders.get(id);
  if (!o) {
    o = {
      id,
      branchId: p.branchId ?? S.user.branchId,
      customer: p.customer ?? "—",
      item: p.item ?? "—",
      priority: p.priority ?? "normal",
      status: p.status ?? "pending",
      offset: null,
    };
    S.orders.set(id, o);
    renderControllerOptions();
  }
  if (p.offset && o.offset && !offsetAfter(p.offset, o.offset)) return;
  if (p.offset) o.offset = p.offset;
  if (name === "order:status_changed") o.status = String(p.newStatus ?? p.status ?? o.status);
  else if (name === "order:priority_changed") o.priority = String(p.newPriority ?? p.priority ?? o.priority);
  else if (name === "order:completed") o.status = "completed";
  else if (name === "order:assigned") o.assignee = p.assignee ?? p.operatorId ?? p.machineId;
  o.updatedAt = p.timestamp;
  renderOrderRow(o, live);
}

function machineEvent(name, p, live) {
  const id = p.machineId != null ? String(p.machineId) : "";
  if (!id) return;
  let m = S.machines.get(id);
  if (!m) {
    m = { id, branchId: p.branchId ?? S.user.branchId, name: p.name ?? "Machine", status: "idle", offset: null };
    S.machines.set(id, m);
    renderControllerOptions();
  }
  if (p.offset && m.offset && !offsetAfter(p.offset, m.offset)) return;
  if (p.offset) m.offset = p.offset;
  if (name === "machine:status_changed") m.status = String(p.status ?? m.status);
  else if (name === "machine:error") m.status = "error";
  else if (name === "machine:order_started" || name === "machine:order_resumed") {
    m.status = "running";
    m.orderId = p.orderId ?? m.orderId;
  } else if (name === "machine:order_paused") m.status = "idle";
  else if (name === "machine:order_completed") m.orderId = null;
  m.updatedAt = p.timestamp;
  renderMachine(m, live);
}

function onReplayReset(p) {
  // The offset could not be replayed from (expired, unknown log…): refetch.
  addActivity("replay:reset", p);
  if (p.room && S.open && p.room === S.open.room) {
    loadHistory(S.open);
  } else {
    loadLog().then(() => noteOffset(p.latestOffset));
  }
}

function onAuthExpired() {
  refreshToken()
    .then((token) => S.socket?.emit("auth:refresh", { token }))
    .catch(() => {});
}

function onPresence(p) {
  if (!p.userId) return;
  S.presence.set(String(p.userId), String(p.status || "online"));
  renderViewers();
}

// ---------------------------------------------------------------------------
// Boards

function pill(status, testid) {
  return h("span", { class: `pill st-${status}`, testid, dataset: { status } }, label(status));
}

function renderShipmentRow(s, highlight) {
  const tr = h(
    "tr",
    { testid: `shipment-row-${s.id}`, class: S.open?.id === s.id ? "is-open" : null, dataset: { status: s.status } },
    h("td", {}, h("div", { class: "id" }, s.id), h("div", { class: "sub muted" }, s.poNumber)),
    h("td", { class: "opt" }, s.supplier),
    h("td", { class: "opt-wide muted" }, s.route),
    h("td", { class: "opt nowrap" }, s.eta || "—"),
    h("td", { class: "opt num", testid: `shipment-docs-${s.id}` }, String(s.documents.length)),
    h("td", {}, pill(s.status, `shipment-status-${s.id}`)),
    h(
      "td",
      { class: "actions" },
      h(
        "button",
        {
          type: "button",
          class: "btn small",
          testid: `open-shipment-${s.id}`,
          "aria-label": `Open ${s.id}`,
          onclick: () => openShipment(s.id),
        },
        "Open",
      ),
    ),
  );
  upsertRow($("shipments-body"), `shipment-row-${s.id}`, tr, highlight);
}

function renderOrderRow(o, highlight) {
  const tr = h(
    "tr",
    { testid: `order-row-${o.id}`, dataset: { status: o.status } },
    h("td", {}, h("div", { class: "id" }, o.id), h("div", { class: "sub muted only-narrow" }, o.customer)),
    h("td", { class: "opt" }, o.customer),
    h("td", { class: "opt-wide muted" }, o.item),
    h("td", { class: "opt" }, h("span", { class: `prio prio-${o.priority}` }, label(o.priority))),
    h("td", {}, pill(o.status, `order-status-${o.id}`)),
  );
  upsertRow($("orders-body"), `order-row-${o.id}`, tr, highlight);
}

function renderMachine(m, highlight) {
  const tile = h(
    "div",
    { class: `tile st-${m.status}`, testid: `machine-${m.id}`, dataset: { status: m.status } },
    h("div", { class: "tile-top" }, h("span", { class: "tile-id" }, m.id), pill(m.status, `machine-status-${m.id}`)),
    h("div", { class: "tile-name" }, m.name),
    h("div", { class: "tile-foot muted small" }, m.updatedAt ? `changed ${clock(m.updatedAt)}` : "no change yet"),
  );
  upsertRow($("machines"), `machine-${m.id}`, tile, highlight);
}

function upsertRow(container, testid, el, highlight) {
  const old = container.querySelector(`:scope > [data-testid="${testid}"]`);
  if (old) old.replaceWith(el);
  else container.append(el);
  if (highlight) flash(el);
}

function renderBoards() {
  $("shipments-body").replaceChildren();
  $("orders-body").replaceChildren();
  $("machines").replaceChildren();
  for (const s of S.shipments.values()) renderShipmentRow(s, false);
  for (const o of S.orders.values()) renderOrderRow(o, false);
  for (const m of S.machines.values()) renderMachine(m, false);
}

function addActivity(name, p) {
  const list = $("activity");
  const item = h(
    "li",
    { testid: "activity-item", dataset: { event: name, replayed: p.replayed ? "true" : "false" } },
    h("time", { class: "muted" }, clock(p.timestamp)),
    h("code", { class: "ev" }, name),
    h("span", { class: "summary" }, summarize(name, p)),
    p.replayed ? h("span", { class: "tag replayed", title: "delivered by replay after a reconnect" }, "replayed") : null,
    p.offset ? h("span", { class: "offset muted", title: p.offset }, shortOffset(p.offset)) : null,
  );
  list.prepend(item);
  while (list.children.length > ACTIVITY_MAX) list.lastElementChild.remove();
}

function summarize(name, p) {
  switch (name) {
    case "shipment:updated":
      return `${p.shipmentId} → ${label(p.status ?? p.shipment?.status)}${p.changedBy ? ` (by ${p.changedBy})` : ""}`;
    case "shipment:rejected":
      return `${p.shipmentId} rejected`;
    case "document:uploaded":
      return `${p.shipmentId}: ${p.document?.fileName ?? "document"}`;
    case "order:status_changed":
      return `${p.orderId}: ${label(p.oldStatus)} → ${label(p.newStatus)}`;
    case "order:created":
      return `${p.orderId} created`;
    case "machine:status_changed":
      return `${p.machineId} ${label(p.status)}`;
    case "equipment_update":
      return `${p.equipmentId} ${String(p.status ?? "").replace("_", " ")} (also on the lab panel, over /ws)`;
    case "notification":
      return `${p.title ?? ""}: ${p.message ?? ""}`;
    case "notification:broadcast":
      return String(p.message ?? "");
    case "upload_progress":
      return `${p.fileName ?? p.uploadId} uploaded`;
    case "replay:reset":
      return `log reset (${p.reason}), refetched`;
    default: {
      const { type, timestamp, offset, replayed, ...rest } = p;
      const text = JSON.stringify(rest);
      return text.length > 80 ? `${text.slice(0, 77)}…` : text;
    }
  }
}

// ---------------------------------------------------------------------------
// Toasts and uploads

function toast(severity, title, message) {
  const sev = ["info", "success", "warning", "error"].includes(severity) ? severity : "info";
  const el = h(
    "div",
    { class: `toast ${sev}`, testid: "toast", role: sev === "error" ? "alert" : "status", dataset: { severity: sev } },
    h("div", { class: "toast-text" }, h("strong", {}, title), message ? h("span", {}, message) : null),
    h("button", { type: "button", class: "toast-close", "aria-label": "Dismiss", onclick: () => el.remove() }, "×"),
  );
  $("toasts").append(el);
  setTimeout(() => el.remove(), 8000);
}

function uploadProgress(p) {
  const id = String(p.uploadId ?? "");
  if (!id) return;
  const progress = Math.max(0, Math.min(100, Number(p.progress) || 0));
  let u = S.uploads.get(id);
  if (!u) {
    const bar = h("progress", { max: "100", value: "0", "aria-label": `Upload ${p.fileName ?? id}` });
    const pct = h("span", { class: "upload-pct" }, "0%");
    const el = h(
      "div",
      { class: "upload", testid: "upload", dataset: { uploadId: id, progress: "0" } },
      h("div", { class: "upload-head" }, h("span", { class: "upload-name" }, p.fileName ?? id), pct),
      bar,
    );
    u = { el, bar, pct, progress: -1 };
    S.uploads.set(id, u);
    $("uploads").append(el);
  }
  if (progress < u.progress) return; // progress only grows
  u.progress = progress;
  u.bar.value = progress;
  u.el.dataset.progress = String(progress);
  u.pct.textContent = progress >= 100 ? "done" : `${progress}%`;
  if (progress >= 100) {
    u.el.classList.add("done");
    setTimeout(() => {
      u.el.remove();
      S.uploads.delete(id);
    }, 6000);
  }
}

// ---------------------------------------------------------------------------
// Shipment detail: presence, documents, chat

function openShipment(id) {
  if (S.open?.id === id) return;
  closeShipment();
  S.open = {
    id,
    room: `shipment:${id}`,
    viewers: new Map(),
    viewersCount: null,
    typing: new Map(),
    messages: [],
    byId: new Map(),
    readSent: new Set(),
    typingSelf: false,
    typingTimer: null,
    joined: false,
  };
  addViewer(S.open, { userId: S.user.id, name: S.user.name });
  $("detail-placeholder").hidden = true;
  $("detail-body").hidden = false;
  $("detail-close").hidden = false;
  hideNote();
  renderDetailHead();
  renderViewers();
  renderDocuments();
  renderChat();
  renderTyping();
  markOpenRow();
  if (S.socket?.connected) joinOpen(S.open, null);
  if (window.matchMedia("(max-width: 900px)").matches) {
    $("shipment-detail").scrollIntoView({ block: "start", behavior: "smooth" });
  }
}

function closeShipment() {
  const o = S.open;
  if (!o) return;
  stopTyping(o);
  if (S.socket?.connected) S.socket.emit("leave:shipment", { shipmentId: o.id });
  S.open = null;
  $("detail-placeholder").hidden = false;
  $("detail-body").hidden = true;
  $("detail-close").hidden = true;
  $("detail-title").textContent = "Shipment";
  fill($("detail-status"));
  $("detail-status").className = "pill";
  markOpenRow();
}

function markOpenRow() {
  for (const tr of $("shipments-body").children) {
    tr.classList.toggle("is-open", !!S.open && tr.dataset.testid === `shipment-row-${S.open.id}`);
  }
}

function joinOpen(o, since) {
  const payload = { shipmentId: o.id };
  if (since) payload.since = since;
  S.socket.timeout(ACK_TIMEOUT_MS).emit("join:shipment", payload, (err, ack) => {
    if (S.open !== o) return;
    if (err) return showNote(`Joining ${o.room} timed out; it will be retried on reconnect.`);
    if (!ack?.ok) return showNote(`Could not join ${o.room}: ${ack?.error?.message ?? "refused"}`);
    o.joined = true;
    hideNote();
    o.viewers.clear();
    addViewer(o, { userId: S.user.id, name: S.user.name });
    if (Array.isArray(ack.viewers)) for (const v of ack.viewers) addViewer(o, v);
    o.viewersCount = Number.isFinite(ack.viewersCount) ? ack.viewersCount : null;
    renderViewers();
    loadHistory(o);
  });
}

function addViewer(o, v) {
  const userId = v?.userId ?? v?.id;
  if (userId == null) return;
  const id = String(userId);
  o.viewers.set(id, { userId: id, name: v.name || S.users.get(id)?.name || id });
}

function matchesOpen(p) {
  const o = S.open;
  if (!o) return false;
  if (p.room) return p.room === o.room;
  if (p.shipmentId != null) return String(p.shipmentId) === o.id;
  return false;
}

function onViewing(p) {
  if (!matchesOpen(p)) return;
  addViewer(S.open, p);
  if (Number.isFinite(p.viewersCount)) S.open.viewersCount = p.viewersCount;
  renderViewers();
}

function onViewerGone(p) {
  if (!matchesOpen(p) || p.userId == null) return;
  const id = String(p.userId);
  if (id !== S.user.id) S.open.viewers.delete(id);
  S.open.typing.delete(id);
  if (Number.isFinite(p.viewersCount)) S.open.viewersCount = p.viewersCount;
  renderViewers();
  renderTyping();
}

function onViewersCount(p) {
  if (!matchesOpen(p)) return;
  if (Number.isFinite(p.viewersCount)) S.open.viewersCount = p.viewersCount;
  renderViewers();
}

function renderDetailHead() {
  const o = S.open;
  if (!o) return;
  const s = S.shipments.get(o.id);
  $("detail-title").textContent = o.id;
  const st = $("detail-status");
  st.className = `pill st-${s?.status}`;
  st.dataset.status = s?.status ?? "";
  st.textContent = label(s?.status);
  $("detail-meta").textContent = s
    ? [s.poNumber, s.supplier, s.route, s.eta && `ETA ${s.eta}`].filter(Boolean).join(" · ")
    : "";
}

function renderViewers() {
  const o = S.open;
  if (!o) return;
  const avatars = [...o.viewers.values()].map((v) => {
    const me = v.userId === S.user.id;
    const status = S.presence.get(v.userId) ?? "online";
    return h(
      "span",
      {
        class: `avatar ${colorClass(v.userId)}${me ? " me" : ""} presence-${status}`,
        testid: `viewer-${v.userId}`,
        title: me ? `${v.name} (you)` : `${v.name} is viewing (${status})`,
        role: "img",
        "aria-label": me ? `${v.name} (you)` : `${v.name} is viewing`,
      },
      initials(v.name),
    );
  });
  fill($("viewers"), avatars);
  const n = o.viewersCount ?? o.viewers.size;
  const others = [...o.viewers.values()].filter((v) => v.userId !== S.user.id).map((v) => v.name);
  $("viewers-count").dataset.count = String(n);
  $("viewers-count").textContent = others.length
    ? `${others.join(", ")} ${others.length === 1 ? "is" : "are"} here too · ${n} viewing`
    : `only you · ${n} viewing`;
}

function renderDocuments() {
  const o = S.open;
  if (!o) return;
  const s = S.shipments.get(o.id);
  const docs = s?.documents ?? [];
  fill(
    $("documents"),
    docs.length
      ? docs.map((d) =>
          h(
            "li",
            { testid: "document" },
            h("span", { class: "doc-icon", "aria-hidden": "true" }),
            h("span", { class: "doc-name" }, d.fileName ?? "document"),
            h(
              "span",
              { class: "muted small" },
              [label(d.documentType), bytes(d.fileSize), d.uploadedBy && `by ${d.uploadedBy}`].filter(Boolean).join(" · "),
            ),
          ),
        )
      : h("li", { class: "muted small empty" }, "No documents yet."),
  );
}

function showNote(text) {
  const el = $("detail-note");
  el.textContent = text;
  el.hidden = false;
}

function hideNote() {
  $("detail-note").hidden = true;
}

// Chat ----------------------------------------------------------------------

function loadHistory(o) {
  S.socket.timeout(ACK_TIMEOUT_MS).emit("chat:history", { room: o.room, limit: 50 }, (err, ack) => {
    if (S.open !== o) return;
    if (err || !ack?.ok) {
      showNote(`Chat history unavailable: ${err ? "no answer" : (ack?.error?.message ?? "refused")}`);
      return;
    }
    for (const m of ack.messages ?? []) upsertMessage(o, m);
    renderChat();
    markRead(o);
  });
}

function toTime(x) {
  if (typeof x === "number") return x;
  const t = Date.parse(x);
  return Number.isNaN(t) ? 0 : t;
}

function upsertMessage(o, m) {
  if (!m || (m.room && m.room !== o.room)) return;
  let msg = (m.id != null && o.byId.get(String(m.id))) || null;
  if (!msg && m.clientId) msg = o.messages.find((x) => x.clientId === m.clientId) ?? null;
  if (msg) {
    Object.assign(msg, m, { pending: false, failed: false });
  } else {
    msg = { ...m, readers: new Set() };
    o.messages.push(msg);
  }
  // History may carry receipts (`readBy`: user ids or { userId }).
  if (Array.isArray(m.readBy)) for (const r of m.readBy) msg.readers.add(String(r?.userId ?? r));
  if (msg.id != null) o.byId.set(String(msg.id), msg);
  o.messages.sort((a, b) => toTime(a.createdAt) - toTime(b.createdAt));
}

function onChatMessage(p) {
  const o = S.open;
  if (!o || p.room !== o.room) return;
  upsertMessage(o, p);
  if (p.senderId != null && String(p.senderId) !== S.user.id) {
    o.typing.delete(String(p.senderId));
    renderTyping();
  }
  renderChat();
  markRead(o);
}

function onChatRead(p) {
  const o = S.open;
  if (!o || p.room !== o.room || p.userId == null) return;
  const reader = String(p.userId);
  if (reader === S.user.id) return;
  for (const id of p.messageIds ?? []) o.byId.get(String(id))?.readers.add(reader);
  renderChat();
}

/** Sends read receipts for others' messages the user can see. */
function markRead(o) {
  if (!S.socket?.connected || document.visibilityState !== "visible" || S.open !== o) return;
  const ids = o.messages
    .filter((m) => m.id != null && String(m.senderId) !== S.user.id && !o.readSent.has(String(m.id)))
    .map((m) => m.id);
  if (!ids.length) return;
  for (const id of ids) o.readSent.add(String(id));
  S.socket.emit("chat:read", { room: o.room, messageIds: ids });
}

document.addEventListener("visibilitychange", () => {
  if (S.open) markRead(S.open);
});

function nameOf(userId, fallback) {
  const id = String(userId ?? "");
  return S.users.get(id)?.name ?? S.open?.viewers.get(id)?.name ?? fallback ?? id;
}

function renderChat() {
  const o = S.open;
  const list = $("chat-messages");
  if (!o) return list.replaceChildren();
  const nearBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  if (!o.messages.length) {
    fill(list, h("li", { class: "muted small empty" }, "No messages yet. Say hello 👋"));
    return;
  }
  fill(
    list,
    o.messages.map((m) => {
      const mine = String(m.senderId) === S.user.id;
      const readers = [...m.readers].filter((r) => r !== S.user.id);
      let mark = null;
      if (mine && m.failed) mark = h("div", { class: "read-mark failed" }, "not sent");
      else if (mine && m.pending) mark = h("div", { class: "read-mark" }, "sending…");
      else if (mine && readers.length)
        mark = h(
          "div",
          { class: "read-mark seen", testid: "read-mark", dataset: { readers: readers.join(",") } },
          `✓✓ Seen by ${readers.map((r) => nameOf(r)).join(", ")}`,
        );
      else if (mine) mark = h("div", { class: "read-mark" }, "✓ Sent");
      return h(
        "li",
        {
          class: `msg${mine ? " mine" : ""}${m.pending ? " pending" : ""}`,
          testid: "chat-message",
          dataset: { id: m.id != null ? String(m.id) : "", sender: String(m.senderId ?? "") },
        },
        h(
          "div",
          { class: "msg-meta" },
          h("span", { class: "msg-from" }, mine ? "You" : nameOf(m.senderId, m.senderName)),
          h("time", {}, clock(m.createdAt)),
        ),
        h("div", { class: "msg-body", testid: "chat-message-content" }, String(m.content ?? "")),
        mark,
      );
    }),
  );
  if (nearBottom || o.messages.at(-1)?.pending) list.scrollTop = list.scrollHeight;
}

function onTyping(p) {
  const o = S.open;
  if (!o || p.room !== o.room || p.userId == null) return;
  const id = String(p.userId);
  if (id === S.user.id) return;
  clearTimeout(o.typing.get(id));
  if (p.typing === false) o.typing.delete(id);
  else o.typing.set(id, setTimeout(() => (o.typing.delete(id), renderTyping()), 8000));
  renderTyping();
}

function renderTyping() {
  const el = $("typing-indicator");
  const o = S.open;
  const ids = o ? [...o.typing.keys()] : [];
  el.dataset.users = ids.join(",");
  if (!ids.length) {
    el.textContent = "";
    el.classList.remove("on");
    return;
  }
  const names = ids.map((id) => nameOf(id));
  el.textContent =
    names.length === 1 ? `${names[0]} is typing…` : `${names.slice(0, -1).join(", ")} and ${names.at(-1)} are typing…`;
  el.classList.add("on");
}

function onChatInput() {
  const o = S.open;
  if (!o || !S.socket?.connected) return;
  const value = $("chat-input").value;
  if (!value.trim()) return stopTyping(o);
  if (!o.typingSelf) {
    o.typingSelf = true;
    S.socket.emit("typing:start", { room: o.room });
  }
  clearTimeout(o.typingTimer);
  o.typingTimer = setTimeout(() => stopTyping(o), 3000);
}

function stopTyping(o) {
  clearTimeout(o.typingTimer);
  if (!o.typingSelf) return;
  o.typingSelf = false;
  if (S.socket?.connected) S.socket.emit("typing:stop", { room: o.room });
}

function sendChat(ev) {
  ev.preventDefault();
  const o = S.open;
  const input = $("chat-input");
  const content = input.value.trim();
  if (!o || !content) return;
  stopTyping(o);
  input.value = "";
  const clientId = randomId("c-");
  const msg = {
    clientId,
    room: o.room,
    senderId: S.user.id,
    content,
    messageType: "text",
    createdAt: new Date().toISOString(),
    pending: true,
    readers: new Set(),
  };
  o.messages.push(msg);
  renderChat();
  if (!S.socket?.connected) {
    msg.failed = true;
    renderChat();
    return;
  }
  S.socket
    .timeout(ACK_TIMEOUT_MS)
    .emit("chat:send", { room: o.room, content, messageType: "text", clientId }, (err, ack) => {
      if (S.open !== o) return;
      if (err || !ack?.ok) {
        msg.pending = false;
        msg.failed = true;
        showNote(`Message not sent: ${err ? "no answer" : (ack?.error?.message ?? "refused")}`);
      } else {
        upsertMessage(o, { ...ack.message, clientId: ack.message?.clientId ?? clientId });
      }
      renderChat();
    });
}

// ---------------------------------------------------------------------------
// Controller panel (the backend's side, through the HTTP API)

async function controllerEmit(body, { quiet = false } = {}) {
  const result = $("ctl-result");
  if (!quiet) $("ctl-request").textContent = `POST /api/v1/emit\n${JSON.stringify(body, null, 2)}`;
  try {
    const { status, data } = await api.emit(S.config.apiKey, body);
    if (!quiet) {
      result.dataset.state = "ok";
      const rooms = Array.isArray(data.rooms) ? data.rooms.join(", ") : JSON.stringify(data.rooms);
      fill(result, h("strong", {}, String(status)), ` ${body.event} · offset ${shortOffset(data.offset)} → ${rooms}`);
    }
    return data;
  } catch (e) {
    result.dataset.state = "error";
    fill(result, h("strong", {}, String(e.status ?? "network")), ` ${body.event}: ${e.message}`);
    return null;
  }
}

function options(select, items, value) {
  const keep = value ?? select.value;
  fill(
    select,
    items.map(([v, text]) => h("option", { value: v }, text)),
  );
  if (items.some(([v]) => v === keep)) select.value = keep;
}

function renderControllerOptions() {
  if (!S.user) return;
  options($("ctl-shipment"), [...S.shipments.values()].map((s) => [s.id, s.id]));
  options($("ctl-order"), [...S.orders.values()].map((o) => [o.id, o.id]));
  options($("ctl-machine"), [...S.machines.values()].map((m) => [m.id, `${m.id} ${m.name}`]));
}

function nextOf(list, current) {
  const i = list.indexOf(current);
  return list[(i + 1) % list.length];
}

function wireController() {
  options($("ctl-shipment-status"), SHIPMENT_STATUSES.map((s) => [s, label(s)]));
  options($("ctl-order-status"), ORDER_STATUSES.map((s) => [s, label(s)]));
  options($("ctl-machine-status"), MACHINE_STATUSES.map((s) => [s, label(s)]));

  $("ctl-shipment").addEventListener("change", () => {
    const s = S.shipments.get($("ctl-shipment").value);
    if (s) $("ctl-shipment-status").value = nextOf(SHIPMENT_STATUSES.slice(0, 6), s.status);
  });
  $("ctl-order").addEventListener("change", () => {
    const o = S.orders.get($("ctl-order").value);
    if (o) $("ctl-order-status").value = nextOf(ORDER_STATUSES.slice(0, 6), o.status);
  });

  onSubmit("ctl-shipment-form", async () => {
    const s = S.shipments.get($("ctl-shipment").value);
    if (!s) return;
    const status = $("ctl-shipment-status").value;
    await controllerEmit({
      event: "shipment:updated",
      data: {
        shipmentId: s.id,
        status,
        statusChangedAt: new Date().toISOString(),
        changedBy: S.user.name,
        shipment: { id: s.id, poNumber: s.poNumber, status, eta: s.eta },
      },
      // The shipment's own room (people who opened it) and its branch (the boards).
      rooms: [`shipment:${s.id}`, `branch:${s.branchId}`],
    });
  });

  onSubmit("ctl-order-form", async () => {
    const o = S.orders.get($("ctl-order").value);
    if (!o) return;
    await controllerEmit({
      event: "order:status_changed",
      data: {
        orderId: o.id,
        oldStatus: o.status,
        newStatus: $("ctl-order-status").value,
        branchId: o.branchId,
        changedBy: S.user.name,
      },
    });
  });

  onSubmit("ctl-machine-form", async () => {
    const m = S.machines.get($("ctl-machine").value);
    if (!m) return;
    await controllerEmit({
      event: "machine:status_changed",
      data: { machineId: m.id, name: m.name, status: $("ctl-machine-status").value, branchId: m.branchId },
    });
  });

  onSubmit("ctl-notify-form", async () => {
    const body = {
      event: "notification",
      data: {
        title: $("ctl-notify-title").value || "Notification",
        message: $("ctl-notify-message").value,
        severity: $("ctl-notify-severity").value,
      },
    };
    if ($("ctl-notify-target").value === "user") body.user = S.user.id;
    else body.branch = S.user.branchId;
    await controllerEmit(body);
  });

  onSubmit("ctl-upload-form", () => simulateUpload(null));

  onSubmit("ctl-broadcast-form", async () => {
    await controllerEmit({
      event: "notification:broadcast",
      data: { message: $("ctl-broadcast-message").value, from: S.user.name },
    });
  });

  onSubmit("ctl-custom-form", async () => {
    const result = $("ctl-result");
    let data;
    try {
      data = JSON.parse($("ctl-custom-data").value || "{}");
    } catch (e) {
      result.dataset.state = "error";
      fill(result, h("strong", {}, "JSON"), ` ${e.message}`);
      return;
    }
    const rooms = $("ctl-custom-rooms")
      .value.split(",")
      .map((r) => r.trim())
      .filter(Boolean);
    const body = { event: $("ctl-custom-event").value.trim(), data };
    if (rooms.length) body.rooms = rooms;
    else if (data && typeof data === "object" && !("branchId" in data)) data.branchId = S.user.branchId;
    await controllerEmit(body);
  });
}

function onSubmit(testid, fn) {
  const form = $(testid);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const buttons = form.querySelectorAll("button");
    buttons.forEach((b) => (b.disabled = true));
    try {
      await fn();
    } finally {
      buttons.forEach((b) => (b.disabled = false));
    }
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * A simulated upload: the "backend" streams `upload_progress` to this user,
 * then announces `document:uploaded` to the open shipment and its branch.
 */
async function simulateUpload(file) {
  const uploadId = randomId("up-");
  const shipmentId = S.open?.id ?? null;
  const sample = SAMPLE_DOCUMENTS[S.sampleIndex++ % SAMPLE_DOCUMENTS.length];
  const doc = file ? { fileName: file.name, documentType: "attachment", fileSize: file.size } : sample;
  const detailButton = $("detail-upload");
  detailButton.disabled = true;
  try {
    for (let progress = 0; progress <= 100; progress += 10) {
      const ok = await controllerEmit(
        { event: "upload_progress", data: { uploadId, progress, fileName: doc.fileName, shipmentId }, user: S.user.id },
        { quiet: progress > 0 && progress < 100 },
      );
      if (!ok) return;
      if (progress < 100) await sleep(150);
    }
    if (shipmentId) {
      const s = S.shipments.get(shipmentId);
      await controllerEmit({
        event: "document:uploaded",
        data: {
          shipmentId,
          document: { ...doc, uploadedBy: S.user.name, uploadedAt: new Date().toISOString(), isVerified: false },
        },
        rooms: [`shipment:${shipmentId}`, `branch:${s?.branchId ?? S.user.branchId}`],
      });
    }
  } finally {
    detailButton.disabled = false;
  }
}

// ---------------------------------------------------------------------------
// Sign-in and start-up

function renderSignin() {
  fill(
    $("signin-users"),
    S.config.users.map((u) =>
      h(
        "button",
        { type: "button", class: "user-card", testid: `signin-${u.id}`, onclick: () => signIn(u.id) },
        h("span", { class: `avatar big ${colorClass(u.id)}` }, initials(u.name)),
        h(
          "span",
          { class: "user-card-text" },
          h("strong", {}, u.name),
          h("span", { class: "muted small" }, `${label(u.role)} · ${u.branchId} branch`),
        ),
      ),
    ),
  );
}

function signinError(text) {
  const el = $("signin-error");
  el.textContent = text;
  el.hidden = !text;
}

async function signIn(sub) {
  signinError("");
  let res;
  try {
    res = await api.devToken(sub);
  } catch (e) {
    signinError(`Could not get a token for ${sub}: ${e.message}`);
    $("signin").hidden = false;
    return;
  }
  S.token = res.token;
  S.user = { ...res.user, id: String(res.user.id) };
  sessionStorage.setItem(USER_KEY, S.user.id);

  $("signin").hidden = true;
  $("board").hidden = false;
  $("me").hidden = false;
  $("me-name").textContent = S.user.name;
  $("me-meta").textContent = `${label(S.user.role)} · ${S.user.branchId}`;
  const avatar = $("me-avatar");
  avatar.textContent = initials(S.user.name);
  avatar.className = `avatar ${colorClass(S.user.id)}`;
  $("branch-label").textContent = `branch ${S.user.branchId} · live`;
  document.title = `${S.user.name} · livehub operations board`;

  const mine = (x) => x.branchId === S.user.branchId;
  for (const s of SHIPMENTS.filter(mine)) S.shipments.set(s.id, { ...s, documents: [], offset: null });
  for (const o of ORDERS.filter(mine)) S.orders.set(o.id, { ...o, offset: null });
  for (const m of MACHINES.filter(mine)) S.machines.set(m.id, { ...m, offset: null });
  renderBoards();
  renderControllerOptions();
  $("ctl-shipment").dispatchEvent(new Event("change"));
  $("ctl-order").dispatchEvent(new Event("change"));

  await loadLog();
  connect();
  startLab({ token: S.token, branchId: S.user.branchId, emit: (body) => controllerEmit(body) });
}

/** Reads what happened in the branch before this page opened. */
async function loadLog() {
  try {
    const res = await api.roomEvents(S.token, `branch:${S.user.branchId}`);
    for (const ev of res.events ?? []) {
      if (!ev || typeof ev !== "object" || !ev.type) continue;
      if (typeof ev.offset === "string") {
        if (S.seen.has(ev.offset)) continue;
        S.seen.add(ev.offset);
        noteOffset(ev.offset);
      }
      applyEvent(ev.type, ev, false);
    }
    noteOffset(res.latestOffset);
  } catch (e) {
    addActivity("log", { message: `could not read the event log: ${e.message}` });
  }
}

function signOut() {
  sessionStorage.removeItem(USER_KEY);
  if (S.open) closeShipment();
  S.socket?.disconnect();
  stopLab();
  location.assign(location.pathname); // drops ?as=…
}

function reconnectByHand() {
  if (!S.socket || S.socket.connected || $("conn-status").dataset.state !== "error") return;
  setConn("reconnecting");
  refreshToken()
    .then(() => S.socket.connect())
    .catch((e) => setConn("error", `error: ${e.message}`));
}

async function boot() {
  wireController();
  $("signout").addEventListener("click", signOut);
  $("conn-status").addEventListener("click", reconnectByHand);
  $("detail-close").addEventListener("click", closeShipment);
  $("detail-upload").addEventListener("click", () => simulateUpload(null));
  $("detail-file").addEventListener("change", (ev) => {
    const file = ev.target.files?.[0];
    if (file) simulateUpload(file);
    ev.target.value = "";
  });
  $("chat-form").addEventListener("submit", sendChat);
  $("chat-input").addEventListener("input", onChatInput);
  $("presence-select").addEventListener("change", () => {
    const status = $("presence-select").value;
    S.presence.set(S.user?.id, status);
    renderViewers();
    S.socket?.emit("presence:set", { status });
  });

  try {
    S.config = await api.devConfig();
  } catch (e) {
    $("signin").hidden = false;
    signinError(
      `This page needs livehub in dev mode (livehub serve --dev): GET /dev/config answered “${e.message}”.`,
    );
    return;
  }
  S.users = new Map(S.config.users.map((u) => [String(u.id), u]));
  renderSignin();
  const wanted = new URLSearchParams(location.search).get("as") || sessionStorage.getItem(USER_KEY);
  if (wanted && S.users.has(wanted)) await signIn(wanted);
  else $("signin").hidden = false;
}

boot();
