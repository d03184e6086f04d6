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

import "./style.css";
import * as api from "./api.js";
import { SHIPMENTS, ORDERS, MACHINES, label } from "./seed.js";
import { h, byTestId as $, fill, initials, colorClass } from "./dom.js";
import { startLab, stopLab } from "./lab.js";
import { USER_KEY, S, noteOffset } from "./state.js";
import { connect, refreshToken, setConn } from "./connection.js";
import { applyEvent } from "./events.js";
import { renderBoards, addActivity } from "./boards.js";
import { closeShipment, renderViewers, onChatInput, sendChat } from "./shipment.js";
import { controllerEmit, renderControllerOptions, wireController, simulateUpload } from "./controller.js";

export function renderSignin() {
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

export function signinError(text) {
  const el = $("signin-error");
  el.textContent = text;
  el.hidden = !text;
}

export async function signIn(sub) {
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
export async function loadLog() {
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

export function signOut() {
  sessionStorage.removeItem(USER_KEY);
  if (S.open) closeShipment();
  S.socket?.disconnect();
  stopLab();
  location.assign(location.pathname); // drops ?as=…
}

export function reconnectByHand() {
  if (!S.socket || S.socket.connected || $("conn-status").dataset.state !== "error") return;
  setConn("reconnecting");
  refreshToken()
    .then(() => S.socket.connect())
    .catch((e) => setConn("error", `error: ${e.message}`));
}

export async function boot() {
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
