#!/usr/bin/env bash
# kill -9 the agent while it journals a spool file (issue 14, item 2): a
# file of 20,000 sales, the agent killed three times in its second pass
# (each time after its journaled position moved on, and checked to be
# short of the file's end), once stopped with SIGTERM the same way, and
# restarted each time: the file ends in done/ and every one of its sales
# is journaled exactly once, none missing; a file whose last chunk was
# committed but which was not moved yet is only moved; a sale_id a POS
# posts with other content during the second pass stops the file there
# (failed/, the reason saying which lines were journaled). The agent's fsyncs are slowed
# to 20 ms (tests/tools/fsync_shim.c), a store's flash, so that the file
# takes long enough to be killed in the middle of on any machine.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/spool_lib.sh"

SALES=20000
[[ -z "${POS_EMULATOR:-}" ]] || skip "the LD_PRELOAD shim is not played under an emulator"
[[ -f "$SHIM_LIB" ]] || fail "$SHIM_LIB not built"
spool_slow_flash

write_tokens
spool_config
spool_generate "$SPOOL/.big.ndjson.tmp" K "$SALES"
SIZE="$(stat -c %s "$SPOOL/.big.ndjson.tmp")"

# position_offset: the byte offset of the spool's journaled position (0 = none).
position_offset() {
  local position
  position="$(spool_position)"
  if [[ -z "$position" ]]; then
    echo 0
  else
    awk '{ print $6 }' <<<"$position"
  fi
}

# interrupt HOW: waits until the journaled position moved past where it
# was, then stops the agent with HOW (kill_agent or stop_agent), and checks
# the position it left is inside the file.
LAST_OFFSET=0
interrupt() {
  local how="$1" deadline=$((SECONDS + 120)) offset
  while :; do
    offset="$(position_offset)"
    ((offset > LAST_OFFSET)) && break
    [[ ! -e "$SPOOL/done/big.ndjson" ]] || fail "the agent is stopped in the middle of the file" \
      "a position short of $SIZE" "the file was done"
    kill -0 "$AGENT_PID" 2>/dev/null || fail "the agent died by itself"
    ((SECONDS < deadline)) || fail "the position moves on within 120 s" "> $LAST_OFFSET" "$offset"
    sleep 0.05
  done
  "$how"
  offset="$(position_offset)"
  ((offset > LAST_OFFSET && offset < SIZE)) || fail "$how in the middle of the file" \
    "a position between $LAST_OFFSET and $SIZE" "$offset"
  [[ -e "$SPOOL/big.ndjson" ]] || fail "the file is still in the spool after $how" "big.ndjson" \
    "$(ls "$SPOOL")"
  log "$how at byte $offset of $SIZE ($(sql "SELECT count(*) FROM sales;") sales journaled)"
  LAST_OFFSET="$offset"
}

start_agent
mv "$SPOOL/.big.ndjson.tmp" "$SPOOL/big.ndjson"
for round in 1 2 3; do
  interrupt kill_agent
  start_agent
done
interrupt stop_agent
start_agent
spool_wait_file "$SPOOL/done/big.ndjson" 180

assert_eq "integrity_check" ok "$(sql 'PRAGMA integrity_check;')"
assert_eq "sales journaled" "$SALES" "$(sql "SELECT count(*) FROM sales;")"
assert_eq "distinct sale_ids among them" "$SALES" "$(sql "SELECT count(DISTINCT sale_id) FROM sales;")"
assert_eq "every one is K-1 .. K-$SALES" "$SALES" \
  "$(sql "SELECT count(*) FROM sales WHERE sale_id = 'K-' || CAST(substr(sale_id, 3) AS INTEGER)
          AND CAST(substr(sale_id, 3) AS INTEGER) BETWEEN 1 AND $SALES;")"
assert_contains "the position says the file was journaled to its end" \
  " $SIZE " "$(spool_position)"
status_json
assert_eq "the last run counts only the sales it journaled, not those journaled before" 1 \
  "$(json_get "$STATUS_JSON" '$.sources.spool.sales_ingested' | awk -v n="$SALES" '{ print ($1 > 0 && $1 < n) }')"
stop_agent

# A stop between the last chunk's commit and the rename into done/ leaves
# the file in the spool with its position at its end: the same file (same
# inode, size and mtime) put back plays that state. It is only moved.
log "a file journaled to its end but not moved: only moved"
mv "$SPOOL/done/big.ndjson" "$SPOOL/big.ndjson"
start_agent
spool_wait_file "$SPOOL/done/big.ndjson" 60
grep -q 'event=file_complete file=big.ndjson' "$AGENT_LOG" ||
  fail "the agent says the file was journaled already" "event=file_complete file=big.ndjson" \
    "$(grep 'mod=spool' "$AGENT_LOG")"
if grep -q 'event=file_valid file=big.ndjson' "$AGENT_LOG"; then
  fail "a file journaled to its end is not read again" "no event=file_valid" \
    "$(grep 'event=file_valid' "$AGENT_LOG")"
fi
assert_eq "sales journaled after the move" "$SALES" "$(sql "SELECT count(*) FROM sales;")"

# A POS posts, with other content, a sale_id of a file whose second pass
# has begun (its first pass found the id free): the write of that chunk is
# refused whole, the file stops there and goes to failed/, and its reason
# says which lines were journaled; exactly those are.
log "a conflict that appears in the second pass: failed/, the reason says which lines were journaled"
spool_generate "$SPOOL/.mid.ndjson.tmp" Q "$SALES"
mv "$SPOOL/.mid.ndjson.tmp" "$SPOOL/mid.ndjson"
deadline=$((SECONDS + 120))
until [[ "$(spool_position)" == *" mid.ndjson" ]]; do
  ((SECONDS < deadline)) || fail "the second pass of mid.ndjson begins within 120 s" \
    "a position naming mid.ndjson" "$(spool_position)"
  sleep 0.05
done
post_sales "$TOKEN_T1" "$(spool_sale "Q-$SALES" 'cashier_id="E999"')"
expect_status "Q-$SALES posted by a POS while the file is journaled" 201
spool_wait_file "$SPOOL/failed/mid.ndjson.reason" 180
REASON="$(cat "$SPOOL/failed/mid.ndjson.reason")"
JOURNALED="$(sed -n 's/.*Lines 1 to \([0-9]*\) of mid.ndjson were journaled.*/\1/p' <<<"$REASON")"
[[ "$JOURNALED" =~ ^[0-9]+$ ]] || fail "the reason says which lines were journaled" \
  "Lines 1 to N of mid.ndjson were journaled" "$REASON"
assert_contains "the reason names the line and the field" \
  "line $SALES, field sale_id: sale_id Q-$SALES was already journaled" "$REASON"
assert_eq "the file's sales journaled are exactly lines 1 to $JOURNALED" "$JOURNALED|$JOURNALED" \
  "$(sql "SELECT count(*), coalesce(max(CAST(substr(sale_id, 3) AS INTEGER)), 0) FROM sales
          WHERE sale_id LIKE 'Q-%' AND sale_id <> 'Q-$SALES';")"
((JOURNALED > 0 && JOURNALED < SALES)) || fail "the file stopped in its middle" \
  "0 < N < $SALES" "$JOURNALED"
assert_eq "the posted sale is the POS's" E999 "$(sql "SELECT cashier_id FROM sales WHERE sale_id = 'Q-$SALES';")"
stop_agent
