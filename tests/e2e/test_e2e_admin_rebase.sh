#!/usr/bin/env bash
# A head-office rebase after the collector lost its state (issue 7, item 6,
# collector side): the agent's journal is at batch 3, its batches 1-2 are
# acknowledged and deleted at retention, the collector (a new, empty Kafka)
# asks for batch 1 with 409 and nothing moves. Only an admin certificate's
# POST /v1/admin/rebase lets batch 3 through, recorded in pos.control.v1 so
# that a restarted collector still knows it, and logged with who approved.
source "$(dirname "$0")/lib.sh"

make_pki
start_broker --partitions 2
write_collector_config
start_collector
pin_collector_port

J=4eba5e4eba5e4eba5e4eba5e4eba5e4e
DEV=device-S001-D1
send_batch "$DEV" --journal "$J" --batch-seq 1 --first-seq 1 --sales 5
assert_eq "batch 1: status" 200 "$(batch_field status)"
send_batch "$DEV" --journal "$J" --batch-seq 2 --first-seq 6 --sales 5
assert_eq "batch 2: status" 200 "$(batch_field status)"

# --- the collector loses its state: a new, empty Kafka -----------------------------------------
stop_collector
kill -TERM "$BROKER_PID"
wait "$BROKER_PID" 2>/dev/null || true
BROKER_PID=""
start_broker --partitions 2
sed -i "s|^brokers = .*|brokers = $BROKER_BOOT|" "$COLLECTOR_CONFIG"
start_collector
send_batch "$DEV" --journal "$J" --batch-seq 3 --first-seq 11 --sales 5
assert_eq "batch 3 to a collector that lost its state: status" 409 "$(batch_field status)"
assert_eq "batch 3: expected_batch_seq" 1 "$(batch_field expected_batch_seq)"

# rebase_as CERT BODY: POST /v1/admin/rebase; sets HTTP_STATUS, prints the answer.
rebase_as() {
  HTTP_STATUS="$(curl -sS -o "$T/rebase.body" -w '%{http_code}' --max-time 20 \
    --cacert "$PKI/ca.crt" --cert "$PKI/$1.crt" --key "$PKI/$1.key" \
    -H 'Content-Type: application/json' --data-binary "$2" \
    "$COLLECTOR_URL/v1/admin/rebase" 2>"$T/rebase.err")" || HTTP_STATUS="${HTTP_STATUS:-000}"
  cat "$T/rebase.body"
}
BODY="{\"store_id\": \"S001\", \"journal_id\": \"$J\", \"from_batch_seq\": 3}"
rebase_as "$DEV" "$BODY" >/dev/null
assert_eq "a device certificate approving a rebase: status" 403 "$HTTP_STATUS"
rebase_as admin '{"store_id": "S001", "journal_id": "nothex", "from_batch_seq": 3}' >/dev/null
assert_eq "a rebase naming no valid journal: status" 400 "$HTTP_STATUS"
send_batch "$DEV" --journal "$J" --batch-seq 3 --first-seq 11 --sales 5
assert_eq "batch 3 still refused before the approval (never a silent rebase)" 409 "$(batch_field status)"
rebase_as admin "$BODY" >/dev/null
answer="$(cat "$T/rebase.body")"
assert_eq "the admin's rebase: status" 200 "$HTTP_STATUS"
log "rebase answer: $answer"
assert_eq "acked_batch_seq after the rebase" 2 "$(json_get "$answer" '$.acked_batch_seq_after')"
ADMIN="$(json_get "$answer" '$.approved_by')"
assert_gt "the answer names who approved it" 0 "${#ADMIN}"
grep -q "event=rebase_applied approved_by=$ADMIN store=S001 journal=$J from_batch_seq=3" "$COLLECTOR_LOG" ||
  fail "the collector logs who approved the rebase" "event=rebase_applied approved_by=$ADMIN" "$(grep rebase "$COLLECTOR_LOG")"

send_batch "$DEV" --journal "$J" --batch-seq 3 --first-seq 11 --sales 5
assert_eq "batch 3 after the rebase: status" 200 "$(batch_field status)"
assert_eq "batch 3 after the rebase: duplicate" 0 "$(batch_field duplicate)"
send_batch "$DEV" --journal "$J" --batch-seq 1 --first-seq 1 --sales 5
assert_eq "batch 1 after the rebase: acknowledged as a duplicate, not produced" 1 "$(batch_field duplicate)"

# --- the approval survives a kill -9 -----------------------------------------------------------
kill_collector
start_collector
assert_eq "rebases the restarted collector read from pos.control.v1" 1 "$(recovery_field rebases)"
send_batch "$DEV" --journal "$J" --batch-seq 2 --first-seq 6 --sales 5
assert_eq "batch 2 after the restart: duplicate" 1 "$(batch_field duplicate)"
# Batch 4 next. When the collector's last checkpoint (every second) came
# after batch 3, it knows batch 3 was accepted and takes batch 4. When it
# did not, the log cannot say whether batch 3 was produced whole: a 409 asks
# for it again (below what was acknowledged), and its resend produces
# nothing new. Either way, the records are checked once each below.
send_batch "$DEV" --journal "$J" --batch-seq 4 --first-seq 16 --sales 5
if [[ "$(batch_field status)" == 409 ]]; then
  assert_eq "batch 4 right after the restart: expected_batch_seq" 3 "$(batch_field expected_batch_seq)"
  send_batch "$DEV" --journal "$J" --batch-seq 3 --first-seq 11 --sales 5
  assert_eq "batch 3 resent after the restart: status" 200 "$(batch_field status)"
  send_batch "$DEV" --journal "$J" --batch-seq 4 --first-seq 16 --sales 5
fi
assert_eq "batch 4 after the restart: status" 200 "$(batch_field status)"

timeout 30 kcat -b "$KAFKA_BOOT" -C -t pos.control.v1 -e -q -f '%k\n' >"$T/control.keys" ||
  fail "kcat reads pos.control.v1"
assert_eq "the rebase's key in pos.control.v1" "S001/rebase/$J" "$(cat "$T/control.keys")"
kafka_read pos.sales.v1 sales
records_db sales
assert_eq "sales in the new log (batches 3 and 4, once each)" "10 10 11 20" \
  "$(rsql sales 'SELECT count(*), count(DISTINCT seq), min(seq), max(seq) FROM k;' | tr '|' ' ')"
stop_collector
