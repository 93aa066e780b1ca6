#!/usr/bin/env bash
# A journal that cannot grow answers 503 with Retry-After and a reason,
# loses nothing it acknowledged, and takes sales again once there is room.
#
# Phase 1 (always): journal.max_size = 256K, freed by restarting with 16M.
# Phase 2 (when this user may mount): the journal on a 1 MiB tmpfs, freed by
# remounting it at 16 MiB while the agent runs.
source "$(dirname "$0")/lib.sh"

write_tokens

# fill PREFIX: posts one sale at a time until the first 503 (so that what is left is
# less than a sale, whatever the schema takes: the journal is full by its own
# measure, after a restart too); sets FILL_ACKED (file).
fill() {
  FILL_ACKED="$T/acked.$1"
  : >"$FILL_ACKED"
  local rc=0
  LOAD_OUT="$("$LOAD_BIN" --url "$AGENT_URL" --token "$TOKEN_T1" --terminal T1 \
    --time-base "$LOAD_TIME_BASE" --clients 1 --sales 50000 --batch 1 --prefix "$1" \
    --acked "$FILL_ACKED" --allow-failures --max-failures 1 2>"$T/load.err")" || rc=$?
  assert_eq "pos-load exit status while filling ($(cat "$T/load.err"))" 0 "$rc"
  log "filling: $LOAD_OUT"
  grep -q ' 503=' "$T/load.err" || fail "the journal filled up with a 503" "requests by status: ... 503=1" "$(cat "$T/load.err")"
  assert_gt "sales acknowledged before the journal was full" 0 "$(load_field ok)"
}

# expect_full PREFIX: the journal is full now; a new sale gets 503 with
# Retry-After and a reason, a resent acknowledged sale is still a duplicate,
# and the status page answers.
expect_full() {
  local rows
  rows="$(journal_count)"
  post_sales "$TOKEN_T1" "$(sale_json sale_id="\"$1-one-more\"")"
  expect_status "a sale when the journal is full" 503
  assert_match "Retry-After of the 503" '^([0-9]+|[A-Z][a-z]{2}, .*GMT)$' "$(header Retry-After)"
  local error
  error="$(json_get "$HTTP_BODY" '$.error')"
  shopt -s nocasematch
  [[ "$error" =~ full|space|size ]] || fail "503 error says why" "a reason mentioning full, space or size" "$error"
  shopt -u nocasematch
  assert_eq "rows after a 503" "$rows" "$(journal_count)"

  # A POS retrying a sale it has an answer for needs no room.
  local first_seq
  first_seq="$(awk 'NR == 1 { print $2 }' "$FILL_ACKED")"
  post_sales "$TOKEN_T1" "$("$LOAD_BIN" --emit-json --prefix "$1" --terminal T1 --client 0 \
    --index 0 --time-base "$LOAD_TIME_BASE")"
  expect_status "resending an acknowledged sale when the journal is full" 200
  assert_eq "seq of the resent sale" "$first_seq" "$(json_get "$HTTP_BODY" '$.seq')"

  status_json
}

# --- phase 1: max_size ---------------------------------------------------------------
JOURNAL="$T/limited/journal.db"
mkdir -p "$T/limited"
write_config journal.max_size=256K
start_agent
fill M
expect_full M
stop_agent
assert_eq "integrity_check of the full journal" ok "$(sql 'PRAGMA integrity_check;')"
check_acked "$FILL_ACKED" "max_size: sales acknowledged before 503"

# Restarting with the journal still full: the agent starts, still refuses.
start_agent
check_acked "$FILL_ACKED" "max_size: after a restart"
post_sales "$TOKEN_T1" "$(sale_json sale_id='"M-after-restart"')"
expect_status "a sale after a restart with the journal still full" 503
stop_agent

# Room again: a larger max_size.
write_config journal.max_size=16M
start_agent
check_acked "$FILL_ACKED" "max_size: after raising max_size"
run_load --clients 2 --sales 100 --prefix M2
assert_eq "sales accepted after raising max_size" 200 "$(load_field ok)"
stop_agent

# --- phase 2: a full file system -------------------------------------------------------
SMALL="$T/small"
mkdir -p "$SMALL"
if ! mount -t tmpfs -o size=1m,mode=0700 tmpfs "$SMALL" 2>"$T/mount.err"; then
  log "phase 2 skipped: cannot mount a tmpfs here ($(cat "$T/mount.err"))"
  exit 0
fi
on_cleanup "umount '$SMALL' 2>/dev/null || umount -l '$SMALL'"
JOURNAL="$SMALL/journal.db"
write_config journal.max_size=0
start_agent
fill F
expect_full F
assert_gt "status.json disk_free_bytes is reported" -1 "$(json_get "$STATUS_JSON" '$.disk_free_bytes')"

# Free space while the agent runs: sales are accepted again within 10 s.
mount -o remount,size=16m "$SMALL"
deadline=$((SECONDS + 10))
while :; do
  post_sales "$TOKEN_T1" "$(sale_json sale_id='"F-after-remount"')"
  [[ "$HTTP_STATUS" == 201 ]] && break
  ((SECONDS < deadline)) || fail "a sale within 10 s of freeing space (body: $HTTP_BODY)" 201 "$HTTP_STATUS"
  sleep 0.5
done
run_load --clients 2 --sales 100 --prefix F2
assert_eq "sales accepted after freeing space" 200 "$(load_field ok)"
stop_agent
assert_eq "integrity_check after the disk was full" ok "$(sql 'PRAGMA integrity_check;')"
start_agent
check_acked "$FILL_ACKED" "full disk: sales acknowledged before 503, after a restart"
assert_eq "F-after-remount present" 1 "$(sql "SELECT count(*) FROM sales WHERE sale_id = 'F-after-remount';")"
stop_agent
