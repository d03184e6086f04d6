#!/usr/bin/env bash
# Where a server's CPU goes: one server under a fixed load (a fan-out, or a
# connect storm), the whole machine sampled with `perf` in the middle of it.
#
#   bench/profile.sh                       livehub (SQLite log), 5,000 sockets x 50 emits/s
#   bench/profile.sh --server floor        the bare socketioxide floor, same load
#   bench/profile.sh --sockets 1000 --rate 100 --env EVENT_LOG=off
#   bench/profile.sh --case storm          JWT handshakes by 64 workers (--workers N)
#
# Prints the load's own figures (a fan-out's latency, publish -> receive and
# the emit's own answer; a storm's handshakes/s),
# the CPU split by process and thread (the load generator shares the cores, so
# it is part of the picture), the server's samples by what the code does, and
# its hottest symbols. perf.data and the load generator's JSON stay in
# bench/results/profile-<time>-<server>/ for `perf report -i`.
#
# Needs: perf (linux-perf) and permission to sample every CPU (root, or
# kernel.perf_event_paranoid <= 0); the release binaries of livehub
# (BENCH_LIVEHUB picks another, e.g. a `--profile profiling` build for line
# numbers), bench/loadgen and bench/floor.
set -euo pipefail

SCRIPT=profile.sh
source "$(dirname "${BASH_SOURCE[0]}")/one-server.sh"

case=fanout server=livehub sockets=5000 rate=50 workers=64 seconds=8 extra_env=()
while (($#)); do
  case "$1" in
    --case) case=$2; shift 2 ;;
    --server) server=$2; shift 2 ;;
    --workers) workers=$2; shift 2 ;;
    --sockets) sockets=$2; shift 2 ;;
    --rate) rate=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --env) extra_env+=("$2"); shift 2 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "profile.sh: unknown option $1" >&2; exit 2 ;;
  esac
done

command -v perf >/dev/null || die "perf is not installed"
check_binaries "$server"
[[ "$case" == fanout || "$case" == storm ]] || die "--case is fanout or storm"

out=$BENCH_DIR/results/profile-$(date -u +%Y%m%dT%H%M%SZ)-$case-$server
mkdir -p "$out"
server_pid="" server_tmp="" perf_pid=""
cleanup() {
  [[ -n "$perf_pid" ]] && kill "$perf_pid" 2>/dev/null
  [[ -n "$server_pid" ]] && { kill -KILL "$server_pid"; wait "$server_pid"; } 2>/dev/null
  [[ -n "$server_tmp" ]] && rm -rf "$server_tmp"
}
trap cleanup EXIT
start_server "$server" "$out" "${extra_env[@]}"

# The load runs longer than the sample, which starts once the load is steady
# (a fan-out's sockets are in and its warm-up trial has passed).
trial=$((seconds + 6))
loadgen=("$LOADGEN" --server "127.0.0.1:$port" --jwt-secret "$secret" --api-key "$key")
case "$case" in
  fanout) load=(fanout --sockets "$sockets" --rate "$rate")
          title="$sockets sockets x $rate emits/s" ;;
  storm) load=(connect-storm --workers "$workers")
         title="connect storm by $workers workers" ;;
esac
"${loadgen[@]}" "${load[@]}" --duration "$trial" --warmup 2 \
  --out "$out/loadgen.json" >/dev/null 2>"$out/loadgen.log" &
loadgen_pid=$!
if [[ "$case" == fanout ]]; then
  until grep -q "warm-up" "$out/loadgen.log" 2>/dev/null; do
    kill -0 "$loadgen_pid" 2>/dev/null || { cat "$out/loadgen.log" >&2; die "the load generator stopped"; }
    sleep 0.5
  done
fi
sleep 4
perf record -a -F 999 -o "$out/perf.data" -- sleep "$seconds" >/dev/null 2>"$out/perf.log" &
perf_pid=$!
wait "$perf_pid" || die "perf failed: $(tail -3 "$out/perf.log")"
perf_pid=""
# Which threads were whose, while both still run.
ls "/proc/$server_pid/task" >"$out/server.tids"
ls "/proc/$loadgen_pid/task" >"$out/loadgen.tids" 2>/dev/null || true
wait "$loadgen_pid" || die "the load generator failed: $(tail -3 "$out/loadgen.log")"

echo "== $server, $title (${extra_env[*]:-default settings})"
python3 - "$out/loadgen.json" <<'EOF_PY'
import json, sys
result = json.load(open(sys.argv[1]))["result"]
if "trial" in result:
    trial = result["trial"]
    got, emits = trial["latency"], trial["emits"]["latency"]
    print(f"publish -> receive: p50 {got['p50_ms']:.0f} ms, p99 {got['p99_ms']:.0f} ms; "
          f"emit answered: p50 {emits['p50_ms']:.0f} ms, p99 {emits['p99_ms']:.0f} ms; "
          f"lost {trial['deliveries']['lost']}")
else:
    lat = result["latency"]
    print(f"{result['handshakes_per_s']:,.0f} handshakes/s; p50 {lat['p50_ms']:.1f} ms, "
          f"p99 {lat['p99_ms']:.1f} ms; refused {result['refused']}, failed {result['failed']}")
EOF_PY

# One report keyed by thread, split here: perf's own --tid filter lets other
# threads' kernel samples into a `dso,sym` report.
perf report -i "$out/perf.data" --stdio --sort pid,dso,sym 2>/dev/null | grep -v '^#' | grep -v '^$' \
  >"$out/symbols.txt"
python3 - "$out/symbols.txt" "$out/server.tids" "$out/loadgen.tids" <<'EOF_PY'
import collections, re, sys
server = set(open(sys.argv[2]).read().split())
loadgen = set(open(sys.argv[3]).read().split())
# What the code does, by symbol (first match wins).
kinds = [
    ("kernel (loopback TCP, wake-ups)", r"\[k\]"),
    ("tokens (JWT: HMAC, base64)", r"jsonwebtoken|sha2|hmac|base64"),
    ("the database (SQLite, sqlx)", r"sqlite3|sqlx"),
    ("copies", r"memmove|memcpy"),
    ("encoding and allocating", r"serde|into_str|to_value|serialize_packet|encode|mi_|alloc::|Bytes|free"),
    ("finding each socket", r"get_socket|hash|sip::|BroadcastRooms|FilterMap"),
    ("queueing to each socket", r"mpsc::list::Tx|batch_semaphore|AtomicWaker::wake|Local<T>::push_back|Socket<A>::emit|reserve"),
    ("livehub's own code", r"livehub::"),
    ("websocket write path", r"tungstenite|engineioxide|Rx<T>::pop|Rx<T,S>::recv|bilock|Feed|poll_write|notify|register"),
]
owners, threads, kind, hot = (collections.Counter() for _ in range(4))
for line in open(sys.argv[1]):
    m = re.match(r"\s*([\d.]+)%\s+(\d+):(\S+)\s+(.*)", line)
    if not m:
        continue
    pct, tid, name, what = float(m[1]), m[2], m[3], m[4]
    owner = "server" if tid in server else "loadgen" if tid in loadgen else "other"
    owners[owner] += pct
    if owner != "server":
        continue
    threads[name] += pct
    hot[" ".join(what.split())] += pct
    kind[next((k for k, rx in kinds if re.search(rx, what)), "other")] += pct
def show(title, counts, top=None, digits=1):
    print(f"\n== {title}")
    for what, pct in counts.most_common(top):
        print(f"{pct:6.{digits}f}%  {what}")
show("CPU by process (% of all samples, every core)", owners)
show("the server's threads", threads, 5)
show("the server's samples by what the code does", kind)
show("the server's hottest symbols", hot, 25, 2)
EOF_PY
echo
echo "perf.data and the raw results: $out"
