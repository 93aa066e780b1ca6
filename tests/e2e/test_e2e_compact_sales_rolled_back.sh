#!/usr/bin/env bash
# Issue 12, item 6: a collector rolled back to the release before compact
# sales (built from git history: it knows the sales-1 dictionary only) after
# this one had listed sales-2. It must never take a compact batch for a
# canonical one (its sales would reach Kafka without business_time_ms and
# received_ms): it cannot decompress it, and answers 400 before reading a
# sale. The agent, whose compact batch was never acknowledged, seals those
# sales again canonical; every journal row reaches pos.sales.v1 once, field
# for field.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/old_collector.sh"

build_old_collector
make_pki
start_broker --partitions 4
write_collector_config
start_collector
pin_collector_port

write_tokens
write_agent_config uplink.max_batch_sales=60
start_agent
run_load --clients 1 --sales 3 --batch 1 --prefix RA
push_until_sent 60
run_load --clients 1 --sales 30 --batch 10 --prefix RB
push_until_sent 60
DICT2=1347375874 # PROTO_ZSTD_DICT_SALES_2
last="$(sql 'SELECT max(batch_seq) FROM batches;')"
sql "SELECT hex(body) FROM batches WHERE batch_seq = $last;" | xxd -r -p >"$T/body.zst"
assert_eq "batch $last, sealed after the ack listing sales-2: dictionary" "$DICT2" \
  "$(zstd -lv "$T/body.zst" 2>/dev/null | sed -n 's/^DictID: *//p')"

# --- the rollback ------------------------------------------------------------------
stop_collector
NEW_COLLECTOR_BIN="$COLLECTOR_BIN"
COLLECTOR_BIN="$OLD_COLLECTOR_BIN"
# The same settings, less [fleet], a section the old collector does not know.
write_collector_config server.port="$COLLECTOR_PORT" fleet.group=-
start_collector
log "collector of $OLD_COLLECTOR_COMMIT up in place of this one"

# A compact batch by hand: refused, nothing of it produced.
J=c0de0000000000000000000000000001
send_batch device-S001-D1 --journal "$J" --batch-seq 1 --first-seq 1 --sales 60 \
  --zstd-dict "$DICT2"
log "compact batch to the old collector: $BATCH_OUT"
assert_eq "compact batch to the old collector: status" 400 "$(batch_field status)"
assert_eq "compact batch to the old collector: message" \
  "batch compressed with zstd dictionary 1347375874, which this collector does not know: upgrade the collector" \
  "$(batch_field message)"
assert_eq "the old collector's ack lists" 1347375873 \
  "$(send_batch device-S001-D1 --journal "$J" --batch-seq 1 --first-seq 1 --sales 2 \
    --zstd-dict 1347375873 && batch_field zstd_dictionaries)"

# The agent seals with sales-2 (the last ack it had listed it), is refused,
# and seals the same sales again canonical.
run_load --clients 1 --sales 60 --batch 10 --prefix RC
push_until_sent 120
assert_match "agent: the compact batch refused and sealed again" \
  'event=batch_dictionary_refused .*zstd_dictionary=1347375874' \
  "$(grep 'event=batch_dictionary_refused' "$AGENT_LOG" || true)"
for batch_seq in $(sql "SELECT batch_seq FROM batches WHERE batch_seq > $last;"); do
  sql "SELECT hex(body) FROM batches WHERE batch_seq = $batch_seq;" | xxd -r -p >"$T/body.zst"
  dict_id="$(zstd -lv "$T/body.zst" 2>/dev/null | sed -n 's/^DictID: *//p')"
  [[ "$dict_id" != "$DICT2" ]] ||
    fail "batch $batch_seq, acknowledged by the old collector, is not compact" "not $DICT2" \
      "$dict_id"
done

stop_agent
kafka_read pos.sales.v1 sales
records_db sales
# The by-hand journal's two canonical sales, then the agent's 93.
assert_eq "records of the by-hand journal (the compact batch refused)" 2 \
  "$(rsql sales "SELECT count(*) FROM k WHERE h_journal_id = '$J';")"
rsql sales "DELETE FROM k WHERE h_journal_id = '$J';"
check_sales_match_journal sales 93
stop_collector
COLLECTOR_BIN="$NEW_COLLECTOR_BIN"
write_collector_config server.port="$COLLECTOR_PORT"
