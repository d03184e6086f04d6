#!/usr/bin/env bash
# Runs every test livehub has, from a fresh clone: formatting, lints, Rust unit
# and integration tests (SQLite always; PostgreSQL and Redis when
# TEST_DATABASE_URL / TEST_REDIS_URL are set, skipped with a message otherwise),
# the end-to-end suite with the real socket.io-client 4.x and 2.x, and the demo
# page in headless Chromium.
#
# Needs: Rust (cargo), Node.js 20+ with npm. Installs the rest itself.
set -euo pipefail
cd "$(dirname "$0")/.."

started=$SECONDS
last= # when the running step began; empty before the first
step() {
  if [ -n "$last" ]; then printf '    (%ss)\n' "$((SECONDS - last))"; fi
  last=$SECONDS
  printf '\n\033[1m==> %s\033[0m\n' "$*"
}

step "format (cargo fmt --check)"
cargo fmt --all -- --check

step "lints (cargo clippy -D warnings)"
cargo clippy --all-targets --locked --quiet -- -D warnings

step "build"
cargo build --locked --quiet

step "Rust tests (unit, store on SQLite$( [ -n "${TEST_DATABASE_URL:-}" ] && echo " and PostgreSQL"))"
cargo test --locked --quiet

step "end-to-end tests (socket.io-client 4.x and 2.x against livehub)"
(cd tests/e2e && npm ci --no-audit --no-fund --loglevel=error && npm test)

step "HTTP API fuzzed against its OpenAPI document (schemathesis)"
scripts/api-fuzz.sh

if [ -f web-demo/package.json ]; then
  step "demo page in headless Chromium"
  scripts/browser-test.sh
fi

printf '    (%ss)\n\n\033[1mall tests passed in %ss\033[0m\n' "$((SECONDS - last))" "$((SECONDS - started))"
