#!/usr/bin/env bash
# livehub benchmarks, side by side with a Node socket.io server and the bare
# socketioxide floor (bench/floor), in one command.
#
#   bench/run.sh            full run (3 rounds, ~40-50 min on 2 cores) → docs/performance.md
#   bench/run.sh --quick    smoke run (1 round, small counts, a few minutes)
#                           → bench/results/<run>/performance.md
#
# Options:
#   --rounds N        rounds (each case is measured N times per server, alternating)
#   --only a,b        only these cases: fanout-search fanout-fixed log-cost idle connect-storm
#                     emit-api replay-user reconnect-storm replay-room
#   --servers a,b     only these servers: livehub-sqlite livehub-normal livehub-plain
#                     livehub-pg livehub-nolog livehub-nopresence floor node
#   --out FILE        where the Markdown report goes
#   --skip-build      use the binaries and node_modules already built
#   --no-pg           skip PostgreSQL even if it is reachable
#
# Environment (optional): BENCH_DATABASE_URL (PostgreSQL server to create the
# `livehub_bench` database on; default postgres://postgres@127.0.0.1:5432/test),
# and BENCH_* sizes, e.g. BENCH_IDLE_CONNECTIONS=20000 (see bench/README.md).
#
# Builds livehub (release), bench/loadgen (release) and the Node peer, then for
# every round and case starts each server fresh on 127.0.0.1 and a free port,
# runs the load generator against it, and stops it. Raw JSON: bench/results/<run>/.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)
COMMAND="bench/run.sh${*:+ $*}"

die() { echo "run.sh: $*" >&2; exit 1; }
say() { echo "==> $*" >&2; }

# ------------------------------------------------------------------ options
QUICK=0 ROUNDS="" ONLY="" SERVERS="" OUT="" SKIP_BUILD=0 USE_PG=1
while (($#)); do
  case "$1" in
    --quick) QUICK=1 ;;
    --rounds) ROUNDS=${2:?--rounds needs a number}; shift ;;
    --only) ONLY=${2:?--only needs case names}; shift ;;
    --servers) SERVERS=${2:?--servers needs server names}; shift ;;
    --out) OUT=${2:?--out needs a file}; shift ;;
    --skip-build) SKIP_BUILD=1 ;;
    --no-pg) USE_PG=0 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
  shift
done
[[ -z "$ROUNDS" || "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || die "--rounds must be a positive number"

# ------------------------------------------------------------------ sizes
# Full run: the figures the targets are stated for. Quick: enough to exercise
# every code path in a few minutes.
if ((QUICK)); then
  : "${ROUNDS:=1}"
  : "${BENCH_SEARCH_SOCKETS:=200}" "${BENCH_SEARCH_TRIAL_S:=2}" "${BENCH_SEARCH_MAX_TRIALS:=6}"
  : "${BENCH_SEARCH_START_RATE:=100}" "${BENCH_SEARCH_TOLERANCE:=0.1}"
  : "${BENCH_FIXED_SOCKETS:=500}" "${BENCH_FIXED_RATE:=50}" "${BENCH_FIXED_S:=3}"
  : "${BENCH_LOGCOST_SOCKETS:=200}" "${BENCH_LOGCOST_RATE:=100}" "${BENCH_LOGCOST_S:=3}"
  : "${BENCH_IDLE_CONNECTIONS:=1000}"
  : "${BENCH_STORM_WORKERS:=32}" "${BENCH_STORM_S:=3}"
  : "${BENCH_EMIT_CLIENTS:=16}" "${BENCH_EMIT_S:=3}"
  : "${BENCH_REPLAY_EVENTS:=2000}"
  : "${BENCH_RECONNECT_SOCKETS:=500}" "${BENCH_RECONNECT_RATE:=20}"
  : "${BENCH_RECONNECT_WARMUP_S:=2}" "${BENCH_RECONNECT_S:=6}"
  : "${BENCH_WARMUP_S:=1}"
else
  : "${ROUNDS:=3}"
  : "${BENCH_SEARCH_SOCKETS:=1000}" "${BENCH_SEARCH_TRIAL_S:=5}" "${BENCH_SEARCH_MAX_TRIALS:=16}"
  # 5 %: the log-cost target is 15 %, so the bracket must be tighter than that.
  : "${BENCH_SEARCH_START_RATE:=50}" "${BENCH_SEARCH_TOLERANCE:=0.05}"
  : "${BENCH_FIXED_SOCKETS:=5000}" "${BENCH_FIXED_RATE:=50}" "${BENCH_FIXED_S:=10}"
  # The search's 1,000 sockets at about half the rate the log passes it at:
  # both settings carry it, so CPU per delivery compares like with like.
  : "${BENCH_LOGCOST_SOCKETS:=1000}" "${BENCH_LOGCOST_RATE:=300}" "${BENCH_LOGCOST_S:=10}"
  : "${BENCH_IDLE_CONNECTIONS:=10000}"
  : "${BENCH_STORM_WORKERS:=64}" "${BENCH_STORM_S:=10}"
  : "${BENCH_EMIT_CLIENTS:=32}" "${BENCH_EMIT_S:=10}"
  : "${BENCH_REPLAY_EVENTS:=10000}"
  : "${BENCH_RECONNECT_SOCKETS:=5000}" "${BENCH_RECONNECT_RATE:=20}"
  : "${BENCH_RECONNECT_WARMUP_S:=5}" "${BENCH_RECONNECT_S:=20}"
  : "${BENCH_WARMUP_S:=2}"
fi
BENCH_DATABASE_URL=${BENCH_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}

# ------------------------------------------------------------------ file descriptors
# The idle case holds N sockets in the load generator and N in the server (each
# its own process, each needing N plus some headroom).
NEED_FDS=$((BENCH_IDLE_CONNECTIONS + 1024))
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [[ "$(ulimit -n)" != unlimited ]] && (($(ulimit -n) < NEED_FDS)); then
  die "the open-file limit is $(ulimit -n) (hard limit $(ulimit -Hn)); the idle case needs $NEED_FDS.
Raise it (e.g. 'ulimit -n 65536' as a user allowed to, or LimitNOFILE in systemd),
or run with fewer connections: BENCH_IDLE_CONNECTIONS=$(( $(ulimit -n) - 1024 )) bench/run.sh"
fi

# ------------------------------------------------------------------ build
# BENCH_LIVEHUB: another livehub binary (a `--profile profiling` build, say).
LIVEHUB=${BENCH_LIVEHUB:-$REPO/target/release/livehub}
LOADGEN=$BENCH_DIR/loadgen/target/release/loadgen
FLOOR=$BENCH_DIR/floor/target/release/floor
NODE_PEER=$BENCH_DIR/node-peer
if ((!SKIP_BUILD)); then
  say "building livehub (release)"
  (cd "$REPO" && cargo build --release)
  say "building the load generator (release)"
  (cd "$BENCH_DIR/loadgen" && cargo build --release --locked)
  say "building the floor server (release)"
  (cd "$BENCH_DIR/floor" && cargo build --release --locked)
  say "installing the Node peer"
  (cd "$NODE_PEER" && npm ci --no-audit --no-fund --loglevel=error)
fi
[[ -x "$LIVEHUB" ]] || die "$LIVEHUB is missing (run without --skip-build)"
[[ -x "$LOADGEN" ]] || die "$LOADGEN is missing (run without --skip-build)"
[[ -x "$FLOOR" ]] || die "$FLOOR is missing (run without --skip-build)"
[[ -d "$NODE_PEER/node_modules/socket.io" ]] || die "the Node peer is not installed (run without --skip-build)"
command -v node >/dev/null || die "node is not installed"

# ------------------------------------------------------------------ PostgreSQL
# A fresh database per server start, so every measurement begins with an empty log.
PG_URL="" PG_VERSION="not measured (--no-pg)"
pg_base=${BENCH_DATABASE_URL%%\?*}
pg_query=${BENCH_DATABASE_URL#"$pg_base"}
pg_reset() {
  psql -q -v ON_ERROR_STOP=1 "$BENCH_DATABASE_URL" \
    -c 'DROP DATABASE IF EXISTS livehub_bench WITH (FORCE)' \
    -c 'CREATE DATABASE livehub_bench' >/dev/null
}
if ((USE_PG)); then
  if command -v psql >/dev/null && pg_reset 2>/dev/null; then
    PG_URL="${pg_base%/*}/livehub_bench${pg_query}"
    PG_VERSION=$(psql -tA "$BENCH_DATABASE_URL" -c 'SHOW server_version' 2>/dev/null || echo unknown)
    say "PostgreSQL $PG_VERSION: using database livehub_bench"
  else
    PG_VERSION="not measured (no PostgreSQL at BENCH_DATABASE_URL)"
    say "PostgreSQL unreachable at $BENCH_DATABASE_URL: its cases are skipped"
  fi
fi

# ------------------------------------------------------------------ servers
JWT_SECRET="bench-$(date +%s)-$RANDOM$RANDOM"
API_KEY="bench-key-$RANDOM$RANDOM"
RUN_ID=$(date -u +%Y%m%dT%H%M%SZ)$( ((QUICK)) && echo -quick || true)
RUN_DIR=$BENCH_DIR/results/$RUN_ID
mkdir -p "$RUN_DIR"
SERVER_PID="" SERVER_PORT="" SERVER_TMP=""

start_server() {
  local kind=$1
  SERVER_PORT=$("$LOADGEN" free-port)
  SERVER_TMP=$(mktemp -d "${TMPDIR:-/tmp}/livehub-bench.XXXXXX")
  # A clean environment: nothing from the caller's shell (REDIS_URL, …) leaks in.
  local base=(env -i PATH="$PATH" HOME="${HOME:-/tmp}" HOST=127.0.0.1 PORT="$SERVER_PORT"
              JWT_SECRET="$JWT_SECRET" API_KEYS="$API_KEY")
  local livehub=("${base[@]}" RATE_LIMIT_PER_MINUTE=0 LOG_LEVEL=warn LOG_FORMAT=json)
  local sqlite="DATABASE_URL=sqlite://$SERVER_TMP/livehub.db"
  local cmd
  case "$kind" in
    livehub-sqlite|livehub-plain) cmd=("${livehub[@]}" "$sqlite" "$LIVEHUB" serve) ;;
    livehub-nolog)  cmd=("${livehub[@]}" "$sqlite" EVENT_LOG=off "$LIVEHUB" serve) ;;
    # No automatic online/offline statuses: what recording them costs a connect storm.
    livehub-nopresence) cmd=("${livehub[@]}" "$sqlite" PRESENCE_BROADCAST_LIMIT=0 "$LIVEHUB" serve) ;;
    livehub-normal) cmd=("${livehub[@]}" "$sqlite?synchronous=normal" "$LIVEHUB" serve) ;;
    livehub-pg)     pg_reset || return 1
                    cmd=("${livehub[@]}" DATABASE_URL="$PG_URL" "$LIVEHUB" serve) ;;
    node)           cmd=("${base[@]}" NODE_ENV=production node "$NODE_PEER/server.js") ;;
    floor)          cmd=("${base[@]}" "$FLOOR") ;;
    *) die "unknown server $kind" ;;
  esac
  # `env` execs the server, so $! is the server's own pid (the idle case reads its RSS).
  "${cmd[@]}" >"$SERVER_TMP/server.log" 2>&1 &
  SERVER_PID=$!
  if ! "$LOADGEN" --server "127.0.0.1:$SERVER_PORT" wait-ready --timeout 60 --pid "$SERVER_PID"; then
    tail -20 "$SERVER_TMP/server.log" >&2
    stop_server
    return 1
  fi
}

stop_server() {
  [[ -n "$SERVER_PID" ]] || return 0
  kill -TERM "$SERVER_PID" 2>/dev/null || true
  for _ in $(seq 150); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  # Keep the server's log beside the results when it said anything.
  if [[ -s "$SERVER_TMP/server.log" ]]; then
    cat "$SERVER_TMP/server.log" >>"$RUN_DIR/servers.log"
  fi
  rm -rf "$SERVER_TMP"
  SERVER_PID=""
}
trap stop_server EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------------------ cases
# name | label | servers | loadgen arguments (@PID@ = the server's pid)
CASES=(
  "fanout-search|Fan-out search, $BENCH_SEARCH_SOCKETS sockets in one room|livehub-sqlite livehub-nolog floor node|fanout-search --sockets $BENCH_SEARCH_SOCKETS --trial $BENCH_SEARCH_TRIAL_S --max-trials $BENCH_SEARCH_MAX_TRIALS --start-rate $BENCH_SEARCH_START_RATE --tolerance $BENCH_SEARCH_TOLERANCE"
  "fanout-fixed|Fan-out, $BENCH_FIXED_SOCKETS sockets at $BENCH_FIXED_RATE emits/s|livehub-sqlite livehub-plain floor node|fanout --sockets $BENCH_FIXED_SOCKETS --rate $BENCH_FIXED_RATE --duration $BENCH_FIXED_S --warmup $BENCH_WARMUP_S --server-pid @PID@"
  "log-cost|Log cost at a fixed load, $BENCH_LOGCOST_SOCKETS sockets at $BENCH_LOGCOST_RATE emits/s|livehub-sqlite livehub-nolog|fanout --sockets $BENCH_LOGCOST_SOCKETS --rate $BENCH_LOGCOST_RATE --duration $BENCH_LOGCOST_S --warmup $BENCH_WARMUP_S --server-pid @PID@"
  "idle|Idle memory, $BENCH_IDLE_CONNECTIONS websockets|livehub-sqlite livehub-plain floor node|idle --connections $BENCH_IDLE_CONNECTIONS --server-pid @PID@"
  "connect-storm|Connect storm (JWT handshakes), $BENCH_STORM_WORKERS workers|livehub-sqlite livehub-nopresence floor node|connect-storm --workers $BENCH_STORM_WORKERS --duration $BENCH_STORM_S --warmup $BENCH_WARMUP_S"
  "emit-api|Emit API alone, $BENCH_EMIT_CLIENTS keep-alive clients|livehub-sqlite livehub-normal livehub-pg livehub-nolog floor node|emit-api --clients $BENCH_EMIT_CLIENTS --duration $BENCH_EMIT_S --warmup $BENCH_WARMUP_S"
  "replay-user|Replay of $BENCH_REPLAY_EVENTS missed events (user room, auth.offset)|livehub-sqlite livehub-pg|replay --via user --events $BENCH_REPLAY_EVENTS"
  "reconnect-storm|Reconnect storm: $BENCH_RECONNECT_SOCKETS clients drop at once and come back with offsets, $BENCH_RECONNECT_RATE emits/s|livehub-sqlite livehub-pg|reconnect-storm --sockets $BENCH_RECONNECT_SOCKETS --rate $BENCH_RECONNECT_RATE --warmup $BENCH_RECONNECT_WARMUP_S --duration $BENCH_RECONNECT_S"
  "replay-room|Replay of $BENCH_REPLAY_EVENTS missed events (shipment room, join with since)|livehub-sqlite|replay --via room --events $BENCH_REPLAY_EVENTS"
)

wanted() { [[ -z "$ONLY" || ",$ONLY," == *",$1,"* ]]; }
wanted_server() { [[ -z "$SERVERS" || ",$SERVERS," == *",$1,"* ]]; }

FAILURES=0
measure() {
  local case=$1 label=$2 server=$3 round=$4 args=$5
  if [[ "$server" == livehub-pg && -z "$PG_URL" ]]; then return 0; fi
  wanted_server "$server" || return 0
  say "round $round/$ROUNDS · $case · $server"
  if ! start_server "$server"; then
    echo "run.sh: $server did not start; $case skipped" >&2
    FAILURES=$((FAILURES + 1))
    return 0
  fi
  local argv
  read -ra argv <<<"${args//@PID@/$SERVER_PID}"
  # The same livehub, its clients on the plain WebSocket endpoint instead.
  if [[ "$server" == livehub-plain ]]; then argv=(--plain "${argv[@]}"); fi
  if ! "$LOADGEN" --server "127.0.0.1:$SERVER_PORT" --jwt-secret "$JWT_SECRET" --api-key "$API_KEY" \
      --tag "case=$case" --tag "label=$label" --tag "server=$server" --tag "round=$round" \
      --out "$RUN_DIR/$case.$server.r$round.json" "${argv[@]}" 2> >(tee -a "$RUN_DIR/loadgen.log" >&2); then
    echo "run.sh: $case on $server failed (see $RUN_DIR/loadgen.log)" >&2
    FAILURES=$((FAILURES + 1))
  fi
  stop_server
}

say "run $RUN_ID: $ROUNDS round(s), results in ${RUN_DIR#"$REPO"/}"
for round in $(seq "$ROUNDS"); do
  for entry in "${CASES[@]}"; do
    IFS='|' read -r case label servers args <<<"$entry"
    wanted "$case" || continue
    read -ra order <<<"$servers"
    # Alternate who goes first, so neither server always gets the cooler machine.
    if ((round % 2 == 0)); then
      for ((i = ${#order[@]} - 1; i >= 0; i--)); do measure "$case" "$label" "${order[i]}" "$round" "$args"; done
    else
      for server in "${order[@]}"; do measure "$case" "$label" "$server" "$round" "$args"; done
    fi
  done
done

# ------------------------------------------------------------------ report
quick_flag=(); ((QUICK)) && quick_flag=(--quick)
"$LOADGEN" --out "$RUN_DIR/meta.json" meta --repo "$REPO" --node-peer "$NODE_PEER" \
  --command "$COMMAND" --rounds "$ROUNDS" --postgres "$PG_VERSION" "${quick_flag[@]}"
if [[ -z "$OUT" ]]; then
  # A smoke run's numbers must not replace the real report.
  if ((QUICK)); then OUT=$RUN_DIR/performance.md; else OUT=$REPO/docs/performance.md; fi
fi
"$LOADGEN" report --dir "$RUN_DIR" --out "$OUT"
say "report: $OUT"
((FAILURES == 0)) || say "$FAILURES measurement(s) failed; see $RUN_DIR/loadgen.log"
