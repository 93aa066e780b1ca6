#!/usr/bin/env bash
# A POS retry returns the first result: same sale_id and content -> 200
# duplicate with the first seq (also reformatted, also after a restart);
# same sale_id with other content -> 409; arrays are all-or-nothing.
source "$(dirname "$0")/lib.sh"

write_tokens
write_config
start_agent

# expect_result INDEX SALE_ID SEQ DUPLICATE: results[INDEX] of the last array answer.
expect_result() {
  local i="$1"
  assert_eq "results[$i].sale_id" "$2" "$(json_get "$HTTP_BODY" "\$.results[$i].sale_id")"
  assert_eq "results[$i].seq" "$3" "$(json_get "$HTTP_BODY" "\$.results[$i].seq")"
  if [[ "$4" == true ]]; then
    assert_eq "results[$i].duplicate" true "$(json_type "$HTTP_BODY" "\$.results[$i].duplicate")"
  else
    assert_eq "results[$i] has no duplicate flag" "" "$(json_type "$HTTP_BODY" "\$.results[$i].duplicate")"
  fi
}

# --- one sale --------------------------------------------------------------------
A="$(sale_json sale_id='"IDEM-A"')"
post_sales "$TOKEN_T1" "$A"
expect_status "first POST of A" 201
SEQ_A="$(json_get "$HTTP_BODY" '$.seq')"
assert_gt "seq of A" 0 "$SEQ_A"

post_sales "$TOKEN_T1" "$A"
expect_status "second POST of A (same bytes)" 200
assert_eq "duplicate answer keys" "duplicate,seq" "$(json_keys "$HTTP_BODY")"
assert_eq "duplicate answer seq" "$SEQ_A" "$(json_get "$HTTP_BODY" '$.seq')"
assert_eq "duplicate answer flag" true "$(json_type "$HTTP_BODY" '$.duplicate')"

# The same sale, pretty-printed with its keys in another order.
A_REFORMATTED='{
  "total" : "26.30",
  "payments" : [ { "amount" : "26.30", "method" : "card" } ],
  "lines" : [
    { "tax" : "2.30", "promo_id" : "TPR-42", "discount" : "1.00", "unit_price" : "12.50",
      "qty" : 2, "sku" : "PIZZA-MARG-L" }
  ],
  "currency" : "EUR",
  "business_time" : "2026-11-21T18:42:05+01:00",
  "channel" : "pos",
  "cashier_id" : "E042",
  "terminal_id" : "T1",
  "kind" : "sale",
  "sale_id" : "IDEM-A"
}'
post_sales "$TOKEN_T1" "$A_REFORMATTED"
expect_status "A resent with other whitespace and key order" 200
assert_eq "reformatted duplicate seq" "$SEQ_A" "$(json_get "$HTTP_BODY" '$.seq')"
assert_eq "reformatted duplicate flag" true "$(json_type "$HTTP_BODY" '$.duplicate')"

# Same sale_id, other content (one more pizza): a conflict, not a duplicate.
A_CONFLICT="$(sale_json sale_id='"IDEM-A"' \
  lines='[{"sku":"PIZZA-MARG-L","qty":3,"unit_price":"12.50","discount":"1.00","promo_id":"TPR-42","tax":"2.30"}]' \
  payments='[{"method":"card","amount":"38.80"}]' total='"38.80"')"
post_sales "$TOKEN_T1" "$A_CONFLICT"
expect_error "A with other content" 409 sale_id
assert_eq "409 names the seq of the journaled sale" "$SEQ_A" "$(json_get "$HTTP_BODY" '$.seq')"
# Other content that changes no money: another cashier.
post_sales "$TOKEN_T1" "$(sale_json sale_id='"IDEM-A"' cashier_id='"E043"')"
expect_error "A with another cashier" 409 sale_id
assert_eq "rows for IDEM-A" 1 "$(sql "SELECT count(*) FROM sales WHERE sale_id = 'IDEM-A';")"
assert_eq "IDEM-A keeps its first content" 2630 "$(sql "SELECT total_minor FROM sales WHERE sale_id = 'IDEM-A';")"

# --- arrays -------------------------------------------------------------------------
ARRAY="[$(sale_json sale_id='"IDEM-B"'),$(sale_json sale_id='"IDEM-C"' cashier_id=-),$(sale_json sale_id='"IDEM-D"' channel='"online"' cashier_id=-)]"
post_sales "$TOKEN_T1" "$ARRAY"
expect_status "array B, C, D" 201
assert_eq "array answer keys" results "$(json_keys "$HTTP_BODY")"
assert_eq "array answer results" 3 "$(sqlite3 :memory: "SELECT json_array_length($(_sql_quote "$HTTP_BODY"), '\$.results');")"
SEQ_B="$(json_get "$HTTP_BODY" '$.results[0].seq')"
SEQ_C="$(json_get "$HTTP_BODY" '$.results[1].seq')"
SEQ_D="$(json_get "$HTTP_BODY" '$.results[2].seq')"
expect_result 0 IDEM-B "$SEQ_B" false
expect_result 1 IDEM-C "$SEQ_C" false
expect_result 2 IDEM-D "$SEQ_D" false
assert_gt "seq of B (after A)" "$SEQ_A" "$SEQ_B"
assert_gt "seq of C (after B)" "$SEQ_B" "$SEQ_C"
assert_gt "seq of D (after C)" "$SEQ_C" "$SEQ_D"
for id in B C D; do
  seq_var="SEQ_$id"
  assert_eq "journal seq of IDEM-$id" "${!seq_var}" "$(sql "SELECT seq FROM sales WHERE sale_id = 'IDEM-$id';")"
done

post_sales "$TOKEN_T1" "$ARRAY"
expect_status "array B, C, D retried" 200
expect_result 0 IDEM-B "$SEQ_B" true
expect_result 1 IDEM-C "$SEQ_C" true
expect_result 2 IDEM-D "$SEQ_D" true

# New E, F and a conflicting A: 409 for the whole request, E and F not written.
ROWS="$(journal_count)"
post_sales "$TOKEN_T1" "[$(sale_json sale_id='"IDEM-E"'),$(sale_json sale_id='"IDEM-F"'),$A_CONFLICT]"
expect_error "array E, F, conflicting A" 409 '[2].sale_id'
assert_eq "409 in an array names the journaled seq" "$SEQ_A" "$(json_get "$HTTP_BODY" '$.seq')"
assert_eq "rows after the rejected array" "$ROWS" "$(journal_count)"
assert_eq "IDEM-E and IDEM-F not written" 0 "$(sql "SELECT count(*) FROM sales WHERE sale_id IN ('IDEM-E', 'IDEM-F');")"

# New E and a duplicate A: 201, E new, A a duplicate with its first seq.
post_sales "$TOKEN_T1" "[$(sale_json sale_id='"IDEM-E"'),$A]"
expect_status "array E (new), A (duplicate)" 201
SEQ_E="$(json_get "$HTTP_BODY" '$.results[0].seq')"
expect_result 0 IDEM-E "$SEQ_E" false
expect_result 1 IDEM-A "$SEQ_A" true
assert_gt "seq of E (after D)" "$SEQ_D" "$SEQ_E"

# The same sale_id twice in one array is an error, not a duplicate.
ROWS="$(journal_count)"
post_sales "$TOKEN_T1" "[$(sale_json sale_id='"IDEM-G"'),$(sale_json sale_id='"IDEM-G"')]"
expect_error "IDEM-G twice in one array" 400 '[1].sale_id'
assert_eq "rows after the array with a repeated sale_id" "$ROWS" "$(journal_count)"

# --- duplicates survive a restart ---------------------------------------------------
stop_agent
start_agent
post_sales "$TOKEN_T1" "$A"
expect_status "A after a restart" 200
assert_eq "A's seq after a restart" "$SEQ_A" "$(json_get "$HTTP_BODY" '$.seq')"
post_sales "$TOKEN_T1" "$ARRAY"
expect_status "array B, C, D after a restart" 200
expect_result 0 IDEM-B "$SEQ_B" true
expect_result 2 IDEM-D "$SEQ_D" true
post_sales "$TOKEN_T1" "$A_CONFLICT"
expect_error "conflicting A after a restart" 409 sale_id

# The same sale_id from another terminal with other content is still a conflict:
# sale ids are unique within the store.
post_sales "$TOKEN_T2" "$(sale_json sale_id='"IDEM-A"' terminal_id='"T2"')"
expect_error "IDEM-A from terminal T2" 409 sale_id

assert_eq "rows at the end (A, B, C, D, E)" 5 "$(journal_count)"
assert_eq "distinct seqs at the end" 5 "$(sql 'SELECT count(DISTINCT seq) FROM sales;')"
stop_agent
