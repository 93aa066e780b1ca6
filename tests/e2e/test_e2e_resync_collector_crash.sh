#!/usr/bin/env bash
# Broker, collector and agent as three processes: the collector is killed
# (kill -9) twice in the middle of a resync and started again. The agent's
# replay lane goes on where the restarted collector says (409: resend from
# expected_batch_seq, the same rows under the same batch_seq), and
# pos.sales.replay.v1 holds every sale of the range exactly once.
#
# The resync is put in the journal's commands table as the agent records one
# (state running) while the agent is stopped; the agent resumes it at start.
# Small replay batches (20 sales) make the kills land mid-replay.
source "$(dirname "$0")/lib.sh"

make_pki
start_broker --partitions 4
write_collector_config
start_collector
pin_collector_port

write_tokens
write_agent_config uplink.max_batch_sales=20
start_agent
run_load --clients 4 --sales 500 --batch 50 --prefix C
assert_eq "sales journaled as new" 2000 "$(load_field ok)"
push_until_sent 120
stop_agent

RESYNC=resync-20261126T040000Z-e2e002
now_ms="$(($(date +%s) * 1000))"
sqlite3 -batch -bail "$JOURNAL" "INSERT INTO commands VALUES('$RESYNC', 1, 2, $now_ms, 'e2e',
  $now_ms, $now_ms, 0, 0, (SELECT max(seq) FROM sales), 0, (SELECT count(*) FROM sales), 0, '',
  '', 0, 0, 0, 0);" || fail "the resync is put in the journal's commands table"

# acked_replay: the last replay batch the agent has recorded as acknowledged.
acked_replay() {
  sql "SELECT replay_acked_batch_seq FROM commands WHERE command_id = '$RESYNC';"
}

start_agent
for round in 1 2; do
  want=$((round * 15))
  deadline=$((SECONDS + 60))
  while (($(acked_replay) < want)); do
    ((SECONDS < deadline)) || fail "replay batch $want acknowledged within 60 s" ">= $want" "$(acked_replay)"
    sleep 0.02
  done
  kill_collector
  log "collector killed at replay batch $(acked_replay) (round $round)"
  start_collector
done

deadline=$((SECONDS + 120))
while :; do
  state="$(sql "SELECT state FROM commands WHERE command_id = '$RESYNC';")"
  [[ "$state" != 2 ]] && break
  ((SECONDS < deadline)) || fail "the resync finishes within 120 s" "state 3 (done)" "$state"
  sleep 0.1
done
assert_eq "resync state (3 = done)" 3 "$state"
assert_eq "resync done_sales" 2000 \
  "$(sql "SELECT done_sales FROM commands WHERE command_id = '$RESYNC';")"

kafka_read pos.sales.replay.v1 replay
records_db replay
assert_eq "records in pos.sales.replay.v1" 2000 "$(rsql replay 'SELECT count(*) FROM k;')"
assert_eq "distinct seqs in pos.sales.replay.v1" 2000 \
  "$(rsql replay 'SELECT count(DISTINCT seq) FROM k;')"
assert_eq "replayed records differing from their journal row (sale_id, total)" 0 \
  "$(rsql replay "SELECT count(*) FROM k JOIN j.sales s ON s.seq = k.seq
     WHERE s.sale_id IS NOT k.sale_id OR s.total_minor IS NOT k.total;")"
assert_eq "replayed records out of seq order" 0 \
  "$(rsql replay 'SELECT count(*) FROM (SELECT seq, lag(seq) OVER (ORDER BY offset) AS previous
     FROM k) WHERE previous IS NOT NULL AND seq <= previous;')"
kafka_read pos.sales.v1 live
assert_eq "records in pos.sales.v1 (no replayed sale)" 2000 "$KAFKA_RECORDS"

stop_agent
stop_collector
