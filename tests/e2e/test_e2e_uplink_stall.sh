#!/usr/bin/env bash
# The collector loses its state (its embedded Kafka goes with its process)
# after the agent's retention deleted the oldest acknowledged batch: the
# collector asks (409) for batch 1, which the device no longer holds. The
# agent used to ask its journal for batch 1 every backoff_max for ever, and
# said nothing anyone could act on. Now, with the real collector:
#   - /status.json names the stall: what is asked, the oldest batch held,
#     and what to do (head office must approve a rebase);
#   - the heartbeat in pos.agent-status.v1 carries it (fields 17-19);
#   - the agent log says it once however often the collector repeats;
#   - the agent keeps taking and journaling sales, and offers its oldest
#     held batch (2) again, never anything above it: nothing is skipped and
#     nothing reaches Kafka until head office decides.
# Then head office approves the rebase (curl, the admin certificate, POST
# /v1/admin/rebase with the journal_id and oldest held batch the agent's
# /status.json gives): every sale the agent still held (B, C and D) reaches
# Kafka exactly once and the stall clears in /status.json.
source "$(dirname "$0")/lib.sh"

make_pki
# No broker: the collector's embedded Kafka, which dies with it.
write_collector_config kafka.brokers=
start_collector
pin_collector_port

write_tokens
write_agent_config uplink.max_batch_sales=10 uplink.backoff_min=100ms uplink.backoff_max=1s \
  uplink.heartbeat_interval=1s
start_agent

run_load --clients 1 --sales 10 --batch 10 --prefix A
push_until_sent 60
run_load --clients 1 --sales 10 --batch 10 --prefix B
push_until_sent 60
assert_eq "batches acknowledged before the loss" 2 "$(sql 'SELECT count(*) FROM batches WHERE acked_ms IS NOT NULL;')"
stop_agent

# Retention, as the agent runs it once batch 1 is retention_days old: the
# batch and its sales are deleted (batch 2 stays).
sql "BEGIN;
  DELETE FROM sales WHERE seq BETWEEN (SELECT first_seq FROM batches WHERE batch_seq = 1)
    AND (SELECT last_seq FROM batches WHERE batch_seq = 1);
  DELETE FROM batches WHERE batch_seq = 1;
  COMMIT;"
assert_eq "oldest batch held after retention" 2 "$(sql 'SELECT min(batch_seq) FROM batches;')"

# The collector loses its state: a new process, a new embedded Kafka.
stop_collector
start_collector
start_agent
run_load --clients 1 --sales 5 --batch 5 --prefix C
kill -USR1 "$AGENT_PID"

deadline=$((SECONDS + 60))
while :; do
  status_json
  [[ "$(json_get "$STATUS_JSON" '$.uplink_problem.expected_batch_seq')" == 1 ]] && break
  ((SECONDS < deadline)) || fail "/status.json reports the stall within 60 s" "uplink_problem" "$STATUS_JSON"
  sleep 0.2
done
assert_eq "status: code" expected_batch_deleted "$(json_get "$STATUS_JSON" '$.uplink_problem.code')"
assert_eq "status: oldest batch held" 2 "$(json_get "$STATUS_JSON" '$.uplink_problem.oldest_held_batch_seq')"
assert_contains "status: what to do" "head office must approve a rebase" \
  "$(json_get "$STATUS_JSON" '$.uplink_problem.action')"
assert_contains "status: the message names what is asked and held" "expects batch 1" \
  "$(json_get "$STATUS_JSON" '$.uplink_problem.message')"
[[ -n "$(json_get "$STATUS_JSON" '$.uplink_problem.since')" ]] || fail "status: since when" "a time" "$STATUS_JSON"

# The collector is asked again, with the oldest batch held, at backoff_max:
# wait until it has refused batch 2 three times.
gaps_for_2() { grep -c 'event=batch_gap .*batch_seq=2 expected=1' "$COLLECTOR_LOG" || true; }
deadline=$((SECONDS + 90))
while (($(gaps_for_2) < 3)); do
  ((SECONDS < deadline)) || fail "the agent offers batch 2 again (3 times within 90 s)" ">= 3" "$(gaps_for_2)"
  sleep 0.2
done
assert_eq "batches other than 2 and 3 offered after the loss (nothing skipped)" 0 \
  "$(grep 'event=batch_gap' "$COLLECTOR_LOG" | grep -vc -E 'batch_seq=(2|3) expected=1' || true)"
assert_eq "agent error lines about the stall (said once)" 1 \
  "$(grep 'mod=uplink event=error ' "$AGENT_LOG" | grep -c 'expected_batch_deleted' || true)"

# Sales are still taken and journaled.
journaled="$(journal_count)"
run_load --clients 1 --sales 5 --batch 5 --prefix D
assert_eq "sales journaled during the stall" "$((journaled + 5))" "$(journal_count)"
status_json
assert_eq "sales unsent during the stall (acknowledged here: batch 2; unsent: C and D)" 10 "$(json_get "$STATUS_JSON" '$.sales_unsent')"

# Head office sees it in the heartbeats.
deadline=$((SECONDS + 60))
while :; do
  kafka_read pos.agent-status.v1 status HeartbeatRecords
  grep -q 'stalled_expected_batch_seq: 1' "$T/status.txt" && break
  ((SECONDS < deadline)) || fail "a heartbeat in pos.agent-status.v1 carries the stall within 60 s" \
    "stalled_expected_batch_seq: 1" "$(tail -n 20 "$T/status.txt")"
  sleep 1
done
grep -q 'oldest_held_batch_seq: 2' "$T/status.txt" || fail "the heartbeat names the oldest batch held" \
  "oldest_held_batch_seq: 2" "$(tail -n 20 "$T/status.txt")"
grep -q 'uplink_problem: "expected_batch_deleted: ' "$T/status.txt" ||
  fail "the heartbeat says what is wrong" "uplink_problem" "$(tail -n 20 "$T/status.txt")"

# Nothing reached the new Kafka: no rebase happened by itself.
kafka_read pos.sales.v1 sales
assert_eq "records in pos.sales.v1 after the loss (no silent rebase)" 0 "$KAFKA_RECORDS"

# ---- head office approves the rebase, from what the agent's status says ------------------------
status_json
JOURNAL_ID="$(json_get "$STATUS_JSON" '$.journal_id')"
FROM="$(json_get "$STATUS_JSON" '$.uplink_problem.oldest_held_batch_seq')"
assert_eq "status: the batch to rebase from" 2 "$FROM"
HTTP_STATUS="$(curl -sS -o "$T/rebase.body" -w '%{http_code}' --max-time 20 \
  --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" \
  -H 'Content-Type: application/json' \
  --data-binary "{\"store_id\": \"$STORE\", \"journal_id\": \"$JOURNAL_ID\", \"from_batch_seq\": $FROM}" \
  "$COLLECTOR_URL/v1/admin/rebase" 2>"$T/rebase.err")" || HTTP_STATUS="${HTTP_STATUS:-000}"
assert_eq "POST /v1/admin/rebase with the admin certificate: status ($(cat "$T/rebase.body" \
  "$T/rebase.err"))" 200 "$HTTP_STATUS"
push_until_sent 90
status_json
assert_eq "status: the stall cleared after the rebase" null "$(json_type "$STATUS_JSON" '$.uplink_problem')"
grep -q 'mod=uplink event=stall_cleared' "$AGENT_LOG" ||
  fail "the agent logs that the stall is over" "event=stall_cleared" "$(tail -n 20 "$AGENT_LOG")"
kafka_read pos.sales.v1 sales
records_db sales
assert_eq "records in pos.sales.v1 after the rebase (B, C and D: what the agent held)" 20 "$KAFKA_RECORDS"
assert_eq "distinct sale_ids in pos.sales.v1 after the rebase" 20 \
  "$(rsql sales 'SELECT count(DISTINCT sale_id) FROM k;')"
assert_eq "sales of batch 1 (deleted here) in pos.sales.v1" 0 \
  "$(rsql sales "SELECT count(*) FROM k WHERE sale_id LIKE 'A-%';")"
assert_eq "sales held here and not in pos.sales.v1" 0 \
  "$(rsql sales "SELECT count(*) FROM j.sales WHERE sale_id NOT IN (SELECT sale_id FROM k);")"

stop_agent
stop_collector
