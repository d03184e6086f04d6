// livehub demo: the controller panel: the backend's side, through the HTTP API.

import * as api from "./api.js";
import { SHIPMENT_STATUSES, ORDER_STATUSES, MACHINE_STATUSES, SAMPLE_DOCUMENTS, label } from "./seed.js";
import { h, byTestId as $, fill, randomId } from "./dom.js";
import { S, shortOffset } from "./state.js";

export async function controllerEmit(body, { quiet = false } = {}) {
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

export function options(select, items, value) {
  const keep = value ?? select.value;
  fill(
    select,
    items.map(([v, text]) => h("option", { value: v }, text)),
  );
  if (items.some(([v]) => v === keep)) select.value = keep;
}

export function renderControllerOptions() {
  if (!S.user) return;
  options($("ctl-shipment"), [...S.shipments.values()].map((s) => [s.id, s.id]));
  options($("ctl-order"), [...S.orders.values()].map((o) => [o.id, o.id]));
  options($("ctl-machine"), [...S.machines.values()].map((m) => [m.id, `${m.id} ${m.name}`]));
}

export function nextOf(list, current) {
  const i = list.indexOf(current);
  return list[(i + 1) % list.length];
}

export function wireController() {
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

export function onSubmit(testid, fn) {
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

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * A simulated upload: the "backend" streams `upload_progress` to this user,
 * then announces `document:uploaded` to the open shipment and its branch.
 */
export async function simulateUpload(file) {
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
