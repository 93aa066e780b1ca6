#!/usr/bin/env bash
# The collector decodes batch bodies on libuv workers, off its event loop
# (collector/server/routes.c). Two things that must hold whatever the
# workers' timing:
#
#   1. a store's batches reach the exactly-once bookkeeping in the order
#      they came: batch 3 arriving while batch 2 is still being decoded
#      waits for batch 2's answer (decoded first, it would be a gap: 409,
#      expected 2), and both land once, in seq order;
#   2. at most 8 batches of a store wait behind the one in progress: the
#      ninth gets 503 with Retry-After (its connection is not held), the
#      eight are answered in turn;
#   3. a SIGTERM while a batch is on a worker stops the collector cleanly
#      (exit 0: the batch never reaches the ingest being destroyed), the
#      batch is not acknowledged, and sent again it lands exactly once.
#
# POS_TEST_DECODE_DELAY_MS holds every body of at least
# POS_TEST_DECODE_DELAY_BYTES on its worker for that long (test builds
# only), and the collector logs event=test_hook decode_delayed when it
# does: the test waits for that line, so the second batch surely comes
# while the first is held (no sleeps, nothing timed).
source "$(dirname "$0")/lib.sh"

make_pki
start_broker --partitions 4
write_collector_config
# 1,000 sales are about 40 KB of zstd; 10 sales under 1 KB.
# Long enough for nine more clients to connect while a batch is held, on a busy machine.
export POS_TEST_DECODE_DELAY_MS=8000 POS_TEST_DECODE_DELAY_BYTES=20000
start_collector

J=6a1f0c2ad4b3e6a79081726354abcdef
DEV=device-S001-D1

delayed_count() { grep -c 'event=test_hook decode_delayed store=S001' "$COLLECTOR_LOG" || true; }

# wait_delayed N: until the collector has held N bodies on a worker (60 s).
wait_delayed() {
  local deadline=$((SECONDS + 60))
  while (($(delayed_count) < $1)); do
    ((SECONDS < deadline)) || fail "collector logs decode_delayed $1 times" "$1" "$(delayed_count)"
    kill -0 "$COLLECTOR_PID" 2>/dev/null || fail "pos-collector died: $(tail -n 5 "$COLLECTOR_LOG")"
    sleep 0.05
  done
}

# send_bg NAME pos-batch args...: a batch in the background, its output in $T/NAME.out.
send_bg() {
  local name="$1"
  shift
  "$BATCH_BIN" --url "$COLLECTOR_URL" --cacert "$PKI/ca.crt" --cert "$PKI/$DEV.crt" \
    --key "$PKI/$DEV.key" --timeout 60 "$@" >"$T/$name.out" 2>&1 &
  BG_PID=$!
}

journal_records() { # pos.sales.v1 records of journal J (re-read)
  kafka_read pos.sales.v1 sales
  records_db sales
  rsql sales "SELECT count(*) FROM k WHERE h_journal_id = '$J';"
}

# --- 1. batch 3 comes while batch 2 is on a worker ---------------------------------------
send_batch "$DEV" --journal "$J" --batch-seq 1 --first-seq 1 --sales 10
assert_eq "batch 1: status" 200 "$(batch_field status)"

send_bg batch2 --journal "$J" --batch-seq 2 --first-seq 11 --sales 1000
BATCH2_PID=$BG_PID
wait_delayed 1
send_batch "$DEV" --journal "$J" --batch-seq 3 --first-seq 1011 --sales 10
log "batch 3, sent while batch 2 was being decoded: $BATCH_OUT"
BATCH2_RC=0
wait "$BATCH2_PID" || BATCH2_RC=$?
log "batch 2: $(cat "$T/batch2.out")"
assert_eq "batch 2: pos-batch exit status" 0 "$BATCH2_RC"
assert_eq "batch 2: status" 200 "$(batch_field status "$(cat "$T/batch2.out")")"
assert_eq "batch 2: duplicate" 0 "$(batch_field duplicate "$(cat "$T/batch2.out")")"
assert_eq "batch 3 (came during batch 2's decode): status" 200 "$(batch_field status)"
assert_eq "batch 3: acked_batch_seq" 3 "$(batch_field acked_batch_seq)"
assert_eq "batch 3: duplicate" 0 "$(batch_field duplicate)"
assert_eq "records of batches 1-3" 1020 "$(journal_records)"
assert_eq "distinct seqs of batches 1-3" 1020 \
  "$(rsql sales "SELECT count(DISTINCT seq) FROM k WHERE h_journal_id = '$J';")"
out_of_order="SELECT count(*) FROM (SELECT seq, lag(seq) OVER (ORDER BY offset) AS p
  FROM k WHERE h_journal_id = '$J') WHERE p IS NOT NULL AND seq <= p"
assert_eq "records in seq order in one partition" "1|0" \
  "$(rsql sales "SELECT count(DISTINCT partition), ($out_of_order) FROM k
    WHERE h_journal_id = '$J';")"
assert_eq "collector log: no gap answered" 0 "$(grep -c 'event=batch_gap' "$COLLECTOR_LOG" || true)"

# --- 2. nine more batches of the store while batch 4 is held -----------------------------
send_bg batch4 --journal "$J" --batch-seq 4 --first-seq 1021 --sales 1000
BATCH4_PID=$BG_PID
wait_delayed 2
RESENDS=()
for i in 1 2 3 4 5 6 7 8 9; do
  send_bg "resend.$i" --journal "$J" --batch-seq 3 --first-seq 1011 --sales 10
  RESENDS+=("$BG_PID")
done
for pid in "${RESENDS[@]}" "$BATCH4_PID"; do wait "$pid" || true; done
log "batch 4: $(cat "$T/batch4.out")"
assert_eq "batch 4 (held while nine more came): status" 200 \
  "$(batch_field status "$(cat "$T/batch4.out")")"
statuses="$(for i in 1 2 3 4 5 6 7 8 9; do batch_field status "$(cat "$T/resend.$i.out")"; done |
  sort | uniq -c | awk '{ printf "%s:%s ", $2, $1 }')"
log "the nine resends of batch 3: $statuses"
assert_eq "nine resends behind batch 4: answers" "200:8 503:1 " "$statuses"
assert_match "collector log: the ninth refused, saying why" \
  'status=503 reason="8 batches of store S001 already wait behind the one in progress' \
  "$(cat "$COLLECTOR_LOG")"
assert_eq "records of batches 1-4" 2020 "$(journal_records)"

# --- 3. SIGTERM while batch 5 is on a worker ---------------------------------------------
send_bg batch5 --journal "$J" --batch-seq 5 --first-seq 2021 --sales 1000
BATCH5_PID=$BG_PID
wait_delayed 3
stop_collector # asserts exit status 0 within 20 s
wait "$BATCH5_PID" || true
log "batch 5, in decode at SIGTERM: $(cat "$T/batch5.out")"
assert_match "collector log: the stop found the batch on a worker" \
  'event=stopping_decodes batches=1' "$(cat "$T"/collector.1.log)"
if [[ "$(batch_field status "$(cat "$T/batch5.out")")" == 200 ]]; then
  fail "batch 5 is not acknowledged by a collector stopping before it was produced" \
    "no 200" "$(cat "$T/batch5.out")"
fi

unset POS_TEST_DECODE_DELAY_MS POS_TEST_DECODE_DELAY_BYTES
start_collector
send_batch "$DEV" --journal "$J" --batch-seq 5 --first-seq 2021 --sales 1000
log "batch 5 sent again: $BATCH_OUT"
assert_eq "batch 5 sent again: status" 200 "$(batch_field status)"
assert_eq "batch 5 sent again: acked_batch_seq" 5 "$(batch_field acked_batch_seq)"
assert_eq "records of batches 1-5" 3020 "$(journal_records)"
assert_eq "distinct seqs of batches 1-5" 3020 \
  "$(rsql sales "SELECT count(DISTINCT seq) FROM k WHERE h_journal_id = '$J';")"
stop_collector
