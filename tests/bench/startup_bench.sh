#!/usr/bin/env bash
# startup_bench.sh - start-up against the journal's size (issue 12, item 4):
# exec -> the first sale answered 201, on journals of 0, 100,000 and
# 1,000,000 acknowledged sales, the agent before issue 12 beside HEAD.
#
#   bash tests/bench/startup_bench.sh BUILD_DIR    (or: cmake --build BUILD_DIR -t bench-startup)
#
# BUILD_DIR must be a Release build (the baseline agent is one): the script
# says so loudly when it is not. The baseline is the commit in
# tests/bench/BASELINE, built once by build_old_agent
# (tests/integration/old_agent.sh) under BUILD_DIR/old-agents.
#
# For each size, one journal: the baseline agent journals a sale, SQLite
# copies it (copy_sales) to SIZE sales, and the journal is made to look
# acknowledged (sealed_last_seq and acked_last_seq at the last seq, one
# acknowledged batch row covering them), as a store's journal is after the
# uplink caught up. Then, on that one journal:
#   first start    each agent once, right after the other wrote the journal
#                  (HEAD's first start after the baseline agent: the one
#                  start that may count; printed, not in the medians)
#   interleaved    baseline, HEAD, baseline, HEAD, baseline, HEAD
# The sales arrived one every BENCH_SPACING_MS before the last (received_ms
# moved back: 1M sales span 81 days, inside the default 90-day retention,
# and the batch was acknowledged now, so retention deletes nothing), as in a
# store's journal: the status page's figures of the day read only the rows
# received in the last two days, not the whole journal.
# The same again on journals whose sales are all UNSEALED (kind "unsealed"):
# a store offline for months, or an agent without [uplink] url, which never
# seals. No batch, no cursor moved; the recipes of firmware-config are loaded
# so that every row carries its stock deltas, as a store's do. There the
# start-up must not read the rows above the sealing cursor to sum on-hand
# and the consumption not yet in a batch (journal_stock.c keeps that sum).
# Each run is timed from exec to the first sale answered 201 (a new sale each
# run; its POST is retried while the agent is not listening or answers
# 503), and its clean stop from SIGTERM to exit. Prints the median of the
# three runs of each agent with min and max. Asserts nothing about timing.
# Both agents are run and timed by the same C program, pos-start-timer
# (tests/tools/pos_start_timer.c): it spawns the agent, learns its port from
# the log's event=listening line (inotify, no polling sleep), POSTs the sale
# with libcurl until 201, then SIGTERMs and reaps it, all in one process.
# Timed from bash instead (a grep and a sed of the log, a curl process per
# POST, sleep 0.002 between tries), an empty journal's start measured
# 110-115 ms on a 2-core VM where pos-start-timer measures 16-24 ms for the
# same agent: the forks of the loop, not the agent. Those figures are not
# comparable with these. (Of those ~20 ms, about 5 ms is this VM's exec of
# any program and 7 ms the loading of the agent's shared libraries:
# `perf stat -r 30 pos-agent --version` beside /bin/true.)
# The stop column at 100k and 1M sales is mostly a wait: SIGTERM comes
# milliseconds after the start, while the status page's rebuild of today's
# figures (status_today_load_start) still reads, and journal_close's WAL
# rewind (a RESTART checkpoint) waits for that reader to leave.
# Environment:
#   BENCH_SIZES   "0 100000 1000000"
#   BENCH_KINDS   "acked unsealed" (which journals: acknowledged, unsealed)
#   BENCH_RUNS    3 (runs of each agent per size, interleaved)
#   BENCH_SPACING_MS 7000 (between two sales' arrivals)
#   BENCH_DIR     /var/tmp (where the journals go: on disk, not tmpfs)
#   BENCH_BASELINE_BIN  a pos-agent to run as the baseline instead of
#                 building the BASELINE commit (e.g. the agent of the commit
#                 before a change, to compare before and after in one run)
set -euo pipefail
export LC_ALL=C

BUILD_DIR="$(cd "${1:?usage: startup_bench.sh BUILD_DIR}" && pwd)"
SOURCE_DIR="$(cd "$(dirname "$0")/../.." && pwd)"
export POS_BUILD_DIR="$BUILD_DIR" POS_SOURCE_DIR="${POS_SOURCE_DIR:-$SOURCE_DIR}"
export TMPDIR="${BENCH_DIR:-/var/tmp}"
SIZES="${BENCH_SIZES:-0 100000 1000000}"
KINDS="${BENCH_KINDS:-acked unsealed}"
RUNS="${BENCH_RUNS:-3}"
SPACING_MS="${BENCH_SPACING_MS:-7000}"
source "$SOURCE_DIR/tests/integration/lib.sh"
source "$SOURCE_DIR/tests/integration/old_agent.sh"
TEST_NAME=startup_bench
if [[ "$(stat -f -c %T "$T")" == tmpfs ]]; then
  echo "startup_bench: $T is on tmpfs; set BENCH_DIR to a directory on disk" >&2
  exit 1
fi
BUILD_TYPE="$(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$BUILD_DIR/CMakeCache.txt" 2>/dev/null ||
  true)"
if [[ "$BUILD_TYPE" != Release ]]; then
  echo "startup_bench: WARNING: $BUILD_DIR is a '${BUILD_TYPE:-unknown}' build, the baseline" \
    "is Release: the figures do not compare. Use a Release build dir." >&2
fi

HEAD_BIN="$AGENT_BIN"
TIMER_BIN="$BUILD_DIR/tests/tools/pos-start-timer"
[[ -x "$TIMER_BIN" ]] ||
  fail "$TIMER_BIN is not built: cmake --build $BUILD_DIR --target pos-start-timer"
if [[ -n "${BENCH_BASELINE_BIN:-}" ]]; then
  BASE_BIN="$(cd "$(dirname "$BENCH_BASELINE_BIN")" && pwd)/$(basename "$BENCH_BASELINE_BIN")"
  [[ -x "$BASE_BIN" ]] || { echo "startup_bench: $BASE_BIN is not executable" >&2; exit 1; }
  BASELINE="$BASE_BIN"
else
  BASELINE="$(tail -n1 "$SOURCE_DIR/tests/bench/BASELINE")"
  build_old_agent "$BASELINE"
  BASE_BIN="$OLD_AGENT_BIN"
fi
now_ms() { echo $(($(date +%s%N) / 1000000)); }

# timed_start BIN: BIN run by pos-start-timer on the journal (exec -> a new
# sale answered 201, then SIGTERM -> exit, status 0 required); sets RUN_MS,
# LISTEN_MS (exec -> the listening line seen in the log) and STOP_MS, in ms
# with a fraction.
RUN_MS=""
LISTEN_MS=""
STOP_MS=""
timed_start() {
  local bin="$1" out
  AGENT_STARTS=$((AGENT_STARTS + 1))
  AGENT_LOG="$T/agent.$AGENT_STARTS.log"
  sale_json sale_id="\"RUN-$AGENT_STARTS\"" >"$T/run.sale.json"
  out="$("$TIMER_BIN" --log "$AGENT_LOG" --token "$TOKEN_T1" --sale "$T/run.sale.json" \
    -- "$bin" --config "$CONFIG")" || fail "pos-start-timer on $bin, run $AGENT_STARTS (above)"
  RUN_MS="$(sed -n 's/.*first_201_ms=\([0-9.]*\).*/\1/p' <<<"$out")"
  LISTEN_MS="$(sed -n 's/.*listening_ms=\([0-9.]*\).*/\1/p' <<<"$out")"
  STOP_MS="$(sed -n 's/.*stop_ms=\([0-9.]*\).*/\1/p' <<<"$out")"
  [[ -n "$RUN_MS" && -n "$LISTEN_MS" && -n "$STOP_MS" ]] ||
    fail "pos-start-timer printed" "first_201_ms=X listening_ms=X posts=N stop_ms=X" "$out"
}

# make_journal SIZE KIND: a new journal of SIZE sales, all acknowledged
# (KIND acked) or none sealed (KIND unsealed: recipes loaded, so that each
# row carries its stock deltas).
make_journal() {
  local size="$1" kind="$2" dir="$T/$2-j$1" last
  mkdir -p "$dir"
  JOURNAL="$dir/journal.db"
  if [[ "$kind" == unsealed ]]; then
    write_config inventory.recipes="$SOURCE_DIR/firmware-config/recipes.csv"
  else
    write_config
  fi
  AGENT_BIN="$BASE_BIN"
  start_agent
  if ((size > 0)); then
    post_sales "$TOKEN_T1" "$(sale_json sale_id='"SEED-1"')"
    expect_status "the seed sale" 201
  fi
  stop_agent
  if ((size > 1)); then
    copy_sales "$((size - 1))" GEN
  fi
  last="$(sql "SELECT coalesce(max(seq), 0) FROM sales;")"
  if [[ "$kind" == unsealed ]]; then
    sqlite3 "$JOURNAL" "
      UPDATE sales SET received_ms = received_ms - ($last - seq) * $SPACING_MS;
      PRAGMA wal_checkpoint(TRUNCATE);" >/dev/null ||
      fail "make_journal $size: sqlite3 failed on $JOURNAL"
    if ((size > 0)); then
      [[ "$(sql "SELECT count(*) FROM sales WHERE deltas IS NOT NULL;")" == "$size" ]] ||
        fail "make_journal $size unsealed: every row carries its stock deltas"
    fi
  elif ((size > 0)); then
    sqlite3 "$JOURNAL" "
      INSERT INTO batches(batch_seq, kind, resync_id, first_seq, last_seq, sale_count, body,
        created_ms, attempts, last_attempt_ms, acked_ms)
      VALUES(1, 'live', NULL, 1, $last, $size, x'00', $(now_ms), 1, $(now_ms), $(now_ms));
      UPDATE meta SET value = '$last' WHERE key IN ('sealed_last_seq', 'acked_last_seq');
      UPDATE meta SET value = '1' WHERE key IN ('last_batch_seq', 'acked_batch_seq');
      UPDATE sales SET received_ms = received_ms - ($last - seq) * $SPACING_MS;
      PRAGMA wal_checkpoint(TRUNCATE);" >/dev/null ||
      fail "make_journal $size: sqlite3 failed on $JOURNAL"
  fi
  sync
}

# stats LIST: "median min max" of the numbers in LIST, to 0.1 ms.
stats() {
  printf '%s\n' "$@" | sort -g |
    awk '{v[NR] = $1} END {printf "%.1f %.1f %.1f\n", v[int((NR + 1) / 2)], v[1], v[NR]}'
}

write_tokens
ROWS=()
for kind in $KINDS; do
  for size in $SIZES; do
    log "journal of $size $kind sales"
    made="$(now_ms)"
    make_journal "$size" "$kind"
    log "made in $(($(now_ms) - made)) ms ($(($(stat -c %s "$JOURNAL") >> 20)) MiB)"
    timed_start "$BASE_BIN"
    first_base="$RUN_MS"
    timed_start "$HEAD_BIN"
    first_head="$RUN_MS"
    base=() head=() base_stop=() head_stop=() base_listen=() head_listen=()
    for ((run = 0; run < RUNS; run++)); do
      timed_start "$BASE_BIN"
      base+=("$RUN_MS")
      base_stop+=("$STOP_MS")
      base_listen+=("$LISTEN_MS")
      timed_start "$HEAD_BIN"
      head+=("$RUN_MS")
      head_stop+=("$STOP_MS")
      head_listen+=("$LISTEN_MS")
    done
    log "$kind $size: baseline ${base[*]} ms (listening ${base_listen[*]}, stops" \
      "${base_stop[*]}), HEAD ${head[*]} ms (listening ${head_listen[*]}, stops ${head_stop[*]})"
    read -r bmed bmin bmax <<<"$(stats "${base[@]}")"
    read -r hmed hmin hmax <<<"$(stats "${head[@]}")"
    read -r bsmed _ <<<"$(stats "${base_stop[@]}")"
    read -r hsmed _ <<<"$(stats "${head_stop[@]}")"
    ROWS+=("$(printf '%-9s %9s %12.1f %12.1f  %-22s %-22s %8s %8s' "$kind" "$size" "$first_base" \
      "$first_head" "$bmed [$bmin-$bmax]" "$hmed [$hmin-$hmax]" "$bsmed" "$hsmed")")
  done
done

echo
echo "startup_bench: exec -> first 201 (pos-start-timer), baseline $BASELINE beside HEAD ($(git -C \
"$SOURCE_DIR" rev-parse --short HEAD 2>/dev/null || echo '?'), ${BUILD_TYPE:-?} build)," \
  "$(stat -f -c %T "$T") at $TMPDIR, $(nproc) cores, load $(cut -d' ' -f1 /proc/loadavg)"
echo "  reproduce: BENCH_SIZES=\"$SIZES\" BENCH_KINDS=\"$KINDS\" BENCH_RUNS=$RUNS" \
  "${BENCH_BASELINE_BIN:+BENCH_BASELINE_BIN=$BASE_BIN }bash tests/bench/startup_bench.sh $BUILD_DIR"
printf '%-9s %9s %12s %12s  %-22s %-22s %8s %8s\n' journal sales "first start" "first start" \
  "baseline (ms)" "HEAD (ms)" "stop" "stop"
printf '%-9s %9s %12s %12s  %-22s %-22s %8s %8s\n' "" "" "baseline" "HEAD" \
  "median [min-max] of $RUNS" "median [min-max] of $RUNS" "baseline" "HEAD"
printf '%s\n' "${ROWS[@]}"
