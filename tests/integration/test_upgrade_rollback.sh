#!/usr/bin/env bash
# An upgrade, then a rollback, keeps taking sales (issue 11, item 4).
#
# The agent of the last release before the journal recorded its oldest
# reader (old_agent.sh, built from this tree's history) journals sales;
# the agent under test upgrades that journal (schemas 7 to 10, additive:
# the oldest reader stays 6) and takes sales; the old agent again (a
# rollback) still opens it and takes sales; the new agent again takes it as
# it is. Every sale of every run is there. Then journal.compact_rows: the
# new agent records that the old one no longer reads the journal (oldest
# reader 8) and writes compact rows; the old agent refuses it, naming the
# agent it needs; the new agent without the option opens it and writes JSON
# rows again (test_journal_encode seals both kinds). Then compact_rows alone
# on this firmware still writes reader-8 rows; journal.row_format = slim
# raises the oldest reader to 9 (event=rows_slim) and writes slim rows (a
# 16-byte hash, the canonical business_time left out), whose sale's retry
# stays a duplicate; the old agent refuses that journal; the new agent
# without the option reads it and writes JSON rows.
# Last, a journal whose oldest reader is newer than the agent under test is
# refused with exit 78, a message naming the agent it needs, and the file
# left as it was.
#
# POS_UPGRADE_SALES sales (20,000 by default) are made quickly with SQLite
# from a real journaled sale (copy_sales).
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/old_agent.sh"

SALES="${POS_UPGRADE_SALES:-20000}"
NEW_AGENT_BIN="$AGENT_BIN"
# The old agent is built for the build machine (old_agent.sh) and runs
# natively; in a cross build the new one runs under the emulator, so the
# journal also crosses from one architecture to the other and back.
build_old_agent

# post_one ID: one sale through the running agent, which must answer 201.
post_one() {
  post_sales "$TOKEN_T1" "$(sale_json sale_id="\"$1\"")"
  expect_status "sale $1 (agent run $AGENT_STARTS: $2)" 201
}

# post_retry ID: the same sale again, which must be answered as a duplicate.
post_retry() {
  post_sales "$TOKEN_T1" "$(sale_json sale_id="\"$1\"")"
  expect_status "sale $1 again (agent run $AGENT_STARTS: $2)" 200
  assert_contains "sale $1 again: a duplicate" '"duplicate":true' "$HTTP_BODY"
}

write_tokens
write_config

log "the old agent ($OLD_AGENT_COMMIT) starts a journal"
AGENT_BIN="$OLD_AGENT_BIN"
start_agent
post_one OLD-1 "old agent"
stop_agent
copy_sales "$SALES" GEN
assert_eq "the old agent's journal: user_version" 6 "$(sql "PRAGMA user_version;")"
assert_eq "the old agent knows no schema_version key" "" \
  "$(sql "SELECT value FROM meta WHERE key = 'schema_version';")"
id_before="$(sql "SELECT value FROM meta WHERE key = 'journal_id';")"

log "the new agent upgrades it"
AGENT_BIN="$NEW_AGENT_BIN"
start_agent
post_one NEW-1 "new agent, upgrade"
stop_agent
for step in 7 8 9 10; do
  grep -q "event=migrated .*schema_version=$step oldest_reader=6 additive=yes" "$AGENT_LOG" ||
    fail "the new agent logs its additive step $step" \
      "event=migrated schema_version=$step oldest_reader=6" \
      "$(grep 'mod=journal' "$AGENT_LOG" | head -n 5)"
done
assert_eq "after the upgrade, the oldest reader (user_version)" 6 \
  "$(sql "PRAGMA user_version;")"
assert_eq "after the upgrade, meta schema_version" 10 \
  "$(sql "SELECT value FROM meta WHERE key = 'schema_version';")"
assert_eq "the upgrade keeps the journal_id" "$id_before" \
  "$(sql "SELECT value FROM meta WHERE key = 'journal_id';")"

log "rollback: the old agent on the upgraded journal"
AGENT_BIN="$OLD_AGENT_BIN"
start_agent
post_one OLD-2 "old agent, rollback"
stop_agent
if grep -qE 'event=(journal_lost_sales|hwm_damaged|started_after_loss)' "$AGENT_LOG"; then
  fail "the rollback opens the same journal" "no loss reported" \
    "$(grep -E 'event=(journal_lost_sales|hwm_damaged|started_after_loss)' "$AGENT_LOG")"
fi
assert_eq "the rollback keeps the journal_id" "$id_before" \
  "$(sql "SELECT value FROM meta WHERE key = 'journal_id';")"

log "the new agent again"
AGENT_BIN="$NEW_AGENT_BIN"
start_agent
post_one NEW-2 "new agent, again"
if grep -q 'event=migrated' "$AGENT_LOG"; then
  fail "the journal is at schema 10 already: no step runs again" "no event=migrated" \
    "$(grep 'event=migrated' "$AGENT_LOG")"
fi
stop_agent

assert_eq "every sale of every run is journaled, once" "$((SALES + 4))" \
  "$(sql "SELECT count(*) FROM sales;")"
assert_eq "each run's sale is there" "OLD-1 NEW-1 OLD-2 NEW-2" \
  "$(sql "SELECT group_concat(sale_id, ' ') FROM (SELECT sale_id FROM sales
          WHERE sale_id NOT LIKE 'GEN-%' ORDER BY seq);")"
assert_eq "the copied sales are all there" "$SALES" \
  "$(sql "SELECT count(DISTINCT sale_id) FROM sales WHERE sale_id LIKE 'GEN-%';")"
assert_eq "seqs are distinct and rising in the order taken" "$((SALES + 4))" \
  "$(sql "SELECT count(DISTINCT seq) FROM sales;")"
assert_eq "the rollback's sale comes after the upgrade's" 1 \
  "$(sql "SELECT (SELECT seq FROM sales WHERE sale_id = 'OLD-2') >
                 (SELECT seq FROM sales WHERE sale_id = 'NEW-1');")"

log "journal.compact_rows: the new agent writes compact rows, and says so"
write_config journal.compact_rows=true
start_agent
post_one NEW-C1 "new agent, compact rows"
stop_agent
assert_eq "compact rows raise the oldest reader (user_version)" 8 "$(sql "PRAGMA user_version;")"
assert_eq "... naming this agent" "$("$AGENT_BIN" --version | awk '{ print $NF }')" \
  "$(sql "SELECT value FROM meta WHERE key = 'oldest_reader_agent';")"
assert_eq "the new row is compact" blob "$(sql "SELECT typeof(lines) FROM sales WHERE sale_id = 'NEW-C1';")"
grep -q 'event=rows_compact .*oldest_reader=8' "$AGENT_LOG" ||
  fail "the agent logs the change of oldest reader" "event=rows_compact oldest_reader=8" \
    "$(grep 'mod=journal' "$AGENT_LOG" | head -n 5)"

# old_agent_refuses ROWS: the old agent, started on the journal, exits at
# once with an error (the journal holds ROWS it cannot read); sets
# digest_before to the journal's digest before it ran, AGENT_LOG to its log.
old_agent_refuses() {
  local rc=0
  digest_before="$(sqlite3 "$JOURNAL" .sha3sum)"
  AGENT_STARTS=$((AGENT_STARTS + 1))
  AGENT_LOG="$T/agent.$AGENT_STARTS.log"
  timeout 30 "$OLD_AGENT_BIN" --config "$CONFIG" 2>"$AGENT_LOG" >/dev/null || rc=$?
  [[ "$rc" != 0 && "$rc" != 124 ]] ||
    fail "the old agent refuses a journal with $1" "a non-zero exit, at once" \
      "exit $rc: $(tail -n 3 "$AGENT_LOG")"
}

log "a rollback to the old agent is refused, the journal kept"
write_config # the old agent knows no journal.compact_rows: the journal must refuse it
old_agent_refuses "compact rows"
assert_contains "the old agent says why: the journal's schema" "schema version 8, newer" \
  "$(cat "$AGENT_LOG")"
assert_eq "the refused journal is unchanged" "$digest_before" "$(sqlite3 "$JOURNAL" .sha3sum)"

log "the new agent without the option reads both kinds of row and writes JSON again"
write_config
start_agent
post_one NEW-3 "new agent, JSON rows again"
stop_agent
assert_eq "the row after is JSON" text "$(sql "SELECT typeof(lines) FROM sales WHERE sale_id = 'NEW-3';")"
assert_eq "the oldest reader stays 8 (compact rows are in the journal)" 8 \
  "$(sql "PRAGMA user_version;")"
assert_eq "every sale is there" "$((SALES + 6))" "$(sql "SELECT count(*) FROM sales;")"

log "journal.compact_rows = true alone, on this firmware: still compact rows (reader 8)"
write_config journal.compact_rows=true
start_agent
post_one NEW-C2 "new agent, compact_rows alone"
stop_agent
assert_eq "compact_rows alone keeps the oldest reader at 8 (a rollback stays possible)" 8 \
  "$(sql "PRAGMA user_version;")"
assert_eq "... and writes a 32-byte hash and the business_time as sent" \
  "32|2026-11-21T18:42:05+01:00" \
  "$(sql "SELECT length(content_hash) || '|' || business_time FROM sales WHERE sale_id = 'NEW-C2';")"

log "journal.row_format = slim: slim rows, the oldest reader 9 first, and said once"
write_config journal.row_format=slim
start_agent
post_one NEW-S1 "new agent, slim rows"
post_retry NEW-S1 "new agent, slim rows, a retry"
stop_agent
assert_eq "slim rows raise the oldest reader (user_version)" 9 "$(sql "PRAGMA user_version;")"
assert_eq "meta row_format" slim "$(sql "SELECT value FROM meta WHERE key = 'row_format';")"
assert_eq "the slim row: compact items, a 16-byte hash, the canonical business_time left out" \
  "blob|16|" \
  "$(sql "SELECT typeof(lines) || '|' || length(content_hash) || '|' || business_time
          FROM sales WHERE sale_id = 'NEW-S1';")"
assert_eq "the retry is no second row" 1 "$(sql "SELECT count(*) FROM sales WHERE sale_id = 'NEW-S1';")"
grep -q 'event=rows_slim .*oldest_reader=9 was=8' "$AGENT_LOG" ||
  fail "the agent logs the change of oldest reader" "event=rows_slim oldest_reader=9 was=8" \
    "$(grep 'mod=journal' "$AGENT_LOG" | head -n 5)"
[[ "$(grep -c 'event=rows_slim' "$AGENT_LOG")" == 1 ]] ||
  fail "event=rows_slim is said once" 1 "$(grep -c 'event=rows_slim' "$AGENT_LOG")"

log "the old agent refuses the journal with slim rows, which stays as it was"
write_config
old_agent_refuses "slim rows"
assert_eq "the refused journal is unchanged" "$digest_before" "$(sqlite3 "$JOURNAL" .sha3sum)"

log "the new agent without the option reads every kind of row and writes JSON again"
start_agent
post_one NEW-4 "new agent, JSON rows after slim ones"
post_retry NEW-S1 "new agent, a retry of a slim row's sale"
stop_agent
assert_eq "the row after is JSON" text "$(sql "SELECT typeof(lines) FROM sales WHERE sale_id = 'NEW-4';")"
assert_eq "the oldest reader stays 9 (slim rows are in the journal)" 9 "$(sql "PRAGMA user_version;")"
assert_eq "every sale is there" "$((SALES + 9))" "$(sql "SELECT count(*) FROM sales;")"

log "a journal whose oldest reader is newer than this agent is refused, and kept"
sqlite3 "$JOURNAL" "PRAGMA user_version = 11;
  INSERT INTO meta(key, value) VALUES('oldest_reader_agent', '9.9.9')
    ON CONFLICT(key) DO UPDATE SET value = excluded.value;
  UPDATE meta SET value = '11' WHERE key = 'schema_version';
  PRAGMA wal_checkpoint(TRUNCATE);" >/dev/null
digest_before="$(sqlite3 "$JOURNAL" .sha3sum)"
AGENT_STARTS=$((AGENT_STARTS + 1))
AGENT_LOG="$T/agent.$AGENT_STARTS.log"
rc=0
timeout 30 "$AGENT_BIN" --config "$CONFIG" 2>"$AGENT_LOG" >/dev/null || rc=$?
assert_eq "the agent's exit status (78: a person must act, systemd does not restart it)" 78 "$rc"
assert_contains "the message names the agent needed" "needs pos-agent 9.9.9 or newer" \
  "$(cat "$AGENT_LOG")"
assert_contains "the message names the journal" "$JOURNAL" "$(cat "$AGENT_LOG")"
assert_contains "the message says the journal is kept" "kept unchanged" "$(cat "$AGENT_LOG")"
assert_eq "the refused journal is unchanged" "$digest_before" "$(sqlite3 "$JOURNAL" .sha3sum)"
assert_eq "its sales are all there" "$((SALES + 9))" "$(sql "SELECT count(*) FROM sales;")"
out="$("$AGENT_BIN" --journal-compat --config "$CONFIG")" ||
  fail "--journal-compat reads the refused journal" "exit 0" "$out"
assert_contains "--journal-compat: the oldest reader" "oldest_reader=11" "$out"
assert_contains "--journal-compat: not readable by this agent" "readable=no" "$out"
assert_eq "--journal-compat leaves the journal unchanged" "$digest_before" \
  "$(sqlite3 "$JOURNAL" .sha3sum)"
