// livehub demo: toasts and upload progress.

import { label } from "./seed.js";
import { h, byTestId as $ } from "./dom.js";
import { S } from "./state.js";

export function toast(severity, title, message) {
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

export function uploadProgress(p) {
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
