#!/usr/bin/env bash
# A journal that lost sales it had handed out (its WAL cut mid-frame or
# deleted while the agent was down) must never hand their seqs out again
# under the same journal_id: the agent notices (the seq high-water mark
# beside the database), keeps the old file, starts a new journal_id, says so
# in its log and in /status.json, and carries the sales it still has over.
# A database that is not a database is refused with an error that says what
# to do, and journal.new_journal_if_damaged moves it aside (kept) instead.
source "$(dirname "$0")/lib.sh"

write_tokens

# post_numbered PREFIX N: N sales PREFIX-1..N, one request (one commit) each;
# every one must be acknowledged 201. Appends "sale_id seq" to $T/acked.
post_numbered() {
  local prefix="$1" n="$2" i
  for ((i = 1; i <= n; i++)); do
    post_sales "$TOKEN_T1" "$(sale_json sale_id="\"$prefix-$i\"")"
    expect_status "sale $prefix-$i" 201
    echo "$prefix-$i $(json_get "$HTTP_BODY" '$.seq')" >>"$T/acked"
  done
}

# resend_numbered PREFIX N: the POS resends PREFIX-1..N: each is taken (201)
# or already journaled (200, duplicate).
resend_numbered() {
  local prefix="$1" n="$2" i
  for ((i = 1; i <= n; i++)); do
    post_sales "$TOKEN_T1" "$(sale_json sale_id="\"$prefix-$i\"")"
    [[ "$HTTP_STATUS" == 201 || "$HTTP_STATUS" == 200 ]] ||
      fail "resent sale $prefix-$i: HTTP status (body: $HTTP_BODY)" "201 or 200" "$HTTP_STATUS"
  done
}

# lost_journal_round NAME CHECKPOINT DAMAGE: 30 acknowledged sales (with
# CHECKPOINT=1 the WAL is checkpointed into the database after the first
# 15, as SQLite does by itself every 1000 pages), kill -9, DAMAGE (a shell
# command run on the stopped agent's files), restart; then checks.
lost_journal_round() {
  local name="$1" checkpoint="$2" damage="$3"
  rm -f "$JOURNAL" "$JOURNAL"-* "$JOURNAL".damaged-*
  : >"$T/acked"
  start_agent
  post_numbered "$name" 15
  if [[ "$checkpoint" == 1 ]]; then
    sqlite3 -batch "$JOURNAL" "PRAGMA wal_checkpoint(PASSIVE);" >/dev/null
  fi
  post_numbered "$name-b" 15
  local old_id max_seq
  old_id="$(sql "SELECT value FROM meta WHERE key = 'journal_id';")"
  max_seq="$(tail -n 1 "$T/acked" | cut -d' ' -f2)"
  kill_agent
  # Nothing may open the database between the kill and the damage (a
  # reader would checkpoint the WAL into it).
  eval "$damage"
  start_agent
  local new_id
  new_id="$(sql "SELECT value FROM meta WHERE key = 'journal_id';")"
  [[ "$new_id" != "$old_id" ]] ||
    fail "$name: a journal that lost acknowledged sales gets a new journal_id" "not $old_id" "$new_id"
  grep -q 'event=journal_lost_sales' "$AGENT_LOG" ||
    fail "$name: the agent logs event=journal_lost_sales" "a log line" "$(cat "$AGENT_LOG")"
  grep -q "event=journal_lost_sales.*previous_journal_id=$old_id" "$AGENT_LOG" ||
    fail "$name: the log names the previous journal" "$old_id" "$(grep journal_lost "$AGENT_LOG")"
  status_json
  assert_eq "$name: status.json journal_id" "$new_id" "$(json_get "$STATUS_JSON" '$.journal_id')"
  assert_eq "$name: status.json journal_reset.previous_journal_id" "$old_id" \
    "$(json_get "$STATUS_JSON" '$.journal_reset.previous_journal_id')"
  assert_gt "$name: status.json journal_reset.sales_missing" 0 \
    "$(json_get "$STATUS_JSON" '$.journal_reset.sales_missing')"
  assert_contains "$name: status.json journal_reset.reason" "never reused" \
    "$(json_get "$STATUS_JSON" '$.journal_reset.reason')"
  # The old file is kept, never deleted.
  local aside
  aside="$(ls "$JOURNAL".damaged-* 2>/dev/null | grep -v -- '-wal$\|-shm$' | head -n 1)"
  [[ -n "$aside" ]] || fail "$name: the old journal is kept as $JOURNAL.damaged-<time>" "a file" \
    "$(ls "$T")"
  assert_eq "$name: the kept file still holds journal $old_id" "$old_id" \
    "$(sqlite3 -batch "$aside" "SELECT value FROM meta WHERE key = 'journal_id';")"
  # What survived was carried over (unsent: no collector here); what was
  # lost can be resent by the POS and is taken again, under the new journal.
  local kept
  kept="$(journal_count)"
  assert_gt "$name: sales carried over into the new journal" 0 "$kept"
  assert_gt "$name: sales lost with the WAL (the damage took some)" "$kept" 30
  resend_numbered "$name" 15
  resend_numbered "$name-b" 15
  assert_eq "$name: rows after the POS resent everything" 30 "$(journal_count)"
  assert_eq "$name: distinct seqs" 30 "$(sql 'SELECT count(DISTINCT seq) FROM sales;')"
  # The journal_reset stays visible after a restart.
  stop_agent
  start_agent
  status_json
  assert_eq "$name: journal_reset after a clean restart" "$old_id" \
    "$(json_get "$STATUS_JSON" '$.journal_reset.previous_journal_id')"
  assert_eq "$name: no second reset after a clean restart" "$new_id" \
    "$(json_get "$STATUS_JSON" '$.journal_id')"
  stop_agent
  log "$name: journal $old_id (last seq $max_seq) -> $new_id, $kept sales carried over"
}

write_config
# 1. The WAL cut mid-frame: the last commits are gone.
lost_journal_round CUT 0 \
  'size=$(wal_log_end "$JOURNAL-wal"); truncate -s $((size - 2 * 1048 - 100)) "$JOURNAL-wal"'
# 2. The WAL deleted: everything since the last checkpoint is gone.
lost_journal_round DEL 1 'rm -f "$JOURNAL-wal"'

# 2b. With a runtime directory (systemd's RuntimeDirectory=, tmpfs on a
# device), the slot written after each commit lives there and PATH-hwm is
# written only when seqs are reserved: the same loss is still told (the
# durable slots alone hold no commit of this round's sales).
export RUNTIME_DIRECTORY="$T/run"
mkdir -p "$RUNTIME_DIRECTORY"
rm -f "$JOURNAL" "$JOURNAL"-* "$JOURNAL".damaged-*
: >"$T/acked"
start_agent
post_numbered RUN-A 1
hwm_before="$(sha256sum <"$JOURNAL-hwm")"
post_numbered RUN-B 5
assert_eq "a runtime directory: PATH-hwm is not written per commit" "$hwm_before" \
  "$(sha256sum <"$JOURNAL-hwm")"
runtime_slot="$(ls "$RUNTIME_DIRECTORY"/journal-*.hwm 2>/dev/null | head -n 1)"
[[ -n "$runtime_slot" ]] || fail "a runtime directory: the per-commit slot is in it" \
  "$RUNTIME_DIRECTORY/journal-*.hwm" "$(ls -A "$RUNTIME_DIRECTORY")"
assert_match "a runtime directory: its slot says the last commit" " c=6 " "$(head -c 400 "$runtime_slot")"
kill_agent
lost_journal_round RUNDEL 1 'rm -f "$JOURNAL-wal"'
unset RUNTIME_DIRECTORY

# 3. The database and its WAL deleted: the next database is a new journal
# anyway, and it says which journal was lost beside it.
start_agent
OLD_ID="$(sql "SELECT value FROM meta WHERE key = 'journal_id';")"
kill_agent
rm -f "$JOURNAL" "$JOURNAL-wal" "$JOURNAL-shm"
start_agent
status_json
assert_eq "database deleted: journal_reset.previous_journal_id" "$OLD_ID" \
  "$(json_get "$STATUS_JSON" '$.journal_reset.previous_journal_id')"
assert_gt "database deleted: journal_reset.sales_missing" 0 \
  "$(json_get "$STATUS_JSON" '$.journal_reset.sales_missing')"
stop_agent

# 4. A plain kill -9 loses nothing: same journal, no reset, seqs go on above.
rm -f "$JOURNAL" "$JOURNAL"-* "$JOURNAL".damaged-*
: >"$T/acked"
start_agent
post_numbered K 5
ID="$(sql "SELECT value FROM meta WHERE key = 'journal_id';")"
kill_agent
start_agent
status_json
assert_eq "kill -9 without damage: same journal_id" "$ID" "$(json_get "$STATUS_JSON" '$.journal_id')"
assert_eq "kill -9 without damage: no journal_reset" "" "$(json_get "$STATUS_JSON" '$.journal_reset')"
check_acked "$T/acked" "kill -9 without damage"
post_sales "$TOKEN_T1" "$(sale_json sale_id='"K-after"')"
expect_status "sale after kill -9" 201
assert_gt "seq after kill -9 (never reused)" 5 "$(json_get "$HTTP_BODY" '$.seq')"
stop_agent

# 5. Not a database: a clear refusal that says what to do.
rm -f "$JOURNAL" "$JOURNAL"-* "$JOURNAL".damaged-*
head -c 65536 /dev/urandom >"$JOURNAL"
rc=0
"$AGENT_BIN" --config "$CONFIG" >"$T/garbage.out" 2>"$T/garbage.err" || rc=$?
assert_gt "exit status on a garbage journal" 0 "$rc"
assert_contains "the error names the file" "$JOURNAL" "$(cat "$T/garbage.err")"
assert_contains "the error says it is damaged" "damaged" "$(cat "$T/garbage.err")"
assert_contains "the error says what to do" "journal.new_journal_if_damaged = true" \
  "$(cat "$T/garbage.err")"
assert_eq "the garbage file is left alone" 65536 "$(stat -c %s "$JOURNAL")"

# 6. ... and with journal.new_journal_if_damaged = true it is moved aside.
sum_before="$(sha256sum <"$JOURNAL")"
write_config "$CONFIG" journal.new_journal_if_damaged=true
start_agent
aside="$(ls "$JOURNAL".damaged-* | grep -v -- '-wal$\|-shm$' | head -n 1)"
[[ -n "$aside" ]] || fail "the damaged file is kept as $JOURNAL.damaged-<time>" "a file" "$(ls "$T")"
assert_eq "the damaged file is kept byte for byte" "$sum_before" "$(sha256sum <"$aside")"
grep -q 'event=journal_damaged' "$AGENT_LOG" || fail "event=journal_damaged logged" "" "$(cat "$AGENT_LOG")"
status_json
assert_contains "status.json journal_reset.reason" "damaged" \
  "$(json_get "$STATUS_JSON" '$.journal_reset.reason')"
post_sales "$TOKEN_T1" "$(sale_json sale_id='"G-1"')"
expect_status "a sale into the new journal" 201
stop_agent
