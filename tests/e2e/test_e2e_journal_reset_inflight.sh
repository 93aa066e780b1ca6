#!/usr/bin/env bash
# Issue 7, the gap left by item 11: the agent's WAL loses its tail while a
# batch was in flight. The collector produced the batch, the agent died
# before it recorded the acknowledgement, and the tail that held the
# batch's seal (and, in round 2, some of its sales) is gone. The agent
# starts a new journal and carries over what the collector never
# acknowledged to it; the collector knows those sales from the old journal
# and must not produce them again. Every sale the POS got a 201 for is in
# pos.sales.v1 exactly once.
#
#   round 1: only the seal is lost (every sale is still in the database),
#            and sales taken after the restart join the resealed batch
#   round 2: the seal and the last sales are lost
#   round 3: the batch in flight held a delivery only (no sale to say
#            where it came from: the batch does)
source "$(dirname "$0")/lib.sh"

make_pki
start_broker --partitions 1
write_collector_config
start_collector
pin_collector_port
write_tokens
printf 'inflight-secret-7\n' >"$T/manager-password"
write_agent_config uplink.backoff_min=30s uplink.backoff_max=60s \
  api.manager_password_file="$T/manager-password"

# wait_push_at_start: the agent pushes once when it starts (nothing to send
# here, or the collector is away); let it pass before the test's own push.
wait_push_at_start() {
  local deadline=$((SECONDS + 30))
  until grep -q 'mod=uplink event=push why=start' "$AGENT_LOG"; do
    ((SECONDS < deadline)) || fail "the agent's push at start within 30 s" "event=push why=start" "$(tail -n 3 "$AGENT_LOG")"
    sleep 0.1
  done
  sleep 1
}

# die_mid_push: the agent pushes and dies the moment the collector's
# acknowledgement arrives (test hook), leaving the WAL as it was then.
die_mid_push() {
  kill -USR1 "$AGENT_PID"
  local rc=0
  wait "$AGENT_PID" || rc=$?
  AGENT_PID=""
  assert_eq "the agent died on the acknowledgement (test hook)" 137 "$rc"
  grep -q 'POS_TEST_DIE_BEFORE_ACK' "$AGENT_LOG" ||
    fail "the agent's log names the test hook" "POS_TEST_DIE_BEFORE_ACK" "$(tail -n 5 "$AGENT_LOG")"
}

POSTED=()
sell() { # sell PREFIX FROM TO
  local i
  for ((i = $2; i <= $3; i++)); do
    post_sales "$TOKEN_T1" "$(sale_json sale_id="\"$1-$i\"")"
    expect_status "sale $1-$i" 201
    POSTED+=("$1-$i")
  done
}

for round in 1 2 3; do
  POS_TEST_DIE_BEFORE_ACK=1 start_agent
  wait_push_at_start
  old_id="$(sql "SELECT value FROM meta WHERE key = 'journal_id';")"
  ((round == 3)) || sell "R$round" 1 20
  # A delivery in the same batch: its delta is carried over too.
  printf '{"adjustment_id":"DEL-R%s","kind":"delivery","material_id":"napkins","unit":"piece","quantity_milli":500000,"business_time":"2026-11-21T09:00:00+01:00"}' \
    "$round" >"$T/adjustment.json"
  http POST /v1/inventory/adjustments -H 'Content-Type: application/json' \
    --data-binary "@$T/adjustment.json" -u manager:inflight-secret-7
  expect_status "delivery DEL-R$round" 201
  before_push=$(wal_log_end "$JOURNAL-wal")
  die_mid_push
  after_push=$(wal_log_end "$JOURNAL-wal")
  ((after_push > before_push)) || fail "the seal of the batch is in the WAL" ">$before_push" "$after_push"
  if ((round != 2)); then
    cut=$before_push   # the seal only
  else
    cut=$((before_push - 2 * 1048 - 100))   # the seal and the last sales' frames
  fi
  truncate -s "$cut" "$JOURNAL-wal"
  log "round $round: -wal cut from $after_push to $cut bytes (it was $before_push before the push)"

  # The collector is away while the agent restarts, so that the sales
  # taken now are sealed together with the ones it had sent.
  stop_collector
  start_agent
  new_id="$(sql "SELECT value FROM meta WHERE key = 'journal_id';")"
  [[ "$new_id" != "$old_id" ]] ||
    fail "round $round: a new journal_id after the WAL lost a batch that was sent" "not $old_id" "$new_id"
  sell "N$round" 1 5
  start_collector
  push_until_sent 90
  carried_last="$(sql "SELECT value FROM meta WHERE key = 'carried_last_seq';")"
  [[ "$carried_last" =~ ^[0-9]+$ && "$carried_last" -gt 0 ]] ||
    fail "round $round: the new journal records where its carried-over rows end" "a seq" "$carried_last"
  assert_eq "round $round: no batch mixes carried-over rows with later ones" 0 \
    "$(sql "SELECT count(*) FROM batches WHERE first_seq <= $carried_last AND last_seq > $carried_last;")"
  stop_agent
done

start_agent
kafka_read pos.sales.v1 sales
records_db sales
for id in "${POSTED[@]}"; do
  n="$(rsql sales "SELECT count(*) FROM k WHERE sale_id = '$id';")"
  [[ "$n" == 1 ]] || fail "sale $id (answered 201) is in pos.sales.v1 exactly once" 1 "$n: $(rsql sales "SELECT h_journal_id, seq FROM k WHERE sale_id = '$id';" | tr '\n' ' ')"
done
assert_eq "records in pos.sales.v1 = sales answered 201" "${#POSTED[@]}" "$(rsql sales "SELECT count(*) FROM k;")"
assert_contains "the carried-over sales say where they came from" "journal_lost_sales" "$(cat "$T"/agent.*.log)"
# Each round's delivery is in pos.inventory-deltas.v1 once, with the
# journal it was first produced under.
kafka_read pos.inventory-deltas.v1 deltas DeltaRecords
assert_eq "deliveries in pos.inventory-deltas.v1 (one per round, never twice)" 3 \
  "$(grep -c 'reason: DELTA_REASON_DELIVERY' "$T/deltas.txt")"
assert_eq "napkins delivered, in Kafka" 1500000 \
  "$(awk '/material_id: "napkins"/ { n = 1 } n && /quantity_milli:/ { s += $2; n = 0 } END { print s + 0 }' "$T/deltas.txt")"
stop_agent
stop_collector
