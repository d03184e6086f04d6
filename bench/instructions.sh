#!/usr/bin/env bash
# What one Socket.IO handshake costs a server in CPU instructions: the server
# runs under valgrind's callgrind while a small connect storm (JWT handshake,
# CONNECT, close) goes on, and the instructions of a fixed stretch are divided
# by the handshakes completed in it.
#
#   bench/instructions.sh                   livehub (SQLite log)
#   bench/instructions.sh --server floor    the bare socketioxide floor
#   bench/instructions.sh --env PRESENCE_BROADCAST_LIMIT=0
#
# Instruction counts do not depend on what else the machine is doing, unlike
# handshakes per second on a shared 2-core machine (±30 % from one run to the
# next), so a change of a few per cent shows. They leave out the kernel (about
# half of a handshake's CPU on loopback) and count a `rep movsb` copy per byte,
# so they overstate large copies. Read them beside bench/run.sh's figures, not
# instead of them.
#
# Prints instructions per handshake, then the server's functions by inclusive
# instructions per handshake. callgrind.out stays in
# bench/results/instructions-<time>-<server>/ for callgrind_annotate.
#
# Needs: valgrind; the release binaries of livehub (BENCH_LIVEHUB picks
# another), bench/loadgen and bench/floor.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)
LIVEHUB=${BENCH_LIVEHUB:-$REPO/target/release/livehub}
LOADGEN=$BENCH_DIR/loadgen/target/release/loadgen
FLOOR=$BENCH_DIR/floor/target/release/floor

server=livehub workers=8 seconds=15 extra_env=()
while (($#)); do
  case "$1" in
    --server) server=$2; shift 2 ;;
    --workers) workers=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --env) extra_env+=("$2"); shift 2 ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "instructions.sh: unknown option $1" >&2; exit 2 ;;
  esac
done

die() { echo "instructions.sh: $*" >&2; exit 1; }
command -v valgrind >/dev/null || die "valgrind is not installed"
[[ -x "$LOADGEN" ]] || die "$LOADGEN is missing: cd bench/loadgen && cargo build --release --locked"
case "$server" in
  livehub) [[ -x "$LIVEHUB" ]] || die "$LIVEHUB is missing: cargo build --release" ;;
  floor) [[ -x "$FLOOR" ]] || die "$FLOOR is missing: cd bench/floor && cargo build --release --locked" ;;
  *) die "--server is livehub or floor" ;;
esac

out=$BENCH_DIR/results/instructions-$(date -u +%Y%m%dT%H%M%SZ)-$server
mkdir -p "$out"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/livehub-instructions.XXXXXX")
secret="instructions-$(date +%s)-$RANDOM$RANDOM"
key="instructions-key-$RANDOM"
port=$("$LOADGEN" free-port)
server_pid=""
cleanup() {
  [[ -n "$server_pid" ]] && { kill -KILL "$server_pid"; wait "$server_pid"; } 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT

# vgdb finds the server by a name made of USER and HOST: both set here, the
# same for the server and for callgrind_control.
names=(USER=bench HOST=127.0.0.1)
base=(env -i PATH="$PATH" HOME="${HOME:-/tmp}" "${names[@]}" PORT="$port"
      JWT_SECRET="$secret" API_KEYS="$key")
case "$server" in
  livehub) cmd=("${base[@]}" RATE_LIMIT_PER_MINUTE=0 LOG_LEVEL=warn
                DATABASE_URL="sqlite://$tmp/livehub.db" "${extra_env[@]}") ;;
  floor) cmd=("${base[@]}" "${extra_env[@]}") ;;
esac
cmd+=(valgrind --tool=callgrind --vgdb-prefix="$tmp/vgdb"
      --callgrind-out-file="$out/callgrind.out")
case "$server" in
  livehub) cmd+=("$LIVEHUB" serve) ;;
  floor) cmd+=("$FLOOR") ;;
esac
"${cmd[@]}" >"$out/server.log" 2>&1 &
server_pid=$!
"$LOADGEN" --server "127.0.0.1:$port" wait-ready --timeout 180 --pid "$server_pid" \
  || { tail -20 "$out/server.log" >&2; die "the server did not start"; }

storm() {
  "$LOADGEN" --server "127.0.0.1:$port" --jwt-secret "$secret" --api-key "$key" \
    connect-storm --workers "$workers" --duration "$1" --warmup 0 --out "$2" >/dev/null 2>&1
}
control() { env "${names[@]}" callgrind_control --vgdb-prefix="$tmp/vgdb" "$@" >/dev/null 2>&1; }
# Warm up (first allocations, statement caches), then count a fixed stretch.
storm 3 "$tmp/warm.json"
control --zero "$server_pid"
storm "$seconds" "$out/loadgen.json"
control --dump=counted "$server_pid"

counted=$(ls "$out"/callgrind.out.* | head -n1)
python3 - "$out/loadgen.json" "$counted" "$server" <<'EOF_PY'
import json, re, sys
handshakes = json.load(open(sys.argv[1]))["result"]["handshakes"]
total = int(re.search(r"^summary: (\d+)", open(sys.argv[2]).read(), re.M)[1])
print(f"== {sys.argv[3]}: {handshakes:,} handshakes, {total / handshakes:,.0f} instructions per handshake")
EOF_PY
handshakes=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['result']['handshakes'])" "$out/loadgen.json")
# Inclusive counts per handshake; the runtime's, std's and future combinators'
# own frames (which include everything they poll) are left out.
per_handshake() {
  callgrind_annotate --inclusive=yes --threshold=100 "$counted" 2>/dev/null \
    | grep -E '^ *[0-9,]+ \(' \
    | grep -vE 'PROGRAM TOTALS|tokio::runtime|std::|core::ops::function|core::future|futures_util::future|tower::util|axum::util|axum::routing::route|tokio_util::task|start_thread|clone\.S' \
    | grep -E "$1" | head -"$2" | awk -v n="$handshakes" '{ gsub(",", "", $1); name = substr($0, index($0, ":") + 1);
        sub(/ \[.*$/, "", name); printf "%9.0f  %s\n", $1 / n, substr(name, 1, 140) }'
}
echo "== the heaviest functions, inclusive instructions per handshake"
per_handshake . 25
echo
echo "== livehub's own functions"
per_handshake 'livehub::' 25
echo
echo "callgrind data: $counted"
