// livehub demo: the open shipment: presence, documents, chat.

import { label } from "./seed.js";
import { h, byTestId as $, fill, initials, colorClass, clock, randomId, bytes } from "./dom.js";
import { ACK_TIMEOUT_MS, S } from "./state.js";
import { pill } from "./boards.js";

export function openShipment(id) {
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

export function closeShipment() {
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

export function markOpenRow() {
  for (const tr of $("shipments-body").children) {
    tr.classList.toggle("is-open", !!S.open && tr.dataset.testid === `shipment-row-${S.open.id}`);
  }
}

export function joinOpen(o, since) {
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

export function addViewer(o, v) {
  const userId = v?.userId ?? v?.id;
  if (userId == null) return;
  const id = String(userId);
  o.viewers.set(id, { userId: id, name: v.name || S.users.get(id)?.name || id });
}

export function matchesOpen(p) {
  const o = S.open;
  if (!o) return false;
  if (p.room) return p.room === o.room;
  if (p.shipmentId != null) return String(p.shipmentId) === o.id;
  return false;
}

export function onViewing(p) {
  if (!matchesOpen(p)) return;
  addViewer(S.open, p);
  if (Number.isFinite(p.viewersCount)) S.open.viewersCount = p.viewersCount;
  renderViewers();
}

export function onViewerGone(p) {
  if (!matchesOpen(p) || p.userId == null) return;
  const id = String(p.userId);
  if (id !== S.user.id) S.open.viewers.delete(id);
  S.open.typing.delete(id);
  if (Number.isFinite(p.viewersCount)) S.open.viewersCount = p.viewersCount;
  renderViewers();
  renderTyping();
}

export function onViewersCount(p) {
  if (!matchesOpen(p)) return;
  if (Number.isFinite(p.viewersCount)) S.open.viewersCount = p.viewersCount;
  renderViewers();
}

export function renderDetailHead() {
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

export function renderViewers() {
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

export function renderDocuments() {
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

export function showNote(text) {
  const el = $("detail-note");
  el.textContent = text;
  el.hidden = false;
}

export function hideNote() {
  $("detail-note").hidden = true;
}

// Chat ----------------------------------------------------------------------

export function loadHistory(o) {
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

export function toTime(x) {
  if (typeof x === "number") return x;
  const t = Date.parse(x);
  return Number.isNaN(t) ? 0 : t;
}

export function upsertMessage(o, m) {
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

export function onChatMessage(p) {
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

export function onChatRead(p) {
  const o = S.open;
  if (!o || p.room !== o.room || p.userId == null) return;
  const reader = String(p.userId);
  if (reader === S.user.id) return;
  for (const id of p.messageIds ?? []) o.byId.get(String(id))?.readers.add(reader);
  renderChat();
}

/** Sends read receipts for others' messages the user can see. */
export function markRead(o) {
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

export function nameOf(userId, fallback) {
  const id = String(userId ?? "");
  return S.users.get(id)?.name ?? S.open?.viewers.get(id)?.name ?? fallback ?? id;
}

export function renderChat() {
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

export function onTyping(p) {
  const o = S.open;
  if (!o || p.room !== o.room || p.userId == null) return;
  const id = String(p.userId);
  if (id === S.user.id) return;
  clearTimeout(o.typing.get(id));
  if (p.typing === false) o.typing.delete(id);
  else o.typing.set(id, setTimeout(() => (o.typing.delete(id), renderTyping()), 8000));
  renderTyping();
}

export function renderTyping() {
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

export function onChatInput() {
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

export function stopTyping(o) {
  clearTimeout(o.typingTimer);
  if (!o.typingSelf) return;
  o.typingSelf = false;
  if (S.socket?.connected) S.socket.emit("typing:stop", { room: o.room });
}

export function sendChat(ev) {
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
