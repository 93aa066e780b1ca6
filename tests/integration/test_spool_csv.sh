#!/usr/bin/env bash
# CSV files in the spool directory (issue 14, item 2; the layout of
# README's "Sales as files: CSV"): sales of several rows each are journaled
# once, as the same sales (the POS API answers their JSON as duplicates);
# a bad sale fails the file with the API's own words at the sale's first
# row and nothing of it journaled; a mistake of the CSV itself names its row
# and column; kill -9 twice in the middle of a file of two-row sales, with
# the agent's fsyncs slowed to 20 ms, loses and doubles nothing (a resume
# falls between two sales, never inside one: a sale cut would fail its
# totals and the file).
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/spool_lib.sh"

HEADER="sale_id,kind,terminal_id,business_time,currency,total,sku,qty,unit_price,discount,tax,payment_method,payment_amount"
# csv_sale ID: a sale of two rows: two lines (12.50 + 2.50 x 3), paid by
# card and cash, 20.00.
csv_sale() {
  printf '%s,sale,T1,2026-11-21T19:00:00+01:00,EUR,20.00,PIZZA-MARG-L,1,12.50,,,card,15.00\n' "$1"
  printf '%s,sale,T1,2026-11-21T19:00:00+01:00,EUR,20.00,COLA,3,2.50,,,cash,5.00\n' "$1"
}
csv_sale_json() {
  printf '{"sale_id":"%s","kind":"sale","terminal_id":"T1","business_time":"2026-11-21T19:00:00+01:00","currency":"EUR","lines":[{"sku":"PIZZA-MARG-L","qty":1,"unit_price":"12.50"},{"sku":"COLA","qty":3,"unit_price":"2.50"}],"payments":[{"method":"card","amount":"15.00"},{"method":"cash","amount":"5.00"}],"total":"20.00"}' "$1"
}
csv_drop() { # NAME: stdin to $SPOOL/.NAME.tmp, then renamed
  cat >"$SPOOL/.$1.tmp"
  mv "$SPOOL/.$1.tmp" "$SPOOL/$1"
}

write_tokens
spool_config
start_agent

# ---- good: three sales of two rows each, the same as their JSON ------------
{
  echo "$HEADER"
  csv_sale V-1
  echo
  csv_sale V-2
  csv_sale V-3
} | csv_drop good.csv
spool_wait_file "$SPOOL/done/good.csv" 30
assert_eq "the file's sales, each once" "V-1 V-2 V-3" \
  "$(sql "SELECT group_concat(sale_id, ' ') FROM (SELECT sale_id FROM sales WHERE sale_id LIKE 'V-%' ORDER BY seq);")"
for id in V-1 V-2 V-3; do
  post_sales "$TOKEN_T1" "$(csv_sale_json "$id")"
  expect_status "$id posted as JSON after the file: the same sale, a duplicate" 200
done

# ---- a broken sale: the API's words, at the sale's first row ----------------
{
  echo "$HEADER"
  csv_sale W-1
  csv_sale W-2 | sed '2s/,COLA,3,/,COLA,0,/'
} | csv_drop bad.csv
spool_wait_file "$SPOOL/failed/bad.csv.reason" 30
REASON="$(cat "$SPOOL/failed/bad.csv.reason")"
post_sales "$TOKEN_T1" "$(csv_sale_json W-2 | sed 's/"qty":3/"qty":0/')"
expect_error "the broken sale posted as JSON" 400 "lines[1].qty"
API_ERROR="$(json_get "$HTTP_BODY" '$.error')"
assert_contains "the reason names the sale's first row and the field" "line 4, field lines[1].qty: " \
  "$REASON"
assert_contains "the reason says what POST /v1/sales says" "$API_ERROR" "$REASON"
assert_eq "nothing of the bad file is journaled" 0 "$(sql "SELECT count(*) FROM sales WHERE sale_id LIKE 'W-%';")"

# ---- a mistake of the CSV: its row and column ---------------------------------
{
  echo "$HEADER"
  csv_sale X-1 | sed '2s/,20.00,COLA/,20.01,COLA/'
} | csv_drop differ.csv
spool_wait_file "$SPOOL/failed/differ.csv.reason" 30
assert_contains "a sale column that differs names its row and column" "line 3" \
  "$(cat "$SPOOL/failed/differ.csv.reason")"
assert_contains "... and the column" "column total" "$(cat "$SPOOL/failed/differ.csv.reason")"
stop_agent

# ---- kill -9 twice mid-file, slow flash ------------------------------------------
if [[ -n "${POS_EMULATOR:-}" || ! -f "$SHIM_LIB" ]]; then
  log "PASSED (the kill -9 part needs the fsync shim natively: skipped here)"
  exit 0
fi
spool_slow_flash
SALES=10000
awk -v n="$SALES" -v h="$HEADER" 'BEGIN { print h; for (i = 1; i <= n; i++) {
  printf "K-%d,sale,T1,2026-11-21T19:00:00+01:00,EUR,20.00,PIZZA-MARG-L,1,12.50,,,card,15.00\n", i
  printf "K-%d,sale,T1,2026-11-21T19:00:00+01:00,EUR,20.00,COLA,3,2.50,,,cash,5.00\n", i } }' \
  >"$SPOOL/.big.csv.tmp"
SIZE="$(stat -c %s "$SPOOL/.big.csv.tmp")"
position_offset() {
  local position
  position="$(spool_position)"
  if [[ "$position" == *" big.csv" ]]; then awk '{ print $6 }' <<<"$position"; else echo 0; fi
}
start_agent
mv "$SPOOL/.big.csv.tmp" "$SPOOL/big.csv"
LAST_OFFSET=0
for round in 1 2; do
  deadline=$((SECONDS + 120))
  until (($(position_offset) > LAST_OFFSET)); do
    [[ ! -e "$SPOOL/done/big.csv" ]] || fail "killed in the middle of the file" "a position short of $SIZE" "done"
    ((SECONDS < deadline)) || fail "the position moves on within 120 s" "> $LAST_OFFSET" "$(position_offset)"
    sleep 0.05
  done
  kill_agent
  LAST_OFFSET="$(position_offset)"
  # The position falls at the start of a sale's first row: the byte before
  # it ends a line, and the row there is a PIZZA row (a sale's first).
  assert_eq "kill $round: the position is the start of a sale's first row" "PIZZA-MARG-L" \
    "$(tail -c +"$((LAST_OFFSET + 1))" "$SPOOL/big.csv" | head -n1 | cut -d, -f7)"
  assert_eq "kill $round: just after a line end" "$(printf '\n' | od -An -tx1 | tr -d ' ')" \
    "$(tail -c +"$LAST_OFFSET" "$SPOOL/big.csv" | head -c1 | od -An -tx1 | tr -d ' ')"
  log "kill -9 $round at byte $LAST_OFFSET of $SIZE ($(sql "SELECT count(*) FROM sales WHERE sale_id LIKE 'K-%';") sales journaled)"
  start_agent
done
spool_wait_file "$SPOOL/done/big.csv" 300
assert_eq "every sale of the file once" "$SALES|$SALES" \
  "$(sql "SELECT count(*), count(DISTINCT sale_id) FROM sales WHERE sale_id LIKE 'K-%';")"
for id in K-1 K-$((SALES / 2)) K-$SALES; do
  post_sales "$TOKEN_T1" "$(csv_sale_json "$id")"
  expect_status "$id, journaled across the kills, is the whole sale (its JSON a duplicate)" 200
done
stop_agent
log "PASSED"
