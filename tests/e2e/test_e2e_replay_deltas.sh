#!/usr/bin/env bash
# Issue 10, item 4 (collector side): a replay batch's inventory deltas go to
# pos.inventory-deltas.replay.v1, exactly once per resync, positioned within
# the (store, journal, resync) stream like the live ones; the live topic
# pos.inventory-deltas.v1 never gets a replayed record. pos-batch sends the
# batches by hand; the collector is killed (test hook) half-way through a
# replay batch's deltas and by SIGKILL after one, and every resend produces
# only what is missing. Read back with kcat.
source "$(dirname "$0")/lib.sh"

make_pki
start_broker --partitions 2
write_collector_config
start_collector
pin_collector_port

J=5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e
DEV=device-S001-D1

# send BATCH_SEQ FIRST_SEQ SALES STATUS [RESYNC]: a batch with 2 deltas over its rows.
send() {
  local replay=()
  [[ -n "${5:-}" ]] && replay=(--kind replay --resync-id "$5")
  send_batch "$DEV" --journal "$J" --prefix RD --batch-seq "$1" --first-seq "$2" --sales "$3" \
    --deltas 2 "${replay[@]}"
  log "batch $1 ${5:-live} (rows $2..$(($2 + $3 - 1))): $BATCH_OUT"
  assert_eq "batch $1 ${5:-live}: status" "$4" "$(batch_field status)"
}

# headers TOPIC: one line per record, "kind resync_id batch_seq delta_index first_seq last_seq".
headers() {
  timeout 30 kcat -b "$KAFKA_BOOT" -C -t "$1" -e -q -f '%h\n' >"$T/headers.raw" 2>"$T/kcat.err" ||
    fail "kcat reads $1: $(cat "$T/kcat.err")"
  awk -F, '{
    delete h
    for (i = 1; i <= NF; i++) { k = $i; sub(/=.*/, "", k); v = $i; sub(/^[^=]*=/, "", v); h[k] = v }
    print h["kind"], (h["resync_id"] == "" ? "-" : h["resync_id"]), h["batch_seq"], h["delta_index"],
      h["first_seq"], h["last_seq"]
  }' "$T/headers.raw" | sort
}

send 1 1 10 200
send 1 1 5 200 R1
send 1 1 5 200 R1 # a resend: a duplicate, nothing produced

# --- killed half-way through replay batch 2's deltas (after the 1st of this run) -----------------
stop_collector
export POS_TEST_KILL_AFTER_DELTA_RECORDS=1
start_collector
unset POS_TEST_KILL_AFTER_DELTA_RECORDS
send_batch "$DEV" --journal "$J" --prefix RD --batch-seq 2 --first-seq 6 --sales 5 --deltas 2 \
  --kind replay --resync-id R1
deadline=$((SECONDS + 30))
while kill -0 "$COLLECTOR_PID" 2>/dev/null; do
  ((SECONDS < deadline)) || fail "the collector kills itself after replay batch 2's first delta" "dead" "running"
  sleep 0.1
done
wait "$COLLECTOR_PID" 2>/dev/null || true
COLLECTOR_PID=""
grep -q 'event=test_hook_kill.*batch_seq=2 delta_index=1' "$COLLECTOR_LOG" ||
  fail "the collector logs event=test_hook_kill for batch 2's delta 1" "test_hook_kill" "$(tail -n 3 "$COLLECTOR_LOG")"
start_collector
send 2 6 5 200 R1 # completes it: delta 2 only
assert_gt "replay deltas the restarted collector read back" 0 "$(recovery_field inventory_replay_read)"

# --- SIGKILL right after replay batch 3: the resend produces nothing -------------------------------
send 3 11 5 200 R1
kill_collector
start_collector
send 3 11 5 200 R1
# A second resync of the same rows is a replay of its own.
send 1 1 15 200 R2

headers pos.inventory-deltas.replay.v1 >"$T/replay.txt"
log "replay deltas: $(tr '\n' ';' <"$T/replay.txt")"
assert_eq "replay deltas: records" 8 "$(wc -l <"$T/replay.txt")"
assert_eq "replay deltas: each (resync, batch, delta) once" 8 \
  "$(awk '{print $2, $3, $4}' "$T/replay.txt" | sort -u | wc -l)"
assert_eq "replay deltas: all of kind replay" "replay" "$(awk '{print $1}' "$T/replay.txt" | sort -u)"
assert_eq "R1: the rows each batch covered" "1-5 1-5 6-10 6-10 11-15 11-15" \
  "$(awk '$2 == "R1" {print $5 "-" $6}' "$T/replay.txt" | sort -n | tr '\n' ' ' | sed 's/ $//')"
assert_eq "R2: its own replay" "1-15 1-15" \
  "$(awk '$2 == "R2" {print $5 "-" $6}' "$T/replay.txt" | tr '\n' ' ' | sed 's/ $//')"
headers pos.inventory-deltas.v1 >"$T/live.txt"
assert_eq "the live inventory topic: the live batch's 2 deltas only" "live - 1 1 1 10
live - 1 2 1 10" "$(cat "$T/live.txt")"
stop_collector
