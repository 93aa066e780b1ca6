#!/usr/bin/env bash
# The broker stopped (SIGSTOP) while sales keep coming in and the agent keeps
# pushing: the agent takes sales all along, the collector answers 503 while
# Kafka cannot take the batches, and once the broker is back the agent
# catches up. What must hold, whatever the machine's speed: every sale the
# POS was told is journaled reaches pos.sales.v1 exactly once, and nothing
# else does.
#
# It used to assert a fixed number of sales within a fixed 30 s outage and
# failed on a busy machine. Every phase now ends on an event (with a
# generous bound that only a hang reaches), never on a count per second.
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

ACKED="$T/acked.txt"
STOP="$T/trickle.stop"
: >"$ACKED"
# A trickle of sales, 20 at a time, until told to stop. Every sale answered
# 2xx is appended to $ACKED ("sale_id seq"). A round must be answered: the
# agent never waits on the broker (a minute per request is only for a
# machine that is very busy).
(
  round=0
  while [[ ! -e "$STOP" ]]; do
    round=$((round + 1))
    "$LOAD_BIN" --url "$AGENT_URL" --token "$TOKEN_T1" --terminal T1 --time-base "$LOAD_TIME_BASE" \
      --clients 1 --sales 20 --batch 20 --prefix "O$round" --timeout 60 --acked "$ACKED" \
      >>"$T/trickle.out" 2>>"$T/trickle.err" ||
      { echo "round $round failed" >>"$T/trickle.err"; exit 1; }
    sleep 0.2
  done
) &
TRICKLE_PID=$!
on_cleanup "kill $TRICKLE_PID 2>/dev/null; wait $TRICKLE_PID 2>/dev/null"

# wait_until WHAT TIMEOUT COMMAND...: until COMMAND succeeds; fails after
# TIMEOUT seconds (a hang, not a slow machine) or when the trickle died.
wait_until() {
  local what="$1" timeout="$2" deadline=$((SECONDS + $2))
  shift 2
  until "$@"; do
    kill -0 "$TRICKLE_PID" 2>/dev/null || fail "the sales trickle keeps running ($what): $(tail -n 3 "$T/trickle.err")"
    ((SECONDS < deadline)) || fail "$what within $timeout s"
    sleep 0.2
  done
}
acked_count() { wc -l <"$ACKED"; }
unavailable_count() { grep -c 'event=batch_unavailable' "$COLLECTOR_LOG" || true; }
# The events the phases wait for.
acked_by_collector() { (($(collector_acks) > 0)); }
turned_away_since_pause() { (($(unavailable_count) > unavailable_before)); }
taken_during_outage() { (($(acked_count) >= acked_before + 100)); }
taken_after_outage() { (($(acked_count) >= acked_resumed + 60)); }

# Before the outage: the collector has acknowledged some of it.
wait_until "a first batch acknowledged by the collector" 120 acked_by_collector

pause_broker
acked_before="$(acked_count)"
unavailable_before="$(unavailable_count)"
log "broker stopped (SIGSTOP) with $acked_before sales acknowledged to the POS"
# The outage lasts at least 30 s (a lower bound only: past the collector's
# produce timeout several times over), and until the collector has turned a
# batch away for want of Kafka and the POS has been answered for more sales
# since the broker stopped: taking sales never waits for Kafka.
paused_at=$SECONDS
wait_until "the collector answers 503 while Kafka cannot take batches" 180 turned_away_since_pause
wait_until "sales acknowledged to the POS while the broker is stopped" 180 taken_during_outage
while ((SECONDS < paused_at + 30)); do
  kill -0 "$TRICKLE_PID" 2>/dev/null || fail "the sales trickle keeps running during the outage: $(tail -n 3 "$T/trickle.err")"
  sleep 0.5
done
unsent_during="$(agent_unsent)"
assert_gt "sales unsent while the broker is stopped" 0 "$unsent_during"
resume_broker
acked_resumed="$(acked_count)"
log "broker resumed (SIGCONT); $acked_resumed sales acknowledged to the POS, $unsent_during unsent"

# Sales keep coming while the agent catches up; then the trickle stops.
wait_until "sales acknowledged to the POS after the broker came back" 180 taken_after_outage
touch "$STOP"
rc=0
wait "$TRICKLE_PID" || rc=$?
assert_eq "every trickle round was answered 2xx ($(tail -n 3 "$T/trickle.err" 2>/dev/null))" 0 "$rc"

push_until_sent 300
assert_eq "collector still running" 0 "$(kill -0 "$COLLECTOR_PID"; echo $?)"
journaled="$(journal_count)"
check_acked "$ACKED" "sales acknowledged to the POS"
kafka_read pos.sales.v1 sales
records_db sales
# The journal's sales, field for field, exactly once each (and nothing else).
check_sales_match_journal sales "$journaled"
check_batches_contiguous
# Every sale acknowledged to the POS is one of them: exactly one record.
sqlite3 -batch -bail "$T/sales.db" "CREATE TABLE acked(sale_id TEXT, seq INTEGER);" ".mode list" \
  ".separator ' '" ".import '$ACKED' acked" || fail "load $ACKED into $T/sales.db"
assert_eq "sales acknowledged to the POS without exactly one record in pos.sales.v1" 0 \
  "$(rsql sales 'SELECT count(*) FROM (SELECT DISTINCT sale_id FROM acked) a WHERE (SELECT count(*) FROM k WHERE k.sale_id = a.sale_id) <> 1;')"
log "$(acked_count) sales acknowledged to the POS ($((acked_resumed - acked_before)) during the outage), $journaled journaled, each once in pos.sales.v1"

stop_agent
stop_collector
