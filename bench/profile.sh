#!/usr/bin/env bash
# Where a fan-out's CPU goes: one server under the fixed fan-out load, the whole
# machine sampled with `perf` in the middle of the trial.
#
#   bench/profile.sh                       livehub (SQLite log), 5,000 sockets x 50 emits/s
#   bench/profile.sh --server floor        the bare socketioxide floor, same load
#   bench/profile.sh --sockets 1000 --rate 100 --env EVENT_LOG=off
#
# Prints the trial's latency (publish -> receive, and the emit's own answer),
# the CPU split by process and thread (the load generator shares the cores, so
# it is part of the picture), and the server's hottest symbols per thread
# group. perf.data and the load generator's JSON stay in
# bench/results/profile-<time>-<server>/ for `perf report -i`.
#
# Needs: perf (linux-perf) and permission to sample every CPU (root, or
# kernel.perf_event_paranoid <= 0); the release binaries of livehub
# (BENCH_LIVEHUB picks another, e.g. a `--profile profiling` build for line
# numbers), bench/loadgen and bench/floor.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)
LIVEHUB=${BENCH_LIVEHUB:-$REPO/target/release/livehub}
LOADGEN=$BENCH_DIR/loadgen/target/release/loadgen
FLOOR=$BENCH_DIR/floor/target/release/floor

server=livehub sockets=5000 rate=50 seconds=8 extra_env=()
while (($#)); do
  case "$1" in
    --server) server=$2; shift 2 ;;
    --sockets) sockets=$2; shift 2 ;;
    --rate) rate=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --env) extra_env+=("$2"); shift 2 ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "profile.sh: unknown option $1" >&2; exit 2 ;;
  esac
done

die() { echo "profile.sh: $*" >&2; exit 1; }
command -v perf >/dev/null || die "perf is not installed"
[[ -x "$LOADGEN" ]] || die "$LOADGEN is missing: cd bench/loadgen && cargo build --release --locked"
case "$server" in
  livehub) [[ -x "$LIVEHUB" ]] || die "$LIVEHUB is missing: cargo build --release" ;;
  floor) [[ -x "$FLOOR" ]] || die "$FLOOR is missing: cd bench/floor && cargo build --release --locked" ;;
  *) die "--server is livehub or floor" ;;
esac

out=$BENCH_DIR/results/profile-$(date -u +%Y%m%dT%H%M%SZ)-$server
mkdir -p "$out"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/livehub-profile.XXXXXX")
secret="profile-$(date +%s)-$RANDOM$RANDOM"
key="profile-key-$RANDOM"
port=$("$LOADGEN" free-port)
server_pid="" perf_pid=""
cleanup() {
  [[ -n "$perf_pid" ]] && kill "$perf_pid" 2>/dev/null
  [[ -n "$server_pid" ]] && { kill -KILL "$server_pid"; wait "$server_pid"; } 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT

base=(env -i PATH="$PATH" HOME="${HOME:-/tmp}" HOST=127.0.0.1 PORT="$port"
      JWT_SECRET="$secret" API_KEYS="$key")
case "$server" in
  livehub) cmd=("${base[@]}" RATE_LIMIT_PER_MINUTE=0 LOG_LEVEL=warn
                DATABASE_URL="sqlite://$tmp/livehub.db" "${extra_env[@]}" "$LIVEHUB" serve) ;;
  floor) cmd=("${base[@]}" "${extra_env[@]}" "$FLOOR") ;;
esac
"${cmd[@]}" >"$out/server.log" 2>&1 &
server_pid=$!
"$LOADGEN" --server "127.0.0.1:$port" wait-ready --timeout 60 --pid "$server_pid" \
  || { tail -20 "$out/server.log" >&2; die "the server did not start"; }

# The trial runs longer than the sample, which starts once the sockets are in
# and the warm-up trial has passed.
trial=$((seconds + 6))
"$LOADGEN" --server "127.0.0.1:$port" --jwt-secret "$secret" --api-key "$key" \
  fanout --sockets "$sockets" --rate "$rate" --duration "$trial" --warmup 2 \
  --out "$out/loadgen.json" >/dev/null 2>"$out/loadgen.log" &
loadgen_pid=$!
until grep -q "warm-up" "$out/loadgen.log" 2>/dev/null; do
  kill -0 "$loadgen_pid" 2>/dev/null || { cat "$out/loadgen.log" >&2; die "the load generator stopped"; }
  sleep 0.5
done
sleep 4
perf record -a -F 999 -o "$out/perf.data" -- sleep "$seconds" >/dev/null 2>"$out/perf.log" &
perf_pid=$!
wait "$perf_pid" || die "perf failed: $(tail -3 "$out/perf.log")"
perf_pid=""
# Which threads were whose, while both still run.
ls "/proc/$server_pid/task" >"$out/server.tids"
ls "/proc/$loadgen_pid/task" >"$out/loadgen.tids" 2>/dev/null || true
wait "$loadgen_pid" || die "the load generator failed: $(tail -3 "$out/loadgen.log")"

echo "== $server, $sockets sockets x $rate emits/s (${extra_env[*]:-default settings})"
python3 - "$out/loadgen.json" <<'EOF_PY'
import json, sys
trial = json.load(open(sys.argv[1]))["result"]["trial"]
got, emits = trial["latency"], trial["emits"]["latency"]
print(f"publish -> receive: p50 {got['p50_ms']:.0f} ms, p99 {got['p99_ms']:.0f} ms; "
      f"emit answered: p50 {emits['p50_ms']:.0f} ms, p99 {emits['p99_ms']:.0f} ms; "
      f"lost {trial['deliveries']['lost']}")
EOF_PY

report() { perf report -i "$out/perf.data" --stdio "$@" 2>/dev/null | grep -v '^#' | grep -v '^$'; }
echo
echo "== CPU by process and thread name (% of all samples, every core)"
report --sort pid | python3 -c '
import sys, collections
server = set(open(sys.argv[1]).read().split())
loadgen = set(open(sys.argv[2]).read().split())
share = collections.Counter()
for line in sys.stdin:
    pct, _, who = line.strip().partition("%")
    tid, _, name = who.strip().partition(":")
    owner = "server" if tid in server else "loadgen" if tid in loadgen else "other"
    share[(owner, name.strip() if owner == "server" else "")] += float(pct)
for (owner, name), pct in share.most_common():
    if pct >= 0.5:
        print(f"{pct:6.2f}%  {owner} {name}")
' "$out/server.tids" "$out/loadgen.tids"
echo
report --tid "$(paste -sd, "$out/server.tids")" --sort dso,sym >"$out/server-symbols.txt"
echo "== the server's samples by where the code runs (the kernel's share is its TCP sends and receives)"
python3 -c '
import sys, collections
share = collections.Counter()
for line in open(sys.argv[1]):
    fields = line.split()
    if len(fields) >= 2 and fields[0].endswith("%"):
        share[fields[1]] += float(fields[0].rstrip("%"))
total = sum(share.values()) or 1
for dso, pct in share.most_common(5):
    print(f"{100 * pct / total:6.2f}% of the server  {dso}")
' "$out/server-symbols.txt"
echo
echo "== the server's hottest symbols (% of all samples)"
head -30 "$out/server-symbols.txt"
echo
echo "perf.data and the raw results: $out"
