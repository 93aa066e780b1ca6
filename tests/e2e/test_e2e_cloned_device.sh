#!/usr/bin/env bash
# Two devices of one store cloned from one disk image (issue 7, item 4, the
# agent's side): device D2 starts with a copy of D1's journal directory,
# so both hold the same journal_id and would hand out the same seqs under
# it. The collector refuses D2's batches with 403
# BATCH_ACK_CODE_JOURNAL_OF_ANOTHER_DEVICE; before the agent acted on that
# code, D2 resent its batch every backoff_max for ever and none of its
# sales ever left the device. Now, with both real agents, the real
# collector and the broker:
#   - D2 moves its journal aside (kept) and starts a journal_id of its own,
#     carrying over every sale not acknowledged to it; it says so in the
#     log, /status.json (journal_reset) and its heartbeat;
#   - D1 keeps its journal;
#   - every sale POSTed to either agent is in pos.sales.v1 exactly once
#     (by sale_id), each under the journal and device that sent it.
source "$(dirname "$0")/lib.sh"

make_pki S001 D2
start_broker --partitions 2
write_collector_config
start_collector
write_tokens

# ---- two agents: their globals are swapped in and out by use_agent ----------------------------
declare -A SLOT_PID=() SLOT_PORT=() SLOT_URL=() SLOT_LOG=() SLOT_CONFIG=() SLOT_JOURNAL=() SLOT_DEVICE=()
CURRENT=A
use_agent() {
  SLOT_PID[$CURRENT]="$AGENT_PID" SLOT_PORT[$CURRENT]="$AGENT_PORT" SLOT_URL[$CURRENT]="$AGENT_URL"
  SLOT_LOG[$CURRENT]="$AGENT_LOG" SLOT_CONFIG[$CURRENT]="$CONFIG" SLOT_JOURNAL[$CURRENT]="$JOURNAL"
  SLOT_DEVICE[$CURRENT]="$DEVICE"
  CURRENT="$1"
  AGENT_PID="${SLOT_PID[$1]}" AGENT_PORT="${SLOT_PORT[$1]}" AGENT_URL="${SLOT_URL[$1]}"
  AGENT_LOG="${SLOT_LOG[$1]}" CONFIG="${SLOT_CONFIG[$1]}" JOURNAL="${SLOT_JOURNAL[$1]}"
  DEVICE="${SLOT_DEVICE[$1]}"
}
_clone_cleanup() {
  local pid
  for pid in "${SLOT_PID[@]}"; do
    [[ -n "$pid" ]] && kill -KILL "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  done
  return 0
}
on_cleanup _clone_cleanup
SLOT_CONFIG[B]="$T/b/agent.conf" SLOT_JOURNAL[B]="$T/b/journal.db" SLOT_DEVICE[B]=D2
SLOT_PID[B]="" SLOT_PORT[B]="" SLOT_URL[B]="" SLOT_LOG[B]=""

# ---- D1 takes sales and sends them all ---------------------------------------------------------
write_agent_config uplink.max_batch_sales=10 uplink.heartbeat_interval=1s
start_agent
run_load --clients 1 --sales 25 --batch 5 --prefix IMAGE
push_until_sent 60
status_json
J1="$(json_get "$STATUS_JSON" '$.journal_id')"
stop_agent

# ---- D2 is made from D1's disk image -----------------------------------------------------------
mkdir -p "$T/b"
cp -p "$JOURNAL"* "$T/b/" || fail "copy D1's journal directory"
use_agent B
write_agent_config uplink.max_batch_sales=10 uplink.heartbeat_interval=1s agent.device_id=D2 \
  journal.path="$JOURNAL"
start_agent
use_agent A
start_agent

# Both take sales: D2 seals its first batch under D1's journal and is refused.
use_agent B
run_load --clients 1 --sales 20 --batch 5 --prefix CLONE
use_agent A
run_load --clients 1 --sales 20 --batch 5 --prefix ORIGINAL
use_agent B
push_until_sent 90
use_agent A
push_until_sent 90
run_load --clients 1 --sales 5 --batch 5 --prefix ORIGINAL2
push_until_sent 60
use_agent B
run_load --clients 1 --sales 5 --batch 5 --prefix CLONE2
push_until_sent 60

# ---- what each device says ----------------------------------------------------------------------
use_agent A
status_json
assert_eq "D1 keeps its journal" "$J1" "$(json_get "$STATUS_JSON" '$.journal_id')"
assert_eq "D1: no journal reset" "null" "$(json_type "$STATUS_JSON" '$.journal_reset')"
use_agent B
status_json
J2="$(json_get "$STATUS_JSON" '$.journal_id')"
[[ "$J2" =~ ^[0-9a-f]{32}$ && "$J2" != "$J1" ]] || fail "D2 is on a journal of its own" "not $J1" "$J2"
assert_eq "D2: previous journal" "$J1" "$(json_get "$STATUS_JSON" '$.journal_reset.previous_journal_id')"
reason="$(json_get "$STATUS_JSON" '$.journal_reset.reason')"
assert_contains "D2: the reason names the collector's verdict" "belongs to another device" "$reason"
assert_contains "D2: the reason says what this device is" "this device is a clone" "$reason"
assert_eq "D2: sales missing" 0 "$(json_get "$STATUS_JSON" '$.journal_reset.sales_missing')"
ls "$T/b/journal.db.damaged-"* >/dev/null 2>&1 || fail "D2's old journal file is kept aside" \
  "$T/b/journal.db.damaged-*" "$(ls "$T/b")"
grep -q 'mod=journal event=journal_restarted .*previous_journal_id='"$J1" "$AGENT_LOG" ||
  fail "D2's log says a new journal was started" "event=journal_restarted" "$(grep journal "$AGENT_LOG" | tail -n 5)"

# ---- Kafka: every sale once ---------------------------------------------------------------------
kafka_read pos.sales.v1 sales
records_db sales
assert_eq "records in pos.sales.v1 (25 + 20 + 20 + 5 + 5)" 75 "$KAFKA_RECORDS"
assert_eq "distinct sale_ids in pos.sales.v1" 75 "$(rsql sales 'SELECT count(DISTINCT sale_id) FROM k;')"
assert_eq "D2's sales under D2's new journal, device D2" 25 \
  "$(rsql sales "SELECT count(*) FROM k WHERE sale_id LIKE 'CLONE%' AND lower(h_journal_id) = '$J2' AND h_device_id = 'D2';")"
assert_eq "D1's sales under D1's journal, device D1" 50 \
  "$(rsql sales "SELECT count(*) FROM k WHERE sale_id NOT LIKE 'CLONE%' AND lower(h_journal_id) = '$J1' AND h_device_id = 'D1';")"

# ---- head office sees it in D2's heartbeat -------------------------------------------------------
deadline=$((SECONDS + 60))
while :; do
  kafka_read pos.agent-status.v1 status HeartbeatRecords
  grep -q 'journal_reset_reason: ".*this device is a clone' "$T/status.txt" && break
  ((SECONDS < deadline)) || fail "a heartbeat of D2 carries the new journal's reason within 60 s" \
    "journal_reset_reason" "$(tail -n 30 "$T/status.txt")"
  sleep 1
done

stop_agent
use_agent A
stop_agent
stop_collector
