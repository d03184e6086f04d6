// livehub demo: shared state of the page, and offsets.



export const USER_KEY = "livehub-demo:user";
export const ACK_TIMEOUT_MS = 10_000;
export const ACTIVITY_MAX = 40;

export const S = {
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

// Offsets

export function noteOffset(offset) {
  if (typeof offset !== "string" || !offset) return;
  if (!S.lastOffset || offsetAfter(offset, S.lastOffset)) S.lastOffset = offset;
}

/** Offsets of one log sort as strings (`{epoch}-{seq, zero-padded}`). */
export function offsetAfter(a, b) {
  if (!b) return true;
  if (!a) return false;
  return a.length === b.length ? a > b : a.length > b.length;
}

export function shortOffset(offset) {
  if (typeof offset !== "string") return String(offset ?? "—");
  const seq = offset.split("-").pop();
  return seq ? `#${Number(seq) || seq}` : offset;
}
