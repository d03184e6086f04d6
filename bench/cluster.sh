#!/usr/bin/env bash
# Cross-node delivery against single-node, on one machine (not part of bench/run.sh).
#
#   bench/cluster.sh [--sockets N] [--rate R] [--duration S] [--rounds K]
#
# Starts livehub three ways on 127.0.0.1, each fresh on a PostgreSQL log, and
# runs the same `loadgen fanout` against it: N sockets in one shipment room,
# the controller emitting at R/s for S seconds:
#
#   single      one node, no Redis: sockets and emits on the same node;
#   same-node   two nodes on Redis: sockets and emits on node A;
#   cross-node  two nodes on Redis: sockets on node B, emits through node A —
#               every event crosses from A to B (B reads A's commits from the
#               shared log: LISTEN/NOTIFY, then the rows).
#
# Needs PostgreSQL at BENCH_DATABASE_URL (default
# postgres://postgres@127.0.0.1:5432/test; the database `livehub_cluster_bench`
# is dropped and created) and Redis at BENCH_REDIS_URL (default
# redis://127.0.0.1:6379). Builds livehub and the load generator (release).
# Results: bench/results/cluster-<time>/, a summary table on stdout.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)
SOCKETS=1000 RATE=100 DURATION=10 ROUNDS=3
while (($#)); do
  case "$1" in
    --sockets) SOCKETS=$2; shift ;;
    --rate) RATE=$2; shift ;;
    --duration) DURATION=$2; shift ;;
    --rounds) ROUNDS=$2; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "cluster.sh: unknown option $1" >&2; exit 1 ;;
  esac
  shift
done

PG=${BENCH_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}
REDIS=${BENCH_REDIS_URL:-redis://127.0.0.1:6379}
DB=livehub_cluster_bench
PG_URL="${PG%/*}/$DB"
SECRET="bench-$(date +%s)-$RANDOM$RANDOM"
KEY=bench-key
OUT="$BENCH_DIR/results/cluster-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$OUT"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

(cd "$REPO" && cargo build --release --quiet)
(cd "$BENCH_DIR/loadgen" && cargo build --release --quiet)
LIVEHUB="$REPO/target/release/livehub"
LOADGEN="$BENCH_DIR/loadgen/target/release/loadgen"

PIDS=()
stop_all() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null; done; PIDS=(); }
trap stop_all EXIT

# start_node NAME [REDIS_URL] → sets NODE_PORT
NODE_PORT=""
start_node() {
  local name=$1 redis=${2:-} port
  port=$("$LOADGEN" free-port)
  env -i PATH="$PATH" HOME="${HOME:-/tmp}" HOST=127.0.0.1 PORT="$port" JWT_SECRET="$SECRET" \
    API_KEYS="$KEY" RATE_LIMIT_PER_MINUTE=0 LOG_LEVEL=warn DATABASE_URL="$PG_URL" NODE_ID="$name" \
    ${redis:+REDIS_URL="$redis"} CLUSTER_NAME="bench$$" "$LIVEHUB" serve >"$OUT/$name.log" 2>&1 &
  PIDS+=($!)
  "$LOADGEN" --server "127.0.0.1:$port" wait-ready >/dev/null
  NODE_PORT=$port
}

reset_db() {
  psql -q -v ON_ERROR_STOP=1 "$PG" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB" >/dev/null
}

run_case() {
  local case=$1 round=$2 a="" b="" sockets_on emit_on
  reset_db
  case "$case" in
    single) start_node single; a=$NODE_PORT; sockets_on=$a; emit_on=$a ;;
    same-node) start_node node-a "$REDIS"; a=$NODE_PORT; start_node node-b "$REDIS"; sockets_on=$a; emit_on=$a ;;
    cross-node) start_node node-a "$REDIS"; a=$NODE_PORT; start_node node-b "$REDIS"; b=$NODE_PORT; sockets_on=$b; emit_on=$a ;;
  esac
  "$LOADGEN" --server "127.0.0.1:$sockets_on" --jwt-secret "$SECRET" --api-key "$KEY" \
    --tag case="$case" --tag round="$round" --out "$OUT/$case-$round.json" \
    fanout --sockets "$SOCKETS" --rate "$RATE" --duration "$DURATION" \
    --emit-server "127.0.0.1:$emit_on" 2>>"$OUT/loadgen.log"
  stop_all
}

for round in $(seq 1 "$ROUNDS"); do
  for case in single same-node cross-node; do
    echo "==> round $round: $case" >&2
    run_case "$case" "$round"
  done
done

echo "| case | round | deliveries/s | lost | p50 ms | p99 ms | max ms |"
echo "|---|---:|---:|---:|---:|---:|---:|"
for f in "$OUT"/*-[0-9]*.json; do
  node -e '
    const doc = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
    const t = doc.result.trial, d = t.deliveries, l = t.latency;
    const f = (x, n = 1) => (typeof x === "number" ? x.toFixed(n) : "?");
    console.log(`| ${doc.tags.case} | ${doc.tags.round} | ${f(d.per_s, 0)} | ${d.lost} | ${f(l.p50_ms)} | ${f(l.p99_ms)} | ${f(l.max_ms)} |`);
  ' "$f"
done
