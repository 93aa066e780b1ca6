#!/usr/bin/env bash
# upgrade_bench.sh - an upgrade, a rollback and an upgrade again on a
# journal of a million sales, timed (issue 11, item 4).
#
#   bash tests/bench/upgrade_bench.sh BUILD_DIR    (or: cmake --build BUILD_DIR -t bench-upgrade)
#
# The agent of the last release before the journal recorded its oldest
# reader (tests/integration/old_agent.sh builds it from this tree's
# history, commit $OLD_AGENT_COMMIT) journals a sale; SQLite copies it to
# BENCH_SALES sales (new sale_ids and seqs); then, on that one journal:
#   baseline   the old agent restarted (nothing to migrate)
#   upgrade    the agent of BUILD_DIR (schema 6 -> 8)
#   rollback   the old agent again
#   re-upgrade the agent of BUILD_DIR again
#   baseline   the agent of BUILD_DIR restarted
# and then a copy of that journal as the first releases left it (schema 2:
# its upgrade rewrites the sales table), BENCH_REWRITE=0 to leave it out,
# each timed from exec to READY (event=ready, when systemd would get
# READY=1) and to the first sale answered 201, and each run must take its
# sale. Prints figures; asserts nothing about timing. Environment:
#   BENCH_SALES   1000000
#   BENCH_DIR     /var/tmp (where the journal goes: on disk, not tmpfs)
set -euo pipefail
export LC_ALL=C

BUILD_DIR="$(cd "${1:?usage: upgrade_bench.sh BUILD_DIR}" && pwd)"
SOURCE_DIR="$(cd "$(dirname "$0")/../.." && pwd)"
export POS_BUILD_DIR="$BUILD_DIR" POS_SOURCE_DIR="${POS_SOURCE_DIR:-$SOURCE_DIR}"
export TMPDIR="${BENCH_DIR:-/var/tmp}"
SALES="${BENCH_SALES:-1000000}"
# lib.sh: the agent's helpers, and a work directory under $TMPDIR.
source "$SOURCE_DIR/tests/integration/lib.sh"
source "$SOURCE_DIR/tests/integration/old_agent.sh"
TEST_NAME=upgrade_bench
if [[ "$(stat -f -c %T "$T")" == tmpfs ]]; then
  echo "upgrade_bench: $T is on tmpfs; set BENCH_DIR to a directory on disk" >&2
  exit 1
fi

NEW_AGENT_BIN="$AGENT_BIN"
build_old_agent
now_ms() { echo $(($(date +%s%N) / 1000000)); }

# timed_run LABEL BIN NAME: starts BIN on the journal, times exec -> event=ready
# and exec -> the first 201, stops it; appends a line to RESULTS.
RESULTS=()
timed_run() {
  local label="$1" bin="$2" started ready_ms="" first_ms="" line port="" sale
  AGENT_STARTS=$((AGENT_STARTS + 1))
  AGENT_LOG="$T/agent.$AGENT_STARTS.log"
  sale="$(sale_json sale_id="\"RUN-$AGENT_STARTS\"")"
  started="$(now_ms)"
  "$bin" --config "$CONFIG" 2>"$AGENT_LOG" >/dev/null &
  AGENT_PID=$!
  while [[ -z "$first_ms" ]]; do
    kill -0 "$AGENT_PID" 2>/dev/null || { AGENT_PID=""; fail "$label: the agent exited"; }
    if [[ -z "$ready_ms" ]] && grep -q 'event=ready' "$AGENT_LOG"; then
      ready_ms=$(($(now_ms) - started))
      line="$(grep -m1 -E 'event=listening( .*)? port=[0-9]+' "$AGENT_LOG")"
      port="$(sed -n 's/.*[[:space:]]port=\([0-9][0-9]*\).*/\1/p' <<<" $line")"
      AGENT_URL="http://127.0.0.1:$port"
    fi
    if [[ -n "$ready_ms" ]]; then
      post_sales "$TOKEN_T1" "$sale"
      [[ "$HTTP_STATUS" == 201 ]] && first_ms=$(($(now_ms) - started))
      [[ "$HTTP_STATUS" == 201 || "$HTTP_STATUS" == 503 ]] ||
        fail "$label: the sale" "201" "$HTTP_STATUS $HTTP_BODY"
    fi
    [[ -n "$first_ms" ]] || sleep 0.005
  done
  stop_agent
  RESULTS+=("$(printf '%-28s %-10s %12s %16s' "$label" "$3" "$ready_ms" "$first_ms")")
  log "$label: READY after $ready_ms ms, first 201 after $first_ms ms"
}

write_tokens
write_config
log "the old agent ($OLD_AGENT_COMMIT) journals a sale; SQLite copies it to $SALES sales"
AGENT_BIN="$OLD_AGENT_BIN"
start_agent
post_sales "$TOKEN_T1" "$(sale_json sale_id='"SEED-1"')"
expect_status "the seed sale" 201
stop_agent
copy_started="$(now_ms)"
copy_sales "$SALES" GEN
sqlite3 "$JOURNAL" "PRAGMA wal_checkpoint(TRUNCATE);" >/dev/null
log "copied in $(($(now_ms) - copy_started)) ms"
sync

timed_run "baseline: plain restart" "$OLD_AGENT_BIN" "$OLD_AGENT_COMMIT"
timed_run "upgrade (schema 6 -> 9)" "$NEW_AGENT_BIN" new
grep -q 'event=migrated .*schema_version=10' "$AGENT_LOG" || fail "the upgrade migrated to schema 10"
timed_run "rollback" "$OLD_AGENT_BIN" "$OLD_AGENT_COMMIT"
timed_run "re-upgrade (at 9 already)" "$NEW_AGENT_BIN" new
timed_run "baseline: plain restart" "$NEW_AGENT_BIN" new

total="$(sql "SELECT count(*) FROM sales;")"
assert_eq "every sale is in the journal" "$((SALES + 6))" "$total"
size_mib=$(($(stat -c %s "$JOURNAL") >> 20))

# The one step that rewrites a table: the same journal as the first
# releases left it (schema 2), upgraded by the new agent, with systemd's
# notify socket listened to (EXTEND_TIMEOUT_USEC while it runs).
extended=""
if [[ "${BENCH_REWRITE:-1}" == 1 ]]; then
  log "the same journal as the first releases left it (schema 2): the rewrite, timed"
  cp "$JOURNAL" "$T/first.db"
  cp "$JOURNAL-hwm" "$T/first.db-hwm"
  journal_to_schema_2 "$T/first.db"
  JOURNAL="$T/first.db"
  write_config journal.path="$JOURNAL"
  NOTIFY_BIN="$BUILD_DIR/tests/tools/pos-notify-listen"
  SOCK="$T/notify.sock"
  if [[ -x "$NOTIFY_BIN" ]]; then
    "$NOTIFY_BIN" "$SOCK" >"$T/notify" 2>&1 &
    on_cleanup "kill $! 2>/dev/null"
    for _ in $(seq 100); do [[ -S "$SOCK" ]] && break; sleep 0.05; done
  fi
  NOTIFY_SOCKET="$SOCK" timed_run "first release (2 -> 7)" "$NEW_AGENT_BIN" new
  grep -q 'event=migrated .*schema_version=3' "$AGENT_LOG" || fail "the rewrite step ran"
  rewrite_ms="$(sed -n 's/.*event=migrated .*schema_version=3 .* ms=\([0-9]*\).*/\1/p' "$AGENT_LOG")"
  [[ -f "$T/notify" ]] && extended="$(grep -c EXTEND_TIMEOUT_USEC "$T/notify" || true)"
fi

echo
echo "upgrade_bench: one journal of $total sales ($size_mib MiB," \
  "$(stat -f -c %T "$T") at $TMPDIR), $(nproc) cores, load $(cut -d' ' -f1 /proc/loadavg)"
printf '%-28s %-10s %12s %16s\n' run agent "exec->READY" "exec->first 201"
printf '%-28s %-10s %12s %16s\n' "" "" "(ms)" "(ms)"
printf '%s\n' "${RESULTS[@]}"
if [[ -n "${rewrite_ms:-}" ]]; then
  echo "first release (2 -> 8): schema 3's rewrite of the sales table took $rewrite_ms ms;" \
    "EXTEND_TIMEOUT_USEC sent ${extended:-?} times before READY"
fi
