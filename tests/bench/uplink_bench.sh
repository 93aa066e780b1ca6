#!/usr/bin/env bash
# uplink_bench.sh - what the uplink costs on the wire, in CPU and in time:
#
#   1. wire bytes per sale: the same sales as one pos.v1.Batch (protobuf,
#      zstd, what the agent sends) and as JSON lines with gzip, side by side,
#      for batches of 1 to 2,000 sales;
#   2. collector throughput beside its yardstick (issue 12, item 5): a plain
#      librdkafka producer of the same records (pos-plain-producer: no
#      server, TLS, decoding or exactly-once bookkeeping) and pos-collector
#      (pos-batch clients, one per store, batches back to back over mutual
#      TLS), into the same broker, INTERLEAVED: plain, collector with 4
#      stores, collector with 16 stores, plain, ... Per run: records/s, and CPU per record
#      of each process (utime+stime from /proc/PID/stat just before the
#      load and just after the last answer; the clients and the plain
#      producer report their own), the collector's split by thread
#      (/proc/PID/task/*/comm: the loop, rdk:broker*, rdk:main, ...);
#   3. batch acknowledgement latency: p50 and p99 of POST /v1/batches of
#      BENCH_LATENCY_SALES sales, one store sending back to back (the
#      collector answers only once Kafka has every record), in every round.
#   The median of the three rounds is printed with min and max.
#
# Each store connects (TCP and the mutual TLS handshake, pos-batch --ready-file)
# BEFORE the clock starts, and all start together (--go-file): the throughput
# and the latencies are those of connected stores, as a store keeps its
# connection between batches. What a connection costs is printed apart: the
# handshake's wall time at the client and the collector's CPU per connection
# (its ticks while the stores connected, divided by the stores).
#
# The clients' protobuf and zstd work is done before the clock starts
# (pos-batch --bodies-out, then --bodies): on the shared cores the clients
# only do their HTTP and TLS while the collector is measured.
# Note the two are not the same shape: the plain producer is open loop (it
# queues everything and waits for the reports), each store is closed loop
# (it waits for its ack, at least linger.ms, before sending its next batch).
# With 4 stores the collector is bound by that wait, not by its CPU (a
# quarter of the machine's CPU is idle while they send, vmstat): the run
# with 16 stores is the collector saturated, the shape comparable to an open
# loop producer, and closer to a fleet, where thousands of stores connect.
#
#   bash tests/bench/uplink_bench.sh BUILD_DIR     (or: cmake --build BUILD_DIR -t bench-uplink)
#
# BUILD_DIR should be a Release build (the figures of issue 12 are); the
# script warns when it is not. Prints figures; asserts nothing about timing.
# Environment:
#   BENCH_STORES          "4 16" concurrent stores sending to the collector: one
#                                collector run per count per round
#   BENCH_PLAIN_STORES    (the most of BENCH_STORES) stores whose batches the plain
#                                producer produces: as many records as the
#                                largest collector run (with 4 stores' 200,000
#                                records its rate moved between 505,000 and
#                                850,000/s from round to round; with 16 stores'
#                                800,000, within 15 %)
#   BENCH_BATCHES         50     batches per store per round
#   BENCH_BATCH_SALES     1000   sales per batch (throughput)
#   BENCH_ROUNDS          3      interleaved rounds (plain, collector)
#   BENCH_LATENCY_COUNT   200    batches timed per round for the latency
#   BENCH_LATENCY_SALES   500    sales per batch of the latency runs
set -euo pipefail
export LC_ALL=C

BUILD_DIR="${1:?usage: uplink_bench.sh BUILD_DIR}"
SOURCE_DIR="$(cd "$(dirname "$0")/../.." && pwd)"
# shellcheck source=bench_lib.sh
source "$SOURCE_DIR/tests/bench/bench_lib.sh"
COLLECTOR_BIN="$BUILD_DIR/collector/pos-collector"
BROKER_BIN="$BUILD_DIR/tests/tools/pos-broker"
BATCH_BIN="$BUILD_DIR/tests/tools/pos-batch"
PLAIN_BIN="$BUILD_DIR/tests/bench/pos-plain-producer"
STORE_COUNTS="${BENCH_STORES:-4 16}"
STORES=0 # the most stores of any run
read -r -a store_counts <<<"$STORE_COUNTS"
for n in "${store_counts[@]}"; do
  [[ "$n" =~ ^[1-9][0-9]*$ ]] || { echo "uplink_bench: BENCH_STORES: '$n' is not a count" >&2; exit 2; }
  if ((n > STORES)); then STORES=$n; fi
done
PLAIN_STORES="${BENCH_PLAIN_STORES:-$STORES}"
[[ "$PLAIN_STORES" =~ ^[1-9][0-9]*$ ]] ||
  { echo "uplink_bench: BENCH_PLAIN_STORES: '$PLAIN_STORES' is not a count" >&2; exit 2; }
if ((PLAIN_STORES > STORES)); then STORES=$PLAIN_STORES; fi
BATCHES="${BENCH_BATCHES:-50}"
BATCH_SALES="${BENCH_BATCH_SALES:-1000}"
ROUNDS="${BENCH_ROUNDS:-3}"
LATENCY_COUNT="${BENCH_LATENCY_COUNT:-200}"
LATENCY_SALES="${BENCH_LATENCY_SALES:-500}"
CLK_TCK="$(getconf CLK_TCK)"

for bin in "$COLLECTOR_BIN" "$BROKER_BIN" "$BATCH_BIN" "$PLAIN_BIN"; do
  [[ -x "$bin" ]] || { echo "uplink_bench: $bin not built" >&2; exit 1; }
done
build_type="$(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$BUILD_DIR/CMakeCache.txt" 2>/dev/null ||
  true)"
if [[ "$build_type" != Release ]]; then
  echo "uplink_bench: WARNING: $BUILD_DIR is a '${build_type:-?}' build, not Release:" >&2
  echo "uplink_bench: WARNING: the figures of issue 12 come from a Release build" >&2
fi
command -v gzip >/dev/null || { echo "uplink_bench: gzip is required" >&2; exit 1; }

WORK="$(mktemp -d "${TMPDIR:-/tmp}/pos-uplink-bench.XXXXXX")"
BROKER_PID=""
COLLECTOR_PID=""
CLIENT_PIDS=()
cleanup() {
  local pid
  for pid in "${CLIENT_PIDS[@]}" "$COLLECTOR_PID" "$BROKER_PID"; do
    [[ -n "$pid" ]] || continue
    kill -TERM "$pid" 2>/dev/null || true
  done
  sleep 0.5
  for pid in "${CLIENT_PIDS[@]}" "$COLLECTOR_PID" "$BROKER_PID"; do
    [[ -n "$pid" ]] || continue
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

die() {
  echo "uplink_bench: $*" >&2
  local f
  for f in "$WORK"/collector.log "$WORK"/broker.log; do
    [[ -s "$f" ]] && { echo "---- $f" >&2; tail -n 20 "$f" >&2; }
  done
  exit 1
}

field() { sed -n "s/^\\(.* \\)\\{0,1\\}$1=\\([^ ]*\\).*/\\2/p" <<<"$2" | tail -n 1; }
now() { date +%s.%N; }
calc() { awk "BEGIN { printf \"%.6f\", $1 }"; }

# --- 1. wire bytes per sale (no servers needed) ------------------------------------------
echo "== wire bytes per sale: pos.v1.Batch protobuf+zstd (level 3, the agent's default)"
echo "   vs the same sales as JSON lines, raw and gzip -6"
printf '%8s %14s %12s %14s %14s %12s %10s\n' sales batch_zstd per_sale jsonl jsonl_gzip per_sale gzip/zstd
for n in 1 10 100 1000 2000; do
  out="$("$BATCH_BIN" --out "$WORK/wire.$n.zst" --json-out "$WORK/wire.$n.jsonl" --sales "$n" \
    --journal 00000000000000000000000000000001)" || die "pos-batch --out failed"
  zst="$(stat -c %s "$WORK/wire.$n.zst")"
  json="$(stat -c %s "$WORK/wire.$n.jsonl")"
  gz="$(gzip -6 -c "$WORK/wire.$n.jsonl" | wc -c)"
  printf '%8d %14d %12.1f %14d %14d %12.1f %9.2fx\n' "$n" "$zst" "$(calc "$zst / $n")" \
    "$json" "$gz" "$(calc "$gz / $n")" "$(calc "$gz / $zst")"
done
echo

# --- servers ------------------------------------------------------------------------------------
stores=()
for ((i = 1; i <= STORES; i++)); do stores+=("S$((100 + i))" D1); done
bash "$SOURCE_DIR/tests/tools/pki.sh" init "$WORK/pki" >/dev/null 2>&1 || die "pki.sh init failed"
for ((i = 0; i < ${#stores[@]}; i += 2)); do
  bash "$SOURCE_DIR/tests/tools/pki.sh" device "$WORK/pki" "${stores[$i]}" D1 >/dev/null 2>&1 ||
    die "pki.sh device failed"
done
bench_start_broker 4
cat >"$WORK/collector.conf" <<EOF
[collector]
instance_id = bench-collector
log_level = info

[server]
listen_host = 127.0.0.1
port = 0
cert = $WORK/pki/server.crt
key = $WORK/pki/server.key
ca = $WORK/pki/ca.crt
crl = $WORK/pki/crl.pem

[kafka]
brokers = $BOOT
checkpoint_interval = 10s
EOF
bench_start_collector "$WORK/collector.conf"
URL="https://127.0.0.1:$PORT"
for ((i = 0; i < 300; i++)); do
  code="$(curl -s -o /dev/null -w '%{http_code}' --cacert "$WORK/pki/ca.crt" \
    --cert "$WORK/pki/device-S001-D1.crt" --key "$WORK/pki/device-S001-D1.key" "$URL/healthz" || true)"
  [[ "$code" == 200 ]] && break
  sleep 0.2
done
[[ "$code" == 200 ]] || die "collector /healthz never answered 200"

send() { # CERT STORE JOURNAL pos-batch args...
  local cert="$1" store="$2" journal="$3"
  shift 3
  "$BATCH_BIN" --url "$URL" --cacert "$WORK/pki/ca.crt" --cert "$WORK/pki/$cert.crt" \
    --key "$WORK/pki/$cert.key" --store "$store" --journal "$journal" --timeout 120 --quiet "$@"
}

# CPU ticks (utime+stime) of a process, and of its threads grouped by name
# (trailing digits and dashes dropped: rdk:broker-1 and rdk:broker3 are
# rdk:broker). The comm is read from comm, the ticks after the ") " of stat.
ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'; }
thread_ticks() {
  local t
  for t in /proc/"$1"/task/*; do
    printf '%s %s\n' "$(tr ' ' _ <"$t/comm" 2>/dev/null)" "$(sed 's/.*) //' "$t/stat" 2>/dev/null)"
  done | awk 'NF > 14 { n = $1; sub(/[-0-9]+$/, "", n); t[n] += $13 + $14 }
              END { for (n in t) print n, t[n] }' | sort
}
us_per() { calc "$1 * 1000000 / $CLK_TCK / $2"; } # TICKS RECORDS

# Median, min and max of a list of numbers: "median (min-max)".
mmm() {
  printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END {
    f = v[NR] >= 1000 ? "%.0f (%.0f-%.0f)" : "%.1f (%.1f-%.1f)"
    printf f, v[int((NR + 1) / 2)], v[1], v[NR] }'
}

# Every body of every run, built before anything is measured. Run k (one
# per count of BENCH_STORES) has journals of its own: journal 1000 + 100k + i
# for store i, its batches going on from round to round.
run_journal() { printf '%032x' $((1000 + 100 * $1 + $2)); } # RUN STORE_INDEX
read -r -a counts <<<"$STORE_COUNTS"
for ((r = 0; r < ROUNDS; r++)); do
  for ((k = 0; k < ${#counts[@]}; k++)); do
    for ((i = 0; i < counts[k]; i++)); do
      store="${stores[$((2 * i))]}"
      "$BATCH_BIN" --bodies-out "$WORK/tp.$k.$store.$r.bodies" --store "$store" \
        --journal "$(run_journal "$k" "$i")" --count "$BATCHES" --sales "$BATCH_SALES" \
        --batch-seq $((r * BATCHES + 1)) --first-seq $((r * BATCHES * BATCH_SALES + 1)) \
        >/dev/null || die "pos-batch --bodies-out failed"
    done
  done
  "$BATCH_BIN" --bodies-out "$WORK/lat.$r.bodies" --store S001 --journal "$(printf '%032x' 17)" \
    --count "$LATENCY_COUNT" --sales "$LATENCY_SALES" --batch-seq $((r * LATENCY_COUNT + 1)) \
    --first-seq $((r * LATENCY_COUNT * LATENCY_SALES + 1)) >/dev/null ||
    die "pos-batch --bodies-out failed"
done
# The plain producer's records: each of the first PLAIN_STORES stores' first
# batch, repeated as that store's next batches would be (pos-plain-producer --repeat).
plain_args=()
for ((i = 0; i < PLAIN_STORES; i++)); do
  store="${stores[$((2 * i))]}"
  "$BATCH_BIN" --out "$WORK/plain.$store.zst" --sales "$BATCH_SALES" --store "$store" \
    --journal "$(run_journal 0 "$i")" >/dev/null || die "pos-batch --out failed"
  plain_args+=(--batch "$WORK/plain.$store.zst")
done

# One warm-up batch per store and for the latency journal: TLS session,
# topic metadata, the collector's journal state.
for ((i = 0; i < ${#stores[@]}; i += 2)); do
  store="${stores[$i]}"
  out="$(send "device-$store-D1" "$store" "$(printf '%032x' $((5000 + i)))" --sales 10)" ||
    die "warm-up failed: $out"
done

# Figures of the collector's runs, by store count: space-separated lists, a value per round.
declare -a plain_rate plain_us plain_broker_us lat_p50 lat_p99 lat_max
declare -A coll_rate coll_us coll_broker_us client_us ratio conn_ms conn_coll_ms split_us
for ((r = 0; r < ROUNDS; r++)); do
  # -- plain producer
  b0="$(ticks "$BROKER_PID")"
  plain="$("$PLAIN_BIN" --brokers "$BOOT" --topic bench.plain.sales.v1 "${plain_args[@]}" \
    --repeat "$BATCHES" 2>"$WORK/plain.err")" ||
    die "pos-plain-producer failed: $plain $(cat "$WORK/plain.err")"
  b1="$(ticks "$BROKER_PID")"
  records="$(field records "$plain")"
  plain_rate+=("$(field records_per_s "$plain")")
  plain_us+=("$(calc "$(field cpu_ms "$plain") * 1000 / $records")")
  plain_broker_us+=("$(us_per $((b1 - b0)) "$records")")
  line="round $((r + 1)): plain $(printf '%.0f' "${plain_rate[$r]}")/s"

  for ((k = 0; k < ${#counts[@]}; k++)); do
    # -- collector, n stores: every store connects, then the clock starts and they all go
    n="${counts[$k]}"
    rm -f "$WORK"/ready.* "$WORK/go"
    k0="$(ticks "$COLLECTOR_PID")"
    CLIENT_PIDS=()
    for ((i = 0; i < n; i++)); do
      store="${stores[$((2 * i))]}"
      send "device-$store-D1" "$store" "$(run_journal "$k" "$i")" \
        --bodies "$WORK/tp.$k.$store.$r.bodies" --ready-file "$WORK/ready.$store" \
        --go-file "$WORK/go" >"$WORK/tp.$store.out" 2>&1 &
      CLIENT_PIDS+=($!)
    done
    for ((t = 0; t < 6000; t++)); do
      ready=0
      for ((j = 0; j < n; j++)); do
        [[ -e "$WORK/ready.${stores[$((2 * j))]}" ]] && ready=$((ready + 1))
      done
      ((ready == n)) && break
      for pid in "${CLIENT_PIDS[@]}"; do
        kill -0 "$pid" 2>/dev/null || die "a client exited before connecting: $(cat "$WORK"/tp.*.out)"
      done
      sleep 0.01
    done
    ((ready == n)) || die "the stores did not all connect within a minute"
    k1="$(ticks "$COLLECTOR_PID")"
    conn_coll_ms[$n]+="$(calc "($k1 - $k0) * 1000 / $CLK_TCK / $n") "
    thread_ticks "$COLLECTOR_PID" >"$WORK/threads.0"
    c0="$(ticks "$COLLECTOR_PID")"
    b0="$(ticks "$BROKER_PID")"
    start="$(now)"
    : >"$WORK/go"
    for pid in "${CLIENT_PIDS[@]}"; do
      wait "$pid" || die "a throughput client failed: $(cat "$WORK"/tp.*.out)"
    done
    CLIENT_PIDS=()
    end="$(now)"
    c1="$(ticks "$COLLECTOR_PID")"
    b1="$(ticks "$BROKER_PID")"
    thread_ticks "$COLLECTOR_PID" >"$WORK/threads.1"
    total_sales=0
    client_ms=0
    for ((i = 0; i < n; i++)); do
      out="$(tail -n 1 "$WORK/tp.${stores[$((2 * i))]}.out")"
      [[ "$(field other "$out")" == 0 ]] || die "throughput: some batches were not answered 200: $out"
      [[ "$(field new_connections "$out")" == 0 ]] ||
        die "throughput: a store opened a new connection during its batches: $out"
      conn_ms[$n]+="$(field connect_ms "$out") "
      total_sales=$((total_sales + $(field sales "$out")))
      client_ms="$(calc "$client_ms + $(field cpu_ms "$out")")"
    done
    rate="$(calc "$total_sales / ($end - $start)")"
    coll_rate[$n]+="$rate "
    coll_us[$n]+="$(us_per $((c1 - c0)) "$total_sales") "
    coll_broker_us[$n]+="$(us_per $((b1 - b0)) "$total_sales") "
    client_us[$n]+="$(calc "$client_ms * 1000 / $total_sales") "
    ratio[$n]+="$(calc "100 * $rate / ${plain_rate[$r]}") "
    while read -r name t1; do
      t0="$(awk -v x="$name" '$1 == x { print $2 }' "$WORK/threads.0")"
      split_us["$n $name"]+="$(us_per $((t1 - ${t0:-0})) "$total_sales") "
    done <"$WORK/threads.1"
    line+="$(printf ', collector %d stores %.0f/s (%.0f%%)' "$n" "$rate" \
      "$(calc "100 * $rate / ${plain_rate[$r]}")")"
  done

  # -- latency: one store, batches of LATENCY_SALES back to back
  out="$(send device-S001-D1 S001 "$(printf '%032x' 17)" --bodies "$WORK/lat.$r.bodies" --warm)" ||
    die "latency run failed: $out"
  [[ "$(field other "$out")" == 0 ]] || die "latency run: some batches were not answered 200: $out"
  lat_p50+=("$(field latency_p50_ms "$out")")
  lat_p99+=("$(field latency_p99_ms "$out")")
  lat_max+=("$(field latency_max_ms "$out")")
  printf '%s, ack %d sales p50 %s ms p99 %s ms\n' "$line" "$LATENCY_SALES" "${lat_p50[$r]}" \
    "${lat_p99[$r]}"
done

# One row: a label, the plain producer's figure (or -), then the collector's for each count.
row() { # LABEL PLAIN KEY-OF-ASSOCIATIVE-ARRAY
  local label="$1" plain="$2" array="$3" n
  local -n values="$array"
  printf '%-34s %24s' "$label" "$plain"
  for n in "${counts[@]}"; do
    # shellcheck disable=SC2086
    printf ' %24s' "$(mmm ${values[$n]})"
  done
  printf '\n'
}
echo
echo "== collector beside a plain librdkafka producer of the same records, pos-broker"
echo "   (4 partitions), $ROUNDS rounds interleaved (plain, collector, ...): median (min-max)"
echo "   plain: $PLAIN_STORES stores' batches x $BATCHES, open loop; collector: N stores x"
echo "   $BATCHES batches x $BATCH_SALES sales per round, mTLS, closed loop (each store waits"
echo "   for its ack); with few stores that wait bounds the collector, not its CPU"
printf '%-34s %24s' "" "plain producer"
for n in "${counts[@]}"; do printf ' %24s' "collector, $n stores"; done
printf '\n'
row "records/s" "$(mmm "${plain_rate[@]}")" coll_rate
row "collector / plain, %" "" ratio
row "CPU us/record, the producer" "$(mmm "${plain_us[@]}")" coll_us
row "CPU us/record, pos-broker" "$(mmm "${plain_broker_us[@]}")" coll_broker_us
row "CPU us/record, clients (HTTP+TLS)" "-" client_us
row "mTLS connect, ms wall per store" "-" conn_ms
row "  collector CPU ms per connection" "-" conn_coll_ms
echo "   (the connections are made before the clock starts; not in the figures above)"
echo "   the collector's CPU us/record by thread:"
for name in $(printf '%s\n' "${!split_us[@]}" | awk '{ print $2 }' | sort -u); do
  printf '     %-28s %24s' "$name" ""
  for n in "${counts[@]}"; do
    # shellcheck disable=SC2086
    printf ' %24s' "$(mmm ${split_us["$n $name"]:-0})"
  done
  printf '\n'
done
echo
echo "== batch acknowledgement latency, $LATENCY_SALES sales per batch, one store back to back,"
echo "   $LATENCY_COUNT batches per round: median (min-max) of the rounds"
printf '%-34s %24s\n' "p50 ms" "$(mmm "${lat_p50[@]}")"
printf '%-34s %24s\n' "p99 ms" "$(mmm "${lat_p99[@]}")"
printf '%-34s %24s\n' "max ms" "$(mmm "${lat_max[@]}")"
