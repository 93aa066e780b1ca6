#!/usr/bin/env bash
# rss_bench.sh - idle RSS of a fresh agent (issue 12, item 7: at most 6 MB),
# the agent before issue 12 beside HEAD, with where it goes (smaps).
#
#   bash tests/bench/rss_bench.sh BUILD_DIR    (or: cmake --build BUILD_DIR -t bench-rss)
#
# BUILD_DIR must be a Release build (the baseline agent is one): the script
# says so loudly when it is not. The baseline is the commit in
# tests/bench/BASELINE, built once by build_old_agent
# (tests/integration/old_agent.sh) under BUILD_DIR/old-agents.
#
# Each run: a new journal; the agent started (no uplink, no TLS: the test
# configuration of tests/integration/lib.sh), one sale posted (so the
# writer thread and SQLite's page cache have worked once), BENCH_IDLE_S
# seconds idle, then /proc/PID/smaps_rollup read: Rss, Pss, and Rss split
# into anonymous memory (heap, thread stacks, arenas) and file-backed
# mappings (the binary and its shared libraries, mostly shared with other
# processes). Runs interleaved: baseline, HEAD, baseline, HEAD, baseline,
# HEAD; the median of each with min and max. Then, for the last run of
# each agent, Rss per mapping (the largest BENCH_TOP), from
# /proc/PID/smaps. Asserts nothing. Environment:
#   BENCH_RUNS    3 (runs of each agent, interleaved)
#   BENCH_IDLE_S  2
#   BENCH_TOP     14
set -euo pipefail
export LC_ALL=C

BUILD_DIR="$(cd "${1:?usage: rss_bench.sh BUILD_DIR}" && pwd)"
SOURCE_DIR="$(cd "$(dirname "$0")/../.." && pwd)"
export POS_BUILD_DIR="$BUILD_DIR" POS_SOURCE_DIR="${POS_SOURCE_DIR:-$SOURCE_DIR}"
RUNS="${BENCH_RUNS:-3}"
IDLE_S="${BENCH_IDLE_S:-2}"
TOP="${BENCH_TOP:-14}"
source "$SOURCE_DIR/tests/integration/lib.sh"
source "$SOURCE_DIR/tests/integration/old_agent.sh"
TEST_NAME=rss_bench
BUILD_TYPE="$(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$BUILD_DIR/CMakeCache.txt" 2>/dev/null ||
  true)"
if [[ "$BUILD_TYPE" != Release ]]; then
  echo "rss_bench: WARNING: $BUILD_DIR is a '${BUILD_TYPE:-unknown}' build, the baseline" \
    "is Release: the figures do not compare. Use a Release build dir." >&2
fi

HEAD_BIN="$AGENT_BIN"
BASELINE="$(tail -n1 "$SOURCE_DIR/tests/bench/BASELINE")"
build_old_agent "$BASELINE"
BASE_BIN="$OLD_AGENT_BIN"
write_tokens

# measure BIN NAME: one run; sets RUN_FIGURES "rss pss anon file" (kB) and
# leaves the per-mapping split in $T/NAME.maps.
RUNS_DONE=0
measure() {
  local bin="$1" name="$2"
  RUNS_DONE=$((RUNS_DONE + 1))
  JOURNAL="$T/run$RUNS_DONE/journal.db"
  mkdir -p "$T/run$RUNS_DONE"
  write_config
  AGENT_BIN="$bin"
  start_agent
  post_sales "$TOKEN_T1" "$(sale_json sale_id="\"RSS-$RUNS_DONE\"")"
  expect_status "the sale of run $RUNS_DONE" 201
  sleep "$IDLE_S"
  RUN_FIGURES="$(awk '/^Rss:/ {r = $2} /^Pss:/ {p = $2} /^Anonymous:/ {a = $2}
    END {print r, p, a, r - a}' "/proc/$AGENT_PID/smaps_rollup")"
  awk '/^[0-9a-f]+-[0-9a-f]+ / {n = ($6 == "" ? "[anonymous]" : $6)}
       /^Rss:/ {r[n] += $2} END {for (k in r) if (r[k] > 0) print r[k], k}' \
    "/proc/$AGENT_PID/smaps" | sort -rn | head -n "$TOP" >"$T/$name.maps"
  echo "$(ls "/proc/$AGENT_PID/task" | wc -l) threads," \
    "$(awk '$6 ~ /\.so/ {print $6}' "/proc/$AGENT_PID/maps" | sort -u | wc -l) shared" \
    "libraries" >"$T/$name.threads"
  stop_agent
}

# stats LIST: "median min max".
stats() {
  printf '%s\n' "$@" | sort -n | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)], v[1], v[NR]}'
}
# column I LIST...: the I-th (1-based) figure of each "rss pss anon file".
column() {
  local i="$1"
  shift
  printf '%s\n' "$@" | awk -v i="$i" '{print $i}'
}

base=() head=()
for ((run = 0; run < RUNS; run++)); do
  measure "$BASE_BIN" baseline
  base+=("$RUN_FIGURES")
  measure "$HEAD_BIN" head
  head+=("$RUN_FIGURES")
done

echo
echo "rss_bench: idle RSS of a fresh agent (${IDLE_S} s after its first sale), baseline" \
  "$BASELINE beside HEAD ($(git -C "$SOURCE_DIR" rev-parse --short HEAD 2>/dev/null || echo '?')," \
  "${BUILD_TYPE:-?} build), $(nproc) cores, load $(cut -d' ' -f1 /proc/loadavg)"
echo "  reproduce: bash tests/bench/rss_bench.sh $BUILD_DIR"
printf '%-22s %-26s %s\n' "kB, median [min-max]" "baseline" "HEAD"
i=0
for label in Rss Pss "Rss anonymous" "Rss file-backed"; do
  i=$((i + 1))
  read -r bmed bmin bmax <<<"$(stats $(column "$i" "${base[@]}"))"
  read -r hmed hmin hmax <<<"$(stats $(column "$i" "${head[@]}"))"
  printf '%-22s %-26s %s\n' "$label" "$bmed [$bmin-$bmax]" "$hmed [$hmin-$hmax]"
done
for name in baseline head; do
  echo
  echo "$name, last run: $(cat "$T/$name.threads"); Rss per mapping (kB):"
  sed 's/^/  /' "$T/$name.maps"
done
