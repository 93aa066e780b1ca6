#!/usr/bin/env bash
# fleet_bench.sh - collector instances that share the stores (issue 15, item 6):
#
#   1. sales/s into pos.sales.v1 with 1, 2 and 3 collector instances in one
#      group (fleet.group, each its own collector.instance_id), one pos-broker
#      (BENCH_PARTITIONS partitions), BENCH_STORES stores sending batches back
#      to back over mutual TLS (pos-batch, one per store, bodies built before
#      the clock, all connected before it starts). Each store sends to the
#      instance that owns its store's partition: played as a load balancer
#      that learns the owner by sending the store's first batch to the
#      instances in turn (a 503 "not this collector instance's store" means
#      another one); those 503s are counted and printed. Measured once every
#      instance answers /healthz 200 on its operator port (the rebalance is
#      not in the figure). Printed: records/s, and CPU us per record of the
#      instances together and of pos-broker (utime+stime, /proc/PID/stat).
#   2. how long a store waits across a failover: with 3 instances under
#      steady load (each store a loop of one batch at a time, the next
#      instance in turn on a 503 or no answer), an instance killed (-9),
#      a new one joining, then an instance stopped (SIGTERM). For each store
#      refused after the event: from its first refused or failed batch (or
#      the event, if later) to its next acknowledged batch; p50, p99, max.
#   3. every acknowledged sale is in pos.sales.v1 exactly once, by the
#      journal_id and seq headers of every record (kcat tails the topic
#      throughout, reniced ahead of the collectors when run as root: the test
#      broker keeps only the newest 5 MB of a partition). If the broker still
#      dropped records before the tail read them, the check is by count: the
#      partitions' records (end offsets) = the sales acknowledged, none read
#      twice, none read that was not acknowledged ("yes by count").
#      The one check that fails the run; nothing about timing is asserted.
#
#   bash tests/bench/fleet_bench.sh BUILD_DIR      (or: cmake --build BUILD_DIR -t bench-fleet)
#
# Environment:
#   BENCH_STORES            24   stores (a certificate each)
#   BENCH_PARTITIONS        6    partitions of every topic
#   BENCH_BATCHES           10   batches per store per throughput run
#   BENCH_BATCH_SALES       500  sales per batch of the throughput runs
#   BENCH_FAILOVER_SALES    50   sales per batch of the failover loops
#   BENCH_FAILOVER_PAUSE    0.05 seconds a store waits between its failover batches
#   BENCH_SESSION_TIMEOUT   4s   fleet.session_timeout of every instance
#   BENCH_QUICK             0    1: 8 stores, 4 batches per run (a smoke run)
set -euo pipefail
export LC_ALL=C

BUILD_DIR="$(cd "${1:?usage: fleet_bench.sh BUILD_DIR}" && pwd)"
export POS_BUILD_DIR="$BUILD_DIR"
export POS_SOURCE_DIR="${POS_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}"
QUICK="${BENCH_QUICK:-0}"
STORES="${BENCH_STORES:-$([[ "$QUICK" == 1 ]] && echo 8 || echo 24)}"
PARTITIONS="${BENCH_PARTITIONS:-6}"
BATCHES="${BENCH_BATCHES:-$([[ "$QUICK" == 1 ]] && echo 4 || echo 10)}"
BATCH_SALES="${BENCH_BATCH_SALES:-500}"
FO_SALES="${BENCH_FAILOVER_SALES:-50}"
FO_PAUSE="${BENCH_FAILOVER_PAUSE:-0.05}"
SESSION_TIMEOUT="${BENCH_SESSION_TIMEOUT:-4s}"
for knob in STORES PARTITIONS BATCHES BATCH_SALES FO_SALES; do
  [[ "${!knob}" =~ ^[1-9][0-9]*$ ]] ||
    { echo "fleet_bench: $knob '${!knob}' is not a count" >&2; exit 2; }
done

# The end-to-end tests' helpers: PKI, broker, collector config, fleet_*, cleanup.
# shellcheck source=../e2e/lib.sh
source "$POS_SOURCE_DIR/tests/e2e/lib.sh"
TEST_NAME=fleet_bench
CLK_TCK="$(getconf CLK_TCK)"
TOPIC=pos.sales.v1

calc() { awk "BEGIN { printf \"%.6f\", $1 }"; }
ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'; }
store_name() { printf '%s' "${STORE_IDS[$1]}"; }
journal_of() { printf 'f1ee7000%024x' "$1"; }

# The stores: the first ids S001, S002, ... that put as many stores in each partition (where
# the collector places a store: pos-broker --partition-of, its producer's partitioner), so
# that the instances share the load evenly. Indexed 1..STORES.
mapfile -t STORE_IDS < <(
  echo ""
  "$BROKER_BIN" --partition-of "$PARTITIONS" \
    $(for ((n = 1; n <= STORES * 8 + 64; n++)); do printf 'S%03d ' "$n"; done) |
    awk -v stores="$STORES" -v parts="$PARTITIONS" '
      BEGIN { per = int((stores + parts - 1) / parts) }
      chosen < stores && count[$2] < per { count[$2]++; chosen++; print $1 }'
)
((${#STORE_IDS[@]} == STORES + 1)) || fail "choosing $STORES store ids"
args=()
for ((s = 1; s <= STORES; s++)); do
  [[ "$(store_name "$s")" == S001 ]] || args+=("$(store_name "$s")" D1)
done
make_pki "${args[@]}"
start_broker --partitions "$PARTITIONS"

# The topic read as it is written, partition, offset and headers only; ahead of the
# collectors for the CPU when we may (root), as the broker drops what the tail has not read.
: >"$T/tail.tsv"
NICE=()
[[ "$(id -u)" == 0 ]] && NICE=(nice -n -10)
"${NICE[@]}" kcat -b "$KAFKA_BOOT" -C -t "$TOPIC" -o beginning -u -q \
  -X auto.offset.reset=earliest -f '%p\t%o\t%h\n' >"$T/tail.tsv" 2>"$T/tail.err" &
TAIL_PID=$!
# tail_caught_up: until the tail has read each partition's last record (120 s); sets ENDS.
tail_caught_up() {
  local deadline=$((SECONDS + 120)) p o caught_up
  ENDS="$(timeout 60 kcat -b "$KAFKA_BOOT" -C -t "$TOPIC" -o -1 -e -q -f '%p %o\n')" ||
    fail "kcat reads the last record of each partition of $TOPIC"
  while :; do
    caught_up=1
    while read -r p o; do
      [[ -n "$p" ]] || continue
      awk -F'\t' -v p="$p" -v o="$o" '$1 == p && $2 == o { f = 1; exit } END { exit !f }' \
        "$T/tail.tsv" || { caught_up=0; break; }
    done <<<"$ENDS"
    ((caught_up)) && break
    ((SECONDS < deadline)) || fail "the tail of $TOPIC reads to its end within 120 s" "$ENDS" \
      "$(tail -n 1 "$T/tail.tsv")"
    sleep 0.5
  done
}
CLIENT_PIDS=()
_bench_cleanup() {
  local pid
  for pid in "${CLIENT_PIDS[@]}" "$TAIL_PID"; do kill -KILL "$pid" 2>/dev/null || true; done
}
on_cleanup _bench_cleanup

# start_instance NAME: fleet_start with the session timeout of this run; its batch URL in
# FLEET_URLS[NAME] once it listens.
start_instance() {
  local port i
  : >"$T/$1.log" # there before the port is looked for in it
  FLEET_SESSION_TIMEOUT="$SESSION_TIMEOUT" fleet_start "$1"
  for ((i = 0; i < 300; i++)); do
    port="$(sed -n 's/.*mod=collector event=listening .*port=\([0-9]*\).*/\1/p' "$T/$1.log" |
      head -n 1)"
    [[ -n "$port" ]] && break
    sleep 0.05
  done
  [[ -n "$port" ]] || fail "$1 logs its port (event=listening)" "port=N" "$(tail -n 5 "$T/$1.log")"
  FLEET_URLS[$1]="https://127.0.0.1:$port"
}

# Every store has one journal for the whole run: its next batch_seq and seq.
declare -A NEXT_BATCH NEXT_SEQ
for ((s = 1; s <= STORES; s++)); do NEXT_BATCH[$s]=1 NEXT_SEQ[$s]=1; done
# post URL STORE_INDEX pos-batch args...: one request of store STORE_INDEX's device.
post() {
  local url="$1" s="$2" store
  store="$(store_name "$2")"
  shift 2
  "$BATCH_BIN" --url "$url" --cacert "$PKI/ca.crt" --cert "$PKI/device-$store-D1.crt" \
    --key "$PKI/device-$store-D1.key" --store "$store" --device D1 --journal "$(journal_of "$s")" \
    --prefix "$store" --timeout 30 "$@" 2>/dev/null || true
}

# lb_send STORE_INDEX SALES NAME...: the store's next batch to the instances NAME... in
# turn, rounds 0.3 s apart, until one answers 200 (60 s); sets OWNER[STORE_INDEX].
declare -A OWNER
REFUSED=0
lb_send() {
  local s="$1" sales="$2" deadline=$((SECONDS + 60)) n out status
  shift 2
  while :; do
    for n in "$@"; do
      out="$(post "${FLEET_URLS[$n]}" "$s" --batch-seq "${NEXT_BATCH[$s]}" \
        --first-seq "${NEXT_SEQ[$s]}" --sales "$sales")"
      status="$(batch_field status "$out")"
      if [[ "$status" == 200 ]]; then
        OWNER[$s]="$n"
        NEXT_BATCH[$s]=$((NEXT_BATCH[$s] + 1))
        NEXT_SEQ[$s]=$((NEXT_SEQ[$s] + sales))
        return 0
      fi
      [[ "$status" == 503 ]] ||
        fail "store $s batch ${NEXT_BATCH[$s]} to $n: 200 or 503" "200|503" "$out"
      REFUSED=$((REFUSED + 1))
    done
    ((SECONDS < deadline)) || fail "store $s taken by one of $* within 60 s" 200 "$out"
    sleep 0.3
  done
}

# --- 1. throughput with 1, 2 and 3 instances ---------------------------------------------
INSTANCES=()
declare -A RATE CPU_US BROKER_US LB_503 OWNED
for k in 1 2 3; do
  start_instance "c$k"
  INSTANCES+=("c$k")
  sleep 1
  fleet_wait_ready 120 "${INSTANCES[@]}"
  # The load balancer learns each store's owner: one 10-sale batch to the instances in turn.
  REFUSED=0
  for ((s = 1; s <= STORES; s++)); do lb_send "$s" 10 "${INSTANCES[@]}"; done
  LB_503[$k]=$REFUSED
  OWNED[$k]="$(for n in "${INSTANCES[@]}"; do printf '%s=[%s] ' "$n" "$(fleet_owned "$n")"; done)"
  rm -f "$T"/ready.* "$T/go"
  CLIENT_PIDS=()
  for ((s = 1; s <= STORES; s++)); do
    store="$(store_name "$s")"
    "$BATCH_BIN" --bodies-out "$T/tp.$s.bodies" --store "$store" --device D1 \
      --journal "$(journal_of "$s")" --prefix "$store" --count "$BATCHES" --sales "$BATCH_SALES" \
      --batch-seq "${NEXT_BATCH[$s]}" --first-seq "${NEXT_SEQ[$s]}" >/dev/null ||
      fail "pos-batch --bodies-out for $store"
    NEXT_BATCH[$s]=$((NEXT_BATCH[$s] + BATCHES))
    NEXT_SEQ[$s]=$((NEXT_SEQ[$s] + BATCHES * BATCH_SALES))
    post "${FLEET_URLS[${OWNER[$s]}]}" "$s" --bodies "$T/tp.$s.bodies" --quiet --timeout 120 \
      --ready-file "$T/ready.$s" --go-file "$T/go" >"$T/tp.$s.out" &
    CLIENT_PIDS+=($!)
  done
  deadline=$((SECONDS + 60))
  while (($(find "$T" -maxdepth 1 -name 'ready.*' | wc -l) < STORES)); do
    ((SECONDS < deadline)) || fail "every store connects within 60 s"
    sleep 0.02
  done
  c0=0
  for n in "${INSTANCES[@]}"; do c0=$((c0 + $(ticks "${FLEET_PIDS[$n]}"))); done
  b0="$(ticks "$BROKER_PID")"
  start="$EPOCHREALTIME"
  : >"$T/go"
  for pid in "${CLIENT_PIDS[@]}"; do wait "$pid" || true; done
  end="$EPOCHREALTIME"
  CLIENT_PIDS=()
  c1=0
  for n in "${INSTANCES[@]}"; do c1=$((c1 + $(ticks "${FLEET_PIDS[$n]}"))); done
  b1="$(ticks "$BROKER_PID")"
  sales=0
  for ((s = 1; s <= STORES; s++)); do
    out="$(tail -n 1 "$T/tp.$s.out")"
    [[ "$(batch_field answered_200 "$out")" == "$BATCHES" ]] ||
      fail "store $s: every throughput batch answered 200 by ${OWNER[$s]}" "$BATCHES" "$out"
    sales=$((sales + $(batch_field sales "$out")))
  done
  RATE[$k]="$(calc "$sales / ($end - $start)")"
  CPU_US[$k]="$(calc "($c1 - $c0) * 1000000 / $CLK_TCK / $sales")"
  BROKER_US[$k]="$(calc "($b1 - $b0) * 1000000 / $CLK_TCK / $sales")"
  tail_caught_up
  log "$k instance(s): $(printf '%.0f' "${RATE[$k]}") sales/s; owned ${OWNED[$k]}"
done

# --- 2. failover: every store a loop of one batch at a time -----------------------------
# store_loop STORE_INDEX: until $T/stop exists (and its last batch is acknowledged), the
# store's next batch to its instance; on a 503 or no answer the same batch to the next URL
# of $T/urls (the load balancer's list); on a 409, the batch the collector expects.
# One line per request in $T/fo.N.log:
# "start end status url".
store_loop() {
  local s="$1" url="${FLEET_URLS[${OWNER[$1]}]}" batch="${NEXT_BATCH[$1]}" seq="${NEXT_SEQ[$1]}"
  local base_batch="${NEXT_BATCH[$1]}" base_seq="${NEXT_SEQ[$1]}" out status t0 urls i expected
  while :; do
    t0="$EPOCHREALTIME"
    out="$(post "$url" "$s" --batch-seq "$batch" --first-seq "$seq" --sales "$FO_SALES")"
    status="$(batch_field status "$out")"
    echo "$t0 $EPOCHREALTIME ${status:-0} $url" >>"$T/fo.$s.log"
    if [[ "$status" == 200 ]]; then
      batch=$((batch + 1))
      seq=$((seq + FO_SALES))
      echo "$batch $seq" >"$T/fo.$s.next"
      [[ -e "$T/stop" ]] && return 0
      sleep "$FO_PAUSE"
    elif [[ "$status" == 409 ]]; then
      # A gap: as the agent does, carry on from the batch the collector expects (resent
      # unchanged if it is one acknowledged before: the same arguments make the same bytes).
      expected="$(batch_field expected_batch_seq "$out")"
      if ((expected < base_batch)); then
        echo "409 expects batch $expected, before this loop's first ($base_batch): $out" \
          >"$T/fo.$s.err"
        return 1
      fi
      batch="$expected"
      seq=$((base_seq + (expected - base_batch) * FO_SALES))
    else
      mapfile -t urls <"$T/urls"
      for ((i = 0; i < ${#urls[@]}; i++)); do [[ "${urls[$i]}" == "$url" ]] && break; done
      url="${urls[$(((i + 1) % ${#urls[@]}))]}"
    fi
  done
}
write_urls() { # NAME...: the load balancer's list
  local n
  for n in "$@"; do echo "${FLEET_URLS[$n]}"; done >"$T/urls.new"
  mv "$T/urls.new" "$T/urls"
}

# settle SINCE: at least the session timeout and 3 s after SINCE, then until every store's
# latest request was acknowledged (90 s).
settle() {
  local since="$1" deadline=$((SECONDS + 90)) s pending
  sleep "$(calc "${SESSION_TIMEOUT%s} + 3")"
  while :; do
    pending=0
    for ((s = 1; s <= STORES; s++)); do
      [[ "$(tail -n 1 "$T/fo.$s.log" | awk '{ print $3 }')" == 200 ]] || pending=$((pending + 1))
    done
    ((pending == 0)) && break
    if compgen -G "$T/fo.*.err" >/dev/null; then
      fail "a store loop stopped: $(cat "$T"/fo.*.err)"
    fi
    ((SECONDS < deadline)) ||
      fail "every store acknowledged again within 90 s of the event" 0 "$pending"
    sleep 0.2
  done
  log "settled $(calc "$EPOCHREALTIME - $since") s after the event"
}

write_urls "${INSTANCES[@]}"
rm -f "$T/stop"
LOOP_PIDS=()
for ((s = 1; s <= STORES; s++)); do
  : >"$T/fo.$s.log"
  store_loop "$s" &
  LOOP_PIDS+=($!)
  CLIENT_PIDS+=($!)
done
sleep 3
EVENTS=()
T_KILL="$EPOCHREALTIME"
fleet_kill c2
EVENTS+=("kill -9 $T_KILL")
write_urls c1 c3
settle "$T_KILL"
T_JOIN="$EPOCHREALTIME"
start_instance c4
EVENTS+=("a 4th joins $T_JOIN")
write_urls c1 c3 c4
fleet_wait_ready 120 c1 c3 c4
settle "$T_JOIN"
T_STOP="$EPOCHREALTIME"
EVENTS+=("SIGTERM $T_STOP")
fleet_stop c3
write_urls c1 c4
settle "$T_STOP"
T_END="$EPOCHREALTIME"
: >"$T/stop"
for pid in "${LOOP_PIDS[@]}"; do wait "$pid" || fail "a failover store loop ended in error"; done
CLIENT_PIDS=()
for ((s = 1; s <= STORES; s++)); do
  read -r NEXT_BATCH[$s] NEXT_SEQ[$s] <"$T/fo.$s.next"
done

# waits FROM TO: per store, the wait across an event at FROM (requests ending before TO):
# from its first non-200 ending after FROM (its start, or FROM if later) to the end of the
# next 200. Prints "count refused p50 p99 max" (ms).
waits() {
  local s
  for ((s = 1; s <= STORES; s++)); do
    awk -v from="$1" -v to="$2" '
      $2 < from || $2 >= to { next }
      $3 == 409 { gaps++ }
      $3 != 200 { refused++; if (!failed) { failed = 1; t = $1 > from ? $1 : from } ; next }
      failed && !done { printf "W %.1f\n", ($2 - t) * 1000; done = 1 }
      END { printf "R %d %d\n", refused, gaps }' "$T/fo.$s.log"
  done >"$T/waits"
  refused="$(awk '$1 == "R" { r += $2; g += $3 } END { print r + 0 "/" g + 0 }' "$T/waits")"
  awk '$1 == "W" { print $2 }' "$T/waits" | sort -g | awk -v refused="$refused" '
    { w[++n] = $1 }
    END {
      if (n == 0) { printf "0 %s - - -\n", refused; exit }
      p99 = int(0.99 * n + 0.999999)
      printf "%d %s %.0f %.0f %.0f\n", n, refused, w[int((n + 1) / 2)], w[p99], w[n] }'
}

# --- 3. exactly once -------------------------------------------------------------------------
tail_caught_up
for ((s = 1; s <= STORES; s++)); do
  echo "$(journal_of "$s") $((NEXT_SEQ[$s] - 1))"
done >"$T/acked"
verdict="$(awk -F'\t' '
  FNR == NR { split($0, a, " "); acked[a[1]] = a[2]; next }
  NF < 3 { next }
  {
    if ($2 != next_offset[$1] + 0) gap = gap " partition " $1 " offset " next_offset[$1] "->" $2
    next_offset[$1] = $2 + 1
    j = ""; q = ""
    n = split($3, h, ",")
    for (i = 1; i <= n; i++) {
      if (h[i] ~ /^journal_id=/) j = substr(h[i], 12)
      else if (h[i] ~ /^seq=/) q = substr(h[i], 5)
    }
    if (!(j in acked)) next
    if (++count[j, q] == 2) doubled++
    if (q + 0 > acked[j]) extra++
    records++
  }
  END {
    for (j in acked) for (q = 1; q <= acked[j]; q++) { if (!((j, q) in count)) missing++; want++ }
    if (gap != "") {
      # The broker dropped records before the tail read them: count them by offsets instead.
      if (doubled || extra || ends != want)
        printf "no: %d records for %d acknowledged sales, %d doubled, %d never acknowledged\n",
          ends, want, doubled, extra
      else
        printf "yes by count (%d records for %d acknowledged sales; %d of them read, %s%d %s)\n",
          ends, want, records, "none doubled; ", missing, "dropped by the broker unread"
      exit
    }
    if (missing || doubled || extra)
      printf "no: %d of %d acknowledged sales missing, %d doubled, %d never acknowledged\n",
        missing, want, doubled, extra
    else printf "yes (%d sales of %d stores, %d records)\n", want, length(acked), records
  }' ends="$(awk '{ n += $2 + 1 } END { print n + 0 }' <<<"$ENDS")" "$T/acked" "$T/tail.tsv")"

# --- figures ---------------------------------------------------------------------------------
echo "== fleet throughput: pos-broker ($PARTITIONS partitions), $STORES stores x $BATCHES batches"
echo "   x $BATCH_SALES sales per run, mTLS, each store to the owner of its partition, closed loop"
printf '%-36s %14s %14s %14s\n' "" "1 instance" "2 instances" "3 instances"
printf '%-36s %14.0f %14.0f %14.0f\n' "records/s" "${RATE[1]}" "${RATE[2]}" "${RATE[3]}"
printf '%-36s %14.1f %14.1f %14.1f\n' "CPU us/record, the instances" "${CPU_US[1]}" \
  "${CPU_US[2]}" "${CPU_US[3]}"
printf '%-36s %14.1f %14.1f %14.1f\n' "CPU us/record, pos-broker" "${BROKER_US[1]}" \
  "${BROKER_US[2]}" "${BROKER_US[3]}"
printf '%-36s %14d %14d %14d\n' "503s while learning the owners" "${LB_503[1]}" "${LB_503[2]}" \
  "${LB_503[3]}"
for k in 1 2 3; do echo "   $k: ${OWNED[$k]}"; done
echo
echo "== a store's wait across a failover: 3 instances, $STORES stores each sending $FO_SALES-sale"
echo "   batches one at a time ($FO_PAUSE s apart), fleet.session_timeout=$SESSION_TIMEOUT;"
echo "   per store refused: first refused/failed batch (or the event) -> next acknowledged"
echo "   batch, ms;"
echo "   refused/409s: the requests not answered 200 (503, no answer, 409), and of them the 409s"
echo "   (a gap: the new owner expected an earlier batch, which the store then resent)"
printf '%-20s %8s %14s %8s %8s %8s\n' event stores "refused/409s" p50 p99 max
bounds=("$T_KILL" "$T_JOIN" "$T_STOP" "$T_END")
for i in 0 1 2; do
  read -r n refused p50 p99 max <<<"$(waits "${bounds[$i]}" "${bounds[$((i + 1))]}")"
  printf '%-20s %8s %14s %8s %8s %8s\n' "${EVENTS[$i]% *}" "$n" "$refused" "$p50" "$p99" "$max"
done
echo
echo "== exactly once: $verdict"
[[ "$verdict" == yes* ]] || fail "every acknowledged sale in $TOPIC exactly once" yes "$verdict"
