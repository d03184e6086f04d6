// Starts ../target/debug/livehub (or LIVEHUB_BIN) for a browser test: PORT=0,
// a temporary SQLite file, `env` on top. Resolves with { url, proc, stop }.
import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
export const BIN = process.env.LIVEHUB_BIN || path.join(ROOT, "target/debug/livehub");

export async function startLivehub({ args = [], env = {} } = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "livehub-browser-test-"));
  const proc = spawn(BIN, ["serve", ...args], {
    env: {
      PATH: process.env.PATH,
      HOST: "127.0.0.1",
      PORT: "0",
      DATABASE_URL: `sqlite://${dir}/livehub.db`,
      LOG_LEVEL: "warn",
      ...env,
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  let err = "";
  proc.stderr.on("data", (d) => (err += d));
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`livehub did not start:\n${err}`)), 30_000);
    proc.stdout.on("data", (d) => {
      out += d;
      const m = out.match(/livehub listening on (http:\/\/[0-9.:]+)/);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
    proc.on("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`livehub exited (${code}) before listening:\n${err}`));
    });
  });
  const stop = () => {
    proc.kill("SIGTERM");
    fs.rmSync(dir, { recursive: true, force: true });
  };
  return { url, proc, stop };
}
