#!/usr/bin/env bash
# Does memory come back after a burst? (not part of bench/run.sh)
#
#   bench/memory-back.sh            # needs: cargo build --release; bench/loadgen built (release)
#
# Starts the release livehub on SQLite, reads its RSS, runs
# `loadgen fanout --sockets 5000 --rate 50 --duration 10` twice (every client
# leaves after each), and reads RSS every 5 s for 30 s after the second.
# EXTRA_ENV="MIMALLOC_PURGE_DELAY=0" passes allocator settings through;
# BIN=… measures another build (e.g. one with --no-default-features).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LG=$REPO/bench/loadgen/target/release/loadgen
BIN=${BIN:-$REPO/target/release/livehub}
DIR=$(mktemp -d)
PORT=$($LG free-port)
SECRET=memory-back-secret-0123456789
# shellcheck disable=SC2086
env -i PATH="$PATH" HOME=/tmp HOST=127.0.0.1 PORT="$PORT" JWT_SECRET=$SECRET API_KEYS=k \
  RATE_LIMIT_PER_MINUTE=0 LOG_LEVEL=warn DATABASE_URL="sqlite://$DIR/l.db" ${EXTRA_ENV:-} "$BIN" serve >"$DIR/log" 2>&1 &
PID=$!
trap 'kill $PID' EXIT
$LG --server "127.0.0.1:$PORT" wait-ready >/dev/null
# RSS, and its parts: the heap and other anonymous memory, and the pages of
# the binary and libraries (file-backed: code the burst ran for the first time).
rss() {
  awk '/^VmRSS/ {t=$2} /^RssAnon/ {a=$2} /^RssFile/ {f=$2}
       END {printf "%.1f (anon %.1f, file %.1f)", t/1024, a/1024, f/1024}' "/proc/$PID/status"
}
# Where the anonymous part is, at the start and at the end: mimalloc's arena
# (the one mapping of 1 GiB or more: the Rust heap) and the rest of the heap
# and anonymous memory (the C library's malloc, where SQLite allocates; the
# threads' stacks).
heaps() {
  awk '/^[0-9a-f]+-[0-9a-f]+ / {name = $6} /^Size:/ {size = $2}
       /^Rss:/ && (name == "" || name == "[heap]") {if (size >= 1048576) m += $2; else o += $2}
       END {printf "  mimalloc arena %.2f MiB, other anonymous %.2f MiB\n", m/1024, o/1024}' "/proc/$PID/smaps"
}
burst() {
  $LG --server "127.0.0.1:$PORT" --jwt-secret $SECRET --api-key k --out "$DIR/$1.json" \
    fanout --sockets 5000 --rate 50 --duration 10 2>/dev/null
}
echo "start: $(rss) MiB"
heaps
burst first
echo "after a burst, clients gone: $(rss) MiB"
sleep 5
burst second
echo "after a second burst: $(rss) MiB"
for i in 1 2 3 4 5 6; do sleep 5; echo "+$((i * 5)) s: $(rss) MiB"; done
heaps
