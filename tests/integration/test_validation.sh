#!/usr/bin/env bash
# Bad input is rejected with 400 naming the exact field, and nothing is
# written; authentication (401/403), content type (415), routing (404/405)
# and the body limit (413) answer with their own statuses.
source "$(dirname "$0")/lib.sh"

write_tokens
write_config api.max_body=64K api.max_sales_per_request=5
start_agent

# One good sale first, so "nothing written" is checked against a non-empty journal.
post_sales "$TOKEN_T1" "$(sale_json)"
expect_status "baseline sale" 201
ROWS_BEFORE="$(journal_count)"
MAX_SEQ_BEFORE="$(journal_max_seq)"

line() { # line [key=RAWJSON ...]: the default line with keys replaced/removed
  local -A f=([sku]='"PIZZA-MARG-L"' [qty]=2 [unit_price]='"12.50"' [discount]='"1.00"'
    [promo_id]='"TPR-42"' [tax]='"2.30"')
  local order=(sku qty unit_price discount promo_id tax) arg key out="" sep=""
  for arg in "$@"; do
    key="${arg%%=*}"
    [[ -v "f[$key]" ]] || order+=("$key")
    f[$key]="${arg#*=}"
  done
  for key in "${order[@]}"; do
    [[ "${f[$key]}" == "-" ]] && continue
    out+="$sep\"$key\":${f[$key]}"
    sep=","
  done
  printf '{%s}' "$out"
}

GOOD="$(sale_json sale_id='"V-good"')"
LONG_ID="\"$(printf 'A%.0s' {1..65})\""
LINES_501="[$(for i in $(seq 501); do printf '%s{"sku":"S%d","qty":1,"unit_price":"0.01","discount":"0.00","tax":"0.00"}' "$([[ $i -gt 1 ]] && echo ,)" "$i"; done)]"

# name | expected field | body. Field "" = an error about the body as a whole.
CASES=()
add() { CASES+=("$1"$'\x1f'"$2"$'\x1f'"$3"); }

add "total as a JSON number"        total                 "$(sale_json total=26.30)"
add "unit_price as a JSON number"   'lines[0].unit_price' "$(sale_json lines="[$(line unit_price=12.5)]")"
add "amount as a JSON number"       'payments[0].amount'  "$(sale_json payments='[{"method":"card","amount":26.30}]')"
add "unit_price with 3 decimals"    'lines[0].unit_price' "$(sale_json lines="[$(line unit_price='"12.500"')]")"
add "tax with 3 decimals"           'lines[0].tax'        "$(sale_json lines="[$(line tax='"2.305"')]")"
add "money in exponent notation"    'lines[0].unit_price' "$(sale_json lines="[$(line unit_price='"1.25e1"')]")"
add "money with thousands separator" 'lines[0].unit_price' "$(sale_json lines="[$(line unit_price='"1,250.00"')]")"
add "money with a leading plus"     'lines[0].discount'   "$(sale_json lines="[$(line discount='"+1.00"')]")"
add "missing sale_id"               sale_id               "$(sale_json sale_id=-)"
add "sale_id with a space"          sale_id               "$(sale_json sale_id='"T1 000123"')"
add "sale_id with a slash"          sale_id               "$(sale_json sale_id='"T1/000123"')"
add "sale_id empty"                 sale_id               "$(sale_json sale_id='""')"
add "sale_id of 65 characters"      sale_id               "$(sale_json sale_id="$LONG_ID")"
add "sale_id a number"              sale_id               "$(sale_json sale_id=123)"
add "unknown top-level field"       colour                "$(sale_json colour='"red"')"
add "unknown line field"            'lines[0].colour'     "$(sale_json lines="[$(line colour='"red"')]")"
add "duplicate key"                 ''                    "$(sale_json | sed 's/^{/{"total":"26.30",/')"
add "total does not add up"         total                 "$(sale_json total='"26.31"' payments='[{"method":"card","amount":"26.31"}]')"
add "payments do not add up"        payments              "$(sale_json payments='[{"method":"card","amount":"20.00"},{"method":"cash","amount":"6.29"}]')"
add "time without offset"           business_time         "$(sale_json business_time='"2026-11-21T18:42:05"')"
add "time not a date"               business_time         "$(sale_json business_time='"yesterday"')"
add "time on 30 February"           business_time         "$(sale_json business_time='"2026-02-30T10:00:00+01:00"')"
add "missing business_time"         business_time         "$(sale_json business_time=-)"
add "unknown currency"              currency              "$(sale_json currency='"XYZ"')"
add "currency in lower case"        currency              "$(sale_json currency='"eur"')"
add "missing currency"              currency              "$(sale_json currency=-)"
add "qty 0"                         'lines[0].qty'        "$(sale_json lines="[$(line qty=0 discount='"0.00"' tax='"0.00"')]" total='"0.00"' payments='[{"method":"card","amount":"0.00"}]')"
add "qty 1.5"                       'lines[0].qty'        "$(sale_json lines="[$(line qty=1.5)]")"
add "qty -1"                        'lines[0].qty'        "$(sale_json lines="[$(line qty=-1)]")"
add "qty as a string"               'lines[0].qty'        "$(sale_json lines="[$(line qty='"2"')]")"
add "line without sku"              'lines[0].sku'        "$(sale_json lines="[$(line sku=-)]")"
add "second line bad"               'lines[1].qty'        "$(sale_json lines="[$(line),$(line qty=0)]")"
add "discount above the line"       'lines[0].discount'   "$(sale_json lines="[$(line discount='"25.01"')]" total='"2.29"' payments='[{"method":"card","amount":"2.29"}]')"
add "empty lines"                   lines                 "$(sale_json lines='[]')"
add "lines not an array"            lines                 "$(sale_json lines="$(line)")"
add "501 lines"                     lines                 "$(sale_json lines="$LINES_501" total='"5.01"' payments='[{"method":"card","amount":"5.01"}]')"
add "missing terminal_id"           terminal_id           "$(sale_json terminal_id=-)"
add "unknown kind"                  kind                  "$(sale_json kind='"exchange"')"
add "refund without original"       original_sale_id      "$(sale_json kind='"refund"')"
add "void without original"         original_sale_id      "$(sale_json kind='"void"')"
add "sale with original_sale_id"    original_sale_id      "$(sale_json original_sale_id='"T1-000001"')"
add "unknown channel"               channel               "$(sale_json channel='"phone"')"
add "delivery_partner on pos"       delivery_partner      "$(sale_json delivery_partner='"Deliveroo"')"
add "not JSON"                      ''                    '{"sale_id": "T1-9", '
add "JSON but not a sale"           ''                    '"hello"'
add "empty body"                    ''                    ''
add "empty array"                   ''                    '[]'
add "array, second sale bad"        '[1].lines[0].qty'    "[$GOOD,$(sale_json sale_id='"V-2"' lines="[$(line qty=0)]")]"
add "array, third sale bad total"   '[2].total'           "[$GOOD,$(sale_json sale_id='"V-2"'),$(sale_json sale_id='"V-3"' total='"1.00"')]"
add "array, sale_id repeated"       '[1].sale_id'         "[$GOOD,$GOOD]"

[[ ${#CASES[@]} -ge 20 ]] || fail "at least 20 validation cases" ">= 20" "${#CASES[@]}"
for case in "${CASES[@]}"; do
  IFS=$'\x1f' read -r -d '' name field body <<<"$case" || true
  body="${body%$'\n'}"
  post_sales "$TOKEN_T1" "$body"
  expect_error "$name" 400 "$field"
done

# Arrays above max_sales_per_request (5 here) are refused whole.
SIX="[$(for i in 1 2 3 4 5 6; do [[ $i -gt 1 ]] && printf ,; sale_json sale_id="\"V-six-$i\""; done)]"
post_sales "$TOKEN_T1" "$SIX"
[[ "$HTTP_STATUS" == 400 || "$HTTP_STATUS" == 413 ]] ||
  fail "array of 6 with max_sales_per_request = 5 (body: $HTTP_BODY)" "400 or 413" "$HTTP_STATUS"

# --- authentication --------------------------------------------------------
post_sales "" "$GOOD"
expect_status "no Authorization header" 401
post_sales "wrong-token" "$GOOD"
expect_status "unknown token" 401
post_sales "" "$GOOD" -H "Authorization: Basic $(printf 'T1:%s' "$TOKEN_T1" | base64)"
expect_status "Basic instead of Bearer" 401
post_sales "" "$GOOD" -H "Authorization: Bearer"
expect_status "Bearer without a token" 401
post_sales "" '{"sale_id": ' 
expect_status "no token and a bad body: authentication comes first" 401
post_sales "$TOKEN_T1" "$(sale_json sale_id='"V-t2"' terminal_id='"T2"')"
expect_error "T1's token posting for terminal T2" 403 terminal_id
post_sales "$TOKEN_T1" "[$GOOD,$(sale_json sale_id='"V-t2"' terminal_id='"T2"')]"
expect_error "T1's token posting an array with a T2 sale" 403 '[1].terminal_id'

# --- content type, routing, limits ------------------------------------------
AUTH_T1=(-H "Authorization: Bearer $TOKEN_T1")
http POST /v1/sales "${AUTH_T1[@]}" -H 'Content-Type: text/plain' --data-binary "$GOOD"
expect_status "Content-Type text/plain" 415
http POST /v1/sales "${AUTH_T1[@]}" -H 'Content-Type: application/x-www-form-urlencoded' --data-binary "$GOOD"
expect_status "Content-Type application/x-www-form-urlencoded" 415
http POST /v1/sales "${AUTH_T1[@]}" -H 'Content-Type:' --data-binary "$GOOD"
expect_status "no Content-Type" 415
http POST /v1/salez -H 'Content-Type: application/json' "${AUTH_T1[@]}" --data-binary "$GOOD"
expect_status "POST /v1/salez" 404
http GET /nothing-here
expect_status "GET /nothing-here" 404
http GET /v1/sales "${AUTH_T1[@]}"
expect_status "GET /v1/sales" 405
http DELETE /v1/sales "${AUTH_T1[@]}"
expect_status "DELETE /v1/sales" 405
http POST /status.json --data-binary '{}'
expect_status "POST /status.json" 405
# 100 KiB body, max_body = 64K.
BIG="$(sale_json sale_id='"V-big"' note="\"$(head -c 102400 /dev/zero | tr '\0' 'x')\"")"
post_sales "$TOKEN_T1" "$BIG"
expect_status "100 KiB body with max_body = 64K" 413

# --- nothing was written ---------------------------------------------------------
assert_eq "journal rows after rejected requests" "$ROWS_BEFORE" "$(journal_count)"
assert_eq "journal max(seq) after rejected requests" "$MAX_SEQ_BEFORE" "$(journal_max_seq)"
status_json
assert_eq "status.json sales_journaled after rejected requests" "$ROWS_BEFORE" \
  "$(json_get "$STATUS_JSON" '$.sales_journaled')"

# --- and what should pass does ---------------------------------------------------
post_sales "$TOKEN_ANY" "$(sale_json sale_id='"V-any-t2"' terminal_id='"T2"')"
expect_status "the '*' token posting for T2" 201
post_sales "$TOKEN_T2" "$(sale_json sale_id='"V-t2-own"' terminal_id='"T2"')"
expect_status "T2's token posting for T2" 201
http POST /v1/sales "${AUTH_T1[@]}" -H 'Content-Type: application/json; charset=utf-8' \
  --data-binary "$(sale_json sale_id='"V-charset"')"
expect_status "Content-Type application/json; charset=utf-8" 201
post_sales "$TOKEN_T1" "$(sale_json sale_id='"Aa0._:-x"')"
expect_status "sale_id using every allowed character class" 201
post_sales "$TOKEN_T1" "$(sale_json sale_id="\"$(printf 'B%.0s' {1..64})\"")"
expect_status "sale_id of 64 characters" 201
post_sales "$TOKEN_T1" "$(sale_json sale_id='"V-frac"' business_time='"2026-11-21T18:42:05.123456+01:00"')"
expect_status "time with microseconds" 201
assert_eq "journal rows after the accepted sales" "$((ROWS_BEFORE + 6))" "$(journal_count)"
stop_agent
