#!/usr/bin/env bash
# kill -9 mid-stream: the collector three times while the agent drains a
# backlog of 100 batches (restarted on the same broker, port and
# instance_id), then the agent three times in the middle of a push
# (restarted on the same journal).
# Every sale still lands in pos.sales.v1 exactly once, equal to the journal.
source "$(dirname "$0")/lib.sh"

make_pki
start_broker --partitions 4
write_collector_config
start_collector
# Restarts must come back on this port: the agent's url names it.
pin_collector_port
stop_collector

write_tokens
write_agent_config uplink.max_batch_sales=50 uplink.backoff_min=100ms uplink.backoff_max=1s
start_agent

# --- the collector, killed three times while a backlog drains ----------------------------------------
# The collector is down: the agent journals 5,000 sales and fails to push.
run_load --clients 4 --sales 1250 --batch 50 --prefix C
assert_eq "phase 1: sales journaled" 5000 "$(load_field ok)"
assert_eq "phase 1: unsent while the collector is down" 5000 "$(agent_unsent)"

# Killed right at an acknowledgement (the agent has the 200, the next batch
# is on its way) and a few milliseconds after one (a batch in flight).
for delay in 0 0.004 0.011; do
  start_collector
  kill -USR1 "$AGENT_PID"
  wait_collector_acks 12 60
  sleep "$delay"
  kill_collector
  log "collector killed ${delay}s after its 12th acknowledgement ($(collector_acks) in its log); agent has $(agent_unsent) unsent"
done
assert_gt "phase 1: sales still unsent after three kills" 0 "$(agent_unsent)"

start_collector
push_until_sent 120
kafka_read pos.sales.v1 phase1
records_db phase1
check_sales_match_journal phase1 5000

# --- the agent, killed three times in the middle of a push ----------------------------------------------
stop_collector
run_load --clients 4 --sales 1250 --batch 50 --prefix A
assert_eq "phase 2: sales journaled" 5000 "$(load_field ok)"
assert_eq "phase 2: unsent while the collector is down" 5000 "$(agent_unsent)"
start_collector
kill -USR1 "$AGENT_PID"
acks=0
for delay in 0 0.004 0.011; do
  acks=$((acks + 20))
  wait_collector_acks "$acks" 60
  sleep "$delay"
  kill_agent
  log "agent killed ${delay}s after the collector's acknowledgement number $acks; $(sql 'SELECT value FROM meta WHERE key = '"'"'acked_batch_seq'"'"';') batches acknowledged in its journal"
  assert_eq "integrity_check after the agent's kill -9" ok "$(sql 'PRAGMA integrity_check;')"
  start_agent
  kill -USR1 "$AGENT_PID"
done
push_until_sent 120
kafka_read pos.sales.v1 phase2
records_db phase2
check_sales_match_journal phase2 10000
check_batches_contiguous
log "$BATCH_COUNT batches; collector acknowledgements as duplicates: $(cat "$T"/collector.*.log | grep 'event=batch_acked' | grep -c 'duplicate=1' || true)"

stop_agent
stop_collector
