#!/usr/bin/env bash
# Who owns an idle socket's memory? (not part of bench/run.sh)
#
#   bench/heap-profile.sh [--connections N] [--plain]
#
# Needs heaptrack (Debian: apt-get install heaptrack) and bench/loadgen built
# (release). Builds livehub with the system allocator into target/sysalloc
# (heaptrack sees malloc, not mimalloc; a separate directory so that
# target/release keeps the real build), runs it under heaptrack, holds N idle
# authenticated sockets with `loadgen idle`, and kills the server with SIGKILL
# while they are held: what heaptrack reports as leaked is what was live. Prints
# the largest live allocation sites, in bytes per socket. docs/memory-profile.md
# has what it found.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LG=$REPO/bench/loadgen/target/release/loadgen
CONNECTIONS=5000
PLAIN=()
while [ $# -gt 0 ]; do
  case "$1" in
    --connections) CONNECTIONS=$2; shift 2 ;;
    --plain) PLAIN=(--plain); shift ;;
    *) echo "usage: $0 [--connections N] [--plain]" >&2; exit 2 ;;
  esac
done
command -v heaptrack >/dev/null || { echo "heaptrack is not installed (apt-get install heaptrack)" >&2; exit 1; }
[ -x "$LG" ] || { echo "build bench/loadgen first: (cd bench/loadgen && cargo build --release --locked)" >&2; exit 1; }

CARGO_TARGET_DIR=$REPO/target/sysalloc cargo build --release --locked --no-default-features \
  --manifest-path "$REPO/Cargo.toml" >&2
BIN=$REPO/target/sysalloc/release/livehub
DIR=$(mktemp -d)
PORT=$($LG free-port)
SECRET=heap-profile-secret-0123456789
env -i PATH="$PATH" HOME=/tmp HOST=127.0.0.1 PORT="$PORT" JWT_SECRET=$SECRET API_KEYS=k \
  RATE_LIMIT_PER_MINUTE=0 LOG_LEVEL=warn DATABASE_URL="sqlite://$DIR/l.db" \
  heaptrack -o "$DIR/heap" "$BIN" serve >"$DIR/log" 2>&1 &
$LG --server "127.0.0.1:$PORT" wait-ready >/dev/null
SERVER=$(pgrep -f "^$BIN serve" | head -n1)
$LG --server "127.0.0.1:$PORT" --jwt-secret $SECRET --api-key k idle "${PLAIN[@]}" \
  --connections "$CONNECTIONS" --server-pid "$SERVER" --settle 30 >"$DIR/idle.json" 2>&1 &
LOADGEN=$!
held=0
for _ in $(seq 1 120); do
  held=$(($(ss -Htn state established "( sport = :$PORT )" | wc -l)))
  [ "$held" -ge "$CONNECTIONS" ] && break
  sleep 1
done
sleep 5 # the handshakes' temporary allocations are freed
kill -9 "$SERVER"
kill "$LOADGEN" 2>/dev/null || true
wait 2>/dev/null || true
echo "held $held sockets; live heap by allocation site (bytes per socket):"
heaptrack_print -f "$DIR"/heap*.zst --print-leaks 1 --print-peaks 0 --print-allocators 0 \
  --print-temporary 0 -n 30 2>/dev/null |
  awk -v n="$held" '
    function bytes(s) { u = substr(s, length(s)); v = s + 0
      return u == "G" ? v * 2^30 : u == "M" ? v * 2^20 : u == "K" ? v * 2^10 : v }
    /^total memory leaked/ { printf "%8.0f  all live memory\n", bytes($4) / n }
    /^[0-9.]+[KMG]?B? leaked over [0-9]+ calls from$/ { size = bytes($1); getline; sub(/^ +/, "")
      printf "%8.0f  %s\n", size / n, substr($0, 1, 110) }'
echo "full report: heaptrack_print -f $DIR/heap*.zst --print-leaks 1"
