#!/usr/bin/env bash
# Issue 12, item 6: once the collector lists the sales-2 zstd dictionary in
# its ack, the agent seals its batches with it, their sales in the compact
# encoding (business_time_ms, received_ms and seq sent as differences,
# store_id left to the envelope: pos.proto, Sale.business_time_step_ms). The
# records the collector produces are canonical: read back with kcat and
# decoded by protoc, each equals its journal row field for field (absolute
# business_time_ms and received_ms included), exactly once, and none carries
# a field of the compact encoding. The first batch, sealed before any ack,
# goes without a dictionary and canonical.
source "$(dirname "$0")/lib.sh"

make_pki
start_broker --partitions 4
write_collector_config
start_collector

write_tokens
write_agent_config uplink.max_batch_sales=60
start_agent

run_load --clients 1 --sales 3 --batch 1 --prefix CA
push_until_sent 60
# Four 15-minute intervals of a store: 60 sales per batch.
run_load --clients 2 --sales 120 --batch 10 --prefix CB
assert_eq "journal rows" 243 "$(journal_count)"
push_until_sent 120

kafka_read pos.sales.v1 sales
records_db sales
check_sales_match_journal sales 243
check_batches_contiguous
assert_eq "records carrying a field of the compact encoding (23-25)" 0 \
  "$(grep -cE 'business_time_step_ms|received_after_business_ms|seq_skip|^ *2[345]: ' \
    "$T/sales.txt" || true)"
assert_eq "records with business_time_ms 0" 0 \
  "$(rsql sales 'SELECT count(*) FROM k WHERE business_time_ms = 0 OR received_ms = 0;')"

# What went on the wire, as the journal keeps it: batch 1 without a
# dictionary, canonical; every later one with sales-2, compact.
DICT2="$POS_SOURCE_DIR/proto/dict/sales-2.zdict"
compact_batches=0
for batch_seq in $(sql 'SELECT batch_seq FROM batches ORDER BY batch_seq;'); do
  sql "SELECT hex(body) FROM batches WHERE batch_seq = $batch_seq;" | xxd -r -p >"$T/body.zst"
  dict_id="$(zstd -lv "$T/body.zst" 2>/dev/null | sed -n 's/^DictID: *//p')"
  dict_id="${dict_id/#0/}" # no dictionary: no DictID line, or 0
  # A frame made without a dictionary must be decoded without one (its
  # repeat offsets would start from the dictionary's).
  dict_option=()
  [[ -n "$dict_id" ]] && dict_option=(-D "$DICT2")
  zstd -q -d -c "${dict_option[@]}" "$T/body.zst" >"$T/body.pb" ||
    fail "batch $batch_seq decompresses"
  protoc --decode=pos.v1.Batch -I "$POS_SOURCE_DIR/proto" pos/v1/pos.proto \
    <"$T/body.pb" >"$T/body.txt" || fail "protoc decodes batch $batch_seq"
  if [[ "$batch_seq" == 1 ]]; then
    assert_eq "batch 1 (sealed before any ack): dictionary" "" "$dict_id"
    assert_eq "batch 1: compact" 0 "$(grep -c 'compact_sales: true' "$T/body.txt" || true)"
    continue
  fi
  assert_eq "batch $batch_seq: dictionary" 1347375874 "$dict_id"
  assert_eq "batch $batch_seq: envelope says compact_sales" 1 \
    "$(grep -c 'compact_sales: true' "$T/body.txt" || true)"
  assert_eq "batch $batch_seq: sales with an absolute business_time_ms or received_ms" 0 \
    "$(grep -cE '^  (business_time_ms|received_ms|seq): ' "$T/body.txt" || true)"
  compact_batches=$((compact_batches + 1))
done
assert_gt "compact batches" 2 "$compact_batches"

kafka_read pos.dlq.v1 dlq
assert_eq "records in pos.dlq.v1" 0 "$KAFKA_RECORDS"
stop_agent
stop_collector
