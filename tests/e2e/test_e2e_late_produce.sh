#!/usr/bin/env bash
# A restarted collector must not produce twice what the killed one had in
# flight (issue 7, item 2). pos-broker --produce-delay puts a proxy in front
# of the mock broker that delivers each Produce request 3 s late, as a slow
# network or broker may, within the producer's request timeout. The first
# collector talks through it and is killed -9 while batch 2's request is on
# its way; the second talks to the broker directly, so it could ask where
# the log ends before that request lands. The agent's resend of batch 2 must
# then produce nothing: every sale once in pos.sales.v1.
source "$(dirname "$0")/lib.sh"

make_pki
start_broker --partitions 2 --produce-delay 3000
DIRECT="$BROKER_BOOT"
DELAYED="$(sed -n 's/^delayed=\([^[:space:]]*\).*/\1/p' "$T/broker.out" | head -n 1)"
[[ -n "$DELAYED" ]] || fail "pos-broker --produce-delay prints delayed=" "delayed=HOST:PORT" "$(cat "$T/broker.out")"
write_collector_config kafka.brokers="$DELAYED"
start_collector
pin_collector_port

J=1a7e1a7e1a7e1a7e1a7e1a7e1a7e1a7e
DEV=device-S001-D1
send_batch "$DEV" --journal "$J" --batch-seq 1 --first-seq 1 --sales 5
assert_eq "batch 1: status" 200 "$(batch_field status)"

# Batch 2's Produce request is held by the network; the collector dies before Kafka answers.
"$BATCH_BIN" --url "$COLLECTOR_URL" --cacert "$PKI/ca.crt" --cert "$PKI/$DEV.crt" \
  --key "$PKI/$DEV.key" --timeout 30 --journal "$J" --batch-seq 2 --first-seq 6 --sales 5 \
  >"$T/batch2.out" 2>&1 &
batch_pid=$!
# A second is ample for the batch to reach the collector and its records the
# proxy, and well inside the 3 s the proxy holds them.
sleep 1
kill_collector
wait "$batch_pid" 2>/dev/null || true
log "batch 2's first attempt: $(cat "$T/batch2.out")"
assert_eq "batch 2's first attempt got no 200" 0 "$(grep -c 'status=200' "$T/batch2.out" || true)"

sed -i "s|^brokers = .*|brokers = $DIRECT|" "$COLLECTOR_CONFIG"
start_collector
log "recovery: waited_ms=$(recovery_field waited_ms) sales_read=$(recovery_field sales_read)"
# The agent resends batch 2, and on a 409 resumes where it is told, as the
# protocol says (a 409 after a restart may point below what was acknowledged).
next=2 tries=0
while ((next <= 2 && tries < 5)); do
  send_batch "$DEV" --journal "$J" --batch-seq "$next" --first-seq $(((next - 1) * 5 + 1)) --sales 5
  log "batch $next: $(batch_field status) expected=$(batch_field expected_batch_seq)"
  if [[ "$(batch_field status)" == 409 ]]; then
    next="$(batch_field expected_batch_seq)"
  else
    assert_eq "batch $next resent: status" 200 "$(batch_field status)"
    next=$((next + 1))
  fi
  tries=$((tries + 1))
done
sleep 4 # anything still held lands
kafka_read pos.sales.v1 sales
records_db sales
assert_eq "records in pos.sales.v1 (batches 1 and 2, once each)" 10 "$(rsql sales 'SELECT count(*) FROM k;')"
assert_eq "distinct seqs in pos.sales.v1" 10 "$(rsql sales 'SELECT count(DISTINCT seq) FROM k;')"
stop_collector
