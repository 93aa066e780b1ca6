#!/usr/bin/env bash
# ingest_bench.sh - CPU per sale of pos-agent, ingest -> acknowledged
# (issue 12, item 1), beside the agent before issue 12, in the same run.
#
#   bash tests/bench/ingest_bench.sh BUILD_DIR     (or: cmake --build BUILD_DIR -t bench-ingest)
#
# BUILD_DIR should be a Release build (the baseline is built Release; the
# script warns loudly otherwise). The baseline agent is the commit on the
# last line of tests/bench/BASELINE, built once under BUILD_DIR/old-agents/
# by build_old_agent (tests/integration/old_agent.sh).
#
# For each request size (100 sales per POST, then 1 sale per POST), one
# pos-load client posts BENCH_SALES sales to a fresh agent on a fresh journal
# (on disk, under BENCH_DIR), runs interleaved: baseline, HEAD, baseline,
# HEAD, baseline, HEAD. The agent's utime and stime are read from
# /proc/PID/stat (fields 14 and 15, / getconf CLK_TCK) just before the load
# starts and just after its last answer; per sale = delta / sales
# acknowledged. Printed: the median of the rounds with min and max, user and
# system time separately, and the system share: with one client nearly all
# of it is the journal's write and fsync per commit, so it is printed as the
# fsync's part (an estimate of the floor). When the fsync shim is built
# (BUILD_DIR/tests/tools/libpos-fsync-shim.so), each round also runs both
# agents with POS_FSYNC_DELAY_US=-1 (no sync at all): the difference to the
# plain run is the fsync's CPU, measured. Prints figures; asserts nothing
# about timing (every sale must be acknowledged, though). Environment:
#   BENCH_SALES    100000   sales per run
#   BENCH_BATCHES  "100 1"  sales per POST (pos-load --batch), one table each
#   BENCH_ROUNDS   3        interleaved rounds (the median is of these)
#   BENCH_DIR      /var/tmp (where the journals go: on disk, not tmpfs)
#   BENCH_BASE_AGENT      a pos-agent binary to run as the baseline instead of building
#                         the BASELINE commit (e.g. main's agent, to weigh a branch against it)
#   BENCH_AGENTS          which agents run, of: base head head-compact base-nosync head-nosync
#                         (default: all that can; the -nosync ones need the fsync shim)
#   BENCH_HEAPTRACK 1       with heaptrack installed: also allocations per sale at 1 sale
#                           per POST, each agent under heaptrack for 1,000 and 3,000 sales
#                           (the difference / 2,000: start-up left out); 0 to skip
#
# Each figure is reproduced by (the load of one run; the agent as lib.sh's
# write_config makes it, journal.group_commit_max = 1024):
#   pos-load --url http://127.0.0.1:PORT --token TOKEN --terminal T1 --clients 1 \
#     --sales $BENCH_SALES --batch {100|1} --prefix ingest-b{100|1} --time-base T
set -euo pipefail
export LC_ALL=C

BUILD_DIR="$(cd "${1:?usage: ingest_bench.sh BUILD_DIR}" && pwd)"
SOURCE_DIR="$(cd "$(dirname "$0")/../.." && pwd)"
export POS_BUILD_DIR="$BUILD_DIR" POS_SOURCE_DIR="${POS_SOURCE_DIR:-$SOURCE_DIR}"
export TMPDIR="${BENCH_DIR:-/var/tmp}"
SALES="${BENCH_SALES:-100000}"
BATCHES="${BENCH_BATCHES:-100 1}"
ROUNDS="${BENCH_ROUNDS:-3}"
# lib.sh: the agent's helpers, and a work directory $T under $TMPDIR.
source "$SOURCE_DIR/tests/integration/lib.sh"
source "$SOURCE_DIR/tests/integration/old_agent.sh"
TEST_NAME=ingest_bench
if [[ "$(stat -f -c %T "$T")" == tmpfs ]]; then
  echo "ingest_bench: $T is on tmpfs; set BENCH_DIR to a directory on disk" >&2
  exit 1
fi
[[ -x "$LOAD_BIN" ]] || { echo "ingest_bench: $LOAD_BIN not built" >&2; exit 1; }

BUILD_TYPE="$(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$BUILD_DIR/CMakeCache.txt" 2>/dev/null ||
  true)"
if [[ "$BUILD_TYPE" != Release ]]; then
  {
    echo "******************************************************************************"
    echo "ingest_bench: WARNING: $BUILD_DIR is a '${BUILD_TYPE:-unknown}' build, not Release;"
    echo "the baseline agent is built Release, so HEAD's figures are NOT comparable."
    echo "******************************************************************************"
  } >&2
fi

BASELINE_COMMIT="$(tail -n1 "$SOURCE_DIR/tests/bench/BASELINE")"
NEW_AGENT_BIN="$AGENT_BIN"
if [[ -n "${BENCH_BASE_AGENT:-}" ]]; then
  [[ -x "$BENCH_BASE_AGENT" ]] ||
    { echo "ingest_bench: BENCH_BASE_AGENT=$BENCH_BASE_AGENT is not a program" >&2; exit 1; }
  BASE_AGENT_BIN="$(cd "$(dirname "$BENCH_BASE_AGENT")" && pwd)/$(basename "$BENCH_BASE_AGENT")"
  BASELINE_COMMIT="$BASE_AGENT_BIN"
else
  build_old_agent "$BASELINE_COMMIT"
  BASE_AGENT_BIN="$OLD_AGENT_BIN"
fi

SHIM="$BUILD_DIR/tests/tools/libpos-fsync-shim.so"
# head-compact: HEAD with journal.compact_rows = true (schema 8's rows).
AGENTS="base head head-compact"
[[ -f "$SHIM" ]] && AGENTS="base head head-compact base-nosync head-nosync"
AGENTS="${BENCH_AGENTS:-$AGENTS}"
TICK="$(getconf CLK_TCK)"
TIME_BASE="$(date +%s)"
write_tokens

# cpu_ticks PID: "utime stime" in clock ticks (fields 14 and 15 of
# /proc/PID/stat, counted after the ")" that ends the command name).
cpu_ticks() {
  local stat
  stat="$(<"/proc/$1/stat")"
  stat="${stat##*) }"
  awk '{ print $12, $13 }' <<<"$stat"
}

# run AGENT BATCH: one fresh agent on a fresh journal, BENCH_SALES sales in
# requests of BATCH; sets RUN_USER_US RUN_SYS_US (per sale) and RUN_RATE.
run() {
  local agent="$1" batch="$2" before after out ok
  local db="$T/journal.$agent.$batch.db"
  rm -f "$db" "$db"-*
  if [[ "$agent" == head-compact ]]; then
    write_config journal.path="$db" journal.compact_rows=true
  else
    write_config journal.path="$db"
  fi
  AGENT_BIN="$NEW_AGENT_BIN"
  [[ "$agent" == base* ]] && AGENT_BIN="$BASE_AGENT_BIN"
  if [[ "$agent" == *-nosync ]]; then
    export LD_PRELOAD="$SHIM" POS_FSYNC_DELAY_US=-1
  fi
  start_agent
  unset LD_PRELOAD POS_FSYNC_DELAY_US
  before="$(cpu_ticks "$AGENT_PID")"
  out="$("$LOAD_BIN" --url "$AGENT_URL" --token "$TOKEN_T1" --terminal T1 --clients 1 \
    --sales "$SALES" --batch "$batch" --prefix "ingest-b$batch" --time-base "$TIME_BASE" \
    2>"$T/load.err")" || { cat "$T/load.err" >&2; fail "pos-load ($agent, batch $batch): $out"; }
  after="$(cpu_ticks "$AGENT_PID")"
  stop_agent
  rm -f "$db" "$db"-*
  ok="$(sed -n 's/.* ok=\([0-9]*\).*/\1/p' <<<"$out")"
  assert_eq "sales acknowledged as new ($agent, batch $batch)" "$SALES" "$ok"
  read -r RUN_USER_US RUN_SYS_US < <(awk -v b="$before" -v a="$after" -v n="$ok" -v hz="$TICK" '
    BEGIN { split(b, x, " "); split(a, y, " ");
            printf "%.2f %.2f\n", (y[1] - x[1]) * 1e6 / hz / n, (y[2] - x[2]) * 1e6 / hz / n }')
  RUN_RATE="$(sed -n 's/.* rate=\([0-9.]*\)\/s.*/\1/p' <<<"$out" | awk '{ printf "%.0f", $1 }')"
}

# stats V...: "median min max" of the values.
stats() {
  printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 }
    END { printf "%.1f %.1f %.1f\n", (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2),
          v[1], v[NR] }'
}

declare -A USER SYS TOTAL RATE
for batch in $BATCHES; do
  for ((round = 1; round <= ROUNDS; round++)); do
    for agent in $AGENTS; do
      run "$agent" "$batch"
      key="$agent.$batch"
      USER[$key]+="$RUN_USER_US "
      SYS[$key]+="$RUN_SYS_US "
      TOTAL[$key]+="$(awk -v u="$RUN_USER_US" -v s="$RUN_SYS_US" 'BEGIN { print u + s }') "
      RATE[$key]+="$RUN_RATE "
      log "batch $batch round $round $agent: user $RUN_USER_US us/sale, sys $RUN_SYS_US" \
        "us/sale, $RUN_RATE sales/s"
    done
  done
done

echo
echo "ingest_bench: $SALES sales per run, 1 client, $ROUNDS interleaved rounds; HEAD" \
  "$(git -C "$SOURCE_DIR" rev-parse --short HEAD 2>/dev/null || echo '?')" \
  "(${BUILD_TYPE:-unknown} build) vs baseline $BASELINE_COMMIT (Release)"
echo "$(nproc) cores, load $(cut -d' ' -f1 /proc/loadavg), journal on $(stat -f -c %T "$T")" \
  "at $TMPDIR; CPU of the agent in us per sale, median [min-max]"
for batch in $BATCHES; do
  echo
  echo "$batch sale(s) per POST:"
  printf '%-16s %22s %20s %20s %9s %10s\n' agent "user+sys us/sale" "user" "sys" "sys share" \
    "sales/s"
  for agent in $AGENTS; do
    key="$agent.$batch"
    # shellcheck disable=SC2086
    read -r tm tlo thi < <(stats ${TOTAL[$key]})
    # shellcheck disable=SC2086
    read -r um ulo uhi < <(stats ${USER[$key]})
    # shellcheck disable=SC2086
    read -r sm slo shi < <(stats ${SYS[$key]})
    # shellcheck disable=SC2086
    read -r rm _ _ < <(stats ${RATE[$key]})
    label="$agent"
    [[ "$agent" == base* ]] && label="${agent/base/baseline}"
    printf '%-16s %7.1f [%5.1f-%5.1f] %6.1f [%5.1f-%5.1f] %6.1f [%5.1f-%5.1f] %8.0f%% %10.0f\n' \
      "$label" "$tm" "$tlo" "$thi" "$um" "$ulo" "$uhi" "$sm" "$slo" "$shi" \
      "$(awk -v s="$sm" -v t="$tm" 'BEGIN { print (t > 0 ? 100 * s / t : 0) }')" "$rm"
  done
  for agent in base head; do
    [[ -n "${TOTAL[$agent.$batch]:-}" ]] || continue # not in BENCH_AGENTS
    read -r tm _ _ < <(stats ${TOTAL[$agent.$batch]})
    read -r sm _ _ < <(stats ${SYS[$agent.$batch]})
    if [[ -n "${TOTAL[$agent-nosync.$batch]:-}" ]]; then
      read -r nm _ _ < <(stats ${TOTAL[$agent-nosync.$batch]})
      printf '  %-9s of which the fsync (plain - no sync, measured): %.1f us/sale\n' \
        "${agent/base/baseline}" "$(awk -v t="$tm" -v n="$nm" 'BEGIN { print t - n }')"
    else
      printf '  %-9s of which the fsync (estimate: the system time): %.1f us/sale;' \
        "${agent/base/baseline}" "$sm"
      printf ' the rest %.1f\n' "$(awk -v t="$tm" -v s="$sm" 'BEGIN { print t - s }')"
    fi
  done
done
# Allocations per sale (exact, not timing: one run each is enough).
if [[ "${BENCH_HEAPTRACK:-1}" == 1 ]] && command -v heaptrack >/dev/null &&
  command -v heaptrack_print >/dev/null; then
  # allocations AGENT SALES: heaptrack's count of allocation calls of the agent over its
  # whole life, with SALES sales posted one per POST.
  allocations() {
    local agent="$1" sales="$2" bin="$NEW_AGENT_BIN" db="$T/journal.ht.db" hpid pid=""
    [[ "$agent" == base ]] && bin="$BASE_AGENT_BIN"
    rm -f "$db" "$db"-* "$T"/ht.*
    write_config journal.path="$db"
    AGENT_STARTS=$((AGENT_STARTS + 1))
    AGENT_LOG="$T/agent.$AGENT_STARTS.log"
    heaptrack -o "$T/ht" "$bin" --config "$CONFIG" 2>"$AGENT_LOG" >/dev/null &
    hpid=$!
    for _ in $(seq 200); do
      grep -q 'event=ready' "$AGENT_LOG" 2>/dev/null && break
      sleep 0.05
    done
    pid="$(pgrep -P "$hpid" -x pos-agent || true)"
    [[ -n "$pid" ]] || fail "heaptrack: the agent did not start (log: $AGENT_LOG)"
    AGENT_URL="http://127.0.0.1:$(grep -m1 -E 'event=listening( .*)? port=[0-9]+' "$AGENT_LOG" |
      sed -n 's/.*[[:space:]]port=\([0-9][0-9]*\).*/\1/p')"
    "$LOAD_BIN" --url "$AGENT_URL" --token "$TOKEN_T1" --terminal T1 --clients 1 --sales "$sales" \
      --batch 1 --prefix ingest-ht --time-base "$TIME_BASE" >/dev/null 2>"$T/load.err" ||
      { cat "$T/load.err" >&2; fail "pos-load under heaptrack ($agent)"; }
    kill -TERM "$pid"
    wait "$hpid" || true
    heaptrack_print "$T"/ht.*zst 2>/dev/null |
      sed -n 's/^calls to allocation functions: \([0-9]*\).*/\1/p'
  }
  echo
  echo "allocations per sale at 1 sale per POST (heaptrack, (3,000 - 1,000 sales) / 2,000):"
  for agent in base head; do
    small="$(allocations "$agent" 1000)"
    large="$(allocations "$agent" 3000)"
    printf '  %-9s %6.1f\n' "${agent/base/baseline}" \
      "$(awk -v a="$small" -v b="$large" 'BEGIN { print (b - a) / 2000 }')"
  done
fi

echo
echo "the issue's targets (item 1): at most 26 us/sale at 100 per POST, 150 us/sale at 1 per POST"
