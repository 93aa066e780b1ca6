#!/usr/bin/env bash
# A recipe store or stock the agent cannot read (a damaged or hand-edited
# database) never stops the store from selling: the agent starts, takes and
# keeps every sale, and says plainly that stock is not being counted and
# what to do, in its log and on /status.json.
source "$(dirname "$0")/lib.sh"

write_tokens
printf 'damaged-secret-5\n' >"$T/manager-password"
write_config inventory.recipes="$POS_SOURCE_DIR/firmware-config/recipes.csv" \
  api.manager_password_file="$T/manager-password"
start_agent
post_sales "$TOKEN_T1" "$(sale_json sale_id='"RD-1"')"
expect_status "a sale with the shipped recipes" 201
status_json
assert_eq "no recipe error while the store reads" null "$(json_type "$STATUS_JSON" '$.stock.recipes.error')"
stop_agent

# The components table is gone (its guards first, as a person editing the
# file by hand would have to).
sqlite3 -batch -bail "$JOURNAL" "DROP TRIGGER recipe_components_never_deleted;" \
  "DROP TRIGGER recipe_components_never_rewritten;" "DROP TABLE recipe_components;"

start_agent
grep -q 'event=recipes_unreadable' "$AGENT_LOG" ||
  fail "the log says the recipes cannot be read" "event=recipes_unreadable" "$(tail -n 5 "$AGENT_LOG")"
post_sales "$TOKEN_T1" "$(sale_json sale_id='"RD-2"')"
expect_status "a sale while the recipes cannot be read" 201
assert_eq "both sales journaled" 2 "$(journal_count)"
status_json
assert_contains "/status.json says stock is not counted" "stock is not counted" \
  "$(json_get "$STATUS_JSON" '$.stock.recipes.error')"
assert_contains "and what to do" "POST /v1/recipes" "$(json_get "$STATUS_JSON" '$.stock.recipes.error')"
stop_agent

# ---- the stock's material numbering loses a row ------------------------------------
rm -f "$JOURNAL" "$JOURNAL-wal" "$JOURNAL-shm" "$JOURNAL-hwm"
start_agent
post_sales "$TOKEN_T1" "$(sale_json sale_id='"SD-1"')"
expect_status "a sale with stock counted" 201
stop_agent
sqlite3 -batch -bail "$JOURNAL" "DELETE FROM stock_names WHERE rowid = (SELECT min(rowid) FROM stock_names);"
start_agent
grep -q 'event=stock_unreadable' "$AGENT_LOG" ||
  fail "the log says the stock cannot be read" "event=stock_unreadable" "$(tail -n 5 "$AGENT_LOG")"
post_sales "$TOKEN_T1" "$(sale_json sale_id='"SD-2"')"
expect_status "a sale while the stock cannot be read" 201
status_json
assert_contains "/status.json says stock is not counted" "stock is not counted" \
  "$(json_get "$STATUS_JSON" '$.stock.error')"
printf '{"adjustment_id":"SD-DEL","kind":"delivery","material_id":"cheese-mozzarella","unit":"g","quantity_milli":1000,"business_time":"2026-11-21T09:00:00+01:00"}' >"$T/adj.json"
http POST /v1/inventory/adjustments -H 'Content-Type: application/json' --data-binary "@$T/adj.json" \
  -u manager:damaged-secret-5
expect_status "an adjustment while the stock cannot be read" 409
assert_contains "its answer says why" "stock is not counted" "$HTTP_BODY"
stop_agent
