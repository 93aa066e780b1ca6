#!/usr/bin/env bash
# The one schema step that rewrites a table (schema 3's DROP COLUMN of
# sales.batch_seq, journals of the first releases) checks the free space
# first and keeps systemd from timing the start out while it runs
# (issue 11, item 4).
#
# A journal of the first releases (schema 2: sales.batch_seq and its
# index), of 12,000 sales, on a small tmpfs:
#   1. too little room for a copy of it: the agent refuses with exit 78
#      (systemd does not restart it), says how much it needs and what to do,
#      and the journal is unchanged;
#   2. room made (the tmpfs remounted larger): the agent upgrades it, tells
#      systemd (the notify socket, tests/tools/pos-notify-listen) STATUS= and
#      EXTEND_TIMEOUT_USEC= before READY=1, and takes a sale; every sale is
#      there and batch_seq is gone.
# Mounting needs root: skipped (77) without.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/old_agent.sh"

NOTIFY_BIN="$POS_BUILD_DIR/tests/tools/pos-notify-listen"
[[ -x "$NOTIFY_BIN" ]] || fail "$NOTIFY_BIN not built"
emulated NOTIFY_BIN
SMALL="$T/small"
mkdir -p "$SMALL"
if ! mount -t tmpfs -o size=8m,mode=0700 tmpfs "$SMALL" 2>"$T/mount.err"; then
  skip "cannot mount a tmpfs here ($(cat "$T/mount.err"))"
fi
on_cleanup "umount '$SMALL' 2>/dev/null || umount -l '$SMALL'"

# ---- a journal of the first releases (schema 2) ------------------------------
write_tokens
write_config
start_agent
post_sales "$TOKEN_T1" "$(sale_json sale_id='"FIRST-1"')"
expect_status "the first sale" 201
stop_agent
copy_sales 12000 GEN
journal_to_schema_2 "$JOURNAL"
assert_eq "the journal is at schema 2" 2 "$(sql "PRAGMA user_version;")"
cp "$JOURNAL" "$JOURNAL-hwm" "$SMALL/"
JOURNAL="$SMALL/journal.db"
write_config journal.path="$JOURNAL"
size_mib=$(($(stat -c %s "$JOURNAL") >> 20))
log "a schema-2 journal of $((12000 + 1)) sales, $size_mib MiB, on an 8 MiB tmpfs"
digest="$(sqlite3 "$JOURNAL" .sha3sum)"

# run_agent NAME: the agent with NOTIFY_SOCKET on a listener until it exits
# (1.) or is ready (2.); sets RC and NOTIFIED.
start_listener() {
  SOCK="$T/notify.$1.sock"
  "$NOTIFY_BIN" "$SOCK" >"$T/notify.$1" 2>"$T/notify.$1.err" &
  LISTENER_PID=$!
  on_cleanup "kill $LISTENER_PID 2>/dev/null"
  for _ in $(seq 100); do [[ -S "$SOCK" ]] && break; sleep 0.05; done
  [[ -S "$SOCK" ]] || fail "pos-notify-listen bound $SOCK: $(cat "$T/notify.$1.err")"
}
stop_listener() {
  kill -TERM "$LISTENER_PID" 2>/dev/null || true
  wait "$LISTENER_PID" 2>/dev/null || true
  NOTIFIED="$(cat "$T/notify.$1")"
}

# ---- 1. no room for the copy: refused, kept ----------------------------------
start_listener refused
RC=0
NOTIFY_SOCKET="$SOCK" timeout 60 "$AGENT_BIN" --config "$CONFIG" 2>"$T/agent.refused.log" \
  >/dev/null || RC=$?
stop_listener refused
assert_eq "no room for the rewrite: exit 78 (a person must act; not restarted)" 78 "$RC"
assert_match "the message says how much room the upgrade needs" \
  "upgrade to schema 3 rewrites the sales table and needs about [0-9]+ MiB free" \
  "$(cat "$T/agent.refused.log")"
assert_contains "the message says the journal is kept" "the journal is unchanged" \
  "$(cat "$T/agent.refused.log")"
assert_contains "systemctl status says why" "STATUS=not started, configuration" "$NOTIFIED"
assert_eq "the refused journal is unchanged" "$digest" "$(sqlite3 "$JOURNAL" .sha3sum)"
assert_eq "the refused journal is still at schema 2" 2 "$(sql "PRAGMA user_version;")"

# ---- 2. room made: upgraded, systemd kept waiting ------------------------------
mount -o remount,size=64m "$SMALL"
start_listener upgrade
NOTIFY_SOCKET="$SOCK" start_agent
post_sales "$TOKEN_T1" "$(sale_json sale_id='"AFTER-1"')"
expect_status "a sale after the rewrite" 201
stop_agent
stop_listener upgrade
grep -q 'event=migrated .*schema_version=3 .*additive=no' "$AGENT_LOG" ||
  fail "the rewrite step ran" "event=migrated schema_version=3" "$(grep migrated "$AGENT_LOG")"
assert_contains "systemd is told why start-up takes long" "STATUS=upgrading the journal to schema 3" \
  "$NOTIFIED"
assert_match "systemd's start timeout is pushed out while the rewrite runs" \
  "EXTEND_TIMEOUT_USEC=[0-9]+" "$NOTIFIED"
assert_eq "the upgrade's STATUS= is cleared once it is done" "STATUS=" \
  "$(grep -E '^STATUS=' "$T/notify.upgrade" | tail -n 1)"
extend_line="$(grep -n -m1 EXTEND_TIMEOUT_USEC "$T/notify.upgrade" | cut -d: -f1)"
ready_line="$(grep -n -m1 'READY=1' "$T/notify.upgrade" | cut -d: -f1)"
[[ -n "$ready_line" && "$extend_line" -lt "$ready_line" ]] ||
  fail "EXTEND_TIMEOUT_USEC comes before READY=1" "extend first" "$NOTIFIED"
assert_eq "every sale is there" $((12000 + 2)) "$(sql "SELECT count(*) FROM sales;")"
assert_eq "sales.batch_seq is gone" 0 \
  "$(sql "SELECT count(*) FROM pragma_table_info('sales') WHERE name = 'batch_seq';")"
assert_eq "the oldest reader after the upgrade" 6 "$(sql "PRAGMA user_version;")"
assert_eq "the schema after the upgrade" 10 \
  "$(sql "SELECT value FROM meta WHERE key = 'schema_version';")"
