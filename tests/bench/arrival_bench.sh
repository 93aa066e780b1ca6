#!/usr/bin/env bash
# arrival_bench.sh - a fleet arriving at one collector (issue 15, item 5).
# Target on a 2-core machine: 10,000 stores arriving within 60 s all
# acknowledged within 90 s, with at most 40 KB of collector memory per idle
# open connection.
#
# A collector (Release build; [server] handshake_threads at its default, one
# per core; max_connections above the stores, max_connections_per_ip = 0,
# idle_timeout = 1h, a ticket key) with its test broker. The PKI is made at
# run time in a temporary directory (removed at exit): the CA and server
# certificate by tests/tools/pki.sh, one device certificate per store
# (S00001.., device D1, pki.sh's device profile) by arrival_pki.py, and each
# store's batch (BENCH_SALES sales, batch_seq 1) by pos-batch --out, all
# before the clock starts.
#
# Then pos-arrival (tests/tools/pos_arrival.c: one thread, libcurl multi)
# brings the stores in evenly over BENCH_ARRIVAL_S seconds: each a new
# mutual-TLS connection (full handshake, no ticket), POST /v1/batches, a 503
# retried after its Retry-After like the agent, until a 200; the connection
# then stays open and idle. Printed: the time from the first arrival until
# every store had its 200 (target 90 s), ack latency (arrival -> 200) p50,
# p99, max, connect (TCP + TLS) p50, p99, the 503s and retries, the
# collector's CPU seconds and cores used during the arrival, its RSS before
# the arrival and with every store connected and idle, and the difference
# per connection (target 40 KB); the client's CPU (from its first arrival)
# and per TLS connection it began; then the pos.sales.v1 records in Kafka
# (kcat) against the sales of the acked batches (at least those).
#
# BENCH_RESUME=1: a crowd that still holds its TLS sessions, as after a
# collector restart or the end of a network outage (the agents keep their
# session tickets in memory; every instance has the same ticket key). Before
# the clock, pos-arrival --resume connects each store once (full handshake,
# GET /healthz, then closed), keeping each store's session; then the
# collector is restarted (same port, same ticket key, so its RSS and CPU
# count from a fresh start) and the arrival offers each store's session. The
# resumed handshakes are counted by the client (OpenSSL's
# SSL_session_reused) and printed beside the connections.
#
#   bash tests/bench/arrival_bench.sh BUILD_DIR
#
# Requires: openssl, kcat, python3 with python3-cryptography (Debian:
# apt-get install -y python3-cryptography).
#
# Environment:
#   BENCH_STORES     10000  stores, one connection and one batch each
#   BENCH_ARRIVAL_S  60     the window they arrive in, evenly spread
#   BENCH_SALES      5      sales per store's batch
#   BENCH_LIMIT_S    ARRIVAL_S + 120  the client gives up (prints what it has) here
#   BENCH_QUICK      unset  1: BENCH_STORES=300 BENCH_ARRIVAL_S=5
#   BENCH_HANDSHAKE_BACKLOG  unset  the collector's [server] handshake_backlog (default 2s)
#   BENCH_RESUME     unset  1: the stores arrive with a TLS session to resume (above)
#   BENCH_GROUPS     unset  the key exchange groups the client offers (pos-arrival --groups,
#                           e.g. P-521 to see what a collector before d31e7d0 paid: it picked
#                           P-521 whatever a store offered); unset, OpenSSL's default
set -euo pipefail
export LC_ALL=C

BUILD_DIR="${1:?usage: arrival_bench.sh BUILD_DIR}"
SOURCE_DIR="$(cd "$(dirname "$0")/../.." && pwd)"
# shellcheck source=bench_lib.sh
source "$SOURCE_DIR/tests/bench/bench_lib.sh"
COLLECTOR_BIN="$BUILD_DIR/collector/pos-collector"
BROKER_BIN="$BUILD_DIR/tests/tools/pos-broker"
BATCH_BIN="$BUILD_DIR/tests/tools/pos-batch"
ARRIVAL_BIN="$BUILD_DIR/tests/tools/pos-arrival"
if [[ "${BENCH_QUICK:-}" == 1 ]]; then
  STORES=300
  ARRIVAL_S=5
else
  STORES="${BENCH_STORES:-10000}"
  ARRIVAL_S="${BENCH_ARRIVAL_S:-60}"
fi
SALES="${BENCH_SALES:-5}"
RESUME="${BENCH_RESUME:-}"
GROUPS_OFFERED="${BENCH_GROUPS:-}"
LIMIT_S="${BENCH_LIMIT_S:-$((ARRIVAL_S + 120))}"
CLK_TCK="$(getconf CLK_TCK)"
TOPIC=pos.sales.v1

for bin in "$COLLECTOR_BIN" "$BROKER_BIN" "$BATCH_BIN" "$ARRIVAL_BIN"; do
  [[ -x "$bin" ]] || { echo "arrival_bench: $bin not built" >&2; exit 1; }
done
for tool in openssl kcat python3; do
  command -v "$tool" >/dev/null || { echo "arrival_bench: $tool is required" >&2; exit 1; }
done
python3 -c 'import cryptography' 2>/dev/null ||
  { echo "arrival_bench: python3-cryptography is required" >&2; exit 1; }
((STORES >= 1 && STORES <= 99999)) || { echo "arrival_bench: BENCH_STORES 1..99999" >&2; exit 1; }

# Two descriptors per store (the client's and the collector's socket) and some.
want_fds=$((STORES + 1024))
if (($(ulimit -n) < want_fds)); then
  ulimit -n "$want_fds" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
fi
(($(ulimit -n) >= want_fds)) ||
  { echo "arrival_bench: ulimit -n $(ulimit -n) is too low for $STORES stores" >&2; exit 1; }

WORK="$(mktemp -d "${TMPDIR:-/tmp}/pos-arrival-bench.XXXXXX")"
BROKER_PID=""
COLLECTOR_PID=""
ARRIVAL_PID=""
cleanup() {
  local pid
  exec 3>&- 2>/dev/null || true
  for pid in "$ARRIVAL_PID" "$COLLECTOR_PID" "$BROKER_PID"; do
    if [[ -n "$pid" ]]; then kill -TERM "$pid" 2>/dev/null || true; fi
  done
  for pid in "$ARRIVAL_PID" "$COLLECTOR_PID" "$BROKER_PID"; do
    if [[ -n "$pid" ]]; then wait "$pid" 2>/dev/null || true; fi
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
die() {
  echo "arrival_bench: $*" >&2
  [[ -s "$WORK/collector.log" ]] && tail -n 20 "$WORK/collector.log" >&2
  exit 1
}
calc() { awk "BEGIN { printf \"%.6f\", $1 }"; }
ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'; }
rss() { awk '/^VmRSS:/ { print $2 }' "/proc/$COLLECTOR_PID/status"; }
field() { tr ' ' '\n' <<<"$2" | sed -n "s/^$1=//p"; }

# The PKI and the bodies, before the clock.
t_prep=$SECONDS
bash "$SOURCE_DIR/tests/tools/pki.sh" init "$WORK/pki" >/dev/null 2>&1 || die "pki.sh init failed"
mkdir -p "$WORK/stores"
python3 "$SOURCE_DIR/tests/bench/arrival_pki.py" "$WORK/pki" "$STORES" "$WORK/stores" ||
  die "arrival_pki.py failed"
seq -f 'S%05g' 1 "$STORES" |
  xargs -P "$(nproc)" -I{} "$BATCH_BIN" --out "$WORK/stores/{}.body" --store {} --device D1 \
    --batch-seq 1 --first-seq 1 --sales "$SALES" --prefix "{}-D1" >/dev/null ||
  die "pos-batch --out failed"
prep_s=$((SECONDS - t_prep))

head -c 32 /dev/urandom >"$WORK/ticket.key"
chmod 600 "$WORK/ticket.key"
bench_start_broker 4
bench_tls_collector_conf "$WORK/collector.conf" "max_connections = $((STORES + 1000))" \
  ${BENCH_HANDSHAKE_BACKLOG:+"handshake_backlog = $BENCH_HANDSHAKE_BACKLOG"}
bench_start_collector "$WORK/collector.conf"
# wait_healthy: until the collector answers GET /healthz with a 200 (a minute at most).
wait_healthy() {
  local i
  for ((i = 0; i < 300; i++)); do
    printf 'GET /healthz HTTP/1.1\r\nHost: collector\r\nConnection: close\r\n\r\n' |
      openssl s_client -connect "127.0.0.1:$PORT" -quiet -CAfile "$WORK/pki/ca.crt" \
        -cert "$WORK/pki/device-S001-D1.crt" -key "$WORK/pki/device-S001-D1.key" 2>/dev/null |
      grep -c 'HTTP/1.1 200' >/dev/null && return 0
    sleep 0.2
  done
  die "GET /healthz not answered 200 within a minute"
}
wait_healthy
sleep 1

# The arrival (with BENCH_RESUME=1, after the stores' first connections and a restart).
mkfifo "$WORK/arrival.in"
"$ARRIVAL_BIN" --url "https://127.0.0.1:$PORT" --cacert "$WORK/pki/ca.crt" --dir "$WORK/stores" \
  --stores "$STORES" --arrival-s "$ARRIVAL_S" --limit-s "$LIMIT_S" --target-s 90 \
  ${RESUME:+--resume} ${GROUPS_OFFERED:+--groups "$GROUPS_OFFERED"} \
  <"$WORK/arrival.in" >"$WORK/arrival.out" 2>"$WORK/arrival.err" &
ARRIVAL_PID=$!
exec 3>"$WORK/arrival.in"
warm_s=""
if [[ "$RESUME" == 1 ]]; then
  while ! grep -q '^warmed=' "$WORK/arrival.out"; do
    kill -0 "$ARRIVAL_PID" 2>/dev/null || die "pos-arrival exited: $(tail -n 5 "$WORK/arrival.err")"
    sleep 0.2
  done
  warm_s="$(field warm_s "$(grep '^warmed=' "$WORK/arrival.out")")"
  # The restart: same port (its listening socket reuses the address), same ticket key.
  kill -TERM "$COLLECTOR_PID"
  wait "$COLLECTOR_PID" || true
  sed "s/^port = 0\$/port = $PORT/" "$WORK/collector.conf" >"$WORK/collector-restart.conf"
  # Not a writer of the client's standard input (fd 3), which must end when the bench closes it.
  bench_start_collector "$WORK/collector-restart.conf" 3>&-
  wait_healthy
  sleep 1
fi
rss_before="$(rss)"
cpu0="$(ticks "$COLLECTOR_PID")"
if [[ "$RESUME" == 1 ]]; then echo go >&3; fi
t0="$(date +%s.%N)"
limit=$((LIMIT_S + 120))
while ! grep -q '^stores=' "$WORK/arrival.out"; do
  kill -0 "$ARRIVAL_PID" 2>/dev/null || die "pos-arrival exited: $(tail -n 5 "$WORK/arrival.err")"
  if awk "BEGIN { exit !($(date +%s.%N) - $t0 > $limit) }"; then
    die "not every store was acknowledged within ${limit} s"
  fi
  sleep 0.2
done
t1="$(date +%s.%N)"
cpu1="$(ticks "$COLLECTOR_PID")"
sleep 2 # every connection idle
rss_end="$(rss)"
conns="$(($(ls "/proc/$COLLECTOR_PID/fd" | wc -l)))"
line="$(grep '^stores=' "$WORK/arrival.out")"

# Every batch's sales in Kafka.
expected=$(($(field acked "$line") * SALES))
records=0
for ((i = 0; i < 30; i++)); do
  records="$(timeout 120 kcat -b "$BOOT" -C -t "$TOPIC" -o beginning -e -q -f '.\n' 2>/dev/null |
    wc -l)" || true
  ((records >= expected)) && break
  sleep 1
done

exec 3>&-
wait "$ARRIVAL_PID" || true
ARRIVAL_PID=""

all_s="$(field all_acked_s "$line")"
cpu_s="$(calc "($cpu1 - $cpu0) / $CLK_TCK")"
wall_s="$(calc "$t1 - $t0")"
met() { awk "BEGIN { exit !($1) }" && echo "met" || echo "MISSED"; }
echo "== $STORES stores arriving over $ARRIVAL_S s at one collector ($(nproc) cores; PKI and"
if [[ "$RESUME" == 1 ]]; then
  echo "   bodies made beforehand in ${prep_s} s; each store connected once in ${warm_s} s"
  echo "   overall, then the collector restarted), resumed mutual-TLS session and one batch each"
else
  echo "   bodies made beforehand in ${prep_s} s), full mutual-TLS handshake and one batch each"
fi
if [[ -n "$GROUPS_OFFERED" ]]; then echo "   (key exchange groups offered: $GROUPS_OFFERED)"; fi
acked="$(field acked "$line")"
printf '%-44s %14s  %s\n' "stores acknowledged (200)" "$acked / $STORES" \
  "($(field acked_by_target "$line") within 90 s; the client gives up at $LIMIT_S s)"
if ((acked == STORES)); then
  printf '%-44s %14s  %s\n' "first arrival -> every store acked, s" "$all_s" \
    "(target 90: $(met "$all_s <= 90"))"
else
  printf '%-44s %14s  %s\n' "first arrival -> every store acked, s" "never" "(target 90: MISSED)"
fi
printf '%-44s %14s\n' "ack latency p50 / p99 / max, ms" \
  "$(field ack_p50_ms "$line") / $(field ack_p99_ms "$line") / $(field ack_max_ms "$line")"
printf '%-44s %14s\n' "connect (TCP+TLS) p50 / p99, ms" \
  "$(field connect_p50_ms "$line") / $(field connect_p99_ms "$line")"
printf '%-44s %14s\n' "503 answers / retries (all causes)" \
  "$(field answers_503 "$line") / $(field retries "$line")"
printf '%-44s %14s\n' "transport errors (no answer) / other status" \
  "$(field transport_errors "$line") / $(field other_status "$line")"
# The client reports its first few errors: what kind of failure they were.
sed -n '1,3s/^/    /p' "$WORK/arrival.err"
printf '%-44s %14.1f  %s\n' "collector CPU during the arrival, s" "$cpu_s" \
  "($(calc "$cpu_s / $wall_s" | awk '{ printf "%.2f", $1 }') cores over $(printf '%.1f' "$wall_s") s)"
client_cpu_s="$(field cpu_s "$line")"
tls_connections="$(field tls_connections "$line")"
tls_connections="${tls_connections:-0}"
client_ms="$(calc "1000 * $client_cpu_s / ($tls_connections > 0 ? $tls_connections : 1)")"
client_cores="$(calc "$client_cpu_s / $wall_s")"
printf '%-44s %14.2f  (%.2f ms per TLS connection; %.2f cores)\n' \
  "client (pos-arrival) CPU, s" "$client_cpu_s" "$client_ms" "$client_cores"
printf '%-44s %14s  %s\n' "TLS connections / handshakes / resumed" \
  "$tls_connections / $(field handshakes "$line") / $(field resumed "$line")" \
  "(the client's, during the arrival)"
printf '%-44s %14s\n' "collector RSS before the arrival, kB" "$rss_before"
printf '%-44s %14s  %s\n' "collector RSS, the acked stores idle, kB" "$rss_end" \
  "($conns fds open)"
per_conn="$(calc "($rss_end - $rss_before) / ($acked > 0 ? $acked : 1)")"
printf '%-44s %14.1f  %s\n' "kB per idle open connection" "$per_conn" \
  "(over the $acked acked; target 40: $(met "$per_conn <= 40"))"
printf '%-44s %14s  %s\n' "$TOPIC records in Kafka / sales acked" "$records / $expected" \
  "($( ((records == expected)) && echo "every acked batch's sales" ||
  { ((records > expected)) && echo "and batches produced whose 200 never arrived" ||
    echo "MISSING"; }))"
