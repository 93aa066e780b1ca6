#!/usr/bin/env bash
# POST /v1/inventory/adjustments over real HTTP: the manager's password (a
# terminal token is not enough), 201 once durable with a seq from the same
# sequence as sales, 200 duplicate for a retry, 409 for other content under
# the same id, 400 naming the field with nothing written (arrays too), and
# /status.json showing on-hand, the low-stock flag and unmapped SKUs, the
# same after kill -9.
source "$(dirname "$0")/lib.sh"

PASSWORD_FILE="$T/manager-password"
printf 'stock-room-secret-42\n' >"$PASSWORD_FILE"
MANAGER=(-u "manager:stock-room-secret-42")

# A recipe set without the pizza the test sells: its lines are unmapped.
cat >"$T/recipes.csv" <<'EOF'
sku,version,valid_from,component,kind,quantity_milli,unit,yield_pct
DRINK-COLA-033,1,2026-01-01T00:00:00+01:00,cola-can,material,1000,piece,
EOF

write_tokens
write_config api.manager_password_file="$PASSWORD_FILE" inventory.recipes="$T/recipes.csv" \
  inventory.low_stock="MOZZARELLA=2000000,FLOUR=1000"
start_agent

# post_adjustments BODY [curl args...]
post_adjustments() {
  printf '%s' "$1" >"$T/adjustment.json"
  shift
  http POST /v1/inventory/adjustments -H 'Content-Type: application/json' \
    --data-binary "@$T/adjustment.json" "$@"
}

# adjustment_json ID KIND MATERIAL UNIT QUANTITY_MILLI [extra raw JSON members]
adjustment_json() {
  printf '{"adjustment_id":"%s","kind":"%s","material_id":"%s","unit":"%s","quantity_milli":%s,"business_time":"2026-11-21T07:30:00+01:00"%s}' \
    "$1" "$2" "$3" "$4" "$5" "${6:+,$6}"
}

adjustment_rows() { sql "SELECT count(*) FROM adjustments;"; }

# material FIELD MATERIAL: a field of MATERIAL's entry in the last status_json.
material() {
  sqlite3 -batch :memory: "SELECT json_extract(value, '\$.$1') FROM json_each($(_sql_quote "$STATUS_JSON"), '\$.stock.materials') WHERE json_extract(value, '\$.material_id') = $(_sql_quote "$2");"
}

DELIVERY="$(adjustment_json DEL-1 delivery MOZZARELLA g 5000000 '"reason":"weekly order","note":"driver late"')"

# --- who may adjust ---------------------------------------------------------------
post_adjustments "$DELIVERY"
expect_status "an adjustment without credentials" 401
post_adjustments "$DELIVERY" -H "Authorization: Bearer $TOKEN_T1"
expect_status "an adjustment with a terminal token" 401
post_adjustments "$DELIVERY" -u "manager:wrong"
expect_status "an adjustment with a wrong password" 401
assert_eq "nothing journaled without the password" 0 "$(adjustment_rows)"

# --- journaled like sales, in the sales' seq space ---------------------------------
post_sales "$TOKEN_T1" "$(sale_json sale_id='"INV-S1"')"
expect_status "a sale" 201
SEQ_SALE="$(json_get "$HTTP_BODY" '$.seq')"

post_adjustments "$DELIVERY" "${MANAGER[@]}"
expect_status "a delivery" 201
SEQ_DEL="$(json_get "$HTTP_BODY" '$.seq')"
assert_eq "the delivery takes the next seq after the sale" "$((SEQ_SALE + 1))" "$SEQ_DEL"

post_adjustments "$DELIVERY" "${MANAGER[@]}"
expect_status "the same delivery again" 200
assert_eq "duplicate seq" "$SEQ_DEL" "$(json_get "$HTTP_BODY" '$.seq')"
assert_eq "duplicate flag" true "$(json_type "$HTTP_BODY" '$.duplicate')"

post_adjustments "$(adjustment_json DEL-1 delivery MOZZARELLA g 6000000)" "${MANAGER[@]}"
expect_error "DEL-1 with another quantity" 409 adjustment_id
assert_eq "409 names the journaled seq" "$SEQ_DEL" "$(json_get "$HTTP_BODY" '$.seq')"
assert_eq "one row for DEL-1" 1 "$(adjustment_rows)"

post_sales "$TOKEN_T1" "$(sale_json sale_id='"INV-S2"')"
expect_status "a sale after the delivery" 201
assert_eq "sales go on after the adjustment's seq" "$((SEQ_DEL + 1))" "$(json_get "$HTTP_BODY" '$.seq')"

# --- 400 naming the field, nothing written -----------------------------------------
post_adjustments "$(adjustment_json BAD-1 theft MOZZARELLA g 1000)" "${MANAGER[@]}"
expect_error "an unknown kind" 400 kind
post_adjustments "$(adjustment_json BAD-2 waste MOZZARELLA g -5)" "${MANAGER[@]}"
expect_error "a negative waste" 400 quantity_milli
post_adjustments "$(adjustment_json BAD-3 waste MOZZARELLA g 1.5)" "${MANAGER[@]}"
expect_error "a fractional quantity" 400 quantity_milli
post_adjustments "$(adjustment_json BAD-4 waste MOZZARELLA kg 1000)" "${MANAGER[@]}"
expect_error "a unit other than the material's" 400 unit
post_adjustments '{"adjustment_id":"BAD-5","kind":"count","material_id":"FLOUR","unit":"g","quantity_milli":1,"business_time":"2026-11-21T07:30:00"}' "${MANAGER[@]}"
expect_error "a time without an offset" 400 business_time
post_adjustments "$(adjustment_json BAD-6 count FLOUR g 1 '"colour":"red"')" "${MANAGER[@]}"
expect_error "an unknown field" 400 colour
post_adjustments "[$(adjustment_json ARR-1 delivery FLOUR g 9000000),$(adjustment_json ARR-2 waste FLOUR g 0)]" "${MANAGER[@]}"
expect_error "an array with one bad adjustment" 400 "[1].quantity_milli"
assert_eq "nothing of the refused requests journaled" 1 "$(adjustment_rows)"
http POST /v1/inventory/adjustments -H 'Content-Type: text/plain' --data-binary "$DELIVERY" \
  "${MANAGER[@]}"
expect_status "a body that is not JSON by its type" 415

# --- an array, a count, waste: on-hand on /status.json -----------------------------
post_adjustments "[$(adjustment_json ARR-1 delivery FLOUR g 9000000),$(adjustment_json ARR-2 waste FLOUR g 500000)]" "${MANAGER[@]}"
expect_status "an array of two" 201
assert_eq "array results" "ARR-1,ARR-2" "$(sqlite3 :memory: "SELECT group_concat(json_extract(value, '\$.adjustment_id')) FROM json_each($(_sql_quote "$HTTP_BODY"), '\$.results');")"
post_adjustments "$(adjustment_json CNT-1 count MOZZARELLA g 1500000 '"reason":"Sunday count"')" "${MANAGER[@]}"
expect_status "a count" 201

status_json
assert_eq "mozzarella on hand = the count" 1500000 "$(material on_hand_milli MOZZARELLA)"
assert_eq "mozzarella unit" g "$(material unit MOZZARELLA)"
assert_eq "mozzarella is low (threshold 2 kg)" 1 "$(material low_stock MOZZARELLA)"
assert_eq "flour on hand = 9 kg - 0.5 kg" 8500000 "$(material on_hand_milli FLOUR)"
assert_eq "flour is not low" 0 "$(material low_stock FLOUR)"
# PIZZA-MARG-L has no recipe here: its lines are unmapped, and the sales
# were taken all the same.
assert_eq "unmapped items (2 sales of 2 pizzas)" 4 "$(json_get "$STATUS_JSON" '$.stock.unmapped_items')"
assert_eq "unmapped SKU" PIZZA-MARG-L "$(json_get "$STATUS_JSON" '$.stock.unmapped_skus[0].sku')"
assert_eq "its items" 4 "$(json_get "$STATUS_JSON" '$.stock.unmapped_skus[0].items')"

# --- kill -9: on-hand comes back from the journal -------------------------------
kill_agent
start_agent
status_json
assert_eq "mozzarella after kill -9" 1500000 "$(material on_hand_milli MOZZARELLA)"
assert_eq "flour after kill -9" 8500000 "$(material on_hand_milli FLOUR)"
assert_eq "unmapped items after kill -9" 4 "$(json_get "$STATUS_JSON" '$.stock.unmapped_items')"
post_adjustments "$DELIVERY" "${MANAGER[@]}"
expect_status "the first delivery retried after the restart" 200
assert_eq "its seq after the restart" "$SEQ_DEL" "$(json_get "$HTTP_BODY" '$.seq')"
stop_agent
