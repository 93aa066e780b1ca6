#!/usr/bin/env bash
# inventory_bench.sh - what inventory deltas cost the journal: durable
# sales/s and bytes written per sale by pos-agent with every sold SKU
# exploded through a recipe (deltas computed and stored with each row)
# beside the same agent with no recipe set (each row records its lines as
# unmapped only), in the same run, alternating A/B runs so that a busy
# machine hurts both alike. The issue's bar: deltas cost at most 25% of
# durable sales/s. Prints figures; asserts nothing about timing.
#
#   bash tests/bench/inventory_bench.sh BUILD_DIR
#
# The recipe file is written here: every SKU pos-load sells (its menu) gets
# a recipe of a shared base (5 materials) plus 2 of its own, so every line
# explodes into 7 materials: more than most menus, a fair worst case.
# Environment:
#   BENCH_CLIENTS       16      concurrent pos-load clients
#   BENCH_SALES         30000   sales per run
#   BENCH_ROUNDS        3       A/B pairs; the median of each side is printed
#   BENCH_MAX_SECONDS   10      cap on each run
#   BENCH_BATCH         1       sales per request (pos-load --batch)
#   BENCH_DIR           /var/tmp (where the journals go; never tmpfs)
set -euo pipefail
export LC_ALL=C

BUILD_DIR="${1:?usage: inventory_bench.sh BUILD_DIR}"
AGENT_BIN="$BUILD_DIR/agent/pos-agent"
LOAD_BIN="$BUILD_DIR/tests/tools/pos-load"
CLIENTS="${BENCH_CLIENTS:-16}"
SALES="${BENCH_SALES:-30000}"
ROUNDS="${BENCH_ROUNDS:-3}"
MAX_SECONDS="${BENCH_MAX_SECONDS:-10}"
BATCH="${BENCH_BATCH:-1}"

for bin in "$AGENT_BIN" "$LOAD_BIN"; do
  [[ -x "$bin" ]] || { echo "inventory_bench: $bin not built" >&2; exit 1; }
done
WORK="$(mktemp -d "${BENCH_DIR:-/var/tmp}/pos-inv-bench.XXXXXX")"
if [[ "$(stat -f -c %T "$WORK")" == tmpfs ]]; then
  echo "inventory_bench: $WORK is on tmpfs; set BENCH_DIR to a directory on disk" >&2
  exit 1
fi
AGENT_PID=""
cleanup() {
  if [[ -n "$AGENT_PID" ]]; then
    kill -KILL "$AGENT_PID" 2>/dev/null || true
    wait "$AGENT_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

TOKEN="bench-token-0123456789abcdef"
echo "* $TOKEN" >"$WORK/terminals"

# The recipes: pos-load's menu (tests/tools/pos_load.c), each SKU on a base.
{
  echo "sku,version,valid_from,component,kind,quantity_milli,unit,yield_pct"
  from="2020-01-01T00:00:00Z"
  for m in dough-ball:1000:piece tomato-sauce:90000:g cheese-mozzarella:110000:g \
    semolina:7000:g box:1000:piece; do
    IFS=: read -r id qty unit <<<"$m"
    echo "BENCH-BASE,1,$from,$id,material,$qty,$unit,"
  done
  for sku in PIZZA-MARG-S PIZZA-MARG-M PIZZA-MARG-L PIZZA-PEPP-M PIZZA-PEPP-L PIZZA-QUAT-L \
    PIZZA-HAWA-M PIZZA-DIAV-L PIZZA-VEG-M CALZONE-CLAS SIDE-GARLIC-BREAD SIDE-WINGS-6 \
    SALAD-CAESAR DESSERT-TIRAMISU DRINK-COLA-033 DRINK-WATER-050 DRINK-BEER-033; do
    echo "$sku,1,$from,BENCH-BASE,recipe,1000,piece,"
    echo "$sku,1,$from,topping-${sku,,},material,40000,g,80"
    echo "$sku,1,$from,olive-oil,material,5000,ml,"
  done
} >"$WORK/recipes.csv"

write_bytes() { awk '/^write_bytes:/ { print $2 }' "/proc/$1/io"; }

# run NAME RECIPES_FILE: sets RUN_RATE and RUN_BYTES (per sale).
run() {
  local name="$1" recipes="$2" dir="$WORK/$1"
  mkdir -p "$dir"
  cat >"$dir/agent.conf" <<EOF
[agent]
store_id = BENCH
device_id = D1
log_level = info
[journal]
path = $dir/journal.db
group_commit_max = 1024
[api]
listen_host = 127.0.0.1
port = 0
terminal_tokens = $WORK/terminals
max_body = 16M
[inventory]
recipes = $recipes
EOF
  "$AGENT_BIN" --config "$dir/agent.conf" 2>"$dir/agent.log" >/dev/null &
  AGENT_PID=$!
  local deadline=$((SECONDS + 10)) port="" before after out sales
  until grep -q 'event=ready' "$dir/agent.log" 2>/dev/null &&
    { [[ -z "$recipes" ]] || grep -q 'event=recipes_loaded_at_start' "$dir/agent.log"; }; do
    kill -0 "$AGENT_PID" 2>/dev/null || { tail "$dir/agent.log" >&2; echo "agent died" >&2; exit 1; }
    ((SECONDS < deadline)) || { tail "$dir/agent.log" >&2; echo "agent not ready in 10 s" >&2; exit 1; }
    sleep 0.05
  done
  port="$(grep -m1 -E 'event=listening( .*)? port=[0-9]+' "$dir/agent.log" | sed -n 's/.*[[:space:]]port=\([0-9][0-9]*\).*/\1/p')"
  before="$(write_bytes "$AGENT_PID")"
  out="$("$LOAD_BIN" --url "http://127.0.0.1:$port" --token "$TOKEN" --terminal T1 \
    --clients "$CLIENTS" --sales $(((SALES + CLIENTS - 1) / CLIENTS)) --batch "$BATCH" \
    --prefix bench --duration "$MAX_SECONDS" 2>"$dir/load.err")" ||
    { cat "$dir/load.err" >&2; echo "pos-load failed: $out" >&2; exit 1; }
  after="$(write_bytes "$AGENT_PID")"
  kill -TERM "$AGENT_PID"
  wait "$AGENT_PID" || true
  AGENT_PID=""
  if [[ -n "$recipes" ]]; then
    # What the rows' stored deltas weigh, for the summary.
    RUN_DELTA_BYTES="$(sqlite3 "$dir/journal.db" "SELECT avg(length(deltas)) FROM sales;" | awk '{ printf "%.0f", $1 }')"
  fi
  rm -rf "$dir"
  sales="$(sed -n 's/.* ok=\([0-9]*\).*/\1/p' <<<"$out")"
  RUN_RATE="$(sed -n 's/.* rate=\([0-9.]*\)\/s.*/\1/p' <<<"$out" | awk '{ printf "%.0f", $1 }')"
  RUN_BYTES="$(awk -v b=$((after - before)) -v n="$sales" 'BEGIN { printf "%.0f", (n > 0 ? b / n : 0) }')"
}

median() { tr ' ' '\n' | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

echo "pos-agent inventory benchmark: $(nproc) CPUs, journal on $(df -P "$WORK" | awk 'NR == 2 { print $1 }'), $CLIENTS clients, batch $BATCH, group commit"
printf '%-6s %-12s %10s %12s\n' round deltas sales/s bytes/sale
rates_off="" rates_on="" bytes_off="" bytes_on=""
for round in $(seq 1 "$ROUNDS"); do
  run off ""
  rates_off+=" $RUN_RATE" bytes_off+=" $RUN_BYTES"
  printf '%-6d %-12s %10d %12d\n' "$round" "no recipes" "$RUN_RATE" "$RUN_BYTES"
  run on "$WORK/recipes.csv"
  rates_on+=" $RUN_RATE" bytes_on+=" $RUN_BYTES"
  printf '%-6d %-12s %10d %12d\n' "$round" "recipes" "$RUN_RATE" "$RUN_BYTES"
done
r_off="$(median <<<"${rates_off# }")" r_on="$(median <<<"${rates_on# }")"
b_off="$(median <<<"${bytes_off# }")" b_on="$(median <<<"${bytes_on# }")"
echo
echo "median of $ROUNDS: without deltas $r_off sales/s, $b_off bytes/sale; with deltas $r_on sales/s," \
  "$b_on bytes/sale (stored deltas: $RUN_DELTA_BYTES bytes per row on average)"
awk -v off="$r_off" -v on="$r_on" -v boff="$b_off" -v bon="$b_on" 'BEGIN {
  cost = off > 0 ? 100 * (off - on) / off : 0
  more = boff > 0 ? 100 * (bon - boff) / boff : 0
  printf "deltas cost %.1f%% of durable sales/s (the bar: 25%%) and add %.1f%% bytes written per sale\n",
    cost, more }'
