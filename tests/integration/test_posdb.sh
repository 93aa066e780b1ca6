#!/usr/bin/env bash
# Sales from the POS vendor's own SQLite database ([posdb]): a real vendor
# database written by this test with the sqlite3 CLI, in the vendor's own
# layout (receipts, items, money in cents), tailed by the real agent.
#
#  1. Receipts are journaled once each, with the sales a terminal would
#     have posted; a bad row is skipped with the POS API's own error, on
#     /status.json and in the log, and the tail goes on past it.
#  2. The vendor holding its database for 5 s (an exclusive transaction)
#     is waited out: the receipts it wrote come through, no error shown.
#  3. kill -9 mid-tail, twice, over POSDB_ROWS receipts (default 20,000):
#     every receipt journaled exactly once, and after each restart the
#     tailer reads on from its watermark (nothing read twice: sales_read
#     equals sales_stored).
#  4. Memory stays flat while it tails them (VmHWM compared between the
#     first tenth and the end; long run: POSDB_ROWS=1000000).
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/posdb_lib.sh"

POSDB_ROWS="${POSDB_ROWS:-20000}"
VENDOR="$T/vendor.db"

vendor() { sqlite3 -batch -bail "$VENDOR" ".timeout 20000" "$@"; }

posdb_vendor_create "$VENDOR"
# add_receipts FIRST LAST [QTY]: receipts R-FIRST..R-LAST (posdb_lib.sh).
add_receipts() { posdb_vendor_add "$VENDOR" "$1" "$2" R- "${3:-1}"; }

write_tokens
write_config agent.log_level=info
posdb_sections "$CONFIG" "$VENDOR" minor plu "poll = 200ms" "busy_wait = 15s" "batch = 50"

# posdb_field PATH: a field of /status.json's sources.posdb.
posdb_field() {
  status_json
  json_get "$STATUS_JSON" "\$.sources.posdb.$1"
}

# wait_watermark N [SECONDS]: until the tailer has journaled up to N.
wait_watermark() {
  local deadline=$((SECONDS + ${2:-60})) mark=""
  while :; do
    mark="$(posdb_field watermark)"
    [[ "$mark" == "$1" ]] && return 0
    ((SECONDS < deadline)) || fail "the tailer reaches watermark $1 within ${2:-60} s" "$1" "$mark"
    sleep 0.2
  done
}

# ---- 1. receipts in, a bad one skipped with the API's error --------------
add_receipts 1 3
add_receipts 4 4 0 # qty 0
add_receipts 5 5
start_agent
wait_watermark 5
assert_eq "receipts journaled" "R-1 R-2 R-3 R-5" \
  "$(sql "SELECT group_concat(sale_id, ' ') FROM (SELECT sale_id FROM sales ORDER BY seq);")"
assert_eq "rows rejected" 1 "$(posdb_field rows_rejected)"
REJECTED="$(posdb_field last_rejected)"
# The POS API's answer to the same sale with qty 0.
post_sales "$TOKEN_T1" "$(sale_json sale_id='"R-4"' \
  lines='[{"sku":"PIZZA-MARG-L","qty":0,"unit_price":"12.50","tax":"1.30"}]' \
  payments='[{"method":"card","amount":"13.80"}]' total='"13.80"' cashier_id=- channel=-)"
expect_error "the same sale through the API" 400 "lines[0].qty"
API_ERROR="$(json_get "$HTTP_BODY" '$.error')"
assert_eq "the rejected row says what the API says" \
  "watermark 4 (sale key 4): lines[0].qty: $API_ERROR" "$REJECTED"
grep -q 'event=posdb_row_rejected.*watermark=4 .*field=lines\[0\].qty' "$AGENT_LOG" ||
  fail "the rejected row is logged" "event=posdb_row_rejected ... watermark=4" "$(grep posdb "$AGENT_LOG")"
assert_eq "no read error" "" "$(posdb_field last_error)"
assert_eq "sales read" 4 "$(posdb_field sales_read)"

# ---- 2. the vendor holding its database for 5 s is waited out ------------
{
  printf 'BEGIN EXCLUSIVE;\n'
  printf "INSERT INTO receipts VALUES (6, 'R-6', 'T1', '2026-11-21T18:42:05+01:00', 1380, 'card');\n"
  printf "INSERT INTO items VALUES (6, 1, 'PIZZA-MARG-L', 1, 1250, 130);\n"
  printf '.shell sleep 5\n'
  printf 'COMMIT;\n'
} | sqlite3 -batch -bail "$VENDOR" &
HOLDER=$!
on_cleanup "kill $HOLDER 2>/dev/null || true"
sleep 1
assert_eq "the tail waits while the vendor holds its database" 5 "$(posdb_field watermark)"
wait "$HOLDER"
wait_watermark 6 30
assert_eq "no error shown for a wait shorter than busy_wait" "" "$(posdb_field last_error)"
grep -q 'event=posdb_read_failed' "$AGENT_LOG" &&
  fail "no read failure logged" "none" "$(grep posdb_read_failed "$AGENT_LOG")"

# ---- 3. kill -9 mid-tail, twice: each receipt once, none read twice -------
add_receipts 7 "$((POSDB_ROWS + 6))"
LAST=$((POSDB_ROWS + 6))
for kill_round in 1 2; do
  target=$((6 + POSDB_ROWS * kill_round / 3))
  deadline=$((SECONDS + 120))
  while (($(posdb_field watermark) < target)); do
    ((SECONDS < deadline)) || fail "the tailer passes watermark $target" "$target" "$(posdb_field watermark)"
    sleep 0.05
  done
  kill_agent
  held="$(sql "SELECT count(*) FROM sales WHERE sale_id LIKE 'R-%';")"
  log "kill -9 $kill_round past watermark $target: $held of $((LAST - 1)) receipts journaled"
  start_agent
done
wait_watermark "$LAST" 300
# Read on from the journal's watermark: every sale read since the last
# restart was new to the journal.
assert_eq "after kill -9: sales read are all new (none read twice)" \
  "$(posdb_field sales_stored)" "$(posdb_field sales_read)"
assert_eq "the vendor's newest watermark on the status" "$LAST" "$(posdb_field vendor_watermark)"
assert_eq "every receipt once" "$((LAST - 1))" \
  "$(sql "SELECT count(*) FROM sales WHERE sale_id LIKE 'R-%';")"
assert_eq "no receipt missing" "" \
  "$(sql "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $LAST)
          SELECT group_concat(i) FROM n WHERE i <> 4 AND 'R-' || i NOT IN (SELECT sale_id FROM sales);")"

# ---- 4. memory flat over a long tail ---------------------------------------
hwm_kb() { awk '/^VmHWM:/ { print $2 }' "/proc/$AGENT_PID/status"; }
FIRST=$((LAST + 1))
LAST=$((LAST + POSDB_ROWS))
add_receipts "$FIRST" "$LAST"
deadline=$((SECONDS + 120))
while (($(posdb_field watermark) < FIRST + POSDB_ROWS / 10)); do
  ((SECONDS < deadline)) || fail "the tailer starts on the new receipts" "$FIRST" "$(posdb_field watermark)"
  sleep 0.05
done
EARLY_KB="$(hwm_kb)"
wait_watermark "$LAST" 600
END_KB="$(hwm_kb)"
log "peak RSS after a tenth of $POSDB_ROWS receipts: $EARLY_KB kB; after all: $END_KB kB"
((END_KB - EARLY_KB < 16384)) ||
  fail "memory stays flat while tailing" "less than 16 MB more than after the first tenth" \
    "$EARLY_KB kB -> $END_KB kB"

# ---- 5. the vendor's ids going back below ours is said, not silent ---------
vendor "DELETE FROM items; DELETE FROM receipts;"
sleep 1
assert_eq "an emptied table is no error (a vendor may purge)" "" "$(posdb_field last_error)"
vendor "INSERT INTO receipts VALUES (1, 'Z-1', 'T1', '2026-11-21T18:42:05+01:00', 1380, 'card');
        INSERT INTO items VALUES (1, 1, 'PIZZA-MARG-L', 1, 1250, 130);"
deadline=$((SECONDS + 30))
until [[ "$(posdb_field last_error)" == *"ids restarted"* ]]; do
  ((SECONDS < deadline)) || fail "ids below the watermark are reported" "...ids restarted..." "$(posdb_field last_error)"
  sleep 0.2
done
grep -q 'event=posdb_read_failed.*ids restarted' "$AGENT_LOG" ||
  fail "and logged" "event=posdb_read_failed ... ids restarted" "$(grep posdb "$AGENT_LOG" | tail -3)"
stop_agent
log "PASSED"
