#!/usr/bin/env bash
# Runs livehub for development: builds the demo page, then starts the server in
# dev mode (generated JWT secret and API key, printed loudly; embedded SQLite in
# ./livehub.db; the demo board at http://127.0.0.1:3000/).
#
# Needs: Rust (cargo) and Node.js 20+ with npm. Extra arguments go to `livehub serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
(cd web-demo && npm ci --no-audit --no-fund --loglevel=error && npm run build --silent)
exec cargo run --locked -- serve --dev "$@"
