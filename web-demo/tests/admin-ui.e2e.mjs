// The Socket.IO Admin UI (npm @socket.io/admin-ui, served by livehub at
// /admin/) in real headless Chromium against a real livehub with admin
// credentials: the login form, the connected sockets and their rooms, a room
// joined from the UI (and a controller's emit to it reaching the client), and a
// socket disconnected from the UI.
//
//   node --test tests/admin-ui.e2e.mjs     (after `npm run build`; needs ../target/debug/livehub)
//
// No timing assertions: every wait is Playwright's own, with generous limits.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import bcrypt from "bcryptjs";
import { chromium } from "playwright-core";
import { io } from "socket.io-client";
import { BIN, startLivehub } from "./lib/livehub.mjs";

const DEMO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const CHROMIUM = process.env.CHROMIUM_PATH || "/usr/bin/chromium";
const WAIT = 20_000;
const SECRET = "admin-ui-test-secret-0123456789abcdef";
const API_KEY = "admin-ui-test-key";
const PASSWORD = "a long admin password";

let server;
let base;
let browser;
let user;

before(async () => {
  server = await startLivehub({
    env: {
      JWT_SECRET: SECRET,
      API_KEYS: API_KEY,
      ADMIN_USERNAME: "ops",
      ADMIN_PASSWORD_HASH: bcrypt.hashSync(PASSWORD, 4),
      ADMIN_UI_DIR: path.join(DEMO, "dist/admin"),
    },
  });
  base = server.url;
  const token = execFileSync(BIN, ["token", "--sub", "ada", "--branch", "north", "--name", "Ada"], { env: { JWT_SECRET: SECRET } })
    .toString()
    .trim();
  user = io(base, { auth: { token }, transports: ["websocket"], reconnection: false });
  await new Promise((resolve, reject) => {
    user.once("connect", resolve);
    user.once("connect_error", reject);
  });
  const joined = await new Promise((r) => user.emit("join:shipment", { shipmentId: "UI-7" }, r));
  assert.equal(joined.ok, true);
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
});

after(async () => {
  user?.close();
  await browser?.close();
  server?.stop();
});

test("an operator logs in, sees the sockets and their rooms, joins one to a room and disconnects it", async () => {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  await page.goto(`${base}/admin/`);
  // The server URL is filled in with livehub's own address; a wrong password is refused.
  assert.equal(await page.getByLabel("Server URL").inputValue(), base);
  await page.getByLabel("Username").fill("ops");
  await page.getByLabel("Password").fill("not the password");
  await page.getByRole("button", { name: "Connect" }).click();
  await page.getByText("Invalid credentials").waitFor({ timeout: WAIT });
  await page.getByLabel("Password").fill(PASSWORD);
  await page.getByRole("button", { name: "Connect" }).click();
  await page.locator("header").getByText(/^connected$/i).first().waitFor({ timeout: WAIT });

  // The socket list shows the user's socket; its page shows its rooms.
  await page.getByRole("link", { name: "Sockets" }).click();
  await page.getByText(user.id).first().click();
  for (const room of ["user:ada", "branch:north", "shipment:UI-7"]) {
    await page.getByRole("cell", { name: room, exact: true }).waitFor({ timeout: WAIT });
  }

  // Join a room from the UI; a controller's emit to that room reaches the client.
  const received = new Promise((resolve) => user.on("ops:notice", resolve));
  await page.getByLabel("Join a room").fill("channel:floor-2");
  await page.locator("form", { has: page.getByLabel("Join a room") }).locator('button[type="submit"]').click();
  await page.getByRole("cell", { name: "channel:floor-2", exact: true }).waitFor({ timeout: WAIT });
  const res = await fetch(`${base}/api/v1/emit`, {
    method: "POST",
    headers: { authorization: `Bearer ${API_KEY}`, "content-type": "application/json" },
    body: JSON.stringify({ event: "ops:notice", rooms: ["channel:floor-2"], data: { text: "from the floor" } }),
  });
  assert.equal(res.status, 202);
  const notice = await received;
  assert.equal(notice.text, "from the floor");

  // Disconnect the socket from the UI.
  const gone = new Promise((resolve) => user.once("disconnect", resolve));
  await page.locator("tr", { hasText: "Status" }).first().locator("button").click();
  assert.equal(await gone, "io server disconnect");
  fs.mkdirSync(path.join(DEMO, "test-artifacts"), { recursive: true });
  await page.screenshot({ path: path.join(DEMO, "test-artifacts/admin-ui.png") });
  assert.deepEqual(errors, [], "no errors on the page");
});
