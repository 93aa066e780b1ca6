#!/usr/bin/env bash
# The spool directory (issue 14, item 2): NDJSON files a till drops are
# journaled whole or not at all. A good file ends in done/ with its sales
# journaled once; a file with a bad line ends in failed/ with NAME.reason
# naming the line, the field and POST /v1/sales's own message for that
# sale, and nothing of it journaled; an array on a line fails too; a file
# still named .tmp, or still being appended to, is not taken; the same
# file dropped twice journals nothing twice; a sale_id journaled with other
# content fails the whole file; /status.json and /metrics count all of it; a spool
# directory that cannot be used stops the start with exit 78, naming it.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/spool_lib.sh"

write_tokens
# 2 s to settle: the file appended to below every 0.3 s must look busy even
# when a loaded machine stretches a sleep to a second.
spool_config spool.settle=2s
start_agent
for sub in done failed; do
  [[ -d "$SPOOL/$sub" ]] || fail "the agent makes $sub/ in the spool directory" "a directory" \
    "$(ls "$SPOOL")"
done

# --- a good file ----------------------------------------------------------------------------------
log "a good file: done/, each sale journaled once"
spool_drop good.ndjson "$(spool_sale G-1)" "" "$(spool_sale G-2)" "$(spool_sale G-3 \
  'lines=[{"sku":"COLA-33","qty":3,"unit_price":"3.00"}]' 'payments=[{"method":"cash","amount":"9.00"}]' \
  'total="9.00"')"
spool_wait_file "$SPOOL/done/good.ndjson"
[[ ! -e "$SPOOL/good.ndjson" ]] || fail "good.ndjson left the spool directory" "moved" "still there"
assert_eq "the good file's sales and totals, each once" "G-1|2630 G-2|2630 G-3|900" \
  "$(sql "SELECT sale_id || '|' || total_minor FROM sales WHERE sale_id LIKE 'G-%' ORDER BY sale_id;" | tr '\n' ' ' | sed 's/ $//')"
assert_eq "rows of the good file" 3 "$(sql "SELECT count(*) FROM sales WHERE sale_id LIKE 'G-%';")"
assert_contains "the position names the file, at its end" " good.ndjson" "$(spool_position)"

# --- a bad line -------------------------------------------------------------------------------------
log "a file with a bad line: failed/ with the line, the field and the API's message"
BAD_LINE="$(spool_sale B-3 'lines=[{"sku":"PIZZA-MARG-L","qty":0,"unit_price":"12.50"}]')"
spool_drop bad.ndjson "$(spool_sale B-1)" "$(spool_sale B-2)" "$BAD_LINE" "$(spool_sale B-4)"
spool_wait_file "$SPOOL/failed/bad.ndjson"
spool_wait_file "$SPOOL/failed/bad.ndjson.reason" 5
REASON="$(cat "$SPOOL/failed/bad.ndjson.reason")"
post_sales "$TOKEN_T1" "$BAD_LINE"
expect_error "the bad line posted alone" 400 "lines[0].qty"
API_ERROR="$(json_get "$HTTP_BODY" '$.error')"
assert_contains "the reason names line 3 and the field" "line 3, field lines[0].qty: " "$REASON"
assert_contains "the reason says what POST /v1/sales says of that sale" "$API_ERROR" "$REASON"
assert_contains "the reason says nothing was journaled" "Nothing of bad.ndjson was journaled" \
  "$REASON"
assert_eq "none of the bad file's sales is journaled" 0 \
  "$(sql "SELECT count(*) FROM sales WHERE sale_id LIKE 'B-%';")"

log "an array on a line fails its file"
spool_drop array.ndjson "[$(spool_sale A-1)]"
spool_wait_file "$SPOOL/failed/array.ndjson.reason"
assert_contains "the reason says one object per line" "line 1: a line of an .ndjson file holds one sale object, not an array" \
  "$(cat "$SPOOL/failed/array.ndjson.reason")"
assert_eq "the array's sale is not journaled" 0 "$(sql "SELECT count(*) FROM sales WHERE sale_id = 'A-1';")"

# --- files not complete yet ----------------------------------------------------------------------
log "a file still named .tmp or .part, or being appended to, is not taken"
printf '%s\n' "$(spool_sale P-1)" >"$SPOOL/late.ndjson.tmp"
printf '%s\n' "$(spool_sale P-2)" >"$SPOOL/later.ndjson.part"
printf '%s\n' "$(spool_sale S-1)" >"$SPOOL/slow.ndjson"
# Appended to every 0.3 s for about 3 s: never unchanged for the 2 s settle time.
for i in $(seq 2 10); do
  sleep 0.3
  [[ ! -e "$SPOOL/done/slow.ndjson" && ! -e "$SPOOL/failed/slow.ndjson" ]] ||
    fail "a file appended to within the settle time is not taken" "slow.ndjson in the spool" \
      "moved after $((i - 1)) lines"
  printf '%s\n' "$(spool_sale "S-$i")" >>"$SPOOL/slow.ndjson"
done
assert_eq "nothing of the file being appended to is journaled yet" 0 \
  "$(sql "SELECT count(*) FROM sales WHERE sale_id LIKE 'S-%';")"
spool_wait_file "$SPOOL/done/slow.ndjson"
assert_eq "once settled, every line of it is journaled" 10 \
  "$(sql "SELECT count(*) FROM sales WHERE sale_id LIKE 'S-%';")"
assert_eq ".tmp and .part files stay where they are" "late.ndjson.tmp later.ndjson.part" \
  "$(cd "$SPOOL" && ls late.ndjson.tmp later.ndjson.part | tr '\n' ' ' | sed 's/ $//')"
assert_eq "nothing of them is journaled" 0 "$(sql "SELECT count(*) FROM sales WHERE sale_id LIKE 'P-%';")"
mv "$SPOOL/late.ndjson.tmp" "$SPOOL/late.ndjson"
spool_wait_file "$SPOOL/done/late.ndjson"
assert_eq "renamed, it is taken" 1 "$(sql "SELECT count(*) FROM sales WHERE sale_id = 'P-1';")"

# --- the same file twice -----------------------------------------------------------------------------
log "the same file dropped twice: no second row"
cp "$SPOOL/done/good.ndjson" "$SPOOL/.again.tmp"
mv "$SPOOL/.again.tmp" "$SPOOL/good.ndjson"
spool_wait_file "$SPOOL/done/good.ndjson.1"
assert_eq "the first copy is kept in done/" 1 "$(grep -c . "$SPOOL/done/good.ndjson" | awk '{print ($1 == 3)}')"
assert_eq "rows of the good file after its second drop" 3 \
  "$(sql "SELECT count(*) FROM sales WHERE sale_id LIKE 'G-%';")"

# --- a conflict with the journal ------------------------------------------------------------------------
log "a sale_id journaled with other content fails the whole file"
post_sales "$TOKEN_T1" "$(spool_sale C-2)"
expect_status "C-2 posted" 201
CONFLICT_SEQ="$(sql "SELECT seq FROM sales WHERE sale_id = 'C-2';")"
spool_drop conflict.ndjson "$(spool_sale C-1)" "$(spool_sale C-2 'cashier_id="E999"')" "$(spool_sale C-3)"
spool_wait_file "$SPOOL/failed/conflict.ndjson.reason"
REASON="$(cat "$SPOOL/failed/conflict.ndjson.reason")"
assert_contains "the reason names line 2, sale_id and the journaled seq" \
  "line 2, field sale_id: sale_id C-2 was already journaled as seq $CONFLICT_SEQ with different content" \
  "$REASON"
assert_eq "none of the conflicting file's new sales is journaled" 0 \
  "$(sql "SELECT count(*) FROM sales WHERE sale_id IN ('C-1', 'C-3');")"
assert_eq "the posted sale is unchanged" "E042" "$(sql "SELECT cashier_id FROM sales WHERE sale_id = 'C-2';")"

log "a sale_id twice in one file with other content fails it too"
spool_drop twice.ndjson "$(spool_sale D-1)" "$(spool_sale D-2)" "$(spool_sale D-1 'cashier_id="E999"')"
spool_wait_file "$SPOOL/failed/twice.ndjson.reason"
assert_contains "the reason names both lines" "line 3, field sale_id: sale_id D-1 is also on line 1 of this file" \
  "$(cat "$SPOOL/failed/twice.ndjson.reason")"
assert_eq "nothing of it is journaled" 0 "$(sql "SELECT count(*) FROM sales WHERE sale_id LIKE 'D-%';")"

# --- status ----------------------------------------------------------------------------------------------
status_json
assert_eq "sources.spool.dir" "$SPOOL" "$(json_get "$STATUS_JSON" '$.sources.spool.dir')"
assert_eq "sources.spool.files_done (good twice, slow, late)" 4 "$(json_get "$STATUS_JSON" '$.sources.spool.files_done')"
assert_eq "sources.spool.files_failed (bad, array, conflict, twice)" 4 "$(json_get "$STATUS_JSON" '$.sources.spool.files_failed')"
assert_eq "sources.spool.files_pending" 0 "$(json_get "$STATUS_JSON" '$.sources.spool.files_pending')"
assert_eq "sources.spool.sales_ingested (G 3, S 10, P 1)" 14 "$(json_get "$STATUS_JSON" '$.sources.spool.sales_ingested')"
assert_eq "sources.spool.sales_duplicate (G again)" 3 "$(json_get "$STATUS_JSON" '$.sources.spool.sales_duplicate')"
assert_eq "sources.spool.last_failure.file" twice.ndjson "$(json_get "$STATUS_JSON" '$.sources.spool.last_failure.file')"
assert_contains "sources.spool.last_failure.reason" "line 3, field sale_id" \
  "$(json_get "$STATUS_JSON" '$.sources.spool.last_failure.reason')"
assert_eq "sources.spool.current" null "$(json_type "$STATUS_JSON" '$.sources.spool.current')"
METRICS_PORT="$(sed -n 's/.*event=metrics_listening.*[[:space:]]port=\([0-9][0-9]*\).*/\1/p' "$AGENT_LOG" | head -n 1)"
[[ "$METRICS_PORT" =~ ^[0-9]+$ ]] || fail "the agent logs event=metrics_listening with its port" "port=<N>" "$METRICS_PORT"
METRICS="$(curl -sS --max-time 10 "http://127.0.0.1:$METRICS_PORT/metrics")"
for expected in "pos_agent_spool_files_done_total 4" "pos_agent_spool_files_failed_total 4" \
  "pos_agent_spool_sales_total 14" "pos_agent_spool_duplicate_sales_total 3" "pos_agent_spool_files_pending 0"; do
  grep -qx "$expected" <<<"$METRICS" || fail "/metrics has $expected" "$expected" \
    "$(grep '^pos_agent_spool' <<<"$METRICS" | tr '\n' ' ')"
done
stop_agent

# --- a spool directory that cannot be used ----------------------------------------------------------------
log "a spool directory that does not exist: exit 78, naming it"
spool_config spool.dir="$T/no-such-spool"
rc=0
timeout 30 "$AGENT_BIN" --config "$CONFIG" 2>"$T/nodir.log" >/dev/null || rc=$?
assert_eq "the agent's exit status (78: a person must act)" 78 "$rc"
assert_contains "the message names the directory" "spool.dir $T/no-such-spool cannot be used" \
  "$(cat "$T/nodir.log")"
spool_config spool.dir=
start_agent
status_json
assert_eq "sources.spool is null when the spool is off" null "$(json_type "$STATUS_JSON" '$.sources.spool')"
stop_agent
