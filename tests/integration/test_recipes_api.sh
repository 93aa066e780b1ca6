#!/usr/bin/env bash
# Recipes through the agent over real HTTP: the shipped set loaded at start
# into an empty journal, a sale consuming the version in force at its
# business time (checked against quantities worked out here from the CSV
# rows, not by the agent's code), POST /v1/recipes behind the manager's
# password, a bad file refused with its line named and nothing changed, a
# new version closing the old one for later sales only, and the set kept
# across a restart (the file does not override the journal's own).
source "$(dirname "$0")/lib.sh"

PASSWORD_FILE="$T/manager-password"
printf 'recipes-secret-42\n' >"$PASSWORD_FILE"
MANAGER=(-u "manager:recipes-secret-42")
SHIPPED="$POS_SOURCE_DIR/firmware-config/recipes.csv"

write_tokens
write_config api.manager_password_file="$PASSWORD_FILE" inventory.recipes="$SHIPPED"
start_agent

material() {
  sqlite3 -batch :memory: "SELECT json_extract(value, '\$.$1') FROM json_each($(_sql_quote "$STATUS_JSON"), '\$.stock.materials') WHERE json_extract(value, '\$.material_id') = $(_sql_quote "$2");"
}

post_recipes() {
  printf '%s' "$1" >"$T/recipes.csv"
  shift
  http POST /v1/recipes -H 'Content-Type: text/csv' --data-binary "@$T/recipes.csv" "$@"
}

# --- the shipped set, loaded at start ------------------------------------------
deadline=$((SECONDS + 10))
while :; do
  status_json
  [[ "$(json_get "$STATUS_JSON" '$.stock.recipes.versions')" -gt 0 ]] && break
  ((SECONDS < deadline)) || fail "the shipped recipes are loaded at start" "versions > 0" "$STATUS_JSON"
  sleep 0.1
done
VERSIONS="$(json_get "$STATUS_JSON" '$.stock.recipes.versions')"
assert_eq "mozzarella's unit, from the recipes, before any sale" g "$(material unit cheese-mozzarella)"
assert_eq "mozzarella on hand before any sale" 0 "$(material on_hand_milli cheese-mozzarella)"

# 2 x PIZZA-MARG-L on 2026-11-21: the L base's version 2 (from 2026-09-01) has
# 150 g of mozzarella and one dough ball; the pizza's own basil is 4 g at a
# yield of 70 %: ceil(4000 * 100 / 70) = 5715 mg each.
post_sales "$TOKEN_T1" "$(sale_json sale_id='"RCP-S1"')"
expect_status "a sale of 2 PIZZA-MARG-L" 201
status_json
assert_eq "mozzarella after 2 pizzas" -300000 "$(material on_hand_milli cheese-mozzarella)"
assert_eq "dough balls after 2 pizzas" -2000 "$(material on_hand_milli dough-ball-l)"
assert_eq "basil after 2 pizzas (yield)" -11430 "$(material on_hand_milli basil-fresh)"
assert_eq "no unmapped item" 0 "$(json_get "$STATUS_JSON" '$.stock.unmapped_items')"

# --- POST /v1/recipes ------------------------------------------------------------
HEADER='sku,version,valid_from,component,kind,quantity_milli,unit,yield_pct'
V2="$HEADER
PIZZA-MARG-L,2,2026-12-01T00:00:00+01:00,PIZZA-BASE-L,recipe,1000,piece,
PIZZA-MARG-L,2,2026-12-01T00:00:00+01:00,cheese-mozzarella,material,50000,g,
"
post_recipes "$V2"
expect_status "a recipe set without the password" 401
http POST /v1/recipes -H 'Content-Type: text/plain' --data-binary "$V2" "${MANAGER[@]}"
expect_status "a recipe set that is not text/csv" 415
post_recipes "$HEADER
PIZZA-MARG-L,2,2026-12-01T00:00:00+01:00,PIZZA-BASE-L,recipe,1000,piece,
PIZZA-MARG-L,2,2026-12-01T00:00:00+01:00,cheese-mozzarella,material,0,g,
" "${MANAGER[@]}"
expect_error "a file with a zero quantity" 400 body
assert_contains "the error names the line" "line 3" "$(json_get "$HTTP_BODY" '$.error')"
assert_contains "the error names the field" "quantity_milli" "$(json_get "$HTTP_BODY" '$.error')"
status_json
assert_eq "a refused file changes nothing" "$VERSIONS" "$(json_get "$STATUS_JSON" '$.stock.recipes.versions')"

post_recipes "$V2" "${MANAGER[@]}"
expect_status "a new version of PIZZA-MARG-L from 2026-12-01" 200
assert_eq "versions stored" 1 "$(json_get "$HTTP_BODY" '$.versions_stored')"
post_recipes "$V2" "${MANAGER[@]}"
expect_status "the same file again" 200
assert_eq "nothing stored twice" 0 "$(json_get "$HTTP_BODY" '$.versions_stored')"

# After the change: extra 50 g on top of the base's 150 g. A sale journaled
# late (sold on 2026-11-21) still uses the version it was sold under.
post_sales "$TOKEN_T1" "$(sale_json sale_id='"RCP-S2"' business_time='"2026-12-02T12:00:00+01:00"')"
expect_status "a sale after the change" 201
post_sales "$TOKEN_T1" "$(sale_json sale_id='"RCP-S3"')"
expect_status "a late sale from before the change" 201
status_json
assert_eq "mozzarella: 300 g + 2 x 200 g + 300 g" -1000000 "$(material on_hand_milli cheese-mozzarella)"
assert_eq "basil: only the old version has it" -22860 "$(material on_hand_milli basil-fresh)"

# --- a restart keeps the journal's set ---------------------------------------------
kill_agent
start_agent
status_json
assert_eq "versions after kill -9" "$((VERSIONS + 1))" "$(json_get "$STATUS_JSON" '$.stock.recipes.versions')"
assert_eq "mozzarella after kill -9" -1000000 "$(material on_hand_milli cheese-mozzarella)"
post_sales "$TOKEN_T1" "$(sale_json sale_id='"RCP-S4"' business_time='"2026-12-03T12:00:00+01:00"')"
expect_status "a sale after the restart" 201
status_json
assert_eq "the new version is still in force" -1400000 "$(material on_hand_milli cheese-mozzarella)"
stop_agent
