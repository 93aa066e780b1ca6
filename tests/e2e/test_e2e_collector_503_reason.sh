#!/usr/bin/env bash
# A 503 says what a store is really waiting for (issue 15, item 5): Kafka,
# when the broker does not acknowledge; the collector's own CPU, when its
# event loop runs late (the acknowledgements are there but not served). The
# loop is made late by stopping the collector (SIGSTOP) for 3 s with a batch
# in flight: what a collector starved of CPU looks like from inside. Its
# lateness is a metric (pos_collector_loop_late_seconds). After both, the
# batch sent again lands exactly once.
source "$(dirname "$0")/lib.sh"

make_pki
start_broker --partitions 2
write_collector_config kafka.produce_timeout=2s
start_collector
J=0a0b0c0d0e0f00010203040506070809
operator_port="$(sed -n 's/.*event=operator_listening .*port=\([0-9]*\).*/\1/p' "$COLLECTOR_LOG" | head -n1)"
late_seconds() {
  curl -sS --max-time 10 "http://127.0.0.1:$operator_port/metrics" |
    sed -n 's/^pos_collector_loop_late_seconds \([-0-9.e+]*\)$/\1/p'
}

send_batch device-S001-D1 --store S001 --journal "$J" --batch-seq 1 --first-seq 1 --sales 5
assert_eq "batch 1: status" 200 "$(batch_field status)"
late="$(late_seconds)"
awk -v l="$late" 'BEGIN { exit !(l != "" && l < 0.5) }' ||
  fail "metrics: the loop runs on time (under a quarter of produce_timeout late)" "< 0.5" "$late"

# Kafka silent: the 503 names Kafka.
pause_broker
send_batch device-S001-D1 --store S001 --journal "$J" --batch-seq 2 --first-seq 6 --sales 5
assert_eq "broker stopped: status" 503 "$(batch_field status)"
assert_match "broker stopped: the 503 names Kafka" 'not acknowledged after 2000 ms: Kafka has not acknowledged them yet' \
  "$(batch_field message)"

# The collector's loop stalled with the batch in flight: the 503 names its CPU.
resume_broker
send_batch device-S001-D1 --store S001 --journal "$J" --batch-seq 2 --first-seq 6 --sales 5
assert_eq "broker back: batch 2 (produced before) acknowledged" 200 "$(batch_field status)"
pause_broker
"$BATCH_BIN" --url "$COLLECTOR_URL" --cacert "$PKI/ca.crt" --cert "$PKI/device-S001-D1.crt" \
  --key "$PKI/device-S001-D1.key" --timeout 30 --store S001 --journal "$J" --batch-seq 3 \
  --first-seq 11 --sales 5 >"$T/stalled.out" 2>&1 &
sender=$!
sleep 0.5
kill -STOP "$COLLECTOR_PID"
sleep 3
kill -CONT "$COLLECTOR_PID"
wait "$sender" || true
out="$(tail -n 1 "$T/stalled.out")"
assert_eq "loop stalled: status" 503 "$(batch_field status "$out")"
assert_match "loop stalled: the 503 names the collector's CPU" \
  'the collector is short of CPU: its event loop runs up to [0-9]+ ms late' "$(batch_field message "$out")"
late="$(late_seconds)"
awk -v l="$late" 'BEGIN { exit !(l >= 2.5) }' ||
  fail "metrics: the loop's lateness after a 3 s stall" ">= 2.5" "$late"
grep -q 'event=produce_timeout .*loop_late_ms=[0-9]\{4\}' "$COLLECTOR_LOG" ||
  fail "the produce timeout is logged with the loop's lateness" "loop_late_ms=NNNN" \
    "$(grep 'event=produce_timeout' "$COLLECTOR_LOG" | tail -n 2)"

resume_broker
send_batch device-S001-D1 --store S001 --journal "$J" --batch-seq 3 --first-seq 11 --sales 5
assert_eq "batch 3 again: acknowledged" 200 "$(batch_field status)"
kafka_read pos.sales.v1 sales
records_db sales
assert_eq "records in pos.sales.v1: 15 sales, each once" 15 "$KAFKA_RECORDS"
assert_eq "distinct seqs in the headers" 15 "$(rsql sales 'SELECT count(DISTINCT h_seq) FROM k;')"
log "passed"
