// The demo page end to end, in real headless Chromium (Debian's /usr/bin/chromium)
// driven by playwright-core, against a real livehub in dev mode.
//
//   LIVEHUB_URL=http://127.0.0.1:PORT node --test tests/demo.e2e.mjs
//
// Without LIVEHUB_URL the test starts ../target/debug/livehub itself (PORT=0,
// DEMO_DIR=dist, a temporary SQLite file). Screenshots go to test-artifacts/;
// SCREENSHOT_DOC=path also saves the board at desktop width there (README).
//
// No timing assertions: every wait is Playwright's own, with generous limits.

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { startLivehub } from "./lib/livehub.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const DEMO = path.resolve(here, "..");
const ARTIFACTS = path.join(DEMO, "test-artifacts");
const CHROMIUM = process.env.CHROMIUM_PATH || "/usr/bin/chromium";
const WAIT = 20_000;

const DESKTOP = { width: 1440, height: 1000 };
const PHONE = { width: 375, height: 812 };

let base; // e.g. http://127.0.0.1:41234
let ownServer = null;
let browser;
const sessions = [];
let ana;
let ben;
let chen;

// ---------------------------------------------------------------------------
// Helpers

async function startOwnServer() {
  ownServer = await startLivehub({ args: ["--dev"], env: { DEMO_DIR: path.join(DEMO, "dist") } });
  return ownServer.url;
}

function tid(id) {
  return `[data-testid="${id}"]`;
}

/** A signed-in user in a fresh browser context. */
async function signIn(user, { viewport = DESKTOP, blockWebSocket = false, expectTransport = "websocket" } = {}) {
  const context = await browser.newContext({ viewport, deviceScaleFactor: 1, locale: "en-GB", timezoneId: "UTC" });
  if (blockWebSocket) {
    // A proxy that eats WebSockets: every upgrade attempt is closed at once,
    // so Socket.IO must keep working over HTTP long-polling.
    await context.routeWebSocket(/\/socket\.io\//, (ws) => ws.close({ code: 1011, reason: "blocked by test" }));
  }
  const page = await context.newPage();
  const s = { user, context, page, errors: [], expectedErrors: [], failed: [] };
  page.on("console", (m) => {
    if (m.type() === "error") s.errors.push(m.text());
  });
  page.on("pageerror", (e) => s.errors.push(`pageerror: ${e.message}`));
  page.on("requestfailed", (r) => s.failed.push(`${r.failure()?.errorText} ${r.method()} ${r.url()}`));
  sessions.push(s);
  await page.goto(`${base}/demo/`);
  await page.locator(tid(`signin-${user}`)).click();
  await page.locator(`${tid("conn-status")}[data-state="connected"]`).waitFor({ timeout: WAIT });
  if (expectTransport) {
    await page.locator(`${tid("conn-transport")}[data-transport="${expectTransport}"]`).waitFor({ timeout: WAIT });
  }
  return s;
}

async function waitFor(page, selector, timeout = WAIT) {
  await page.locator(selector).first().waitFor({ timeout });
}

/** Waits until an element with this test id contains `text` (visible or not: phone layouts hide columns). */
async function waitText(page, testid, text, timeout = WAIT) {
  await page.locator(tid(testid)).filter({ hasText: text }).first().waitFor({ state: "attached", timeout });
}

async function statusOf(page, testid) {
  return page.locator(tid(testid)).getAttribute("data-status");
}

/** The first of `candidates` that differs from the current status (the server may have history). */
async function otherStatus(page, testid, candidates) {
  const current = await statusOf(page, testid);
  return candidates.find((c) => c !== current);
}

async function emitFromPanel(page, kind, id, status) {
  await page.locator(tid(`ctl-${kind}`)).selectOption(id);
  await page.locator(tid(`ctl-${kind}-status`)).selectOption(status);
  await page.locator(tid(`ctl-${kind}-send`)).click();
  await waitFor(page, `${tid("ctl-result")}[data-state="ok"]`);
}

async function ensureOpen(page, id) {
  if (((await page.locator(tid("detail-title")).textContent()) ?? "").trim() !== id) {
    await page.locator(tid(`open-shipment-${id}`)).click();
  }
  await waitText(page, "detail-title", id);
}

async function shot(page, name, opts = {}) {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: path.join(ARTIFACTS, `${name}.png`), ...opts });
}

// ---------------------------------------------------------------------------

before(async () => {
  if (!fs.existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: apt-get install -y chromium`);
  base = (process.env.LIVEHUB_URL || (await startOwnServer())).replace(/\/+$/, "");
  // chromium.launch gives every run a fresh, empty user-data dir of its own.
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
});

after(async () => {
  for (const s of sessions) {
    if (!s.page.isClosed()) await shot(s.page, `final-${s.user}`).catch(() => {});
  }
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  fs.writeFileSync(
    path.join(ARTIFACTS, "console.json"),
    JSON.stringify(
      sessions.map(({ user, errors, failed }) => ({ user, consoleErrors: errors, failedRequests: failed })),
      null,
      2,
    ),
  );
  await browser?.close().catch(() => {});
  if (ownServer) {
    ownServer.stop();
  }
});

describe("livehub demo board in headless Chromium", () => {
  test("the built page is served at / and at /demo/", async () => {
    for (const p of ["/", "/demo/"]) {
      const res = await fetch(`${base}${p}`);
      assert.equal(res.status, 200, `GET ${p} → ${res.status}`);
      assert.match(res.headers.get("content-type") || "", /text\/html/, `GET ${p} content-type`);
      assert.match(await res.text(), /operations board/, `GET ${p} is the demo page`);
    }
  });

  test("two users of one branch sign in (desktop and phone width)", async () => {
    ana = await signIn("ana", { viewport: DESKTOP });
    ben = await signIn("ben", { viewport: PHONE });
    await waitText(ana.page, "me-name", "Ana Ortiz");
    await waitText(ben.page, "me-name", "Ben Okafor");
    await waitFor(ana.page, tid("shipment-row-SH-1001"));
    await waitFor(ben.page, tid("shipment-row-SH-1001"));
    // Nothing wider than the phone's screen.
    const width = await ben.page.evaluate(() => document.documentElement.scrollWidth);
    assert.ok(width <= PHONE.width, `page is ${width}px wide at ${PHONE.width}px`);
    await shot(ana.page, "01-ana-board");
    await shot(ben.page, "01-ben-phone", { fullPage: true });
  });

  test("a status change from the controller panel reaches the colleague's board", async () => {
    const shipment = await otherStatus(ben.page, "shipment-status-SH-1001", ["at_customs", "arrived"]);
    await emitFromPanel(ana.page, "shipment", "SH-1001", shipment);
    await waitFor(ben.page, `${tid("shipment-status-SH-1001")}[data-status="${shipment}"]`);
    await waitText(ben.page, "shipment-status-SH-1001", shipment === "at_customs" ? "At customs" : "Arrived");
    await waitFor(ana.page, `${tid("shipment-status-SH-1001")}[data-status="${shipment}"]`);

    const order = await otherStatus(ana.page, "order-status-ORD-5002", ["in_production", "shipped"]);
    await emitFromPanel(ben.page, "order", "ORD-5002", order);
    await waitFor(ana.page, `${tid("order-status-ORD-5002")}[data-status="${order}"]`);

    const machine = await otherStatus(ana.page, "machine-M-03", ["error", "running"]);
    await emitFromPanel(ben.page, "machine", "M-03", machine);
    await waitFor(ana.page, `${tid("machine-M-03")}[data-status="${machine}"]`);
    await waitText(ana.page, "activity", "M-03");
  });

  test("the lab panel, a plain WebSocket client on /ws, gets the same controller emit as the Socket.IO board", async () => {
    await waitFor(ana.page, `${tid("lab-conn")}[data-state="live"]`);
    await waitFor(ben.page, `${tid("lab-conn")}[data-state="live"]`);
    const status = await otherStatus(ben.page, "lab-EQ-PCR-2", ["maintenance", "offline"]);
    await ana.page.locator(tid("lab-ctl-instrument")).selectOption("EQ-PCR-2");
    await ana.page.locator(tid("lab-ctl-status")).selectOption(status);
    await ana.page.locator(tid("lab-ctl-send")).click();
    // The plain client on ben's page (and on ana's) applies the frame…
    await waitFor(ben.page, `${tid("lab-EQ-PCR-2")}[data-status="${status}"]`);
    await waitFor(ana.page, `${tid("lab-EQ-PCR-2")}[data-status="${status}"]`);
    await waitFor(ben.page, `${tid("lab-frame")}[data-type="equipment_update"]`);
    const frame = JSON.parse(await ben.page.locator(`${tid("lab-frame")}[data-type="equipment_update"] code`).first().textContent());
    assert.deepEqual(frame.data, { equipmentId: "EQ-PCR-2", status }, "data exactly as emitted");
    assert.match(frame.offset, /-\d+$/);
    // …and the Socket.IO board got the same event, with the same offset.
    const item = ben.page.locator(`${tid("activity-item")}[data-event="equipment_update"]`).first();
    await item.waitFor({ state: "attached", timeout: WAIT });
    assert.equal(await item.locator(".offset").getAttribute("title"), frame.offset);
    await shot(ana.page, "02-lab-panel");
  });

  test("both open the same shipment and see each other's avatar", async () => {
    await ana.page.locator(tid("open-shipment-SH-1001")).click();
    await waitText(ana.page, "detail-title", "SH-1001");
    await waitFor(ana.page, tid("viewer-ana"));
    await ben.page.locator(tid("open-shipment-SH-1001")).click();
    await waitText(ben.page, "detail-title", "SH-1001");
    // ben learns of ana from the join ack's `viewers`; ana of ben from `user:viewing`.
    await waitFor(ben.page, tid("viewer-ana"));
    await waitFor(ana.page, tid("viewer-ben"));
    await waitFor(ana.page, `${tid("viewers-count")}[data-count="2"]`);
  });

  test("chat: typing indicator, message round trip, read marks, history", async () => {
    const msg = "Truck 7 is at dock 4, paperwork attached.";
    const input = ana.page.locator(tid("chat-input"));
    await input.click();
    await input.pressSequentially("Truck 7", { delay: 20 });
    await waitText(ben.page, "typing-indicator", "Ana Ortiz is typing");
    await input.fill(msg);
    await ana.page.locator(tid("chat-send")).click();

    await waitText(ben.page, "chat-message-content", msg);
    // ben's page saw it, so it sent chat:read: ana gets the read mark.
    await waitText(ana.page, "read-mark", "Seen by Ben Okafor");
    await waitFor(ben.page, `${tid("typing-indicator")}[data-users=""]`);

    const reply = "Thanks, unloading now.";
    await ben.page.locator(tid("chat-input")).fill(reply);
    await ben.page.locator(tid("chat-send")).click();
    await waitText(ana.page, "chat-message-content", reply);

    // A reloaded page gets the conversation back from chat:history.
    await ben.page.reload();
    await ben.page.locator(`${tid("conn-status")}[data-state="connected"]`).waitFor({ timeout: WAIT });
    await ben.page.locator(tid("open-shipment-SH-1001")).click();
    await waitText(ben.page, "chat-message-content", msg);
    await waitText(ben.page, "chat-message-content", reply);
  });

  test("upload progress bar, document:uploaded and notification toasts", async () => {
    await ensureOpen(ana.page, "SH-1001");
    await ensureOpen(ben.page, "SH-1001");
    await ana.page.locator(tid("detail-upload")).click();
    await waitFor(ana.page, `${tid("upload")}[data-progress]`);
    await waitFor(ana.page, `${tid("upload")}[data-progress="100"]`);
    await waitText(ana.page, "documents", "proof-of-delivery.pdf");
    await waitText(ben.page, "documents", "proof-of-delivery.pdf");
    assert.ok(Number(await ben.page.locator(tid("shipment-docs-SH-1001")).textContent()) >= 1);

    await ana.page.locator(tid("ctl-notify-title")).fill("Dock change");
    await ana.page.locator(tid("ctl-notify-target")).selectOption("branch");
    await ana.page.locator(tid("ctl-notify-send")).click();
    await waitText(ben.page, "toast", "Dock change");
    await waitFor(ben.page, `${tid("toast")}[data-severity="warning"]`);
    await waitText(ana.page, "toast", "Dock change");
  });

  test("with WebSocket blocked the page works over HTTP long-polling", async () => {
    chen = await signIn("chen", { viewport: DESKTOP, blockWebSocket: true, expectTransport: "polling" });
    await waitFor(chen.page, tid("shipment-row-SH-2001"));
    const shipment = await otherStatus(chen.page, "shipment-status-SH-2001", ["arrived", "received"]);
    await emitFromPanel(chen.page, "shipment", "SH-2001", shipment);
    await waitFor(chen.page, `${tid("shipment-status-SH-2001")}[data-status="${shipment}"]`);
    const machine = await otherStatus(chen.page, "machine-M-12", ["running", "idle"]);
    await emitFromPanel(chen.page, "machine", "M-12", machine);
    await waitFor(chen.page, `${tid("machine-M-12")}[data-status="${machine}"]`);
    await waitText(chen.page, "conn-transport", "polling");
    await waitFor(chen.page, `${tid("conn-status")}[data-state="connected"]`);
    // The others are still on WebSocket.
    await waitText(ana.page, "conn-transport", "websocket");
    await shot(chen.page, "02-chen-polling");
  });

  test("offline, events meanwhile, back online: missed events arrive by replay", async () => {
    await ana.context.setOffline(true);
    await waitFor(ana.page, `${tid("conn-status")}[data-state="offline"]`);
    await shot(ana.page, "03-ana-offline");

    // ben (still online) changes things while ana is away.
    const before = await statusOf(ana.page, "shipment-status-SH-1002");
    const shipment = await otherStatus(ben.page, "shipment-status-SH-1002", ["in_transit", "at_customs"]);
    const order = await otherStatus(ben.page, "order-status-ORD-5004", ["confirmed", "in_production"]);
    const machine = await otherStatus(ben.page, "machine-M-01", ["maintenance", "running"]);
    await emitFromPanel(ben.page, "shipment", "SH-1002", shipment);
    await emitFromPanel(ben.page, "order", "ORD-5004", order);
    await emitFromPanel(ben.page, "machine", "M-01", machine);
    await waitFor(ben.page, `${tid("shipment-status-SH-1002")}[data-status="${shipment}"]`);
    await waitFor(ben.page, `${tid("machine-M-01")}[data-status="${machine}"]`);
    assert.equal(
      await statusOf(ana.page, "shipment-status-SH-1002"),
      before,
      "an offline page must not have the new status yet",
    );

    await ana.context.setOffline(false);
    await waitFor(ana.page, `${tid("conn-status")}[data-state="connected"]`);
    await waitFor(ana.page, `${tid("shipment-status-SH-1002")}[data-status="${shipment}"]`);
    await waitFor(ana.page, `${tid("order-status-ORD-5004")}[data-status="${order}"]`);
    await waitFor(ana.page, `${tid("machine-M-01")}[data-status="${machine}"]`);
    await ana.page.waitForFunction(
      () => Number(document.querySelector('[data-testid="replay-info"]')?.dataset.count) >= 3,
      null,
      { timeout: WAIT },
    );
    await waitText(ana.page, "replay-info", "caught up on");
    await waitFor(ana.page, `${tid("activity-item")}[data-replayed="true"]`);
    await waitText(ana.page, "conn-transport", "websocket");
    await shot(ana.page, "04-ana-after-replay");
  });

  test("screenshot for the README and no console errors", async () => {
    const page = ana.page;
    await page.evaluate(() => window.scrollTo(0, 0));
    // A calm picture: the finished upload has left its tray, row highlights are over.
    await page.locator(tid("upload")).first().waitFor({ state: "detached", timeout: WAIT });
    await page.waitForFunction(() => document.getAnimations().every((a) => a.playState !== "running"), null, {
      timeout: WAIT,
    });
    await shot(page, "05-board-desktop");
    if (process.env.SCREENSHOT_DOC) {
      const target = path.resolve(process.env.SCREENSHOT_DOC);
      fs.mkdirSync(path.dirname(target), { recursive: true });
      await page.screenshot({ path: target });
      assert.ok(fs.statSync(target).size < 1024 * 1024, "the README screenshot stays under 1 MiB");
    }
    for (const s of sessions) {
      const unexpected = s.errors.filter((e) => !s.expectedErrors.some((re) => re.test(e)));
      assert.deepEqual(unexpected, [], `console errors on ${s.user}'s page (failed requests: ${s.failed.join("; ")})`);
    }
  });
});
