#!/usr/bin/env bash
# run.sh - the fault harness: one command, one table.
#
#   bash tests/fault/run.sh [--short|--long] [--only NAME[,NAME...]] [BUILD_DIR]
#
# Each row is one scenario (tests/fault/scenario.sh) with its own broker,
# collector and agent: real processes over mutual TLS on loopback, a POS load
# (pos-load) running while the fault strikes, then everything drained and
# pos.sales.v1 read back with kcat. Columns:
#
#   acked       sales acknowledged to the POS (201/200 answered), distinct sale_ids
#   records     records in pos.sales.v1
#   by_key      distinct (store, journal_id, seq) among them
#   by_sale     distinct sale_ids among them
#   lost        acknowledged but not in Kafka
#   dup         in Kafka more than once: records - min(by_key, by_sale)
#   result      PASS only with 0 lost and 0 dup (SKIP: the fault cannot be
#               played here, e.g. no tmpfs without root)
#
# Scenarios (short | long):
#   kill_storm     kill -9 of agent, collector or both at random moments, a few
#                  ms after an ack (mid-push) and while a restarted collector
#                  rebuilds (mid-recovery), under continuous load: 12 | 120 kills
#   full_max_size  journal.max_size=256K filled to 503 while the collector is
#                  away, then the backlog must drain and room come back
#   full_disk      the same on a 1 MiB tmpfs with max_size=0 (root only)
#   wal_cut        everything sent, agent killed, -wal cut mid-frame, restart,
#                  more sales: 1 | 3 cuts
#   power_loss     agent over the LD_PRELOAD shim (fault_shim.c); each cut kills
#                  it and drops every unsynced write (or keeps a random in-order
#                  prefix, last sector torn): 4 | 30 cuts
#   fsync_eio      fsync/fdatasync fail with EIO for 3 s, then a power cut and a
#                  restart on a good disk: 2 | 8 rounds
#   network        pos-fault-proxy: 400 ms delay, resets mid-request and
#                  mid-answer, a blackout: 6+12+10 s | 30+60+60 s
#   broker_stop    SIGSTOP/SIGCONT of pos-broker under load: 1 x 10 s | 3 x 60 s
#
# --short (ctest fault_short) runs every scenario briefly, in about 4-5
# minutes on a busy 2-core machine; --long runs them at length, about 20
# minutes. A failing row is a finding: its notes (and the kept
# directory, named in the log) say what was lost or doubled.
# FAULT_SEED=N replays the random choices of a run (the seed is in each row).
# Logs of each scenario: $FAULT_OUT (default a temporary directory, kept).
set -uo pipefail
export LC_ALL=C

MODE=short
ONLY=""
BUILD=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --short) MODE=short ;;
    --long) MODE=long ;;
    --only) ONLY="$2"; shift ;;
    -h | --help) sed -n '2,/^set -uo/p' "$0" | sed '$d'; exit 0 ;;
    *) BUILD="$1" ;;
  esac
  shift
done
HERE="$(cd "$(dirname "$0")" && pwd)"
export POS_SOURCE_DIR="${POS_SOURCE_DIR:-$(cd "$HERE/../.." && pwd)}"
export POS_BUILD_DIR="${BUILD:-${POS_BUILD_DIR:-$POS_SOURCE_DIR/build}}"
POS_BUILD_DIR="$(cd "$POS_BUILD_DIR" && pwd)" || { echo "run.sh: no build directory" >&2; exit 2; }

SHORT_SCENARIOS=(kill_storm full_max_size full_disk wal_cut power_loss fsync_eio network broker_stop)
LONG_SCENARIOS=(kill_storm full_max_size full_disk wal_cut power_loss fsync_eio network broker_stop)
if [[ -n "$ONLY" ]]; then
  IFS=, read -r -a SCENARIOS <<<"$ONLY"
elif [[ "$MODE" == long ]]; then
  SCENARIOS=("${LONG_SCENARIOS[@]}")
else
  SCENARIOS=("${SHORT_SCENARIOS[@]}")
fi
SKIPPED=()
if [[ -n "${POS_EMULATOR:-}" || "${POS_FAULT_SANITIZED:-OFF}" == ON ]]; then
  # Under qemu-user the shim would be preloaded into qemu, not the agent;
  # under ASan its interceptors come before the shim's (not checked yet).
  for name in power_loss fsync_eio; do
    [[ " ${SCENARIOS[*]} " == *" $name "* ]] && SKIPPED+=("$name")
  done
  SCENARIOS=("${SCENARIOS[@]/power_loss/}")
  SCENARIOS=("${SCENARIOS[@]/fsync_eio/}")
fi

OUT="${FAULT_OUT:-$(mktemp -d "${TMPDIR:-/tmp}/pos-fault.XXXXXX")}"
mkdir -p "$OUT"
export FAULT_PKI="$OUT/pki"
if [[ ! -s "$FAULT_PKI/ca.crt" ]]; then
  bash "$POS_SOURCE_DIR/tests/tools/pki.sh" init "$FAULT_PKI" >"$OUT/pki.log" 2>&1 ||
    { echo "run.sh: pki.sh init failed: $(cat "$OUT/pki.log")" >&2; exit 1; }
fi

started=$SECONDS
ROWS=()
for name in "${SCENARIOS[@]}"; do
  [[ -n "$name" ]] || continue
  begin=$SECONDS
  echo "[fault] $name ($MODE) ..." >&2
  row="$(bash "$HERE/scenario.sh" "$name" "$MODE" 2>"$OUT/$name.log" | grep '^ROW' | tail -n 1)"
  if [[ -z "$row" ]]; then
    why="$(grep -m1 'FAIL' "$OUT/$name.log" | cut -c1-200)"
    row="$(printf 'ROW\t%s\t?\t?\t?\t?\t?\t?\tFAIL\taborted: %s' "$name" "${why:-see $OUT/$name.log}")"
  fi
  row="$row"$'\t'"$((SECONDS - begin))s"
  ROWS+=("$row")
  echo "[fault] $(cut -f2,9 <<<"$row" | tr '\t' ' ') in $((SECONDS - begin)) s (log $OUT/$name.log)" >&2
done

for name in "${SKIPPED[@]}"; do
  ROWS+=("$(printf 'ROW\t%s\t-\t-\t-\t-\t-\t-\tSKIP\tthe LD_PRELOAD shim is not played under an emulator or sanitizers\t0s' "$name")")
done

failed=0
printf '\nfault harness (%s), %d s, logs in %s\n\n' "$MODE" "$((SECONDS - started))" "$OUT"
{
  printf 'scenario\tacked\trecords\tby_key\tby_sale\tlost\tdup\tresult\ttime\n'
  for row in "${ROWS[@]}"; do
    cut -f2-9,11 <<<"$row"
  done
} | column -t -s $'\t'
echo
for row in "${ROWS[@]}"; do
  printf '%s: %s\n' "$(cut -f2 <<<"$row")" "$(cut -f10 <<<"$row")"
  [[ "$(cut -f9 <<<"$row")" == FAIL ]] && failed=$((failed + 1))
done
if ((failed > 0)); then
  echo "fault harness: $failed scenario(s) FAILED" >&2
  exit 1
fi
echo "fault harness: every row 0 lost, 0 duplicated"
