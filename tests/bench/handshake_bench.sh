#!/usr/bin/env bash
# handshake_bench.sh - what a store's (re)connection costs the collector
# (issue 15, item 5): its CPU per mutual-TLS handshake, full and resumed
# from a session ticket, and for the full handshake each key exchange curve
# a client may offer (our certificates are ECDSA P-256).
#
# A collector (Release build) with its test broker; openssl s_client as the
# store, BENCH_CONNECTIONS connections per kind, one after the other, each
# asking GET /healthz (the client's own CPU is not counted). The
# collector's CPU is utime+stime from /proc/PID/stat around each kind's
# connections, divided by them; the kinds interleaved, BENCH_ROUNDS rounds,
# median (min-max) printed.
#
#   bash tests/bench/handshake_bench.sh BUILD_DIR
#
# Then the collector's memory per idle open connection: its RSS before and
# after BENCH_IDLE connections (idle_connections.py, python3) have each made
# one request and stay open, divided by them.
#
# Then a crowd: BENCH_CROWD stores reconnecting at once without a ticket
# (crowd.py, python3: BENCH_CROWD_CONCURRENCY at a time, full handshakes),
# against a collector with [server] handshake_threads = 1 and then one per
# core: connections per second, each one's time to its answer (p50, p99)
# and the cores the collector used (its CPU time over the wall time). The
# clients run on the same machine and take some of its CPU.
#
# Environment:
#   BENCH_CONNECTIONS  100   connections per kind per round
#   BENCH_ROUNDS       3
#   BENCH_IDLE         500   idle connections held open (0: not measured)
#   BENCH_CROWD        600   connections of the crowd (0: not measured)
#   BENCH_CROWD_CONCURRENCY 32
set -euo pipefail
export LC_ALL=C

BUILD_DIR="${1:?usage: handshake_bench.sh BUILD_DIR}"
SOURCE_DIR="$(cd "$(dirname "$0")/../.." && pwd)"
# shellcheck source=bench_lib.sh
source "$SOURCE_DIR/tests/bench/bench_lib.sh"
COLLECTOR_BIN="$BUILD_DIR/collector/pos-collector"
BROKER_BIN="$BUILD_DIR/tests/tools/pos-broker"
CONNECTIONS="${BENCH_CONNECTIONS:-100}"
ROUNDS="${BENCH_ROUNDS:-3}"
IDLE="${BENCH_IDLE:-500}"
CROWD="${BENCH_CROWD:-600}"
CROWD_CONCURRENCY="${BENCH_CROWD_CONCURRENCY:-32}"
CLK_TCK="$(getconf CLK_TCK)"

for bin in "$COLLECTOR_BIN" "$BROKER_BIN"; do
  [[ -x "$bin" ]] || { echo "handshake_bench: $bin not built" >&2; exit 1; }
done
command -v openssl >/dev/null || { echo "handshake_bench: openssl is required" >&2; exit 1; }

WORK="$(mktemp -d "${TMPDIR:-/tmp}/pos-handshake-bench.XXXXXX")"
BROKER_PID=""
COLLECTOR_PID=""
cleanup() {
  local pid
  for pid in "$COLLECTOR_PID" "$BROKER_PID"; do
    if [[ -n "$pid" ]]; then kill -TERM "$pid" 2>/dev/null || true; fi
  done
  for pid in "$COLLECTOR_PID" "$BROKER_PID"; do
    if [[ -n "$pid" ]]; then wait "$pid" 2>/dev/null || true; fi
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
die() {
  echo "handshake_bench: $*" >&2
  [[ -s "$WORK/collector.log" ]] && tail -n 20 "$WORK/collector.log" >&2
  exit 1
}
calc() { awk "BEGIN { printf \"%.6f\", $1 }"; }
ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'; }
mmm() {
  printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END {
    printf "%.2f (%.2f-%.2f)", v[int((NR + 1) / 2)], v[1], v[NR] }'
}

bash "$SOURCE_DIR/tests/tools/pki.sh" init "$WORK/pki" >/dev/null 2>&1 || die "pki.sh init failed"
bash "$SOURCE_DIR/tests/tools/pki.sh" device "$WORK/pki" S001 D1 >/dev/null 2>&1 ||
  die "pki.sh device failed"
head -c 32 /dev/urandom >"$WORK/ticket.key"
chmod 600 "$WORK/ticket.key"
bench_start_broker 4
bench_tls_collector_conf "$WORK/collector.conf"
bench_start_collector "$WORK/collector.conf"

# connect [s_client args...]: one connection as S001 asking GET /healthz; prints s_client's output.
connect() {
  printf 'GET /healthz HTTP/1.1\r\nHost: collector\r\nConnection: close\r\n\r\n' |
    openssl s_client -connect "127.0.0.1:$PORT" -tls1_2 -ign_eof -CAfile "$WORK/pki/ca.crt" \
      -cert "$WORK/pki/device-S001-D1.crt" -key "$WORK/pki/device-S001-D1.key" "$@" 2>&1 || true
}
wait_ready() {
  for ((i = 0; i < 300; i++)); do
    connect | grep -c 'HTTP/1.1 200' >/dev/null && return 0
    sleep 0.2
  done
  die "GET /healthz not answered 200 within a minute"
}
wait_ready
connect -sess_out "$WORK/ticket.sess" | grep -c 'HTTP/1.1 200' >/dev/null || die "no answer to GET /healthz"
connect -sess_in "$WORK/ticket.sess" | grep -c '^Reused, ' >/dev/null || die "the session was not resumed"

# kind NAME [s_client args...]: CONNECTIONS connections, the collector's CPU ms per connection.
declare -A cost
# (X25519 is offered with P-256 after it: in TLS 1.2 the client's curves also say which
# certificate curves it takes, and ours is P-256.)
kinds=("full, X25519:full -curves X25519:P-256" "full, P-256:full -curves P-256"
  "resumed (ticket):resumed -sess_in $WORK/ticket.sess")
for ((r = 0; r < ROUNDS; r++)); do
  for entry in "${kinds[@]}"; do
    name="${entry%%:*}"
    read -r -a args <<<"${entry#*:}"
    args=("${args[@]:1}")
    t0="$(ticks "$COLLECTOR_PID")"
    for ((i = 0; i < CONNECTIONS; i++)); do
      out="$(connect "${args[@]}")"
      [[ "$out" == *"HTTP/1.1 200"* ]] || die "$name: no answer: $(tail -n 5 <<<"$out")"
      if [[ "$name" == resumed* && "$out" != *"Reused, "* ]]; then
        die "$name: a connection did not resume its session"
      fi
    done
    t1="$(ticks "$COLLECTOR_PID")"
    cost[$name]+="$(calc "($t1 - $t0) * 1000 / $CLK_TCK / $CONNECTIONS") "
  done
done
echo "== the collector's CPU per mutual-TLS connection (handshake + one GET /healthz),"
echo "   $CONNECTIONS connections per kind per round, $ROUNDS rounds interleaved: median (min-max)"
for entry in "${kinds[@]}"; do
  name="${entry%%:*}"
  # shellcheck disable=SC2086
  printf '%-34s %24s ms\n' "$name" "$(mmm ${cost[$name]})"
done

if ((IDLE > 0)) && command -v python3 >/dev/null; then
  rss() { awk '/^VmRSS:/ { print $2 }' "/proc/$COLLECTOR_PID/status"; }
  before="$(rss)"
  mkfifo "$WORK/idle.in"
  python3 "$SOURCE_DIR/tests/bench/idle_connections.py" 127.0.0.1 "$PORT" "$IDLE" \
    "$WORK/pki/ca.crt" "$WORK/pki/device-S001-D1.crt" "$WORK/pki/device-S001-D1.key" \
    <"$WORK/idle.in" >"$WORK/idle.out" 2>&1 &
  idle_pid=$!
  exec 3>"$WORK/idle.in"
  for ((i = 0; i < 1200; i++)); do
    grep -q '^open ' "$WORK/idle.out" && break
    kill -0 "$idle_pid" 2>/dev/null || die "idle_connections.py: $(cat "$WORK/idle.out")"
    sleep 0.1
  done
  grep -q '^open ' "$WORK/idle.out" || die "the idle connections did not all open within 2 minutes"
  after="$(rss)"
  exec 3>&-
  wait "$idle_pid" || true
  echo
  echo "== the collector's memory per idle open connection (mutual TLS, one request made)"
  printf '%-34s %24s\n' "RSS before, kB" "$before"
  printf '%-34s %24s\n' "RSS with $IDLE open, kB" "$after"
  printf '%-34s %24.1f\n' "kB per idle connection" "$(calc "($after - $before) / $IDLE")"
fi

if ((CROWD > 0)) && command -v python3 >/dev/null; then
  cores="$(nproc)"
  echo
  echo "== a crowd of $CROWD stores reconnecting without a ticket, $CROWD_CONCURRENCY at a time"
  echo "   (full handshake + GET /healthz each; the clients on this machine too, $cores cores)"
  printf '%-20s %12s %10s %10s %12s\n' "handshake_threads" "conn/s" "p50 ms" "p99 ms" \
    "cores used"
  for threads in 1 "$cores"; do
    kill -TERM "$COLLECTOR_PID" && wait "$COLLECTOR_PID" || true
    COLLECTOR_PID=""
    bench_tls_collector_conf "$WORK/collector.conf" "handshake_threads = $threads"
    bench_start_collector "$WORK/collector.conf"
    wait_ready
    t0="$(ticks "$COLLECTOR_PID")"
    line="$(python3 "$SOURCE_DIR/tests/bench/crowd.py" 127.0.0.1 "$PORT" "$CROWD" \
      "$CROWD_CONCURRENCY" "$WORK/pki/ca.crt" "$WORK/pki/device-S001-D1.crt" \
      "$WORK/pki/device-S001-D1.key")" || die "crowd.py failed (handshake_threads $threads)"
    t1="$(ticks "$COLLECTOR_PID")"
    read -r _ n secs p50 p99 <<<"$line"
    printf '%-20s %12.0f %10s %10s %12.2f\n' "$threads" "$(calc "$n / $secs")" "$p50" "$p99" \
      "$(calc "($t1 - $t0) / $CLK_TCK / $secs")"
    [[ "$threads" == "$cores" ]] && break
  done
fi
