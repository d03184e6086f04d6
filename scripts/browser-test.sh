#!/usr/bin/env bash
# The demo page end to end in real headless Chromium (Debian's package, driven
# by playwright-core): builds web-demo, starts `livehub serve --dev` on a free
# port with a temporary SQLite database, runs web-demo/tests/demo.e2e.mjs
# against it, and always stops the server.
#
# Needs target/debug/livehub (scripts/test-all.sh runs `cargo build` first) and
# Node.js 20+ with npm. Installs Chromium with apt when it is missing.
#
# Environment: LIVEHUB_BIN (default target/debug/livehub), CHROMIUM_PATH
# (default /usr/bin/chromium), SCREENSHOT_DOC (also save the board screenshot
# there, e.g. docs/demo-board.png). Screenshots: web-demo/test-artifacts/.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

BIN=${LIVEHUB_BIN:-$ROOT/target/debug/livehub}
export CHROMIUM_PATH=${CHROMIUM_PATH:-/usr/bin/chromium}

if [ ! -x "$BIN" ]; then
  echo "browser-test: $BIN is missing; run cargo build first" >&2
  exit 1
fi

if [ ! -x "$CHROMIUM_PATH" ]; then
  echo "browser-test: installing Debian's chromium"
  if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
"$CHROMIUM_PATH" --version 2>/dev/null || true

echo "browser-test: building web-demo"
(cd web-demo && npm ci --no-audit --no-fund --loglevel=error && npm run build --silent)

work=$(mktemp -d "${TMPDIR:-/tmp}/livehub-browser-test.XXXXXX")
server_pid=
cleanup() {
  status=$?
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  if [ "$status" -ne 0 ] && [ -s "$work/server.err" ]; then
    echo "---- livehub stderr (last 40 lines) ----" >&2
    tail -n 40 "$work/server.err" >&2
  fi
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

echo "browser-test: starting livehub (dev mode, temporary SQLite)"
HOST=127.0.0.1 PORT=0 DEMO_DIR="$ROOT/web-demo/dist" DATABASE_URL="sqlite://$work/livehub.db" \
  LOG_LEVEL=warn "$BIN" serve --dev >"$work/server.out" 2>"$work/server.err" &
server_pid=$!

url=
for _ in $(seq 1 150); do
  url=$(grep -oE 'livehub listening on http://[0-9.:]+' "$work/server.out" 2>/dev/null | head -n1 | sed 's/.* on //') || true
  [ -n "$url" ] && break
  if ! kill -0 "$server_pid" 2>/dev/null; then
    echo "browser-test: livehub exited before listening" >&2
    cat "$work/server.err" >&2
    exit 1
  fi
  sleep 0.2
done
if [ -z "$url" ]; then
  echo "browser-test: livehub did not print its address within 30 s" >&2
  exit 1
fi
echo "browser-test: livehub at $url"

if [ -n "${SCREENSHOT_DOC:-}" ]; then
  case $SCREENSHOT_DOC in /*) ;; *) SCREENSHOT_DOC=$ROOT/$SCREENSHOT_DOC ;; esac
  export SCREENSHOT_DOC
fi

cd web-demo
LIVEHUB_URL=$url node --test --test-reporter=spec --test-timeout=180000 tests/demo.e2e.mjs
# The Admin UI test starts its own livehub (admin credentials, not dev mode).
LIVEHUB_BIN=$BIN node --test --test-reporter=spec --test-timeout=120000 tests/admin-ui.e2e.mjs
