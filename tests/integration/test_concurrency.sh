#!/usr/bin/env bash
# 32 terminals posting at once: every sale acknowledged exactly once, one row
# and one distinct seq each, and every acknowledged (sale_id, seq) is what
# the journal holds. Resending everything concurrently returns the same seqs.
source "$(dirname "$0")/lib.sh"

CLIENTS=32
PER_CLIENT=500
TOTAL=$((CLIENTS * PER_CLIENT))

write_tokens
write_config
start_agent

run_load --clients "$CLIENTS" --sales "$PER_CLIENT" --prefix C --acked "$T/acked1"
log "single sales: $LOAD_OUT"
assert_eq "pos-load sales sent" "$TOTAL" "$(load_field sales)"
assert_eq "pos-load sales acknowledged as new" "$TOTAL" "$(load_field ok)"
assert_eq "pos-load duplicates" 0 "$(load_field duplicate)"
assert_eq "pos-load failures" 0 "$(load_field failed)"
assert_eq "lines in the acked file" "$TOTAL" "$(wc -l <"$T/acked1" | tr -d ' ')"

assert_eq "journal rows" "$TOTAL" "$(journal_count)"
assert_eq "distinct seqs" "$TOTAL" "$(sql 'SELECT count(DISTINCT seq) FROM sales;')"
assert_eq "distinct sale_ids" "$TOTAL" "$(sql 'SELECT count(DISTINCT sale_id) FROM sales;')"
assert_eq "distinct acknowledged seqs" "$TOTAL" "$(cut -d' ' -f2 "$T/acked1" | sort -u | wc -l | tr -d ' ')"
check_acked "$T/acked1" "32 x 500 single sales"
assert_eq "acknowledged sales found in the journal" "$TOTAL" "$ACKED_COUNT"
assert_eq "rows whose total is the sum of their lines" "$TOTAL" "$(sql "
  SELECT count(*) FROM sales s WHERE total_minor = (
    SELECT sum(json_extract(l.value, '$.qty') * json_extract(l.value, '$.unit_price')
               - json_extract(l.value, '$.discount') + json_extract(l.value, '$.tax'))
    FROM json_each(s.lines) l);")"

# The same sales again, concurrently: all duplicates with the first seqs.
run_load --clients "$CLIENTS" --sales "$PER_CLIENT" --prefix C --acked "$T/acked2"
log "resent: $LOAD_OUT"
assert_eq "resent: new" 0 "$(load_field ok)"
assert_eq "resent: duplicates" "$TOTAL" "$(load_field duplicate)"
assert_eq "resent: same (sale_id, seq) pairs" "" \
  "$(diff <(sort "$T/acked1") <(sort "$T/acked2") | head -n 5)"
assert_eq "journal rows after resending" "$TOTAL" "$(journal_count)"

# Arrays of 50 from 8 clients while 8 others post single sales.
"$LOAD_BIN" --url "$AGENT_URL" --token "$TOKEN_T1" --terminal T1 --time-base "$LOAD_TIME_BASE" \
  --clients 8 --sales 250 --prefix S --acked "$T/acked3" >"$T/load.single" 2>&1 &
SINGLE_PID=$!
on_cleanup "kill $SINGLE_PID 2>/dev/null; wait $SINGLE_PID 2>/dev/null"
run_load --clients 8 --sales 1000 --batch 50 --prefix B --acked "$T/acked3"
log "arrays: $LOAD_OUT"
assert_eq "arrays: new" 8000 "$(load_field ok)"
rc=0
wait "$SINGLE_PID" || rc=$?
assert_eq "concurrent single-sale pos-load exit status ($(cat "$T/load.single"))" 0 "$rc"

TOTAL=$((TOTAL + 8000 + 2000))
assert_eq "journal rows after arrays" "$TOTAL" "$(journal_count)"
assert_eq "distinct seqs after arrays" "$TOTAL" "$(sql 'SELECT count(DISTINCT seq) FROM sales;')"
check_acked "$T/acked3" "arrays and single sales"
assert_eq "acknowledged arrays and single sales in the journal" 10000 "$ACKED_COUNT"

status_json
assert_eq "status.json sales_journaled" "$TOTAL" "$(json_get "$STATUS_JSON" '$.sales_journaled')"
assert_eq "status.json last_seq" "$(journal_max_seq)" "$(json_get "$STATUS_JSON" '$.last_seq')"
assert_eq "journal integrity" ok "$(sql 'PRAGMA integrity_check;')"
stop_agent
