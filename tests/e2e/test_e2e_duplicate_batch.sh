#!/usr/bin/env bash
# pos-batch against broker + collector: a batch sent twice lands once (also
# when the two sends overlap), a gap gets 409 with the batch expected, a
# batch overlapping seqs already in the log produces only the new ones, and
# an invalid sale goes to pos.dlq.v1 with its reason while its batch is
# acknowledged.
source "$(dirname "$0")/lib.sh"

make_pki
start_broker --partitions 4
write_collector_config
start_collector

J=5e1f0c2ad4b3e6a79081726354abcdef
DEV=device-S001-D1

sales_for_journal() { # count of pos.sales.v1 records of journal J (re-read)
  kafka_read pos.sales.v1 sales
  records_db sales
  rsql sales "SELECT count(*) FROM k WHERE h_journal_id = '$J';"
}

# --- batch 1 twice ------------------------------------------------------------------
send_batch "$DEV" --journal "$J" --batch-seq 1 --first-seq 1 --sales 10
log "batch 1: $BATCH_OUT"
assert_eq "batch 1: status" 200 "$(batch_field status)"
assert_eq "batch 1: acked_batch_seq" 1 "$(batch_field acked_batch_seq)"
assert_eq "batch 1: duplicate" 0 "$(batch_field duplicate)"
send_batch "$DEV" --journal "$J" --batch-seq 1 --first-seq 1 --sales 10
log "batch 1 again: $BATCH_OUT"
assert_eq "batch 1 resent: status" 200 "$(batch_field status)"
assert_eq "batch 1 resent: acked_batch_seq" 1 "$(batch_field acked_batch_seq)"
assert_eq "batch 1 resent: duplicate" 1 "$(batch_field duplicate)"
assert_eq "records of batch 1 after it was sent twice" 10 "$(sales_for_journal)"
assert_eq "distinct seqs of batch 1" "1 10 10" \
  "$(rsql sales "SELECT min(seq), max(seq), count(DISTINCT seq) FROM k WHERE h_journal_id = '$J';" | tr '|' ' ')"
assert_eq "records keyed by the store" 10 "$(rsql sales "SELECT count(*) FROM k WHERE key = 'S001' AND store_id = 'S001';")"
assert_eq "records with the headers batch_seq=1, kind=live, device_id=D1" 10 \
  "$(rsql sales "SELECT count(*) FROM k WHERE h_batch_seq = 1 AND h_kind = 'live' AND h_device_id = 'D1' AND h_seq = seq;")"
assert_eq "records whose sale_id is not pos-batch's B-<seq>" 0 \
  "$(rsql sales "SELECT count(*) FROM k WHERE sale_id IS NOT 'B-' || seq;")"

# --- a gap: batch 3 before batch 2 ---------------------------------------------------------
send_batch "$DEV" --journal "$J" --batch-seq 3 --first-seq 21 --sales 10
log "batch 3 early: $BATCH_OUT"
assert_eq "gap: status" 409 "$(batch_field status)"
assert_eq "gap: expected_batch_seq" 2 "$(batch_field expected_batch_seq)"
assert_eq "gap: acked_batch_seq" 1 "$(batch_field acked_batch_seq)"
assert_eq "records after the gap was refused" 10 "$(sales_for_journal)"

# A new journal must start at batch 1.
send_batch "$DEV" --journal 00112233445566778899aabbccddeeff --batch-seq 4 --first-seq 1 --sales 3
assert_eq "new journal starting at batch 4: status" 409 "$(batch_field status)"
assert_eq "new journal starting at batch 4: expected_batch_seq" 1 "$(batch_field expected_batch_seq)"

# --- batch 2 with an invalid sale (index 3 = seq 14) -------------------------------------
send_batch "$DEV" --journal "$J" --batch-seq 2 --first-seq 11 --sales 10 --invalid 3
log "batch 2 (one invalid sale): $BATCH_OUT"
assert_eq "batch with an invalid sale: status" 200 "$(batch_field status)"
assert_eq "batch with an invalid sale: acked_batch_seq" 2 "$(batch_field acked_batch_seq)"
assert_eq "batch with an invalid sale: duplicate" 0 "$(batch_field duplicate)"
assert_eq "valid records after batch 2" 19 "$(sales_for_journal)"
assert_eq "the invalid sale (seq 14) is not in pos.sales.v1" 0 "$(rsql sales "SELECT count(*) FROM k WHERE seq = 14;")"
kafka_read pos.dlq.v1 dlq
records_db dlq
assert_eq "records in pos.dlq.v1" 1 "$KAFKA_RECORDS"
assert_eq "dead letter: key, seq, sale_id" "S001|14|B-14" "$(rsql dlq 'SELECT key, h_seq, sale_id FROM k;')"
assert_eq "dead letter: field header" total "$(rsql dlq 'SELECT h_field FROM k;')"
reason="$(rsql dlq 'SELECT h_reason FROM k;')"
assert_match "dead letter: reason header says why" 'total' "$reason"
assert_eq "dead letter: journal and batch headers" "$J|2" "$(rsql dlq 'SELECT h_journal_id, h_batch_seq FROM k;')"
log "dead letter reason: $reason"

send_batch "$DEV" --journal "$J" --batch-seq 2 --first-seq 11 --sales 10 --invalid 3
assert_eq "batch 2 resent: status" 200 "$(batch_field status)"
assert_eq "batch 2 resent: duplicate" 1 "$(batch_field duplicate)"
kafka_read pos.dlq.v1 dlq
assert_eq "records in pos.dlq.v1 after batch 2 was resent" 1 "$KAFKA_RECORDS"
assert_eq "valid records after batch 2 was resent" 19 "$(sales_for_journal)"

# --- batch 3 now fits ----------------------------------------------------------------------------
send_batch "$DEV" --journal "$J" --batch-seq 3 --first-seq 21 --sales 10
assert_eq "batch 3 after batch 2: status" 200 "$(batch_field status)"
assert_eq "batch 3 after batch 2: acked_batch_seq" 3 "$(batch_field acked_batch_seq)"
assert_eq "valid records after batch 3" 29 "$(sales_for_journal)"

# --- the same batch twice at the same time ----------------------------------------------------------
for i in 1 2; do
  "$BATCH_BIN" --url "$COLLECTOR_URL" --cacert "$PKI/ca.crt" --cert "$PKI/$DEV.crt" --key "$PKI/$DEV.key" \
    --journal "$J" --batch-seq 4 --first-seq 31 --sales 2000 >"$T/concurrent.$i.out" 2>&1 &
  eval "CONCURRENT_$i=\$!"
done
wait "$CONCURRENT_1" || fail "concurrent send 1: $(cat "$T/concurrent.1.out")"
wait "$CONCURRENT_2" || fail "concurrent send 2: $(cat "$T/concurrent.2.out")"
log "concurrent sends: $(cat "$T/concurrent.1.out") / $(cat "$T/concurrent.2.out")"
assert_eq "concurrent sends: statuses" "200 200" \
  "$(batch_field status "$(cat "$T/concurrent.1.out")") $(batch_field status "$(cat "$T/concurrent.2.out")")"
assert_eq "concurrent sends: exactly one is a duplicate" 1 \
  "$(($(batch_field duplicate "$(cat "$T/concurrent.1.out")") + $(batch_field duplicate "$(cat "$T/concurrent.2.out")")))"
assert_eq "valid records after batch 4 was sent twice at once" 2029 "$(sales_for_journal)"
assert_eq "distinct seqs of the journal" 2029 "$(rsql sales "SELECT count(DISTINCT seq) FROM k WHERE h_journal_id = '$J';")"

# --- a batch overlapping seqs already in the log ---------------------------------------------------
# Batch 5 covers seqs 2021..2040: 2021..2030 are in the log (batch 4), only
# 2031..2040 lie above the highest seq produced.
send_batch "$DEV" --journal "$J" --batch-seq 5 --first-seq 2021 --sales 20
assert_eq "overlapping batch: status" 200 "$(batch_field status)"
assert_eq "overlapping batch: duplicate" 0 "$(batch_field duplicate)"
assert_eq "valid records after the overlapping batch" 2039 "$(sales_for_journal)"
assert_eq "seqs produced twice" 0 "$(rsql sales "SELECT count(*) FROM (SELECT seq FROM k WHERE h_journal_id = '$J' GROUP BY seq HAVING count(*) > 1);")"
assert_eq "records in seq order in one partition" "1|0" \
  "$(rsql sales "SELECT count(DISTINCT partition), (SELECT count(*) FROM (SELECT seq, lag(seq) OVER (ORDER BY offset) AS p FROM k) WHERE p IS NOT NULL AND seq <= p) FROM k;")"
assert_match "collector log: the overlapping batch skipped 10 sales already produced" \
  'batch_seq=5 produced=10 dead_lettered=0 skipped=10' "$(grep 'event=batch_acked' "$COLLECTOR_LOG" | grep 'batch_seq=5 ' || true)"

# The collector says what it did with each batch.
assert_eq "collector log: duplicates acknowledged" 3 "$(grep 'event=batch_acked' "$COLLECTOR_LOG" | grep -c 'duplicate=1' || true)"
assert_eq "collector log: gaps" 2 "$(grep -c 'event=batch_gap' "$COLLECTOR_LOG" || true)"
stop_collector
