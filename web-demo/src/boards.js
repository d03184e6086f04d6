// livehub demo: the boards: shipments, orders, machines.

import { label } from "./seed.js";
import { h, byTestId as $, clock, flash } from "./dom.js";
import { ACTIVITY_MAX, S, shortOffset } from "./state.js";
import { openShipment } from "./shipment.js";

export function pill(status, testid) {
  return h("span", { class: `pill st-${status}`, testid, dataset: { status } }, label(status));
}

export function renderShipmentRow(s, highlight) {
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

export function renderOrderRow(o, highlight) {
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

export function renderMachine(m, highlight) {
  const tile = h(
    "div",
    { class: `tile st-${m.status}`, testid: `machine-${m.id}`, dataset: { status: m.status } },
    h("div", { class: "tile-top" }, h("span", { class: "tile-id" }, m.id), pill(m.status, `machine-status-${m.id}`)),
    h("div", { class: "tile-name" }, m.name),
    h("div", { class: "tile-foot muted small" }, m.updatedAt ? `changed ${clock(m.updatedAt)}` : "no change yet"),
  );
  upsertRow($("machines"), `machine-${m.id}`, tile, highlight);
}

export function upsertRow(container, testid, el, highlight) {
  const old = container.querySelector(`:scope > [data-testid="${testid}"]`);
  if (old) old.replaceWith(el);
  else container.append(el);
  if (highlight) flash(el);
}

export function renderBoards() {
  $("shipments-body").replaceChildren();
  $("orders-body").replaceChildren();
  $("machines").replaceChildren();
  for (const s of S.shipments.values()) renderShipmentRow(s, false);
  for (const o of S.orders.values()) renderOrderRow(o, false);
  for (const m of S.machines.values()) renderMachine(m, false);
}

export function addActivity(name, p) {
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

export function summarize(name, p) {
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
