#!/usr/bin/env bash
# An agent whose configuration names another device than its certificate
# (issue 7, item 4, the agent's side): the collector refuses its batches
# with 403 BATCH_ACK_CODE_IDENTITY_MISMATCH. Before, that was only a line
# in the log; now /status.json shows an uplink problem saying what to fix,
# the batch is offered again no faster than backoff_max (no tight loop),
# and once the configuration is fixed every sale kept meanwhile reaches
# Kafka exactly once and the problem is gone.
source "$(dirname "$0")/lib.sh"

make_pki
start_broker --partitions 2
write_collector_config
start_collector
write_tokens

# The certificate is D1's; the configuration says D9.
write_agent_config agent.device_id=D9 uplink.backoff_min=100ms uplink.backoff_max=2s
start_agent
run_load --clients 1 --sales 5 --batch 5 --prefix KEPT
kill -USR1 "$AGENT_PID"

deadline=$((SECONDS + 60))
while :; do
  status_json
  [[ "$(json_get "$STATUS_JSON" '$.uplink_problem.code')" == identity_mismatch ]] && break
  ((SECONDS < deadline)) || fail "/status.json shows the identity mismatch within 60 s" \
    "uplink_problem.code = identity_mismatch" "$STATUS_JSON"
  sleep 0.2
done
assert_contains "status: what to fix" "store_id/device_id" \
  "$(json_get "$STATUS_JSON" '$.uplink_problem.action')"
assert_contains "status: the message names the configured device" "device_id=D9" \
  "$(json_get "$STATUS_JSON" '$.uplink_problem.message')"
[[ -n "$(json_get "$STATUS_JSON" '$.uplink_problem.since')" ]] ||
  fail "status: since when" "a time" "$STATUS_JSON"
assert_eq "sales kept while refused" 5 "$(json_get "$STATUS_JSON" '$.sales_unsent')"

# No tight loop: over 8 s, at most one attempt per backoff_max (2 s) and
# the one in flight when counting began. (Under load there are fewer.)
refusals() { grep -c 'event=batch_refused .*status=403' "$COLLECTOR_LOG" || true; }
before="$(refusals)"
sleep 8
after="$(refusals)"
((after - before <= 5)) || fail "batches refused within 8 s at backoff_max=2s (no tight loop)" \
  "<= 5" "$((after - before))"

# A person fixes the configuration: the sales kept go out, once.
stop_agent
write_agent_config agent.device_id=D1 uplink.backoff_min=100ms uplink.backoff_max=2s
start_agent
push_until_sent 60
status_json
assert_eq "status: no uplink problem once fixed" null "$(json_type "$STATUS_JSON" '$.uplink_problem')"
kafka_read pos.sales.v1 sales
records_db sales
assert_eq "records in pos.sales.v1" 5 "$KAFKA_RECORDS"
assert_eq "distinct sale_ids in pos.sales.v1" 5 "$(rsql sales 'SELECT count(DISTINCT sale_id) FROM k;')"

stop_agent
stop_collector
