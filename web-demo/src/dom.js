// Tiny DOM helpers. Everything is built with createElement/textContent, so
// chat content and event payloads can never inject markup, and nothing uses
// inline style attributes (the page runs under a strict CSP).

/**
 * h("div", { class: "x", testid: "y", onclick: fn }, child, "text", [more])
 * `testid` becomes data-testid; `dataset` sets data-* attributes.
 */
export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v == null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "testid") el.dataset.testid = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "value") el.value = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c == null || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : String(c));
  }
}

/** The element with this data-testid (throws if the page lacks it). */
export function byTestId(id, root = document) {
  const el = root.querySelector(`[data-testid="${id}"]`);
  if (!el) throw new Error(`missing [data-testid=${id}]`);
  return el;
}

/** Replaces an element's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** "Ana Ortiz" → "AO". */
export function initials(name) {
  const parts = String(name || "?").trim().split(/\s+/).filter(Boolean);
  const s = parts.length > 1 ? parts[0][0] + parts[parts.length - 1][0] : (parts[0] || "?").slice(0, 2);
  return s.toUpperCase();
}

/** A stable colour class (c0…c7) for a user id. */
export function colorClass(id) {
  let x = 0;
  for (const ch of String(id)) x = (x * 31 + ch.codePointAt(0)) >>> 0;
  return `c${x % 8}`;
}

/** "14:03:07" for an ISO timestamp (or now). */
export function clock(iso) {
  const d = iso ? new Date(iso) : new Date();
  if (Number.isNaN(d.getTime())) return "";
  return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

/** Restarts a CSS animation class on an element. */
export function flash(el, cls = "flash") {
  if (!el) return;
  el.classList.remove(cls);
  void el.offsetWidth; // reflow so the animation starts again
  el.classList.add(cls);
}

/** A short random id (works outside secure contexts too). */
export function randomId(prefix = "") {
  const rnd =
    typeof crypto !== "undefined" && crypto.getRandomValues
      ? Array.from(crypto.getRandomValues(new Uint8Array(8)), (b) => b.toString(16).padStart(2, "0")).join("")
      : Math.random().toString(16).slice(2) + Date.now().toString(16);
  return prefix + rnd;
}

export function bytes(n) {
  if (!Number.isFinite(n)) return "";
  if (n >= 1 << 20) return `${(n / (1 << 20)).toFixed(1)} MB`;
  if (n >= 1 << 10) return `${Math.round(n / (1 << 10))} KB`;
  return `${n} B`;
}
