#!/usr/bin/env bash
# Issue 7 item 11, seen from head office: after the agent's WAL lost its
# tail while the agent was down, the agent starts a new journal_id and its
# heartbeat in pos.agent-status.v1 says so (previous journal, reason, how
# many sales are missing), and what it sends afterwards reaches Kafka under
# the new journal, never under a reused seq of the old one.
source "$(dirname "$0")/lib.sh"

make_pki
start_broker --partitions 1
write_collector_config
start_collector
write_tokens
write_agent_config uplink.heartbeat_interval=1s
start_agent
# The agent pushes once at start (then every hour): let that push go by
# before selling, so that no batch is in flight when the agent is killed.
# (A batch in flight at the kill is test_e2e_journal_reset_inflight.sh.)
deadline=$((SECONDS + 30))
until grep -q 'mod=uplink event=push why=start' "$AGENT_LOG"; do
  ((SECONDS < deadline)) || fail "the agent's push at start within 30 s" "event=push why=start" "$(tail -n 3 "$AGENT_LOG")"
  sleep 0.1
done
sleep 1

for i in $(seq 1 20); do
  post_sales "$TOKEN_T1" "$(sale_json sale_id="\"W-$i\"")"
  expect_status "sale W-$i" 201
done
OLD_ID="$(sql "SELECT value FROM meta WHERE key = 'journal_id';")"
kill_agent
size=$(wal_log_end "$JOURNAL-wal")
truncate -s $((size - 2 * 1048 - 100)) "$JOURNAL-wal"
start_agent
NEW_ID="$(sql "SELECT value FROM meta WHERE key = 'journal_id';")"
[[ "$NEW_ID" != "$OLD_ID" ]] || fail "a new journal_id after the WAL lost its tail" "not $OLD_ID" "$NEW_ID"

deadline=$((SECONDS + 20))
while :; do
  kafka_read pos.agent-status.v1 status HeartbeatRecords
  grep -q 'journal_reset_reason' "$T/status.txt" && break
  ((SECONDS < deadline)) || fail "a heartbeat with journal_reset_reason within 20 s" "a record" "$(tail -n 20 "$T/status.txt")"
  sleep 1
done
assert_contains "heartbeat: the reason" "never reused" "$(cat "$T/status.txt")"
assert_contains "heartbeat: sales missing" "journal_sales_missing: " "$(cat "$T/status.txt")"
assert_contains "heartbeat: previous journal id" "previous_journal_id: " "$(cat "$T/status.txt")"

# The sales still in the journal, and new ones, reach Kafka under the new
# journal only; none of the old journal's seqs is used again.
post_sales "$TOKEN_T1" "$(sale_json sale_id='"W-new"')"
expect_status "a sale into the new journal" 201
push_until_sent 60
kafka_read pos.sales.v1 sales
records_db sales
# The first run may have pushed some sales before it was killed (its push
# at start can land once the collector is ready): those were acknowledged
# under the old journal and stay there; no sale may reach Kafka twice, under
# either journal.
assert_eq "no sale twice in Kafka (old and new journal together)" 0 \
  "$(rsql sales "SELECT count(*) - count(DISTINCT sale_id) FROM k;")"
assert_eq "records = sales in the new journal" "$(journal_count)" \
  "$(rsql sales "SELECT count(*) FROM k WHERE h_journal_id = '$NEW_ID';")"
assert_eq "W-new in Kafka once" 1 "$(rsql sales "SELECT count(*) FROM k WHERE sale_id = 'W-new';")"
stop_agent
stop_collector
