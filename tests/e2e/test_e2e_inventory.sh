#!/usr/bin/env bash
# Issue 8, item 6: the store's stock, end to end. 5,000 sales and 200
# adjustments (deliveries, waste, and a stock count) cross a mid-day recipe
# change, with a kill -9 of the agent and of the collector half-way and a
# kill -9 of the agent while a POST is in flight. Afterwards the sum of
# pos.inventory-deltas.v1 per material and reason equals a recomputation
# made here, independently of the agent's code, from the sales in
# pos.sales.v1, the recipe files (SQL over the CSV) and the adjustments this
# test posted; and the on-hand of /status.json equals the same figure.
#
# The recipes: v1 from the start of the month, loaded from the agent's
# configured file; v2 (more mozzarella and basil on a margherita, more
# flour in the dough) from 14:00 UTC on the business day, posted with the
# manager's password before the first sale after it. Sales that a terminal
# kept offline are journaled after v2 is loaded but carry business times
# before 14:00: they consume v1. A modifier (extra cheese) depletes stock,
# "no onion" is mapped and consumes nothing, garlic bread has no recipe
# (unmapped, never blocking the sale), one material has a yield. Every 50th
# sale is refunded (inventory.refunds_restock = true), from the recipe its
# original was sold under.
source "$(dirname "$0")/lib.sh"

SALES="${INVENTORY_SALES:-5000}"
CHUNK=50
CHANGE_AT=1800 # sales 1..1799 are before 14:00, 1800.. after (8 s apart from 10:00)
PASSWORD_FILE="$T/manager-password"
printf 'stock-room-secret-42\n' >"$PASSWORD_FILE"
MANAGER=(-u "manager:stock-room-secret-42")

cat >"$T/recipes-v1.csv" <<'EOF'
sku,version,valid_from,component,kind,quantity_milli,unit,yield_pct
DOUGH-L,1,2026-11-01T00:00:00Z,flour,material,250000,g,
DOUGH-L,1,2026-11-01T00:00:00Z,water,material,150000,ml,
DOUGH-L,1,2026-11-01T00:00:00Z,yeast,material,5000,g,
PIZZA-MARG-L,1,2026-11-01T00:00:00Z,DOUGH-L,recipe,1000,piece,
PIZZA-MARG-L,1,2026-11-01T00:00:00Z,tomato,material,100000,g,
PIZZA-MARG-L,1,2026-11-01T00:00:00Z,mozzarella,material,150000,g,
PIZZA-DIAV-L,1,2026-11-01T00:00:00Z,DOUGH-L,recipe,1000,piece,
PIZZA-DIAV-L,1,2026-11-01T00:00:00Z,tomato,material,100000,g,
PIZZA-DIAV-L,1,2026-11-01T00:00:00Z,mozzarella,material,120000,g,
PIZZA-DIAV-L,1,2026-11-01T00:00:00Z,salami,material,60000,g,85
MOD-EXTRA-CHEESE,1,2026-11-01T00:00:00Z,mozzarella,material,50000,g,
MOD-NO-ONION,1,2026-11-01T00:00:00Z,,none,,,
COLA-33,1,2026-11-01T00:00:00Z,cola-can,material,1000,piece,
EOF
cat >"$T/recipes-v2.csv" <<'EOF'
sku,version,valid_from,component,kind,quantity_milli,unit,yield_pct
DOUGH-L,2,2026-11-25T14:00:00Z,flour,material,260000,g,
DOUGH-L,2,2026-11-25T14:00:00Z,water,material,150000,ml,
DOUGH-L,2,2026-11-25T14:00:00Z,yeast,material,5000,g,
PIZZA-MARG-L,2,2026-11-25T14:00:00Z,DOUGH-L,recipe,1000,piece,
PIZZA-MARG-L,2,2026-11-25T14:00:00Z,tomato,material,100000,g,
PIZZA-MARG-L,2,2026-11-25T14:00:00Z,mozzarella,material,170000,g,
PIZZA-MARG-L,2,2026-11-25T14:00:00Z,basil,material,2000,g,
EOF

SKUS=(PIZZA-MARG-L PIZZA-DIAV-L MOD-EXTRA-CHEESE MOD-NO-ONION COLA-33 GARLIC-BREAD)
PRICES=(1250 1390 150 0 300 450)
BASE_S=$(date -u -d 2026-11-25T10:00:00Z +%s)

# utc_time EPOCH: sets $UTC_TIME to that second in RFC 3339 (UTC), with
# bash's own strftime: the test builds 5,000 sales, and a fork per sale
# (date, a command substitution) made up most of its time.
utc_time() { TZ=UTC printf -v UTC_TIME '%(%Y-%m-%dT%H:%M:%SZ)T' "$1"; }

# money MINOR: sets $MONEY to MINOR as a decimal amount ("12.50").
money() { printf -v MONEY '%d.%02d' $(($1 / 100)) $(($1 % 100)); }

# sale_of I [PREFIX KIND]: sets $SALE to sale I's JSON, the same every time
# it is asked for.
sale_of() {
  local i="$1" id="${2:-E}-$1" kind="${3:-sale}" lines="" sep="" total=0 n k sku qty later=0
  local original=""
  [[ "$kind" == refund ]] && later=60 && original="\"original_sale_id\":\"E-$i\","
  utc_time $((BASE_S + i * 8 + later))
  n=$((1 + i % 3))
  local firsts=(0 1 4 5) used=""
  for ((k = 0; k < n; k++)); do
    # A sale starts with something priced (pizza, cola, garlic bread);
    # modifiers and more follow, each SKU once.
    if ((k == 0)); then sku=${firsts[$((i % 4))]}; else sku=$(((i * 7 + k) % 6)); fi
    [[ " $used " == *" $sku "* ]] && continue
    used+=" $sku"
    qty=$((1 + (i + k) % 2))
    money "${PRICES[sku]}"
    lines+="$sep{\"sku\":\"${SKUS[$sku]}\",\"qty\":$qty,\"unit_price\":\"$MONEY\"}"
    total=$((total + qty * PRICES[sku]))
    sep=","
  done
  money "$total"
  printf -v SALE '{"sale_id":"%s","kind":"%s",%s"terminal_id":"T1","business_time":"%s","currency":"EUR","lines":[%s],"payments":[{"method":"card","amount":"%s"}],"total":"%s"}' \
    "$id" "$kind" "$original" "$UTC_TIME" "$lines" "$MONEY" "$MONEY"
}

# held I: is sale I one a terminal kept offline until the end of the day?
held() { (($1 % 97 == 0 && $1 < CHANGE_AT)); }

# chunk_json FROM TO: the sales FROM..TO (not held) and a refund after
# every 50th, as one JSON array.
chunk_json() {
  local i sep="" out="["
  for ((i = $1; i <= $2; i++)); do
    held "$i" && continue
    sale_of "$i"
    out+="$sep$SALE"
    sep=","
    if ((i % 50 == 0)); then
      sale_of "$i" R refund
      out+=",$SALE"
    fi
  done
  printf '%s]' "$out"
}

# adjustment_json ID KIND MATERIAL UNIT QUANTITY_MILLI TIME
adjustment_json() {
  printf '{"adjustment_id":"%s","kind":"%s","material_id":"%s","unit":"%s","quantity_milli":%s,"business_time":"%s"}' "$@"
}

# post_until_taken WHAT PATH FILE [curl args]: POSTs FILE until the agent
# answers 201 or 200 (a retry of what it took before), waiting out a 503.
# Anything else fails the test.
post_until_taken() {
  local what="$1" path="$2" file="$3" tries=0
  shift 3
  while :; do
    http POST "$path" -H 'Content-Type: application/json' --data-binary "@$file" "$@"
    case "$HTTP_STATUS" in
      200 | 201) return 0 ;;
      503) ((++tries < 60)) || fail "$what: taken within a minute of 503s" "201 or 200" "503: $HTTP_BODY"
        sleep 1 ;;
      *) fail "$what: HTTP status (body: ${HTTP_BODY:0:300})" "201 or 200" "$HTTP_STATUS" ;;
    esac
  done
}

post_chunk() { # post_chunk FROM TO
  chunk_json "$1" "$2" >"$T/chunk.json"
  post_until_taken "sales $1-$2" /v1/sales "$T/chunk.json" -H "Authorization: Bearer $TOKEN_T1"
}

ADJUSTED=() # "id kind material quantity" of every adjustment taken
post_adjustment() { # post_adjustment ID KIND MATERIAL UNIT QUANTITY_MILLI TIME
  adjustment_json "$@" >"$T/adjustment.json"
  post_until_taken "adjustment $1" /v1/inventory/adjustments "$T/adjustment.json" "${MANAGER[@]}"
  ADJUSTED+=("$1 $2 $3 $5 $counted")
}

make_pki
start_broker --partitions 2
write_collector_config
start_collector
pin_collector_port
write_tokens
write_agent_config api.manager_password_file="$PASSWORD_FILE" inventory.recipes="$T/recipes-v1.csv" \
  inventory.refunds_restock=true uplink.interval=2s uplink.jitter=1s uplink.max_batch_sales=300
start_agent

DELIVERED=(flour mozzarella tomato salami)
UNITS=(g g g g)
chunks=$((SALES / CHUNK))
counted=0
for ((c = 0; c < chunks; c++)); do
  from=$((c * CHUNK + 1)) to=$(((c + 1) * CHUNK))
  if ((counted == 0 && to >= CHANGE_AT)); then
    # Mid-day: the stock count of the afternoon shift, then the new recipes.
    utc_time $((BASE_S + (from - 1) * 8))
    t="$UTC_TIME"
    post_adjustment CNT-flour count flour g 40000000 "$t"
    post_adjustment CNT-mozzarella count mozzarella g 25000000 "$t"
    COUNT_AFTER=$((from - 1))
    http POST /v1/recipes -H 'Content-Type: text/csv' --data-binary "@$T/recipes-v2.csv" "${MANAGER[@]}"
    expect_status "the afternoon's recipes (v2, from 14:00)" 200
    assert_eq "versions stored" 2 "$(json_get "$HTTP_BODY" '$.versions_stored')"
    counted=1
  fi
  if ((c == chunks * 2 / 5)); then
    # kill -9 of both, between two requests.
    kill_agent
    kill_collector
    start_collector
    start_agent
  fi
  if ((c == chunks * 7 / 10)); then
    # kill -9 of the agent while this chunk's POST is in flight.
    chunk_json "$from" "$to" >"$T/chunk.json"
    curl -s -o /dev/null -H "Authorization: Bearer $TOKEN_T1" -H 'Content-Type: application/json' \
      --data-binary "@$T/chunk.json" "$AGENT_URL/v1/sales" &
    inflight=$!
    sleep 0.0$((RANDOM % 5))
    kill_agent
    wait "$inflight" || true
    start_agent
  fi
  post_chunk "$from" "$to"
  utc_time $((BASE_S + to * 8))
  t="$UTC_TIME"
  m=$((c % 4))
  post_adjustment "DEL-$c" delivery "${DELIVERED[$m]}" "${UNITS[$m]}" $((2000000 + c * 1000)) "$t"
  post_adjustment "WST-$c" waste "${DELIVERED[$(((m + 1) % 4))]}" g $((10000 + c * 7)) "$t"
done
# The offline terminal's sales, journaled last with their morning times.
late_sep="" late="["
for ((i = 97; i < CHANGE_AT; i += 97)); do
  sale_of "$i"
  late+="$late_sep$SALE"
  late_sep=","
  if ((i % 50 == 0)); then
    sale_of "$i" R refund
    late+=",$SALE"
  fi
done
printf '%s]' "$late" >"$T/chunk.json"
post_until_taken "the offline terminal's sales" /v1/sales "$T/chunk.json" -H "Authorization: Bearer $TOKEN_T1"

push_until_sent 300
status_json
printf '%s' "$STATUS_JSON" >"$T/status-final.json"
kafka_read pos.sales.v1 sales
records_db sales
kafka_read pos.inventory-deltas.v1 deltas DeltaRecords
log "pos.sales.v1: $(rsql sales 'SELECT count(*) FROM k;') records; pos.inventory-deltas.v1: $KAFKA_RECORDS records"

# ---- the recomputation -----------------------------------------------------------------
R="$T/recompute.db"
# Deltas as Kafka holds them: material, reason, quantity.
awk '
  /^record \{$/ { m = ""; r = ""; q = 0; next }
  /^  material_id: / { m = $2; gsub(/"/, "", m); next }
  /^  quantity_milli: / { q = $2; next }
  /^  reason: / { r = $2; sub(/^DELTA_REASON_/, "", r); r = tolower(r); next }
  /^\}$/ { print m "\t" r "\t" q }
' "$T/deltas.txt" >"$T/deltas.tsv"
# Sale lines from the Kafka records: sale_id, kind, original, time, sku, qty
# (lines are "sku:qty:unit_price:discount:promo_id:tax" joined by "|").
sqlite3 -batch -bail -separator $'\t' "$T/sales.db" \
  "SELECT sale_id, kind, original_sale_id, business_time_ms, lines FROM k;" |
  awk -F'\t' -v OFS='\t' '{
    n = split($5, parts, "|")
    for (i = 1; i <= n; i++) { split(parts[i], f, ":"); print $1, $2, $3, $4, f[1], f[2] }
  }' >"$T/lines.tsv"
printf '%s\n' "${ADJUSTED[@]}" | tr ' ' '\t' >"$T/adjustments.tsv"
sqlite3 -batch -bail "$R" <<SQL
CREATE TABLE csv(sku TEXT, version INTEGER, valid_from TEXT, component TEXT, kind TEXT,
                 quantity_milli INTEGER, unit TEXT, yield_pct TEXT);
.mode csv
.import --skip 1 $T/recipes-v1.csv csv
.import --skip 1 $T/recipes-v2.csv csv
.mode tabs
CREATE TABLE kafka_deltas(material TEXT, reason TEXT, quantity INTEGER);
.import $T/deltas.tsv kafka_deltas
CREATE TABLE lines(sale_id TEXT, kind TEXT, original TEXT, t INTEGER, sku TEXT, qty INTEGER);
.import $T/lines.tsv lines
CREATE TABLE adjustments(id TEXT, kind TEXT, material TEXT, quantity INTEGER, after_count INTEGER);
.import $T/adjustments.tsv adjustments
-- A version's raw quantity with its yield: ceil(q * 100 / yield_pct), in integers.
CREATE TABLE recipe AS SELECT sku, CAST(version AS INTEGER) AS version,
  unixepoch(valid_from) * 1000 AS from_ms, component, kind,
  CASE WHEN yield_pct = '' THEN CAST(quantity_milli AS INTEGER)
       ELSE (CAST(quantity_milli AS INTEGER) * 10000 + CAST(round(yield_pct * 100) AS INTEGER) - 1)
            / CAST(round(yield_pct * 100) AS INTEGER) END AS raw
  FROM csv;
-- Each line: its reason, the time whose recipes it uses (a refund: its
-- original's), and whether it was journaled after the stock count.
CREATE TABLE items AS SELECT rowid AS id,
  CASE l.kind WHEN 'refund' THEN 'refunds' ELSE 'sales' END AS reason,
  CASE l.kind WHEN 'refund' THEN coalesce((SELECT o.t FROM lines o WHERE o.sale_id = l.original
                                           LIMIT 1), l.t) ELSE l.t END AS rt,
  sku, qty * 1000 AS mult,
  (CAST(substr(sale_id, 3) AS INTEGER) > $COUNT_AFTER OR
   (CAST(substr(sale_id, 3) AS INTEGER) % 97 = 0 AND
    CAST(substr(sale_id, 3) AS INTEGER) < $CHANGE_AT)) AS after_count
  FROM lines l;
-- The version of a SKU in force at t: the newest that started at or before it.
CREATE TABLE consumed AS
  WITH RECURSIVE x(id, reason, rt, sku, mult, after_count, depth) AS (
    SELECT id, reason, rt, sku, mult, after_count, 0 FROM items
    UNION ALL
    SELECT x.id, x.reason, x.rt, r.component, (x.mult * r.raw + 999) / 1000, x.after_count,
           x.depth + 1
    FROM x JOIN recipe r ON r.sku = x.sku AND r.kind = 'recipe' AND r.version =
      (SELECT max(v.version) FROM recipe v WHERE v.sku = x.sku AND v.from_ms <= x.rt)
    WHERE x.depth < 8)
  SELECT r.component AS material, x.reason, x.after_count,
         sum((x.mult * r.raw + 999) / 1000) AS quantity
  FROM x JOIN recipe r ON r.sku = x.sku AND r.kind = 'material' AND r.version =
    (SELECT max(v.version) FROM recipe v WHERE v.sku = x.sku AND v.from_ms <= x.rt)
  GROUP BY 1, 2, 3;
-- Signed movements, sales and refunds from the recipes, the rest from the
-- adjustments posted (a count is not a movement: it sets the on-hand).
CREATE TABLE moved AS
  SELECT material, reason, after_count,
         CASE reason WHEN 'sales' THEN -quantity ELSE quantity END AS quantity FROM consumed
  UNION ALL
  SELECT material, kind, after_count, CASE kind WHEN 'waste' THEN -quantity ELSE quantity END
  FROM adjustments WHERE kind IN ('delivery', 'waste');
CREATE TABLE expected_reason AS SELECT material, reason, sum(quantity) AS quantity FROM moved
  GROUP BY 1, 2;
-- On-hand: a counted material is its count plus what moved after it.
CREATE TABLE expected_on_hand AS
  SELECT m.material, coalesce((SELECT a.quantity FROM adjustments a
                               WHERE a.kind = 'count' AND a.material = m.material), 0) +
    coalesce((SELECT sum(quantity) FROM moved x WHERE x.material = m.material AND
              (x.after_count = 1 OR NOT EXISTS (SELECT 1 FROM adjustments a WHERE
               a.kind = 'count' AND a.material = m.material))), 0) AS quantity
  FROM (SELECT material FROM moved UNION SELECT material FROM adjustments) m;
CREATE TABLE kafka_reason AS SELECT material, reason, sum(quantity) AS quantity
  FROM kafka_deltas GROUP BY 1, 2;
SQL
rq() { sqlite3 -batch -bail "$R" "$@"; }

# Per material and reason (sales, refunds, deliveries, waste): Kafka holds
# exactly what the recomputation says.
diff_reason="$(rq "SELECT e.material, e.reason, e.quantity, coalesce(k.quantity, 'none')
  FROM expected_reason e LEFT JOIN kafka_reason k USING (material, reason)
  WHERE k.quantity IS NOT e.quantity
  UNION ALL SELECT k.material, k.reason, 'none', k.quantity FROM kafka_reason k
  WHERE k.reason != 'stock_count' AND NOT EXISTS (SELECT 1 FROM expected_reason e
    WHERE e.material = k.material AND e.reason = k.reason);")"
[[ -z "$diff_reason" ]] ||
  fail "pos.inventory-deltas.v1 per material and reason = the recomputation (material|reason|expected|kafka)" "" "$diff_reason"
assert_gt "the recomputation covers sales" 5 "$(rq "SELECT count(*) FROM expected_reason WHERE reason = 'sales';")"
assert_gt "and refunds" 3 "$(rq "SELECT count(*) FROM expected_reason WHERE reason = 'refunds';")"

# All reasons together (the count's variance included) = on-hand.
diff_total="$(rq "SELECT e.material, e.quantity, coalesce((SELECT sum(quantity) FROM kafka_deltas k
    WHERE k.material = e.material), 'none') AS kafka FROM expected_on_hand e
  WHERE kafka IS NOT e.quantity;")"
[[ -z "$diff_total" ]] ||
  fail "the sum of pos.inventory-deltas.v1 per material = the recomputed on-hand (material|expected|kafka)" "" "$diff_total"

# /status.json says the same.
while IFS=$'\t' read -r material quantity; do
  shown="$(sqlite3 -batch :memory: "SELECT json_extract(value, '\$.on_hand_milli') FROM json_each(readfile('$T/status-final.json'), '\$.stock.materials') WHERE json_extract(value, '\$.material_id') = '$material';")"
  assert_eq "on-hand of $material on /status.json" "$quantity" "$shown"
done < <(rq -separator $'\t' "SELECT material, quantity FROM expected_on_hand;")
garlic="$(rq "SELECT coalesce(sum(qty), 0) FROM lines WHERE sku = 'GARLIC-BREAD' AND kind = 'sale';")"
assert_gt "garlic bread (no recipe) was sold and reached Kafka" 0 "$garlic"
log "on-hand: $(rq "SELECT group_concat(material || '=' || quantity, ' ') FROM expected_on_hand;")"
stop_agent
stop_collector
