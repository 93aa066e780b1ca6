#!/usr/bin/env bash
# uplink_bench.sh - what the uplink costs on the wire and in time:
#
#   1. wire bytes per sale: the same sales as one pos.v1.Batch (protobuf,
#      zstd, what the agent sends) and as JSON lines with gzip, side by side,
#      for batches of 1 to 2,000 sales;
#   2. collector throughput: sales/s through pos-collector into the broker
#      (pos-batch clients, one per store, sending batches back to back over
#      mutual TLS), beside a plain librdkafka producer of the same records
#      into the same broker in the same run (pos-plain-producer);
#   3. batch acknowledgement latency: p50 and p99 of POST /v1/batches, one
#      store sending batches back to back (the collector answers only once
#      Kafka has every record).
#
#   bash tests/bench/uplink_bench.sh BUILD_DIR     (or: cmake --build BUILD_DIR -t bench-uplink)
#
# Prints figures; asserts nothing about timing. Environment:
#   BENCH_STORES          4      concurrent stores sending to the collector
#   BENCH_BATCHES         50     batches per store
#   BENCH_BATCH_SALES     1000   sales per batch (throughput)
#   BENCH_LATENCY_COUNT   300    batches timed per latency row
#   BENCH_LATENCY_SIZES   "1 100 1000"  sales per batch of the latency rows
set -euo pipefail
export LC_ALL=C

BUILD_DIR="${1:?usage: uplink_bench.sh BUILD_DIR}"
SOURCE_DIR="$(cd "$(dirname "$0")/../.." && pwd)"
COLLECTOR_BIN="$BUILD_DIR/collector/pos-collector"
BROKER_BIN="$BUILD_DIR/tests/tools/pos-broker"
BATCH_BIN="$BUILD_DIR/tests/tools/pos-batch"
PLAIN_BIN="$BUILD_DIR/tests/bench/pos-plain-producer"
STORES="${BENCH_STORES:-4}"
BATCHES="${BENCH_BATCHES:-50}"
BATCH_SALES="${BENCH_BATCH_SALES:-1000}"
LATENCY_COUNT="${BENCH_LATENCY_COUNT:-300}"
LATENCY_SIZES="${BENCH_LATENCY_SIZES:-1 100 1000}"

for bin in "$COLLECTOR_BIN" "$BROKER_BIN" "$BATCH_BIN" "$PLAIN_BIN"; do
  [[ -x "$bin" ]] || { echo "uplink_bench: $bin not built" >&2; exit 1; }
done
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
"$BROKER_BIN" --partitions 4 >"$WORK/broker.out" 2>"$WORK/broker.log" &
BROKER_PID=$!
for ((i = 0; i < 150; i++)); do
  grep -q '^bootstrap=' "$WORK/broker.out" && break
  sleep 0.1
done
BOOT="$(sed -n 's/^bootstrap=\([^[:space:]]*\).*/\1/p' "$WORK/broker.out" | head -n 1)"
[[ -n "$BOOT" ]] || die "pos-broker printed no bootstrap="
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
"$COLLECTOR_BIN" --config "$WORK/collector.conf" 2>"$WORK/collector.log" >/dev/null &
COLLECTOR_PID=$!
PORT=""
for ((i = 0; i < 150; i++)); do
  PORT="$(sed -n 's/.*mod=collector event=listening .*[[:space:]]port=\([0-9][0-9]*\).*/\1/p' "$WORK/collector.log" | head -n 1)"
  [[ -n "$PORT" ]] && break
  kill -0 "$COLLECTOR_PID" 2>/dev/null || die "pos-collector exited"
  sleep 0.1
done
[[ -n "$PORT" ]] || die "pos-collector logged no port"
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

# --- 3. latency (first: an idle collector) ------------------------------------------------------
latency_rows=()
j=16
for n in $LATENCY_SIZES; do
  j=$((j + 1))
  out="$(send device-S001-D1 S001 "$(printf '%032x' "$j")" --count "$LATENCY_COUNT" --sales "$n")" ||
    die "latency run failed: $out"
  latency_rows+=("$(printf '%8d %8d %10s %10s %10s %12s' "$n" "$(field batches "$out")" \
    "$(field latency_p50_ms "$out")" "$(field latency_p99_ms "$out")" "$(field latency_max_ms "$out")" \
    "$(field sales_per_s "$out")")")
  [[ "$(field other "$out")" == 0 ]] || die "latency run: some batches were not answered 200: $out"
done

# --- 2. throughput: collector vs plain producer -------------------------------------------------
start="$(now)"
CLIENT_PIDS=()
for ((i = 0; i < ${#stores[@]}; i += 2)); do
  store="${stores[$i]}"
  send "device-$store-D1" "$store" "$(printf '%032x' $((1000 + i)))" --count "$BATCHES" \
    --sales "$BATCH_SALES" >"$WORK/tp.$store.out" 2>&1 &
  CLIENT_PIDS+=($!)
done
for pid in "${CLIENT_PIDS[@]}"; do
  wait "$pid" || die "a throughput client failed: $(cat "$WORK"/tp.*.out)"
done
CLIENT_PIDS=()
end="$(now)"
total_sales=0
for ((i = 0; i < ${#stores[@]}; i += 2)); do
  out="$(tail -n 1 "$WORK/tp.${stores[$i]}.out")"
  [[ "$(field other "$out")" == 0 ]] || die "throughput: some batches were not answered 200: $out"
  total_sales=$((total_sales + $(field sales "$out")))
done
collector_seconds="$(calc "$end - $start")"
collector_rate="$(calc "$total_sales / $collector_seconds")"

# The same records: each store's first batch as the collector got it,
# repeated as that store's next batches would be.
plain_args=()
for ((i = 0; i < ${#stores[@]}; i += 2)); do
  store="${stores[$i]}"
  "$BATCH_BIN" --out "$WORK/plain.$store.zst" --sales "$BATCH_SALES" --store "$store" \
    --journal "$(printf '%032x' $((1000 + i)))" >/dev/null || die "pos-batch --out failed"
  plain_args+=(--batch "$WORK/plain.$store.zst")
done
plain="$("$PLAIN_BIN" --brokers "$BOOT" --topic bench.plain.sales.v1 "${plain_args[@]}" \
  --repeat "$BATCHES" 2>"$WORK/plain.err")" || die "pos-plain-producer failed: $plain $(cat "$WORK/plain.err")"

echo "== collector throughput into the broker (pos-broker, 4 partitions), same run"
printf '%-52s %10s %10s %14s\n' producer records seconds records_per_s
printf '%-52s %10d %10.2f %14.0f\n' "pos-collector ($STORES stores x $BATCHES batches x $BATCH_SALES, mTLS)" \
  "$total_sales" "$collector_seconds" "$collector_rate"
printf '%-52s %10d %10.2f %14.0f\n' "plain librdkafka producer (same records)" \
  "$(field records "$plain")" "$(field seconds "$plain")" "$(field records_per_s "$plain")"
printf '%-52s %10s %10s %13.0f%%\n' "collector / plain" "" "" \
  "$(calc "100 * $collector_rate / $(field records_per_s "$plain")")"
echo
echo "== batch acknowledgement latency (one store, batches back to back, $LATENCY_COUNT each)"
printf '%8s %8s %10s %10s %10s %12s\n' sales batches p50_ms p99_ms max_ms sales_per_s
printf '%s\n' "${latency_rows[@]}"
