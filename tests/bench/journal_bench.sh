#!/usr/bin/env bash
# journal_bench.sh - what durability costs: pos-agent with group commit (the
# configured default, group_commit_max 1024) beside its yardstick, one
# transaction and fsync per sale (journal.group_commit_max = 1), for 1, 4,
# 16 and 64 concurrent terminals (pos-load clients, one sale per POST), on
# this machine's fsync and on a store device's slow one.
#
#   bash tests/bench/journal_bench.sh BUILD_DIR
#   cmake --build BUILD_DIR -t bench-journal           (the same)
#
# BUILD_DIR is a build tree (Release, like the figures of issue 12: the
# script warns when it is not) holding pos-agent, pos-load and
# libpos-fsync-shim.so. Every agent runs under that shim
# (tests/tools/fsync_shim.c): each fsync/fdatasync is counted and delayed
# by the run's delay, 0 (this machine's own) or 5000 us (an eMMC or SD
# card's). Each run gets a fresh journal on disk (under BENCH_DIR, never
# tmpfs) and lasts BENCH_SECONDS. The modes are INTERLEAVED, round by round
# (group, one-per-sale, group, ...), BENCH_ROUNDS times, and the median of
# the rounds is printed with its min and max, since the machine may be busy.
# A third mode, group-compact-rows, is group commit with
# journal.compact_rows = true (schema 8: a row's lines and payments in
# protobuf, not JSON; two rows to a page); slim, group-slim-rows, is group
# commit with journal.row_format = slim (schema 9: compact rows with a
# 16-byte content hash and business_time left out when it is the canonical
# text, as pos-load sends it). Every agent gets a
# RUNTIME_DIRECTORY on tmpfs, as systemd gives the unit one.
# Per run, over the load only (from just before pos-load starts to just
# after its last answer):
#   sales/s      sales acknowledged (201) per second (pos-load's rate)
#   sales/fsync  sales / fsync+fdatasync calls of the agent (the shim's count):
#                the commits' WAL syncs, and also the seq high-water mark's
#                (one per 1,024 seqs) and the checkpoints' (3 per checkpoint,
#                every 8192 WAL pages on a disk with room, 128 on a small
#                one: journal__wal_pages_for), so it stays below sales/commit
#   sales/commit sales / group commits (pos_agent_journal_commit_writes_count
#                on the agent's /metrics): how many share a commit's fsync
#   bytes/sale   write_bytes of /proc/PID/io per sale: what the agent sent to
#                the storage layer. It holds a checkpoint's copy into the
#                database file only when one falls in the run (every 8,192
#                WAL pages: about 1,600 commits of JSON rows, 2,000 of
#                compact ones): with one client give BENCH_SECONDS 20 or
#                more, or a short run leaves them out. It does not hold what
#                a journaling file system adds (ext4's journal commit at
#                each fdatasync that grows the WAL, as after the first start:
#                JOURNAL_WAL_PAGES_MAX in agent/journal/journal.c): disk/sale
#   disk/sale    with BENCH_FS=ext4 only: bytes the disk was sent per sale,
#                the file system's own writes included (ext4's journal, the
#                -shm's pages written back: the file system is synced just
#                before and just after the load), read from the loop
#                device's count of sectors written (/sys/block/loopN/stat)
#   page/sale    4096 B per commit, per sale: what the WAL would cost at least
#                written through the page cache (the kernel counts a page
#                each time it turns dirty, and every fsynced commit dirties
#                the WAL's last 4 KiB page again: issue 12, plan finding 1).
#                The journal writes its WAL direct to disk where the file
#                system allows it (agent/journal/journal_vfs.c), in 512-byte
#                blocks, so bytes/sale goes below it; the baseline does not.
# With BENCH_BASELINE=1 a third mode runs the agent before issue 12 (the
# commit in tests/bench/BASELINE, built once with build_old_agent from
# tests/integration/old_agent.sh) with group commit, interleaved too.
#
# Environment:
#   BENCH_FSYNC_DELAYS  "0 5000"    fsync delays, microseconds (-1 skips the sync)
#   BENCH_CLIENTS       "1 4 16 64"
#   BENCH_SECONDS       5           length of each run
#   BENCH_ROUNDS        3           interleaved rounds (median, min, max)
#   BENCH_SALES         150000      cap on the sales of one run
#   BENCH_BATCH         1           sales per request (pos-load --batch)
#   BENCH_PACE_MS       0           each client waits this long between two
#                                   requests (pos-load --pace-ms): a store's
#                                   pace, where the kernel writes the pages
#                                   that every commit dirties again (the
#                                   WAL-index -shm, the high-water mark's
#                                   slot) back between sales, not once for
#                                   many; give BENCH_SECONDS room for it
#   BENCH_BASELINE      0           1 = also the agent of tests/bench/BASELINE
#   BENCH_DIR           /var/tmp    where the journals go (on disk)
#   BENCH_FS            ""          ext4: the journals go to an ext4 file
#                                   system with its journal (mkfs.ext4's
#                                   defaults, as a device's root), made in a
#                                   file under BENCH_DIR and loop-mounted
#                                   (needs root), and disk/sale is printed
#   BENCH_FS_OPTIONS    ""          its mount options, e.g. lazytime (what a
#                                   device's data partition should have: a
#                                   commit that writes inside the WAL's blocks
#                                   changes only its times, which ext4 would
#                                   otherwise journal every 5 s)
#   BENCH_MODES         all         a subset of: group compact slim naive
#   BENCH_RESTART_SALES 0           N > 0: each run first takes N sales
#                                   (16 clients), stops the agent cleanly
#                                   and starts it again, then measures: a
#                                   store's day after its nightly restart,
#                                   the journal's WAL left by the stop
#   BENCH_ID_DIGITS     0           N > 0: sale ids numbered with N digits,
#                                   zero-padded (pos-load --id-digits), as a
#                                   till numbers receipts (the contract's
#                                   example "T1-000123"): a terminal's new
#                                   sale lands at the end of the sale_id
#                                   index. 0: unpadded counters
#                                   ("bench-c0-1000" sorts before
#                                   "bench-c0-101"), so new sales land all
#                                   over the index, which costs more pages
#                                   per commit (the figures of issue 12)
#
# The figures of issue 12 items 2 and 3, beside the baseline (reproduce with):
#   cmake -S . -B build-rel -DCMAKE_BUILD_TYPE=Release && cmake --build build-rel
#   BENCH_BASELINE=1 BENCH_SECONDS=3 bash tests/bench/journal_bench.sh build-rel
# and item 3 at one client with its checkpoints (see bytes/sale):
#   BENCH_CLIENTS=1 BENCH_FSYNC_DELAYS=5000 BENCH_SECONDS=20 \
#     bash tests/bench/journal_bench.sh build-rel
# A store's pace, one sale every 10 s, two minutes (bytes/sale is the figure):
#   BENCH_PACE_MS=10000 BENCH_SECONDS=120 BENCH_CLIENTS=1 BENCH_FSYNC_DELAYS=0 \
#     BENCH_ROUNDS=1 bash tests/bench/journal_bench.sh build-rel
# What the disk is sent per sale after a restart, on ext4 with its journal
# (issue 12 item 3, the WAL kept across stops: journal_wal_rewind):
#   BENCH_FS=ext4 BENCH_RESTART_SALES=3000 BENCH_CLIENTS=1 BENCH_FSYNC_DELAYS=5000 \
#     BENCH_SECONDS=20 BENCH_ROUNDS=1 bash tests/bench/journal_bench.sh build-rel
# One row, more rounds (a busy machine):
#   BENCH_FSYNC_DELAYS=0 BENCH_CLIENTS=1 BENCH_ROUNDS=5 bash tests/bench/journal_bench.sh build-rel
# Prints figures; asserts nothing about timing.
set -euo pipefail
export LC_ALL=C

BUILD_DIR="$(cd "${1:?usage: journal_bench.sh BUILD_DIR}" && pwd)"
SOURCE_DIR="$(cd "$(dirname "$0")/../.." && pwd)"
AGENT_BIN="$BUILD_DIR/agent/pos-agent"
LOAD_BIN="$BUILD_DIR/tests/tools/pos-load"
SHIM="$BUILD_DIR/tests/tools/libpos-fsync-shim.so"
DELAYS="${BENCH_FSYNC_DELAYS:-0 5000}"
CLIENTS_LIST="${BENCH_CLIENTS:-1 4 16 64}"
SECONDS_RUN="${BENCH_SECONDS:-5}"
ROUNDS="${BENCH_ROUNDS:-3}"
SALES="${BENCH_SALES:-150000}"
BATCH="${BENCH_BATCH:-1}"
PACE_MS="${BENCH_PACE_MS:-0}"
FS="${BENCH_FS:-}"
RESTART_SALES="${BENCH_RESTART_SALES:-0}"
ID_DIGITS="${BENCH_ID_DIGITS:-0}"

for bin in "$AGENT_BIN" "$LOAD_BIN" "$SHIM"; do
  [[ -e "$bin" ]] || { echo "journal_bench: $bin not built" >&2; exit 1; }
done
BUILD_TYPE="$(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$BUILD_DIR/CMakeCache.txt" 2>/dev/null ||
  true)"
if [[ "$BUILD_TYPE" != Release ]]; then
  echo "journal_bench: WARNING: $BUILD_DIR is a '${BUILD_TYPE:-unknown}' build, not Release:" \
    "its figures are not comparable with the issue's (or the baseline's, a Release build)" >&2
fi

read -r -a MODES <<<"${BENCH_MODES:-group compact slim naive}"
if [[ "${BENCH_BASELINE:-0}" == 1 ]]; then
  export POS_BUILD_DIR="$BUILD_DIR" POS_SOURCE_DIR="${POS_SOURCE_DIR:-$SOURCE_DIR}"
  export TMPDIR="${BENCH_DIR:-/var/tmp}"
  # lib.sh: fail/log and a work directory; old_agent.sh: build_old_agent.
  source "$SOURCE_DIR/tests/integration/lib.sh"
  source "$SOURCE_DIR/tests/integration/old_agent.sh"
  TEST_NAME=journal_bench
  BASELINE_COMMIT="$(tail -n1 "$SOURCE_DIR/tests/bench/BASELINE")"
  build_old_agent "$BASELINE_COMMIT"
  BASE_AGENT_BIN="$OLD_AGENT_BIN"
  MODES+=(base)
fi

WORK="$(mktemp -d "${BENCH_DIR:-/var/tmp}/pos-bench.XXXXXX")"
if [[ "$(stat -f -c %T "$WORK")" == tmpfs ]]; then
  echo "journal_bench: $WORK is on tmpfs; set BENCH_DIR to a directory on disk" >&2
  exit 1
fi
# The shim's count file goes to tmpfs, so that its rewrites are not counted
# in the agent's write_bytes.
COUNT_DIR="$(mktemp -d /dev/shm/pos-bench-count.XXXXXX)"
AGENT_PID=""
FS_IMAGE="" FS_MOUNT="" LOOP_DEV=""
cleanup() {
  if [[ -n "$AGENT_PID" ]]; then
    kill -KILL "$AGENT_PID" 2>/dev/null || true
    wait "$AGENT_PID" 2>/dev/null || true
  fi
  if [[ -n "$FS_MOUNT" ]]; then
    umount "$FS_MOUNT" 2>/dev/null || true
  fi
  rm -rf "$WORK" "$COUNT_DIR" "${T:-}" # T: lib.sh's work directory, with BENCH_BASELINE
}
trap cleanup EXIT

# disk_bytes: bytes written to the loop device so far (BENCH_FS), or 0.
disk_bytes() {
  if [[ -n "$LOOP_DEV" ]]; then
    sync -f "$FS_MOUNT"
    awk '{ printf "%.0f\n", $7 * 512 }' "/sys/block/${LOOP_DEV#/dev/}/stat"
  else
    echo 0
  fi
}
case "$FS" in
  "") ;;
  ext4)
    for tool in mkfs.ext4 losetup mount; do
      command -v "$tool" >/dev/null ||
        { echo "journal_bench: BENCH_FS=ext4 needs $tool (e2fsprogs, mount)" >&2; exit 1; }
    done
    ((EUID == 0)) || { echo "journal_bench: BENCH_FS=ext4 mounts a loop device: run as root" >&2; exit 1; }
    FS_IMAGE="$WORK/fs.img" FS_MOUNT="$WORK/fs"
    truncate -s 1G "$FS_IMAGE"
    mkfs.ext4 -q -F "$FS_IMAGE"
    mkdir -p "$FS_MOUNT"
    mount -o "loop${BENCH_FS_OPTIONS:+,$BENCH_FS_OPTIONS}" "$FS_IMAGE" "$FS_MOUNT" ||
      { echo "journal_bench: cannot loop-mount $FS_IMAGE (no loop devices here?)" >&2; exit 1; }
    LOOP_DEV="$(findmnt -n -o SOURCE "$FS_MOUNT")"
    [[ -r "/sys/block/${LOOP_DEV#/dev/}/stat" ]] ||
      { echo "journal_bench: no sector count for $LOOP_DEV" >&2; exit 1; }
    ;;
  *) echo "journal_bench: BENCH_FS=$FS: only ext4 is known" >&2; exit 1 ;;
esac
JOURNALS="${FS_MOUNT:-$WORK}"

TOKEN="bench-token-0123456789abcdef"
echo "* $TOKEN" >"$WORK/terminals"

write_bytes() { awk '/^write_bytes:/ { print $2 }' "/proc/$1/io"; }
fsyncs() { tr -d ' ' <"$COUNT_DIR/count"; }
commits() {
  curl -sf "http://127.0.0.1:$1/metrics" |
    awk '/^pos_agent_journal_commit_writes_count/ { print $2; found = 1 }
      END { if (!found) print 0 }'
}
log_port() {
  grep -m1 -E "event=$2( .*)? port=[0-9]+" "$1" |
    sed -n 's/.*[[:space:]]port=\([0-9][0-9]*\).*/\1/p'
}

# run MODE DELAY CLIENTS: one run; sets RUN_RATE, RUN_SPF (sales per fsync),
# RUN_SPC (sales per commit), RUN_BYTES and RUN_FLOOR (per sale). Runs in
# this shell, so the EXIT trap knows the agent it started.
run() {
  local mode="$1" delay="$2" clients="$3" bin="$AGENT_BIN" group=1024 compact=false rows=""
  local dir="$JOURNALS/$mode-$clients" runtime="$COUNT_DIR/runtime-$mode-$clients"
  [[ "$mode" == naive ]] && group=1
  [[ "$mode" == compact ]] && compact=true
  [[ "$mode" == slim ]] && rows="row_format = slim"
  [[ "$mode" == base ]] && bin="$BASE_AGENT_BIN"
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
$([[ "$mode" == base ]] || echo "compact_rows = $compact")
$rows
[api]
listen_host = 127.0.0.1
port = 0
terminal_tokens = $WORK/terminals
max_body = 16M
max_sales_per_request = 1000
[metrics]
listen_host = 127.0.0.1
port = 0
EOF
  # As the unit runs it: systemd's RuntimeDirectory (tmpfs) for what only
  # has to outlive kill -9 (the high-water mark's per-commit slot).
  mkdir -p "$runtime"
  start_bench_agent "$bin" "$dir" "$runtime" "$delay"
  local port mport bytes0 bytes1 sync0 sync1 commit0 commit1 disk0 disk1 out sales
  port="$(log_port "$dir/agent.log" listening)"
  if ((RESTART_SALES > 0)); then
    "$LOAD_BIN" --url "http://127.0.0.1:$port" --token "$TOKEN" --terminal T1 --clients 16 \
      --sales $(((RESTART_SALES + 15) / 16)) --prefix warm --id-digits "$ID_DIGITS" >/dev/null 2>"$dir/load.err" ||
      { cat "$dir/load.err" >&2; echo "pos-load failed before the restart" >&2; exit 1; }
    kill -TERM "$AGENT_PID"
    wait "$AGENT_PID" || true
    mv "$dir/agent.log" "$dir/agent-before-restart.log"
    start_bench_agent "$bin" "$dir" "$runtime" "$delay"
    port="$(log_port "$dir/agent.log" listening)"
  fi
  mport="$(log_port "$dir/agent.log" metrics_listening)"
  disk0="$(disk_bytes)"
  commit0="$(commits "$mport")" sync0="$(fsyncs)" bytes0="$(write_bytes "$AGENT_PID")"
  out="$("$LOAD_BIN" --url "http://127.0.0.1:$port" --token "$TOKEN" --terminal T1 \
    --clients "$clients" --sales $(((SALES + clients - 1) / clients)) --batch "$BATCH" \
    --pace-ms "$PACE_MS" --id-digits "$ID_DIGITS" \
    --prefix bench --duration "$SECONDS_RUN" 2>"$dir/load.err")" ||
    { cat "$dir/load.err" >&2; echo "pos-load failed: $out" >&2; exit 1; }
  bytes1="$(write_bytes "$AGENT_PID")" sync1="$(fsyncs)" commit1="$(commits "$mport")"
  disk1="$(disk_bytes)"
  kill -TERM "$AGENT_PID"
  wait "$AGENT_PID" || true
  AGENT_PID=""
  rm -rf "$dir" "$runtime"
  sales="$(sed -n 's/.* ok=\([0-9]*\).*/\1/p' <<<"$out")"
  RUN_RATE="$(sed -n 's/.* rate=\([0-9.]*\)\/s.*/\1/p' <<<"$out" | awk '{ printf "%.0f", $1 }')"
  read -r RUN_SPF RUN_SPC RUN_BYTES RUN_FLOOR RUN_DISK < <(awk -v n="$sales" \
    -v b=$((bytes1 - bytes0)) -v f=$((sync1 - sync0)) -v c=$((commit1 - commit0)) \
    -v d=$((disk1 - disk0)) 'BEGIN {
      printf "%.1f %.1f %.0f %.0f %.0f\n", (f > 0 ? n / f : 0), (c > 0 ? n / c : 0),
        (n > 0 ? b / n : 0), (n > 0 ? 4096 * c / n : 0), (n > 0 ? d / n : 0) }')
  [[ -n "$LOOP_DEV" ]] || RUN_DISK=-
}

# start_bench_agent BIN DIR RUNTIME DELAY: starts the agent of DIR/agent.conf
# under the fsync shim and waits for it to be ready; sets AGENT_PID.
start_bench_agent() {
  RUNTIME_DIRECTORY="$3" LD_PRELOAD="$SHIM" POS_FSYNC_DELAY_US="$4" \
    POS_FSYNC_COUNT_FILE="$COUNT_DIR/count" \
    "$1" --config "$2/agent.conf" 2>"$2/agent.log" >/dev/null &
  AGENT_PID=$!
  local deadline=$((SECONDS + 20))
  until grep -q 'event=ready' "$2/agent.log" 2>/dev/null; do
    kill -0 "$AGENT_PID" 2>/dev/null ||
      { tail "$2/agent.log" >&2; echo "agent died" >&2; exit 1; }
    ((SECONDS < deadline)) || { echo "agent not ready in 20 s" >&2; exit 1; }
    sleep 0.05
  done
}

# stat VALUES...: "median min max" of the values.
med3() {
  printf '%s\n' "$@" | sort -g |
    awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)], v[1], v[NR] }'
}

label() {
  case "$1" in
    group) echo group-1024 ;;
    compact) echo group-compact-rows ;;
    slim) echo group-slim-rows ;;
    naive) echo one-per-sale ;;
    base) echo "base-group@$BASELINE_COMMIT" ;;
  esac
}

echo "pos-agent journal benchmark: $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)," \
  "journal on $(df -P "$JOURNALS" | awk 'NR == 2 { print $1 }') ($(stat -f -c %T "$JOURNALS")${FS:+, $FS with its journal}${BENCH_FS_OPTIONS:+, -o $BENCH_FS_OPTIONS})," \
  "batch $BATCH, sale ids $( ((ID_DIGITS == 0)) && echo "unpadded" || echo "of $ID_DIGITS digits"),$( ((RESTART_SALES == 0)) || echo " measured after $RESTART_SALES sales and a clean restart,")" \
  "$SECONDS_RUN s per run, $ROUNDS interleaved rounds, build ${BUILD_TYPE:-unknown}"
echo "each figure: median [min-max] of the rounds"
printf '%-8s %7s %-20s %-22s %-18s %-18s %-20s %-20s %s\n' fsync_us clients mode "sales/s" \
  "sales/fsync" "sales/commit" "bytes/sale" "disk/sale" "page/sale"
declare -A MED
for delay in $DELAYS; do
  for clients in $CLIENTS_LIST; do
    declare -A R=()
    for ((round = 1; round <= ROUNDS; round++)); do
      for mode in "${MODES[@]}"; do
        run "$mode" "$delay" "$clients"
        R[$mode.rate]+=" $RUN_RATE" R[$mode.spf]+=" $RUN_SPF" R[$mode.spc]+=" $RUN_SPC"
        R[$mode.bytes]+=" $RUN_BYTES" R[$mode.floor]+=" $RUN_FLOOR" R[$mode.disk]+=" $RUN_DISK"
      done
    done
    for mode in "${MODES[@]}"; do
      cols=()
      for key in rate spf spc bytes disk floor; do
        # shellcheck disable=SC2086 # the values are words
        read -r med lo hi < <(med3 ${R[$mode.$key]})
        MED[$delay.$clients.$mode.$key]="$med"
        cols+=("$(printf '%s [%s-%s]' "$med" "$lo" "$hi")")
      done
      printf '%-8s %7d %-20s %-22s %-18s %-18s %-20s %-20s %s\n' "$delay" "$clients" "$(label "$mode")" \
        "${cols[@]}"
    done
    unset R
  done
done

# The side-by-side table needs the three modes (BENCH_MODES may name fewer).
[[ " ${MODES[*]} " == *" group "*" compact "*" naive "* ]] || exit 0
echo
echo "side by side (medians): group commit vs one transaction per sale" \
  "${BASE_AGENT_BIN:+(and the baseline group commit)}"
printf '%-8s %7s | %9s %11s %10s %11s | %9s %10s | %8s%s\n' fsync_us clients "group/s" \
  "sales/fsync" "bytes/sale" "compact b/s" "naive/s" "bytes/sale" speedup \
  "${BASE_AGENT_BIN:+ | base/s  base sales/fsync  base bytes/sale}"
for delay in $DELAYS; do
  for clients in $CLIENTS_LIST; do
    k="$delay.$clients"
    g="${MED[$k.group.rate]}" n="${MED[$k.naive.rate]}"
    printf '%-8s %7d | %9s %11s %10s %11s | %9s %10s | %7.1fx' "$delay" "$clients" "$g" \
      "${MED[$k.group.spf]}" "${MED[$k.group.bytes]}" "${MED[$k.compact.bytes]}" "$n" \
      "${MED[$k.naive.bytes]}" \
      "$(awk -v g="$g" -v n="$n" 'BEGIN { print (n > 0 ? g / n : 0) }')"
    if [[ -n "${BASE_AGENT_BIN:-}" ]]; then
      printf ' | %6s  %15s  %s' "${MED[$k.base.rate]}" "${MED[$k.base.spf]}" \
        "${MED[$k.base.bytes]}"
    fi
    echo
  done
done
