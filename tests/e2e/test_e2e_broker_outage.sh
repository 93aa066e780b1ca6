#!/usr/bin/env bash
# The broker stopped (SIGSTOP) for 30 s while sales keep coming in and the
# agent keeps pushing: the agent takes every sale, the collector answers
# 503 while Kafka cannot take the batches, and once the broker is back the
# agent catches up: every sale in pos.sales.v1 exactly once.
source "$(dirname "$0")/lib.sh"

make_pki
start_broker --partitions 4
write_collector_config kafka.produce_timeout=3s
start_collector

write_tokens
# Pushes every second or two by themselves, retries fast.
write_agent_config uplink.interval=1s uplink.jitter=500ms uplink.max_batch_sales=200 \
  uplink.backoff_min=200ms uplink.backoff_max=2s
start_agent

# A steady trickle of sales: 20 every half second, each run must succeed.
(
  for ((round = 1; round <= 90; round++)); do
    "$LOAD_BIN" --url "$AGENT_URL" --token "$TOKEN_T1" --terminal T1 --time-base "$LOAD_TIME_BASE" \
      --clients 1 --sales 20 --batch 20 --prefix "O$round" --timeout 10 >>"$T/trickle.out" 2>>"$T/trickle.err" ||
      { echo "round $round failed" >>"$T/trickle.err"; exit 1; }
    sleep 0.5
  done
) &
TRICKLE_PID=$!
on_cleanup "kill $TRICKLE_PID 2>/dev/null; wait $TRICKLE_PID 2>/dev/null"

sleep 5
assert_gt "sales acknowledged by the collector before the outage" 0 "$(collector_acks)"
journaled_before="$(journal_count)"
pause_broker
log "broker stopped (SIGSTOP) with $journaled_before sales journaled"
sleep 30
journaled_during="$(journal_count)"
unsent_during="$(agent_unsent)"
resume_broker
log "broker resumed (SIGCONT); $journaled_during sales journaled, $unsent_during unsent"
assert_gt "sales journaled while the broker was stopped (taking sales never waits)" "$((journaled_before + 600))" "$journaled_during"
assert_gt "sales unsent when the broker came back" 0 "$unsent_during"
assert_gt "collector answers 503 while Kafka cannot take batches" 0 \
  "$(grep -c 'event=batch_unavailable' "$COLLECTOR_LOG" || true)"

deadline=$((SECONDS + 90))
while kill -0 "$TRICKLE_PID" 2>/dev/null; do
  ((SECONDS < deadline)) || fail "the sales trickle ends within 90 s"
  sleep 0.5
done
rc=0
wait "$TRICKLE_PID" || rc=$?
assert_eq "every trickle round was answered 2xx ($(tail -n 3 "$T/trickle.err" 2>/dev/null))" 0 "$rc"
assert_eq "sales journaled" 1800 "$(journal_count)"

push_until_sent 120
assert_eq "collector still running" 0 "$(kill -0 "$COLLECTOR_PID"; echo $?)"
kafka_read pos.sales.v1 sales
records_db sales
check_sales_match_journal sales 1800
check_batches_contiguous

stop_agent
stop_collector
