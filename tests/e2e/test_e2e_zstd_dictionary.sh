#!/usr/bin/env bash
# Issue 12, item 6: batches compressed with the zstd dictionary sales-1
# (proto/dict/), as an agent sends them once the collector lists it, are
# taken by the real collector and land in Kafka once, like those without;
# a body compressed with a dictionary the collector does not know is refused
# with 400 naming its id and what to do, and nothing of it is produced; an
# older agent's body without a dictionary still goes through.
source "$(dirname "$0")/lib.sh"

make_pki
start_broker --partitions 4
write_collector_config
start_collector

J=7d1c7a00000000000000000000000001
DEV=device-S001-D1
DICT_ID=1347375873 # PROTO_ZSTD_DICT_SALES_1

sales_for_journal() { # count of pos.sales.v1 records of journal J (re-read)
  kafka_read pos.sales.v1 sales
  records_db sales
  rsql sales "SELECT count(*) FROM k WHERE h_journal_id = '$J';"
}

# --- a batch of 60 sales with the dictionary, twice ---------------------------------
send_batch "$DEV" --journal "$J" --batch-seq 1 --first-seq 1 --sales 60 --zstd-dict "$DICT_ID"
log "batch 1 (dictionary): $BATCH_OUT"
assert_eq "batch with the dictionary: status" 200 "$(batch_field status)"
assert_eq "batch with the dictionary: acked_batch_seq" 1 "$(batch_field acked_batch_seq)"
assert_eq "the collector's ack lists the dictionaries" 1347375873,1347375874 \
  "$(batch_field zstd_dictionaries)"
send_batch "$DEV" --journal "$J" --batch-seq 1 --first-seq 1 --sales 60 --zstd-dict "$DICT_ID"
assert_eq "batch with the dictionary resent: duplicate" 1 "$(batch_field duplicate)"
assert_eq "records of the batch with the dictionary" 60 "$(sales_for_journal)"
assert_eq "its sales as pos-batch made them" 60 \
  "$(rsql sales "SELECT count(*) FROM k WHERE h_journal_id = '$J' AND sale_id = 'B-' || seq AND store_id = 'S001';")"

# --- an older agent: no dictionary ----------------------------------------------------
send_batch "$DEV" --journal "$J" --batch-seq 2 --first-seq 61 --sales 60
assert_eq "batch without a dictionary: status" 200 "$(batch_field status)"
assert_eq "records after the batch without a dictionary" 120 "$(sales_for_journal)"

# --- a dictionary the collector does not know (a newer agent's sales-3, say) -----------
# sales-1 with another id in its header (RFC 8878 5: after the 4-byte magic,
# little-endian): 0x504F5303.
cp "$POS_SOURCE_DIR/proto/dict/sales-1.zdict" "$T/unknown.zdict"
printf '\x03\x53\x4f\x50' | dd of="$T/unknown.zdict" bs=1 seek=4 conv=notrunc status=none
"$BATCH_BIN" --out "$T/plain.zst" --journal "$J" --batch-seq 3 --first-seq 121 --sales 60 \
  >/dev/null || fail "pos-batch --out failed"
zstd -q -d -c "$T/plain.zst" | zstd -q -3 -D "$T/unknown.zdict" -c >"$T/unknown.zst" ||
  fail "zstd with the unknown dictionary failed"
body_len="$(stat -c %s "$T/unknown.zst")"
{
  printf "\\x$(printf %02x $((body_len >> 24 & 255)))\\x$(printf %02x $((body_len >> 16 & 255)))"
  printf "\\x$(printf %02x $((body_len >> 8 & 255)))\\x$(printf %02x $((body_len & 255)))"
  printf '\x00\x00\x00\x3c'
  cat "$T/unknown.zst"
} >"$T/unknown.bodies"
send_batch "$DEV" --journal "$J" --batch-seq 3 --bodies "$T/unknown.bodies"
log "batch 3 (unknown dictionary): $BATCH_OUT"
assert_eq "batch with an unknown dictionary: status" 400 "$(batch_field status)"
assert_eq "batch with an unknown dictionary: message" \
  "batch compressed with zstd dictionary 1347375875, which this collector does not know: upgrade the collector" \
  "$(batch_field message)"
assert_eq "records after the batch with an unknown dictionary" 120 "$(sales_for_journal)"
assert_match "collector log: the refusal names the dictionary" 'zstd dictionary 1347375875' \
  "$(grep 'event=batch_refused' "$COLLECTOR_LOG" || true)"

# --- and batch 3 with the dictionary it knows ---------------------------------------------
send_batch "$DEV" --journal "$J" --batch-seq 3 --first-seq 121 --sales 60 --zstd-dict "$DICT_ID"
assert_eq "batch 3 with the known dictionary: status" 200 "$(batch_field status)"
assert_eq "records after batch 3" 180 "$(sales_for_journal)"
assert_eq "seqs produced twice" 0 \
  "$(rsql sales "SELECT count(*) FROM (SELECT seq FROM k WHERE h_journal_id = '$J' GROUP BY seq HAVING count(*) > 1);")"
stop_collector
