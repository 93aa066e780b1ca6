#!/usr/bin/env bash
# Broker, collector and agent as three processes: 5,000 sales posted to the
# agent reach pos.sales.v1 exactly once, and each record equals its journal
# row field for field (decoded by protoc, not by our code). Heartbeats land
# in pos.agent-status.v1.
source "$(dirname "$0")/lib.sh"

make_pki
start_broker --partitions 4
write_collector_config
start_collector

write_tokens
write_agent_config uplink.max_batch_sales=500 uplink.heartbeat_interval=1s
start_agent

# 5,000 sales from 4 terminals' worth of clients, in arrays of 50.
run_load --clients 4 --sales 1250 --batch 50 --prefix E
log "load: $LOAD_OUT"
assert_eq "sales journaled as new" 5000 "$(load_field ok)"
assert_eq "journal rows" 5000 "$(journal_count)"

push_until_sent 120

kafka_read pos.sales.v1 sales
records_db sales
check_sales_match_journal sales 5000
check_batches_contiguous
assert_gt "batches for 5,000 sales at max_batch_sales=500" 9 "$BATCH_COUNT"
assert_eq "records whose batch_seq header is above the last batch" 0 \
  "$(rsql sales "SELECT count(*) FROM k WHERE h_batch_seq > $BATCH_COUNT OR h_batch_seq < 1;")"
assert_eq "collector: batches acknowledged as new = batches sealed" "$BATCH_COUNT" \
  "$(grep 'event=batch_acked' "$COLLECTOR_LOG" | grep -c 'duplicate=0' || true)"

# Nothing was dead-lettered: every sale the agent took is valid.
kafka_read pos.dlq.v1 dlq
assert_eq "records in pos.dlq.v1" 0 "$KAFKA_RECORDS"

# Heartbeats (every second) reach pos.agent-status.v1, keyed by the store.
deadline=$((SECONDS + 15))
while :; do
  kafka_read pos.agent-status.v1 status HeartbeatRecords
  [[ "$KAFKA_RECORDS" -gt 0 ]] && break
  ((SECONDS < deadline)) || fail "a heartbeat lands in pos.agent-status.v1 within 15 s" ">= 1 record" 0
  sleep 1
done
assert_eq "pos.agent-status.v1 keys (store/device)" "$STORE/$DEVICE" "$(cut -f3 "$T/status.meta" | sort -u | tr '\n' ' ' | sed 's/ $//')"
assert_contains "heartbeat names the store" "store_id: \"$STORE\"" "$(cat "$T/status.txt")"
assert_contains "heartbeat names the device" "device_id: \"$DEVICE\"" "$(cat "$T/status.txt")"
assert_contains "heartbeat names the journal's last seq" "last_seq: 5000" "$(cat "$T/status.txt")"

stop_agent
stop_collector
