#!/usr/bin/env bash
# A valid sale goes in through POST /v1/sales and comes back out of the
# journal field for field: every column, money as integer minor units of the
# currency's exponent, business_time_ms and utc_offset_min computed from the
# time and offset the POS sent; /status.json reflects it.
source "$(dirname "$0")/lib.sh"

# expect_row SALE_ID COLUMN=SQL_LITERAL...: each column of the sale's row,
# compared as SQLite quote() shows it ('text', 123, NULL).
expect_row() {
  local sale_id="$1" arg column expected actual
  shift
  for arg in "$@"; do
    column="${arg%%=*}"
    expected="${arg#*=}"
    actual="$(sql "SELECT quote($column) FROM sales WHERE sale_id = $(_sql_quote "$sale_id");")"
    assert_eq "journal row $sale_id: $column" "$expected" "$actual"
  done
}

# json_shape JSON: every node of JSON as "path=type:value", sorted, so two
# documents compare equal whatever their key order and whitespace.
json_shape() {
  sqlite3 -batch :memory: "SELECT group_concat(node, ' ') FROM (SELECT fullkey || '=' || type || ':' || coalesce(atom, '') AS node FROM json_tree($(_sql_quote "$1")) ORDER BY fullkey);"
}

# expect_json_column SALE_ID COLUMN EXPECTED_JSON
expect_json_column() {
  local actual
  actual="$(sql "SELECT $2 FROM sales WHERE sale_id = $(_sql_quote "$1");")"
  [[ "$(json_valid "$actual")" == 1 ]] || fail "journal row $1: $2 is JSON" "valid JSON" "$actual"
  assert_eq "journal row $1: $2 (as $actual)" "$(json_shape "$3")" "$(json_shape "$actual")"
}

now_ms() { date +%s%3N; }

write_tokens
write_config
start_agent

# --- empty journal ---------------------------------------------------------
status_json
assert_eq "status.json sales_journaled before any sale" 0 "$(json_get "$STATUS_JSON" '$.sales_journaled')"
assert_eq "status.json last_seq before any sale" 0 "$(json_get "$STATUS_JSON" '$.last_seq')"
assert_eq "status.json last_sale_received before any sale" null "$(json_type "$STATUS_JSON" '$.last_sale_received')"

# --- sale 1: delivery, two lines, split payment, +01:00 --------------------
# 2 x 12.50 - 1.00 + 2.30 = 26.30; 1 x 2.5 - 0 + 0.25 = 2.75; total 29.05.
SALE1='{"sale_id":"T1-000123","kind":"sale","terminal_id":"T1","cashier_id":"E042",
 "channel":"delivery","delivery_partner":"Deliveroo",
 "business_time":"2026-11-21T18:42:05+01:00","currency":"EUR",
 "lines":[{"sku":"PIZZA-MARG-L","qty":2,"unit_price":"12.50","discount":"1.00","promo_id":"TPR-42","tax":"2.30"},
          {"sku":"DRINK-COLA-033","qty":1,"unit_price":"2.5","discount":"0","tax":"0.25"}],
 "payments":[{"method":"card","amount":"20.00"},{"method":"cash","amount":"9.05"}],
 "total":"29.05"}'
before_ms="$(now_ms)"
post_sales "$TOKEN_T1" "$SALE1"
after_ms="$(now_ms)"
expect_status "POST sale 1" 201
assert_eq "201 body keys" seq "$(json_keys "$HTTP_BODY")"
assert_eq "201 seq is an integer" integer "$(json_type "$HTTP_BODY" '$.seq')"
SEQ1="$(json_get "$HTTP_BODY" '$.seq')"
assert_gt "seq of the first sale" 0 "$SEQ1"
assert_match "201 Content-Type" '^application/json' "$(header Content-Type)"

assert_eq "rows after sale 1" 1 "$(journal_count)"
expect_row T1-000123 \
  "seq=$SEQ1" "kind='sale'" "original_sale_id=NULL" "terminal_id='T1'" "cashier_id='E042'" \
  "channel='delivery'" "delivery_partner='Deliveroo'" \
  "business_time='2026-11-21T18:42:05+01:00'" \
  "business_time_ms=$(( $(date -u -d '2026-11-21T17:42:05Z' +%s) * 1000 ))" \
  "utc_offset_min=60" "currency='EUR'" "currency_exponent=2" "total_minor=2905" \
  "typeof(content_hash)||'/'||length(content_hash)='blob/32'" \
  "typeof(received_ms)='integer'"
expect_json_column T1-000123 lines \
  '[{"sku":"PIZZA-MARG-L","qty":2,"unit_price":1250,"discount":100,"promo_id":"TPR-42","tax":230},
    {"sku":"DRINK-COLA-033","qty":1,"unit_price":250,"discount":0,"tax":25}]'
expect_json_column T1-000123 payments \
  '[{"method":"card","amount":2000},{"method":"cash","amount":905}]'
received_ms="$(sql "SELECT received_ms FROM sales WHERE sale_id = 'T1-000123';")"
((received_ms >= before_ms - 1000 && received_ms <= after_ms + 1000)) ||
  fail "received_ms is when the agent received the sale" "$before_ms..$after_ms" "$received_ms"

META_ID="$(sql "SELECT value FROM meta WHERE key = 'journal_id';")"
assert_match "meta.journal_id is 32 hex digits" '^[0-9a-fA-F]{32}$' "$META_ID"

status_json
for key in journal_id store_id device_id sales_journaled sales_unsent last_seq \
  last_sale_received disk_free_bytes journal_bytes version; do
  [[ -n "$(json_type "$STATUS_JSON" "\$.$key")" ]] || fail "status.json has \"$key\"" "$key present" "$STATUS_JSON"
done
assert_eq "status.json journal_id = meta.journal_id" "$META_ID" "$(json_get "$STATUS_JSON" '$.journal_id')"
assert_eq "status.json store_id" S001 "$(json_get "$STATUS_JSON" '$.store_id')"
assert_eq "status.json device_id" D1 "$(json_get "$STATUS_JSON" '$.device_id')"
assert_eq "status.json sales_journaled" 1 "$(json_get "$STATUS_JSON" '$.sales_journaled')"
assert_eq "status.json sales_unsent" 1 "$(json_get "$STATUS_JSON" '$.sales_unsent')"
assert_eq "status.json last_seq" "$SEQ1" "$(json_get "$STATUS_JSON" '$.last_seq')"
assert_match "status.json last_sale_received (RFC 3339 UTC)" \
  '^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?Z$' \
  "$(json_get "$STATUS_JSON" '$.last_sale_received')"
assert_eq "status.json disk_free_bytes type" integer "$(json_type "$STATUS_JSON" '$.disk_free_bytes')"
assert_gt "status.json disk_free_bytes" 0 "$(json_get "$STATUS_JSON" '$.disk_free_bytes')"
assert_gt "status.json journal_bytes" 0 "$(json_get "$STATUS_JSON" '$.journal_bytes')"
assert_match "status.json version" '[0-9]+\.[0-9]+' "$(json_get "$STATUS_JSON" '$.version')"

# --- sale 2: channel defaults to pos, no cashier, fractional seconds, -03:30
post_sales "$TOKEN_T1" "$(sale_json sale_id='"T1-000124"' cashier_id=- channel=- \
  business_time='"2026-03-05T09:15:30.250-03:30"' \
  lines='[{"sku":"PIZZA-PEPP-L","qty":3,"unit_price":"8.50","discount":"0.00","tax":"2.55"}]' \
  payments='[{"method":"cash","amount":"28.05"}]' total='"28.05"')"
expect_status "POST sale 2" 201
SEQ2="$(json_get "$HTTP_BODY" '$.seq')"
assert_gt "seq of sale 2 (after $SEQ1)" "$SEQ1" "$SEQ2"
expect_row T1-000124 \
  "seq=$SEQ2" "kind='sale'" "original_sale_id=NULL" "cashier_id=NULL" "channel='pos'" \
  "delivery_partner=NULL" "business_time='2026-03-05T09:15:30.250-03:30'" \
  "business_time_ms=$(date -u -d '2026-03-05T12:45:30.250Z' +%s%3N)" "utc_offset_min=-210" \
  "total_minor=2805"
expect_json_column T1-000124 lines \
  '[{"sku":"PIZZA-PEPP-L","qty":3,"unit_price":850,"discount":0,"tax":255}]'
expect_json_column T1-000124 payments '[{"method":"cash","amount":2805}]'

# --- sale 3: a refund of sale 1, pickup, UTC ("Z") --------------------------
post_sales "$TOKEN_T1" "$(sale_json sale_id='"T1-000125"' kind='"refund"' \
  original_sale_id='"T1-000123"' channel='"pickup"' business_time='"2026-11-21T20:00:00Z"' \
  lines='[{"sku":"DRINK-COLA-033","qty":1,"unit_price":"2.50","discount":"0.00","tax":"0.25"}]' \
  payments='[{"method":"card","amount":"2.75"}]' total='"2.75"')"
expect_status "POST refund" 201
SEQ3="$(json_get "$HTTP_BODY" '$.seq')"
expect_row T1-000125 \
  "seq=$SEQ3" "kind='refund'" "original_sale_id='T1-000123'" "channel='pickup'" \
  "business_time_ms=$(( $(date -u -d '2026-11-21T20:00:00Z' +%s) * 1000 ))" "utc_offset_min=0" \
  "total_minor=275"

# --- currencies with 0 and 3 decimals ---------------------------------------
post_sales "$TOKEN_T1" "$(sale_json sale_id='"T1-JPY-1"' currency='"JPY"' \
  lines='[{"sku":"PIZZA-MARG-L","qty":2,"unit_price":"1200","discount":"0","tax":"120"}]' \
  payments='[{"method":"card","amount":"2520"}]' total='"2520"')"
expect_status "POST JPY sale" 201
expect_row T1-JPY-1 "currency='JPY'" "currency_exponent=0" "total_minor=2520"
expect_json_column T1-JPY-1 lines \
  '[{"sku":"PIZZA-MARG-L","qty":2,"unit_price":1200,"discount":0,"tax":120}]'

post_sales "$TOKEN_T1" "$(sale_json sale_id='"T1-KWD-1"' currency='"KWD"' \
  lines='[{"sku":"PIZZA-MARG-L","qty":1,"unit_price":"1.25","discount":"0.005","tax":"0.125"}]' \
  payments='[{"method":"card","amount":"1.370"}]' total='"1.370"')"
expect_status "POST KWD sale" 201
expect_row T1-KWD-1 "currency='KWD'" "currency_exponent=3" "total_minor=1370"
expect_json_column T1-KWD-1 lines \
  '[{"sku":"PIZZA-MARG-L","qty":1,"unit_price":1250,"discount":5,"tax":125}]'
expect_json_column T1-KWD-1 payments '[{"method":"card","amount":1370}]'

assert_eq "rows after 5 sales" 5 "$(journal_count)"
assert_eq "distinct seqs" 5 "$(sql 'SELECT count(DISTINCT seq) FROM sales;')"
LAST_SEQ="$(journal_max_seq)"
status_json
assert_eq "status.json sales_journaled after 5" 5 "$(json_get "$STATUS_JSON" '$.sales_journaled')"
assert_eq "status.json last_seq after 5" "$LAST_SEQ" "$(json_get "$STATUS_JSON" '$.last_seq')"

# --- the journal and its identity survive a restart ---------------------------
stop_agent
start_agent
status_json
assert_eq "journal_id after restart" "$META_ID" "$(json_get "$STATUS_JSON" '$.journal_id')"
assert_eq "status.json sales_journaled after restart" 5 "$(json_get "$STATUS_JSON" '$.sales_journaled')"
assert_eq "status.json last_seq after restart" "$LAST_SEQ" "$(json_get "$STATUS_JSON" '$.last_seq')"
assert_eq "journal mode" wal "$(sql 'PRAGMA journal_mode;')"
stop_agent
