// livehub demo: what the server sends, applied to the state and the boards.

import { S, noteOffset, offsetAfter } from "./state.js";
import { refreshToken, renderReplay } from "./connection.js";
import { renderShipmentRow, renderOrderRow, renderMachine, addActivity } from "./boards.js";
import { toast, uploadProgress } from "./toasts.js";
import { onViewing, onViewerGone, onViewersCount, renderDetailHead, renderViewers, renderDocuments, loadHistory, onChatMessage, onChatRead, onTyping } from "./shipment.js";
import { renderControllerOptions } from "./controller.js";
import { loadLog } from "./main.js";

export const SPECIAL = {
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

export function onServerEvent(name, payload) {
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
export function applyEvent(name, p, live) {
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

export function shipmentEvent(name, p, live) {
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

export function documentEvent(p, live) {
  const id = p.shipmentId != null ? String(p.shipmentId) : "";
  if (!id || !p.document) return;
  const s = ensureShipment(id, p);
  s.documents.push({ ...p.document, offset: p.offset, at: p.timestamp });
  renderShipmentRow(s, live);
  if (S.open?.id === id) renderDocuments();
}

export function ensureShipment(id, p) {
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

export function orderEvent(name, p, live) {
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

export function machineEvent(name, p, live) {
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

export function onReplayReset(p) {
  // The offset could not be replayed from (expired, unknown log…): refetch.
  addActivity("replay:reset", p);
  if (p.room && S.open && p.room === S.open.room) {
    loadHistory(S.open);
  } else {
    loadLog().then(() => noteOffset(p.latestOffset));
  }
}

export function onAuthExpired() {
  refreshToken()
    .then((token) => S.socket?.emit("auth:refresh", { token }))
    .catch(() => {});
}

export function onPresence(p) {
  if (!p.userId) return;
  S.presence.set(String(p.userId), String(p.status || "online"));
  renderViewers();
}
