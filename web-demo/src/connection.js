// livehub demo: the Socket.IO connection: connect with the last offset, reconnect, transport.

import { io } from "socket.io-client";
import * as api from "./api.js";
import { h, byTestId as $, fill } from "./dom.js";
import { S } from "./state.js";
import { onServerEvent } from "./events.js";
import { joinOpen, renderTyping } from "./shipment.js";

export function connect() {
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

export function isBrowserOnline() {
  return navigator.onLine !== false;
}

export function onConnect() {
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

export function onDisconnect(reason) {
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

export function onConnectError(err) {
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

export async function refreshToken() {
  const { token } = await api.devToken(S.user.id);
  S.token = token;
  return token;
}

export function hookEngine() {
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

export const CONN_TEXT = {
  idle: "not connected",
  connecting: "connecting…",
  connected: "connected",
  reconnecting: "reconnecting…",
  offline: "offline",
  error: "error",
};

export function setConn(state, detail) {
  const el = $("conn-status");
  el.dataset.state = state;
  $("conn-text").textContent = detail || CONN_TEXT[state];
  el.title = detail || CONN_TEXT[state];
}

export function setTransport(name) {
  const el = $("conn-transport");
  el.dataset.transport = name || "";
  el.textContent = name || "—";
}

export function renderReplay() {
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
