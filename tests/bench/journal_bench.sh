#!/usr/bin/env bash
# journal_bench.sh - what durability costs: sales/s and bytes written per
# sale by pos-agent with group commit (the configured default) and with
# journal.group_commit_max = 1 (one transaction and fsync per sale), for
# 1, 4, 16 and 64 concurrent terminals (pos-load clients).
#
#   bash tests/bench/journal_bench.sh BUILD_DIR        (or: cmake --build BUILD_DIR -t bench)
#
# Each run gets a fresh journal on disk (under /var/tmp, never tmpfs), a
# fixed number of sales (BENCH_SALES for group commit, BENCH_SALES_NAIVE for
# one fsync per sale), stopped early after BENCH_MAX_SECONDS. Bytes written
# are the agent's write_bytes from /proc/<pid>/io (what it sent to the
# storage layer) over the load only. Prints figures; asserts nothing about
# timing. Environment:
#   BENCH_CLIENTS       "1 4 16 64"
#   BENCH_SALES         150000  sales per group-commit run
#   BENCH_SALES_NAIVE   40000   sales per one-fsync-per-sale run
#   BENCH_MAX_SECONDS   10      cap on each run
#   BENCH_BATCH         1       sales per request (pos-load --batch)
#   BENCH_DIR           /var/tmp (where the journals go)
set -euo pipefail
export LC_ALL=C

BUILD_DIR="${1:?usage: journal_bench.sh BUILD_DIR}"
AGENT_BIN="$BUILD_DIR/agent/pos-agent"
LOAD_BIN="$BUILD_DIR/tests/tools/pos-load"
CLIENTS_LIST="${BENCH_CLIENTS:-1 4 16 64}"
SALES_GROUP="${BENCH_SALES:-150000}"
SALES_NAIVE="${BENCH_SALES_NAIVE:-40000}"
MAX_SECONDS="${BENCH_MAX_SECONDS:-10}"
BATCH="${BENCH_BATCH:-1}"

for bin in "$AGENT_BIN" "$LOAD_BIN"; do
  [[ -x "$bin" ]] || { echo "journal_bench: $bin not built" >&2; exit 1; }
done
WORK="$(mktemp -d "${BENCH_DIR:-/var/tmp}/pos-bench.XXXXXX")"
if [[ "$(stat -f -c %T "$WORK")" == tmpfs ]]; then
  echo "journal_bench: $WORK is on tmpfs; set BENCH_DIR to a directory on disk" >&2
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

write_bytes() { awk '/^write_bytes:/ { print $2 }' "/proc/$1/io"; }

# run MODE GROUP_COMMIT_MAX CLIENTS SALES: sets RUN_RATE, RUN_BYTES (per
# sale), RUN_SALES and RUN_SECONDS. Runs in this shell, so the EXIT trap
# knows the agent it started.
run() {
  local mode="$1" group="$2" clients="$3" sales="$4"
  local dir="$WORK/$mode-$clients"
  mkdir -p "$dir"
  cat >"$dir/agent.conf" <<EOF
[agent]
store_id = BENCH
device_id = D1
log_level = info
[journal]
path = $dir/journal.db
max_size = 0
group_commit_max = $group
[api]
listen_host = 127.0.0.1
port = 0
terminal_tokens = $WORK/terminals
max_body = 16M
max_sales_per_request = 1000
EOF
  "$AGENT_BIN" --config "$dir/agent.conf" 2>"$dir/agent.log" >/dev/null &
  AGENT_PID=$!
  local deadline=$((SECONDS + 10)) port=""
  until grep -q 'event=ready' "$dir/agent.log" 2>/dev/null; do
    kill -0 "$AGENT_PID" 2>/dev/null || { tail "$dir/agent.log" >&2; echo "agent died" >&2; exit 1; }
    ((SECONDS < deadline)) || { echo "agent not ready in 10 s" >&2; exit 1; }
    sleep 0.05
  done
  port="$(grep -m1 -E 'event=listening( .*)? port=[0-9]+' "$dir/agent.log" | sed -n 's/.*[[:space:]]port=\([0-9][0-9]*\).*/\1/p')"
  local before after out
  before="$(write_bytes "$AGENT_PID")"
  out="$("$LOAD_BIN" --url "http://127.0.0.1:$port" --token "$TOKEN" --terminal T1 \
    --clients "$clients" --sales $(((sales + clients - 1) / clients)) --batch "$BATCH" \
    --prefix bench --duration "$MAX_SECONDS" 2>"$dir/load.err")" ||
    { cat "$dir/load.err" >&2; echo "pos-load failed: $out" >&2; exit 1; }
  after="$(write_bytes "$AGENT_PID")"
  kill -TERM "$AGENT_PID"
  wait "$AGENT_PID" || true
  AGENT_PID=""
  rm -rf "$dir"
  RUN_SALES="$(sed -n 's/.* ok=\([0-9]*\).*/\1/p' <<<"$out")"
  RUN_SECONDS="$(sed -n 's/.* seconds=\([0-9.]*\).*/\1/p' <<<"$out")"
  RUN_RATE="$(sed -n 's/.* rate=\([0-9.]*\)\/s.*/\1/p' <<<"$out" | awk '{ printf "%.0f", $1 }')"
  RUN_BYTES="$(awk -v b=$((after - before)) -v n="$RUN_SALES" 'BEGIN { printf "%.0f", (n > 0 ? b / n : 0) }')"
}

echo "pos-agent journal benchmark: $(nproc) CPUs, journal on $(df -P "$WORK" | awk 'NR == 2 { print $1 }') ($(stat -f -c %T "$WORK")), batch $BATCH"
printf '%-14s %7s %10s %12s %8s %8s\n' mode clients sales/s bytes/sale sales seconds
declare -A RATE BYTES
for mode in group naive; do
  if [[ "$mode" == group ]]; then group=1024 sales="$SALES_GROUP"; else group=1 sales="$SALES_NAIVE"; fi
  for clients in $CLIENTS_LIST; do
    run "$mode" "$group" "$clients" "$sales"
    RATE[$mode.$clients]="$RUN_RATE"
    BYTES[$mode.$clients]="$RUN_BYTES"
    printf '%-14s %7d %10d %12d %8d %8s\n' "$([[ $mode == group ]] && echo group-1024 || echo one-per-sale)" \
      "$clients" "$RUN_RATE" "$RUN_BYTES" "$RUN_SALES" "$RUN_SECONDS"
  done
done

echo
echo "side by side (group_commit_max = 1024 vs 1):"
printf '%7s | %10s %12s | %10s %12s | %8s\n' clients "group/s" "bytes/sale" "naive/s" "bytes/sale" speedup
for clients in $CLIENTS_LIST; do
  g="${RATE[group.$clients]}" n="${RATE[naive.$clients]}"
  printf '%7d | %10d %12d | %10d %12d | %7.1fx\n' "$clients" "$g" "${BYTES[group.$clients]}" \
    "$n" "${BYTES[naive.$clients]}" "$(awk -v g="$g" -v n="$n" 'BEGIN { print (n > 0 ? g / n : 0) }')"
done
