# Sourced by bench/profile.sh and bench/instructions.sh: one server (livehub
# with its SQLite log, or the floor) on a free port of 127.0.0.1, for one tool
# to observe under one load. The sourcing script sets SCRIPT (its name, for
# messages) and may wrap the server's binary in a command (valgrind…).

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)
LIVEHUB=${BENCH_LIVEHUB:-$REPO/target/release/livehub}
LOADGEN=$BENCH_DIR/loadgen/target/release/loadgen
FLOOR=$BENCH_DIR/floor/target/release/floor

die() { echo "$SCRIPT: $*" >&2; exit 1; }

# check_binaries SERVER: the load generator and SERVER's binary are built.
check_binaries() {
  [[ -x "$LOADGEN" ]] || die "$LOADGEN is missing: cd bench/loadgen && cargo build --release --locked"
  case "$1" in
    livehub) [[ -x "$LIVEHUB" ]] || die "$LIVEHUB is missing: cargo build --release" ;;
    floor) [[ -x "$FLOOR" ]] || die "$FLOOR is missing: cd bench/floor && cargo build --release --locked" ;;
    *) die "--server is livehub or floor" ;;
  esac
}

# start_server SERVER OUT_DIR [ENV=VALUE...] [-- WRAPPER...]: starts SERVER
# with a fresh secret, key and database, its output in OUT_DIR/server.log, and
# waits until it answers. Sets server_pid, port, secret, key and server_tmp
# (the caller's cleanup removes server_tmp and kills server_pid).
start_server() {
  local server=$1 out=$2; shift 2
  local env_extra=() wrapper=()
  while (($#)); do
    if [[ "$1" == -- ]]; then shift; wrapper=("$@"); break; fi
    env_extra+=("$1"); shift
  done
  server_tmp=$(mktemp -d "${TMPDIR:-/tmp}/livehub-$SCRIPT.XXXXXX")
  secret="$SCRIPT-$(date +%s)-$RANDOM$RANDOM"
  key="$SCRIPT-key-$RANDOM"
  port=$("$LOADGEN" free-port)
  local cmd=(env -i PATH="$PATH" HOME="${HOME:-/tmp}" HOST=127.0.0.1 PORT="$port"
             JWT_SECRET="$secret" API_KEYS="$key")
  case "$server" in
    livehub) cmd+=(RATE_LIMIT_PER_MINUTE=0 LOG_LEVEL=warn DATABASE_URL="sqlite://$server_tmp/livehub.db"
                   "${env_extra[@]}" "${wrapper[@]}" "$LIVEHUB" serve) ;;
    floor) cmd+=("${env_extra[@]}" "${wrapper[@]}" "$FLOOR") ;;
  esac
  "${cmd[@]}" >"$out/server.log" 2>&1 &
  server_pid=$!
  "$LOADGEN" --server "127.0.0.1:$port" wait-ready --timeout 180 --pid "$server_pid" \
    || { tail -20 "$out/server.log" >&2; die "the server did not start"; }
}
