#!/usr/bin/env bash
# Issue 9: /status.json "today" (the page's "Today's sales") counts the
# business day in the store's time zone: each sale on the local date of its
# business_time (its own offset), today being the device's date. Sales by
# channel and by hour, top items, refunds and voids apart; a retried sale
# (duplicate) counts once, yesterday's sale not at all; the figures are the
# same after a restart (rebuilt from the journal, not kept in memory only),
# from JSON rows and, in a second journal, from compact rows
# (journal.compact_rows), in a third from slim rows (journal.row_format =
# slim: business_time left out of the row when it is the canonical text,
# as T1-d's is).
source "$(dirname "$0")/lib.sh"

export TZ=UTC
# Not across midnight: the test's "today" must stay the agent's today.
if (($(date -u +%H%M) >= 2357)); then sleep $((60 * (60 - $(date -u +%-M)) + 5)); fi
TODAY="$(date -u +%F)"
YESTERDAY="$(date -u -d "$TODAY -1 day" +%F)"

write_tokens

# sale ID TIME CHANNEL [kind=... original_sale_id=...]: one 201.
sale() {
  local id="$1" time="$2" channel="$3"
  shift 3
  post_sales "$TOKEN_T1" "$(sale_json sale_id="\"$id\"" business_time="\"$time\"" \
    channel="\"$channel\"" "$@")"
  assert_eq "sale $id: status [$HTTP_BODY]" 201 "$HTTP_STATUS"
}
COLA='[{"sku":"COLA","qty":3,"unit_price":"2.00","tax":"0.00"}]'

sell_the_day() {
  sale T1-a "${TODAY}T09:15:00+00:00" pos
  sale T1-b "${TODAY}T09:45:00+00:00" online
  sale T1-c "${TODAY}T12:05:00+00:00" delivery lines="$COLA" payments='[{"method":"card","amount":"6.00"}]' total='"6.00"'
  # 23:30 at -02:00 is tomorrow in UTC, but the POS's business day is today.
  sale T1-d "${TODAY}T23:30:00-02:00" pickup
  sale T1-old "${YESTERDAY}T20:00:00+00:00" pos
  sale T1-r "${TODAY}T13:00:00+00:00" pos kind='"refund"' original_sale_id='"T1-a"'
  sale T1-v "${TODAY}T13:10:00+00:00" pos kind='"void"' original_sale_id='"T1-b"'
  post_sales "$TOKEN_T1" "$(sale_json sale_id='"T1-a"' business_time="\"${TODAY}T09:15:00+00:00\"")"
  assert_eq "a retry of T1-a is a duplicate" 200 "$HTTP_STATUS"
}

check_today() {
  local when="$1"
  status_json
  local j="$STATUS_JSON"
  assert_eq "$when: today's date" "$TODAY" "$(json_get "$j" '$.today.date')"
  assert_eq "$when: sales today (not yesterday's, not the duplicate, not refund/void)" 4 "$(json_get "$j" '$.today.sales')"
  assert_eq "$when: total today (3 x 26.30 + 6.00)" 8490 "$(json_get "$j" '$.today.total_minor')"
  assert_eq "$when: currency" EUR "$(json_get "$j" '$.today.currency')"
  assert_eq "$when: pos sales" "pos 1 2630" "$(json_get "$j" '$.today.by_channel[0].channel') $(json_get "$j" '$.today.by_channel[0].count') $(json_get "$j" '$.today.by_channel[0].total_minor')"
  assert_eq "$when: delivery sales" "delivery 1 600" "$(json_get "$j" '$.today.by_channel[2].channel') $(json_get "$j" '$.today.by_channel[2].count') $(json_get "$j" '$.today.by_channel[2].total_minor')"
  assert_eq "$when: pickup sales" "pickup 1" "$(json_get "$j" '$.today.by_channel[3].channel') $(json_get "$j" '$.today.by_channel[3].count')"
  assert_eq "$when: hours in the chart" 24 "$(sqlite3 -batch :memory: "SELECT json_array_length($(_sql_quote "$j"), '\$.today.by_hour');")"
  assert_eq "$when: sales at 9h" 2 "$(json_get "$j" '$.today.by_hour[9].count')"
  assert_eq "$when: sales at 12h" 1 "$(json_get "$j" '$.today.by_hour[12].count')"
  assert_eq "$when: sales at 23h (local to the sale)" 1 "$(json_get "$j" '$.today.by_hour[23].count')"
  assert_eq "$when: top item" "PIZZA-MARG-L 6" "$(json_get "$j" '$.today.top_items[0].sku') $(json_get "$j" '$.today.top_items[0].qty')"
  assert_eq "$when: second item" "COLA 3" "$(json_get "$j" '$.today.top_items[1].sku') $(json_get "$j" '$.today.top_items[1].qty')"
  assert_eq "$when: refunds" "1 2630" "$(json_get "$j" '$.today.refunds') $(json_get "$j" '$.today.refunds_minor')"
  assert_eq "$when: voids" "1 2630" "$(json_get "$j" '$.today.voids') $(json_get "$j" '$.today.voids_minor')"
}
for rows in json compact slim; do
  JOURNAL="$T/journal-$rows.db"
  case "$rows" in
    json) write_config journal.compact_rows=false ;;
    compact) write_config journal.compact_rows=true ;;
    slim) write_config journal.row_format=slim ;;
  esac
  start_agent
  sell_the_day
  check_today "$rows rows, as sold"
  stop_agent
  assert_eq "$rows rows: the lines' storage class" \
    "$([[ $rows == json ]] && echo text || echo blob)" \
    "$(sql "SELECT DISTINCT typeof(lines) FROM sales;")"
  assert_eq "$rows rows: the sales whose business_time the row leaves out" \
    "$([[ $rows == slim ]] && echo T1-d)" \
    "$(sql "SELECT group_concat(sale_id) FROM sales WHERE business_time = '';")"
  start_agent
  check_today "$rows rows, after a restart"
  stop_agent
done
