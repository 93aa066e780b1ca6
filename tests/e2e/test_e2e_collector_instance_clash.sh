#!/usr/bin/env bash
# One running collector per instance_id (issue 15, item 1): two under one id
# would write their checkpoints under the same keys and each rebuild the
# other's. A running instance holds a lease on its id in pos.ingest-state.v1
# (pos.proto, InstanceLease), renewed every 3 s. A second collector started
# under that id sees the renewal and refuses to start, saying which process
# holds the id and what to do; the first goes on. Another id starts beside
# it. After the holder is killed (-9) the next run under the id waits for a
# renewal that does not come, then starts; after a clean stop (the lease
# released) it starts without waiting. The sales sent across all of it are
# in Kafka once each.
source "$(dirname "$0")/lib.sh"

make_pki
start_broker --partitions 2
write_collector_config
start_collector
J=1a1b1c1d1e1f10111213141516171819
grep -q 'event=lease_watch' "$COLLECTOR_LOG" &&
  fail "first start: nothing to watch (no lease yet)" "no event=lease_watch" \
    "$(grep 'event=lease_watch' "$COLLECTOR_LOG")"
send_batch device-S001-D1 --store S001 --journal "$J" --batch-seq 1 --first-seq 1 --sales 5
assert_eq "batch 1: status" 200 "$(batch_field status)"

# A second collector under the same instance_id, while the first runs.
write_collector_config "$T/second.conf"
rc=0
timeout 90 "$COLLECTOR_BIN" --config "$T/second.conf" 2>"$T/second.log" >/dev/null || rc=$?
assert_eq "a second collector under instance_id e2e-collector: exit status" 1 "$rc"
assert_match "it says which process holds the id and what to do" \
  "instance_id e2e-collector is in use: another collector \\(host $(hostname), pid $COLLECTOR_PID\\) renewed its claim on it.*give each instance its own \\[collector\\] instance_id" \
  "$(cat "$T/second.log")"
grep -q 'event=instance_id_in_use' "$T/second.log" ||
  fail "the refusal is logged as event=instance_id_in_use" "a line" "$(tail -n 5 "$T/second.log")"
kill -0 "$COLLECTOR_PID" || fail "the first collector still runs" "running" "gone"
send_batch device-S001-D1 --store S001 --journal "$J" --batch-seq 2 --first-seq 6 --sales 5
assert_eq "batch 2 to the first collector: status" 200 "$(batch_field status)"

# Another instance_id starts beside it.
write_collector_config "$T/other.conf" collector.instance_id=e2e-collector-b
"$COLLECTOR_BIN" --config "$T/other.conf" 2>"$T/other.log" >/dev/null &
other_pid=$!
deadline=$((SECONDS + 60))
until grep -q 'event=recovery_done' "$T/other.log"; do
  kill -0 "$other_pid" 2>/dev/null || fail "collector e2e-collector-b runs beside e2e-collector" \
    "running" "exited: $(tail -n 3 "$T/other.log")"
  ((SECONDS < deadline)) || fail "collector e2e-collector-b rebuilds its state within 60 s" \
    "event=recovery_done" "$(tail -n 3 "$T/other.log")"
  sleep 0.2
done
kill -TERM "$other_pid"
rc=0
wait "$other_pid" || rc=$?
assert_eq "collector e2e-collector-b: exit status after SIGTERM" 0 "$rc"

# The holder killed: the next run waits for a renewal that does not come.
kill_collector
start_collector
assert_match "after kill -9: the next run watched the lease, then took the id" \
  'event=lease_free .*reason="not renewed: the previous run under this instance_id is gone"' \
  "$(grep 'event=lease_free' "$COLLECTOR_LOG")"
send_batch device-S001-D1 --store S001 --journal "$J" --batch-seq 3 --first-seq 11 --sales 5
assert_eq "batch 3 after the restart: status" 200 "$(batch_field status)"

# A clean stop releases the id: the next start does not wait for it.
stop_collector
grep -q 'event=lease_released' "$COLLECTOR_LOG" ||
  fail "a clean stop releases the lease" "event=lease_released" "$(tail -n 5 "$COLLECTOR_LOG")"
start_collector
grep -q 'event=lease_watch' "$COLLECTOR_LOG" &&
  fail "after a clean stop: nothing to watch" "no event=lease_watch" \
    "$(grep 'event=lease_watch' "$COLLECTOR_LOG")"
send_batch device-S001-D1 --store S001 --journal "$J" --batch-seq 4 --first-seq 16 --sales 5
assert_eq "batch 4: status" 200 "$(batch_field status)"

kafka_read pos.sales.v1 sales
records_db sales
assert_eq "records in pos.sales.v1: 20 sales, each once" 20 "$KAFKA_RECORDS"
assert_eq "distinct seqs in the headers" 20 "$(rsql sales 'SELECT count(DISTINCT h_seq) FROM k;')"
log "passed"
