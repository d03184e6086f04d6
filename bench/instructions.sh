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

SCRIPT=instructions.sh
source "$(dirname "${BASH_SOURCE[0]}")/one-server.sh"

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

command -v valgrind >/dev/null || die "valgrind is not installed"
check_binaries "$server"

out=$BENCH_DIR/results/instructions-$(date -u +%Y%m%dT%H%M%SZ)-$server
mkdir -p "$out"
server_pid="" server_tmp=""
cleanup() {
  [[ -n "$server_pid" ]] && { kill -KILL "$server_pid"; wait "$server_pid"; } 2>/dev/null
  [[ -n "$server_tmp" ]] && rm -rf "$server_tmp"
}
trap cleanup EXIT
# vgdb finds the server by a name made of USER and HOST (HOST is the address
# the server listens on): the same for the server and for callgrind_control.
names=(USER=bench HOST=127.0.0.1)
vgdb_prefix=$out/vgdb
start_server "$server" "$out" "${names[0]}" "${extra_env[@]}" -- \
  valgrind --tool=callgrind --vgdb-prefix="$vgdb_prefix" --callgrind-out-file="$out/callgrind.out"

storm() {
  "$LOADGEN" --server "127.0.0.1:$port" --jwt-secret "$secret" --api-key "$key" \
    connect-storm --workers "$workers" --duration "$1" --warmup 0 --out "$2" >/dev/null 2>&1
}
control() { env "${names[@]}" callgrind_control --vgdb-prefix="$vgdb_prefix" "$@" >/dev/null 2>&1; }
# Warm up (first allocations, statement caches), then count a fixed stretch.
storm 3 "$out/warm.json"
control --zero "$server_pid"
storm "$seconds" "$out/loadgen.json"
control --dump=counted "$server_pid"

counted=$(ls "$out"/callgrind.out.* | head -n1)
handshakes=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['result']['handshakes'])" "$out/loadgen.json")
total=$(sed -n 's/^summary: //p' "$counted")
echo "== $server: $handshakes handshakes, $((total / handshakes)) instructions per handshake"
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
