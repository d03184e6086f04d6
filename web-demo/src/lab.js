// The lab equipment panel: a plain browser WebSocket on /ws, as team 003's
// frontend connects (contract v1.1) — no Socket.IO. It authenticates in its
// first frame, subscribes to each instrument's room, and shows the frames as
// they arrive beside the Socket.IO board, so both kinds of client can be
// watched receiving the same controller emit.

import { h, byTestId as $, clock } from "./dom.js";

export const INSTRUMENTS = [
  { id: "EQ-CENT-1", name: "Centrifuge 1", status: "idle" },
  { id: "EQ-PCR-2", name: "PCR cycler 2", status: "in_use" },
  { id: "EQ-MS-3", name: "Mass spectrometer 3", status: "maintenance" },
];
export const INSTRUMENT_STATUSES = ["idle", "in_use", "maintenance", "offline"];
const FRAMES_SHOWN = 6;
const RETRY_MS = 5000; // team 003 reconnects after 5 s

const L = { ws: null, token: null, instruments: new Map(), retry: null, stopped: false };

function wsUrl() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/ws`;
}

function setState(state, detail) {
  const el = $("lab-conn");
  el.dataset.state = state;
  el.textContent = detail ?? state;
}

function showFrame(frame) {
  const list = $("lab-frames");
  const text = JSON.stringify(frame);
  list.prepend(
    h(
      "li",
      { testid: "lab-frame", dataset: { type: frame.type ?? frame.action ?? "" } },
      h("time", {}, clock()),
      h("code", {}, text.length > 240 ? `${text.slice(0, 240)}…` : text),
    ),
  );
  while (list.children.length > FRAMES_SHOWN) list.lastElementChild.remove();
}

const TILE_CLASS = { idle: "st-idle", in_use: "st-running", maintenance: "st-maintenance", offline: "st-offline" };

function renderInstruments() {
  $("lab-instruments").replaceChildren(
    ...[...L.instruments.values()].map((i) =>
      h(
        "div",
        { class: `tile ${TILE_CLASS[i.status] ?? "st-idle"}`, testid: `lab-${i.id}`, dataset: { status: i.status } },
        h("div", { class: "tile-top" }, h("span", { class: "tile-id" }, i.id), h("span", { class: "pill" }, i.status.replace("_", " "))),
        h("div", { class: "tile-name" }, i.name),
        h("div", { class: "tile-foot muted small" }, i.offset ? `offset ${shortOffset(i.offset)}` : "no change yet"),
      ),
    ),
  );
}

function shortOffset(offset) {
  return `#${Number(offset.split("-").pop()) || offset}`;
}

function onFrame(frame) {
  showFrame(frame);
  switch (frame.type) {
    case "connection_established":
      setState("live", `live · ${frame.connection_id}`);
      for (const i of L.instruments.values()) {
        L.ws.send(JSON.stringify({ action: "subscribe", data: { room: `equipment:${i.id}` } }));
      }
      break;
    case "equipment_update": {
      const i = L.instruments.get(frame.data?.equipmentId);
      if (i && typeof frame.data.status === "string") {
        i.status = frame.data.status;
        i.offset = frame.offset;
        renderInstruments();
      }
      break;
    }
    case "error":
      if (frame.data?.code === "unauthorized") setState("refused", frame.data.message);
      break;
  }
}

function open() {
  clearTimeout(L.retry);
  setState("connecting");
  const ws = new WebSocket(wsUrl());
  L.ws = ws;
  ws.onopen = () => ws.send(JSON.stringify({ type: "auth", token: L.token }));
  ws.onmessage = (event) => {
    try {
      onFrame(JSON.parse(event.data));
    } catch {
      // not JSON: nothing livehub sends
    }
  };
  ws.onclose = (event) => {
    if (L.ws !== ws || L.stopped) return;
    setState("closed", `closed (${event.code}) · retrying in 5 s`);
    L.retry = setTimeout(open, RETRY_MS);
  };
}

/** Starts the panel for a signed-in user. `emit(body)` is the controller's HTTP emit. */
export function startLab({ token, branchId, emit }) {
  L.token = token;
  L.stopped = false;
  for (const i of INSTRUMENTS) L.instruments.set(i.id, { ...i, offset: null });
  renderInstruments();
  const select = $("lab-ctl-instrument");
  select.replaceChildren(...INSTRUMENTS.map((i) => h("option", { value: i.id }, i.name)));
  $("lab-ctl-status").replaceChildren(...INSTRUMENT_STATUSES.map((s) => h("option", { value: s }, s.replace("_", " "))));
  $("lab-ctl-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const equipmentId = select.value;
    const status = $("lab-ctl-status").value;
    // To the instrument's room (the plain panel) and the branch room (the
    // Socket.IO board's activity): one emit, both kinds of client.
    await emit({
      event: "equipment_update",
      rooms: [`equipment:${equipmentId}`, `branch:${branchId}`],
      data: { equipmentId, status },
    });
  });
  open();
}

/** A fresh token (after a refresh) for the next reconnect. */
export function setLabToken(token) {
  L.token = token;
}

export function stopLab() {
  L.stopped = true;
  clearTimeout(L.retry);
  L.ws?.close();
}
