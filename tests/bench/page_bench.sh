#!/usr/bin/env bash
# page_bench.sh - does the store manager's page delay a sale's 201? The POS
# API's latency (p50, p99, max over every request, as pos-load measures it)
# at a store's pace (tills posting one sale every BENCH_PACE_MS each), with
# BENCH_PAGES browsers refreshing the page every second (GET / and GET
# /status.json, what a reload costs) beside none, same agent build, alternate
# A/B runs so that a busy machine hurts both alike. Prints figures; asserts
# nothing about timing.
#
#   bash tests/bench/page_bench.sh BUILD_DIR
#
# Environment:
#   BENCH_CLIENTS       8       tills posting at once
#   BENCH_PACE_MS       20      pause between one till's sales
#   BENCH_SECONDS       15      length of each run
#   BENCH_PAGES         1       browsers refreshing every second
#   BENCH_ROUNDS        3       A/B pairs; the median of each side is printed
#   BENCH_DIR           /var/tmp (where the journals go; never tmpfs)
set -euo pipefail
export LC_ALL=C

BUILD_DIR="${1:?usage: page_bench.sh BUILD_DIR}"
AGENT_BIN="$BUILD_DIR/agent/pos-agent"
LOAD_BIN="$BUILD_DIR/tests/tools/pos-load"
CLIENTS="${BENCH_CLIENTS:-8}"
PACE_MS="${BENCH_PACE_MS:-20}"
RUN_SECONDS="${BENCH_SECONDS:-15}"
PAGES="${BENCH_PAGES:-1}"
ROUNDS="${BENCH_ROUNDS:-3}"

for bin in "$AGENT_BIN" "$LOAD_BIN"; do
  [[ -x "$bin" ]] || { echo "page_bench: $bin not built" >&2; exit 1; }
done
command -v curl >/dev/null || { echo "page_bench: curl is required" >&2; exit 1; }
WORK="$(mktemp -d "${BENCH_DIR:-/var/tmp}/pos-page-bench.XXXXXX")"
if [[ "$(stat -f -c %T "$WORK")" == tmpfs ]]; then
  echo "page_bench: $WORK is on tmpfs; set BENCH_DIR to a directory on disk" >&2
  exit 1
fi
AGENT_PID=""
BROWSER_PIDS=()
stop_browsers() {
  local pid
  for pid in "${BROWSER_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${BROWSER_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  BROWSER_PIDS=()
}
cleanup() {
  stop_browsers
  if [[ -n "$AGENT_PID" ]]; then
    kill -KILL "$AGENT_PID" 2>/dev/null || true
    wait "$AGENT_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

TOKEN="bench-token-0123456789abcdef"
echo "* $TOKEN" >"$WORK/terminals"
cat >"$WORK/agent.conf" <<EOF
[agent]
store_id = BENCH
device_id = D1
log_level = info
[journal]
path = $WORK/journal.db
[api]
listen_host = 127.0.0.1
port = 0
terminal_tokens = $WORK/terminals
[inventory]
recipes = ${POS_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}/firmware-config/recipes.csv
EOF
"$AGENT_BIN" --config "$WORK/agent.conf" 2>"$WORK/agent.log" >/dev/null &
AGENT_PID=$!
deadline=$((SECONDS + 10))
until grep -q 'event=listening' "$WORK/agent.log" 2>/dev/null; do
  kill -0 "$AGENT_PID" 2>/dev/null || { tail "$WORK/agent.log" >&2; echo "agent died" >&2; exit 1; }
  ((SECONDS < deadline)) || { echo "agent not ready in 10 s" >&2; exit 1; }
  sleep 0.05
done
PORT="$(grep -m1 -E 'event=listening( .*)? port=[0-9]+' "$WORK/agent.log" | sed -n 's/.*[[:space:]]port=\([0-9][0-9]*\).*/\1/p')"
URL="http://127.0.0.1:$PORT"

# browser: a page open on the manager's laptop, reloaded every second.
browser() {
  while :; do
    curl -sS -o /dev/null "$URL/" && curl -sS -o /dev/null "$URL/status.json" || true
    sleep 1
  done
}

# run NAME PAGES: sets RUN_P50, RUN_P99, RUN_MAX, RUN_RATE.
RUN=0
run() {
  local name="$1" pages="$2" out i
  RUN=$((RUN + 1))
  for ((i = 0; i < pages; i++)); do
    browser &
    BROWSER_PIDS+=($!)
  done
  out="$("$LOAD_BIN" --url "$URL" --token "$TOKEN" --terminal T1 --clients "$CLIENTS" \
    --sales 1000000 --pace-ms "$PACE_MS" --duration "$RUN_SECONDS" --prefix "r$RUN$name" \
    2>"$WORK/load.err")" || { cat "$WORK/load.err" >&2; echo "pos-load failed: $out" >&2; exit 1; }
  stop_browsers
  RUN_P50="$(sed -n 's/.* p50_ms=\([0-9.]*\).*/\1/p' <<<"$out")"
  RUN_P99="$(sed -n 's/.* p99_ms=\([0-9.]*\).*/\1/p' <<<"$out")"
  RUN_MAX="$(sed -n 's/.* max_ms=\([0-9.]*\).*/\1/p' <<<"$out")"
  RUN_RATE="$(sed -n 's/.* rate=\([0-9.]*\)\/s.*/\1/p' <<<"$out")"
}

median() { tr ' ' '\n' | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

page_bytes="$(curl -sS "$URL/" | wc -c)"
echo "pos-agent page benchmark: $(nproc) CPUs, $CLIENTS tills each pausing ${PACE_MS} ms," \
  "${RUN_SECONDS} s runs, $PAGES page(s) refreshed every second (GET / $page_bytes bytes + /status.json)"
printf '%-6s %-10s %10s %10s %10s %10s\n' round page sales/s p50_ms p99_ms max_ms
p99_off="" p99_on="" p50_off="" p50_on=""
for round in $(seq 1 "$ROUNDS"); do
  run off 0
  p99_off+=" $RUN_P99" p50_off+=" $RUN_P50"
  printf '%-6d %-10s %10s %10s %10s %10s\n' "$round" none "$RUN_RATE" "$RUN_P50" "$RUN_P99" "$RUN_MAX"
  run on "$PAGES"
  p99_on+=" $RUN_P99" p50_on+=" $RUN_P50"
  printf '%-6d %-10s %10s %10s %10s %10s\n' "$round" "$PAGES/s" "$RUN_RATE" "$RUN_P50" "$RUN_P99" "$RUN_MAX"
done
echo
echo "median of $ROUNDS: POS API p50 $(median <<<"${p50_off# }") ms, p99 $(median <<<"${p99_off# }") ms" \
  "with no page; p50 $(median <<<"${p50_on# }") ms, p99 $(median <<<"${p99_on# }") ms with $PAGES page(s)" \
  "refreshed every second"
