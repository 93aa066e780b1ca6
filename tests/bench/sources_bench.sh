#!/usr/bin/env bash
# sources_bench.sh - sales per second into the journal from each ingest
# source, in one run (issue 14, item 6): the POS API (one client, 1 and
# 100 sales per POST), the POS vendor database tailer ([posdb]), and the
# spool directory ([spool], NDJSON and CSV files) when this agent has one.
#
#   bash tests/bench/sources_bench.sh BUILD_DIR     (a Release build)
#
# Each source takes BENCH_SALES sales (one pizza line and one payment
# each, the same for every source) into a fresh agent on a fresh journal
# on disk (under BENCH_DIR), rounds interleaved: http-1, http-100, posdb,
# spool-ndjson, spool-csv, then again. Timed from the moment the sales are
# there to take (the load starts; the vendor commits its rows; the file is
# renamed into the spool) until the last one is journaled (pos-load's last
# answer; the tailer's watermark on /status.json; the file in done/),
# polled every 20 ms. Also printed: the agent's CPU per sale (utime+stime
# from /proc/PID/stat over the same span). Every sale must be in the
# journal at the end (checked); nothing about speed is asserted.
# Environment:
#   BENCH_SALES    20000    sales per run and source
#   BENCH_ROUNDS   3        interleaved rounds (median [min-max] printed)
#   BENCH_SOURCES  "http-1 http-100 posdb spool-ndjson spool-csv"
#   BENCH_DIR      /var/tmp (journals on disk, not tmpfs)
set -euo pipefail
export LC_ALL=C

BUILD_DIR="$(cd "${1:?usage: sources_bench.sh BUILD_DIR}" && pwd)"
SOURCE_DIR="$(cd "$(dirname "$0")/../.." && pwd)"
export POS_BUILD_DIR="$BUILD_DIR" POS_SOURCE_DIR="${POS_SOURCE_DIR:-$SOURCE_DIR}"
export TMPDIR="${BENCH_DIR:-/var/tmp}"
SALES="${BENCH_SALES:-20000}"
ROUNDS="${BENCH_ROUNDS:-3}"
SOURCES="${BENCH_SOURCES:-http-1 http-100 posdb spool-ndjson spool-csv}"
source "$SOURCE_DIR/tests/integration/lib.sh"
source "$SOURCE_DIR/tests/integration/posdb_lib.sh"
TEST_NAME=sources_bench
[[ -x "$LOAD_BIN" ]] || { echo "sources_bench: $LOAD_BIN not built" >&2; exit 1; }
HAS_SPOOL=0
"$AGENT_BIN" --print-example-config | grep -c '^\[spool\]' >/dev/null && HAS_SPOOL=1
write_tokens

# cpu_ticks PID: utime + stime in clock ticks (fields 14 and 15 of
# /proc/PID/stat, counted after the ")" that ends the command name).
cpu_ticks() {
  local stat
  stat="$(<"/proc/$1/stat")"
  stat="${stat##*) }"
  awk '{ print $12 + $13 }' <<<"$stat"
}
now_ms() { date +%s%3N; }

# The sales, the same content for every source: sale i is "S-<run>-<i>",
# one PIZZA-MARG-L at 12.50 + 1.30 tax, paid 13.80 by card.
BUSINESS_TIME="2026-11-21T18:42:05+01:00"

# fresh_agent NAME [extra config...]: a new journal and agent for one run.
fresh_agent() {
  local name="$1"
  shift
  JOURNAL="$T/$name.db"
  rm -f "$JOURNAL" "$JOURNAL-wal" "$JOURNAL-shm" "$JOURNAL.hwm"
  write_config journal.path="$JOURNAL"
  local extra
  for extra in "$@"; do printf '%s\n' "$extra" >>"$CONFIG"; done
  [[ -z "${CONFIG_HOOK:-}" ]] || "$CONFIG_HOOK"
  start_agent
}

# finish RUN_NAME START_MS CPU_BEFORE: records seconds and CPU of the run
# and checks every sale is journaled.
RESULT_S="" RESULT_US=""
finish() {
  local end_ms cpu_after held
  end_ms="$(now_ms)"
  cpu_after="$(cpu_ticks "$AGENT_PID")"
  held="$(sql "SELECT count(*) FROM sales;")"
  [[ "$held" == "$SALES" ]] || fail "$1: every sale journaled" "$SALES" "$held"
  RESULT_S="$(awk -v a="$2" -v b="$end_ms" 'BEGIN { printf "%.3f", (b - a) / 1000 }')"
  RESULT_US="$(awk -v t="$(( cpu_after - $3 ))" -v hz="$(getconf CLK_TCK)" -v n="$SALES" \
    'BEGIN { printf "%.1f", t * 1000000 / hz / n }')"
  stop_agent
}

run_http() { # BATCH
  fresh_agent "http-$1"
  local start cpu
  cpu="$(cpu_ticks "$AGENT_PID")"
  start="$(now_ms)"
  "$LOAD_BIN" --url "$AGENT_URL" --token "$TOKEN_T1" --terminal T1 --clients 1 \
    --sales "$SALES" --batch "$1" --prefix "http$1-$ROUND" --time-base "$LOAD_TIME_BASE" \
    >/dev/null 2>"$T/load.err" || { cat "$T/load.err" >&2; fail "pos-load failed"; }
  finish "http-$1" "$start" "$cpu"
}

posdb_config() { posdb_sections "$CONFIG" "$VENDOR_DB" minor plu "poll = 100ms"; }
run_posdb() {
  local vendor="$T/vendor-$ROUND.db"
  rm -f "$vendor"
  posdb_vendor_create "$vendor"
  VENDOR_DB="$vendor" CONFIG_HOOK=posdb_config fresh_agent posdb
  local start cpu mark
  cpu="$(cpu_ticks "$AGENT_PID")"
  start="$(now_ms)"
  posdb_vendor_add "$vendor" 1 "$SALES" "P-$ROUND-"
  while :; do
    http GET /status.json
    mark="$(json_get "$HTTP_BODY" '$.sources.posdb.watermark')"
    [[ "$mark" == "$SALES" ]] && break
    sleep 0.02
  done
  finish posdb "$start" "$cpu"
}

# spool_file FORMAT FILE: BENCH_SALES sales as NDJSON or CSV.
spool_file() {
  if [[ "$1" == ndjson ]]; then
    awk -v n="$SALES" -v r="$ROUND" -v t="$BUSINESS_TIME" 'BEGIN { for (i = 1; i <= n; i++)
      printf "{\"sale_id\":\"N-%s-%d\",\"kind\":\"sale\",\"terminal_id\":\"T1\",\"business_time\":\"%s\",\"currency\":\"EUR\",\"lines\":[{\"sku\":\"PIZZA-MARG-L\",\"qty\":1,\"unit_price\":\"12.50\",\"tax\":\"1.30\"}],\"payments\":[{\"method\":\"card\",\"amount\":\"13.80\"}],\"total\":\"13.80\"}\n", r, i, t }' >"$2"
  else
    awk -v n="$SALES" -v r="$ROUND" -v t="$BUSINESS_TIME" 'BEGIN {
      print "sale_id,kind,terminal_id,business_time,currency,total,sku,qty,unit_price,tax,payment_method,payment_amount"
      for (i = 1; i <= n; i++)
        printf "C-%s-%d,sale,T1,%s,EUR,13.80,PIZZA-MARG-L,1,12.50,1.30,card,13.80\n", r, i, t }' >"$2"
  fi
}

run_spool() { # FORMAT
  local dir="$T/spool-$1-$ROUND" name="sales-$ROUND.$1"
  rm -rf "$dir"
  mkdir -p "$dir"
  spool_file "$1" "$T/$name"
  fresh_agent "spool-$1" "" "[spool]" "dir = $dir" "settle = 0s"
  local start cpu
  cpu="$(cpu_ticks "$AGENT_PID")"
  start="$(now_ms)"
  mv "$T/$name" "$dir/$name"
  until [[ -e "$dir/done/$name" ]]; do
    [[ -e "$dir/failed/$name" ]] && fail "spool-$1: the file failed: $(cat "$dir/failed/$name.reason")"
    sleep 0.02
  done
  finish "spool-$1" "$start" "$cpu"
}

declare -A SECONDS_OF US_OF
for ((ROUND = 1; ROUND <= ROUNDS; ROUND++)); do
  for source in $SOURCES; do
    case "$source" in
    http-1) run_http 1 ;;
    http-100) run_http 100 ;;
    posdb) run_posdb ;;
    spool-ndjson | spool-csv)
      if ((HAS_SPOOL == 0)); then
        continue
      fi
      run_spool "${source#spool-}"
      ;;
    *) echo "sources_bench: unknown source $source" >&2; exit 2 ;;
    esac
    SECONDS_OF[$source]+="$RESULT_S "
    US_OF[$source]+="$RESULT_US "
    echo "[sources_bench] round $ROUND $source: $SALES sales in $RESULT_S s, $RESULT_US us CPU/sale" >&2
  done
done

# median [min-max] of a list of numbers
stats() { tr ' ' '\n' <<<"$1" | awk 'NF' | sort -g | awk '{ v[NR] = $1 } END {
  m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
  printf "%s [%s-%s]", m, v[1], v[NR] }'; }

echo
echo "sources_bench: $SALES sales per run, $ROUNDS interleaved rounds, $(git -C "$SOURCE_DIR" rev-parse --short HEAD 2>/dev/null || echo '?')"
echo "$(nproc) cores, load $(cut -d' ' -f1 /proc/loadavg), journal on $(stat -f -c %T "$T"); median [min-max]"
printf '%-14s %26s %26s %30s\n' source "seconds" "sales/s (median run)" "agent CPU us/sale"
for source in $SOURCES; do
  [[ -n "${SECONDS_OF[$source]:-}" ]] || { printf '%-14s %26s\n' "$source" "(not in this agent)"; continue; }
  median_s="$(stats "${SECONDS_OF[$source]}" | cut -d' ' -f1)"
  printf '%-14s %26s %26.0f %30s\n' "$source" "$(stats "${SECONDS_OF[$source]}")" \
    "$(awk -v n="$SALES" -v s="$median_s" 'BEGIN { print (s > 0 ? n / s : 0) }')" \
    "$(stats "${US_OF[$source]}")"
done
