#!/usr/bin/env bash
# The HTTP API fuzzed against its own OpenAPI document: schemathesis (from
# PyPI, in a throwaway virtualenv) generates requests for every operation of
# GET /api/v1/openapi.json and checks each answer against it — no 5xx, every
# status, header and body as documented (errors in the {ok:false,error} shape),
# invalid input refused and valid input accepted. Run twice: once as a
# controller (API key), once as a user (JWT). Bounded: a fixed number of
# examples per operation and a time budget per run.
#
# Needs target/debug/livehub (or LIVEHUB_BIN) and python3 with venv.
# Environment: FUZZ_EXAMPLES (default 25 per operation), FUZZ_SECONDS (30 per run).
#
# The coverage phase is left out, and one worker runs: schemathesis 4.32.5
# fails inside its own code otherwise (a KeyError in its schema walker; CPython
# 3.11's ast.parse from hypothesis in several threads), not on livehub's answers.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BIN=${LIVEHUB_BIN:-$ROOT/target/debug/livehub}
SCHEMATHESIS_VERSION=4.32.5
EXAMPLES=${FUZZ_EXAMPLES:-25}
SECONDS_PER_RUN=${FUZZ_SECONDS:-30}
SECRET=api-fuzz-secret-0123456789abcdef
API_KEY=api-fuzz-key

work=$(mktemp -d "${TMPDIR:-/tmp}/livehub-api-fuzz.XXXXXX")
server_pid=
cleanup() {
  status=$?
  [ -n "$server_pid" ] && kill -TERM "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
  if [ "$status" -ne 0 ] && [ -s "$work/server.err" ]; then
    echo "---- livehub stderr (last 30 lines) ----" >&2
    tail -n 30 "$work/server.err" >&2
  fi
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT

venv=${TMPDIR:-/tmp}/livehub-schemathesis-$SCHEMATHESIS_VERSION
if [ ! -x "$venv/bin/schemathesis" ]; then
  echo "api-fuzz: installing schemathesis $SCHEMATHESIS_VERSION into $venv"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

HOST=127.0.0.1 PORT=0 JWT_SECRET=$SECRET API_KEYS=$API_KEY DATABASE_URL="sqlite://$work/livehub.db" \
  RATE_LIMIT_PER_MINUTE=0 LOG_LEVEL=warn "$BIN" serve >"$work/server.out" 2>"$work/server.err" &
server_pid=$!
url=
for _ in $(seq 1 100); do
  url=$(grep -oE 'listening on http://[0-9.:]+' "$work/server.out" 2>/dev/null | head -n1 | sed 's/.* on //') || true
  [ -n "$url" ] && break
  sleep 0.2
done
[ -n "$url" ] || { echo "api-fuzz: livehub did not start" >&2; exit 1; }
user_token=$(JWT_SECRET=$SECRET "$BIN" token --sub fuzz-user --branch fuzz --role operator --ttl 1h)

run() {
  local who=$1 token=$2 skip=$3
  echo "api-fuzz: as $who"
  # The plain WebSocket upgrade, the dev routes (not served here) and the Admin
  # UI's page are not JSON APIs; `skip` are the routes that are always 403 for
  # this caller (a user's own routes for a controller, and the other way round).
  "$venv/bin/schemathesis" --config-file scripts/openapi/schemathesis.toml \
    run "$url/api/v1/openapi.json" --url "$url" \
    --exclude-path-regex "$skip" \
    --header "Authorization: Bearer $token" \
    --checks all --phases examples,fuzzing,stateful \
    --exclude-tag plain-websocket --exclude-tag dev --exclude-tag admin \
    --max-examples "$EXAMPLES" --max-time "$SECONDS_PER_RUN" --seed 7 \
    --workers 1 --request-timeout 10 --no-color --report ndjson --report-dir "$work/$who"
}
status=0
run controller "$API_KEY" '^/ws/|/read$' || status=1
run user "$user_token" '^/api/v1/(emit|users/)' || status=1
exit $status
