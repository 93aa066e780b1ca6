#!/usr/bin/env bash
# Collector instances behind an ordinary TCP load balancer (issue 15, item 2):
# HAProxy in TCP mode, round robin, in front of three instances of one group;
# real agents, each configured with the balancer's address only. A batch that
# reaches an instance that does not write its store's partition is answered
# 503 BATCH_ACK_CODE_ANOTHER_INSTANCE with the connection closed, and the
# agent tries again soon on a new connection, which the balancer sends
# elsewhere: every sale reaches Kafka exactly once, taken by its partition's
# owner, with no agent left backing off. Then one instance is killed (-9) and
# the agents go on through the same balancer (the connections it still sends
# to the dead one fail and are dispatched to the others).
#
# The balancer checks each instance's GET /readyz (operator port) twice a
# second: the dead one is taken out, and the others stay in throughout the
# hand-over, though their /healthz is 503 while they take its partitions over
# (a balancer checking /healthz would take every instance out at once).
#
# Without the closed connection an agent whose kept-alive connection landed on
# another instance would send every retry there, and never reach the owner.
source "$(dirname "$0")/lib.sh"

command -v haproxy >/dev/null || fail "haproxy is required (apt-get install haproxy)"

STORES=6
args=()
for ((s = 2; s <= STORES; s++)); do args+=("$(printf 'S%03d' "$s")" D1); done
make_pki "${args[@]}"
start_broker --partitions 6
write_tokens

fleet_start fleet-a
fleet_start fleet-b
fleet_start fleet-c
fleet_wait_ready 120 fleet-a fleet-b fleet-c
log "owned: a=[$(fleet_owned fleet-a)] b=[$(fleet_owned fleet-b)] c=[$(fleet_owned fleet-c)]"

# operator_port NAME: the port of NAME's operator listener (/metrics, /healthz, /readyz).
operator_port() {
  sed -n 's/.*mod=collector event=operator_listening .*port=\([0-9]*\).*/\1/p' "$T/$1.log" | head -n 1
}

# start_balancer: HAProxy on a free loopback port (another one if that is taken), TCP mode,
# round robin over the three instances; a connection to a dead one is dispatched to another.
start_balancer() {
  local attempt deadline n
  for attempt in 1 2 3 4 5 6 7 8; do
    LB_PORT=$((20000 + RANDOM % 30000))
    {
      printf 'global\n  maxconn 512\n'
      printf 'defaults\n  mode tcp\n  timeout connect 2s\n  timeout client 120s\n'
      printf '  timeout server 120s\n  retries 2\n  option redispatch\n'
      printf 'frontend collectors\n  bind 127.0.0.1:%s\n  default_backend fleet\n' "$LB_PORT"
      printf 'backend fleet\n  balance roundrobin\n  option httpchk GET /readyz\n'
      printf '  http-check expect status 200\n'
      for n in fleet-a fleet-b fleet-c; do
        printf '  server %s %s check port %s inter 500 fall 2 rise 2\n' "$n" \
          "${FLEET_URLS[$n]#https://}" "$(operator_port "$n")"
      done
    } >"$T/haproxy.cfg"
    haproxy -c -f "$T/haproxy.cfg" >"$T/haproxy.check" 2>&1 ||
      fail "haproxy accepts the test's configuration" "valid" "$(cat "$T/haproxy.check")"
    haproxy -db -f "$T/haproxy.cfg" >"$T/haproxy.$attempt.log" 2>&1 &
    LB_PID=$!
    deadline=$((SECONDS + 20))
    while kill -0 "$LB_PID" 2>/dev/null; do
      if (exec 3<>"/dev/tcp/127.0.0.1/$LB_PORT") 2>/dev/null; then
        on_cleanup "kill $LB_PID 2>/dev/null; wait $LB_PID 2>/dev/null"
        log "haproxy on 127.0.0.1:$LB_PORT (pid $LB_PID) in front of fleet-a, fleet-b, fleet-c"
        return 0
      fi
      ((SECONDS < deadline)) || break
      sleep 0.2
    done
    kill "$LB_PID" 2>/dev/null || true
    wait "$LB_PID" 2>/dev/null || true
    grep -qi "address already in use\|cannot bind" "$T/haproxy.$attempt.log" ||
      fail "haproxy starts and listens within 20 s" "listening" "$(tail -n 5 "$T/haproxy.$attempt.log")"
  done
  fail "haproxy finds a free loopback port in 8 attempts"
}
start_balancer
COLLECTOR_URL="https://127.0.0.1:$LB_PORT"

SOLD=0
COUNTED=0
# counted_another_instance: the running agent's pos_agent_uplink_errors_total{reason="another_instance"}.
counted_another_instance() {
  local port
  port="$(sed -n 's/.*mod=agent event=metrics_listening .*port=\([0-9]*\).*/\1/p' "$AGENT_LOG" | head -n 1)"
  [[ -n "$port" ]] || fail "the agent logs its metrics port" "event=metrics_listening port=N" "$(head -n 5 "$AGENT_LOG")"
  curl -sS --max-time 10 "http://127.0.0.1:$port/metrics" |
    awk '$1 == "pos_agent_uplink_errors_total{reason=\"another_instance\"}" { n = $2 } END { print n + 0 }'
}

# sell_round ROUND: each store's agent in turn (through the balancer): 2 pushes of 10 sales.
sell_round() {
  local s store
  for ((s = 1; s <= STORES; s++)); do
    store="$(printf 'S%03d' "$s")"
    STORE="$store"
    write_agent_config agent.store_id="$store" journal.path="$T/journal-$store.db"
    start_agent
    run_load --clients 1 --sales 10 --batch 5 --prefix "R$1$store"
    SOLD=$((SOLD + $(load_field ok)))
    push_until_sent 120
    run_load --clients 1 --sales 10 --batch 5 --prefix "R$1${store}b"
    SOLD=$((SOLD + $(load_field ok)))
    push_until_sent 120
    COUNTED=$((COUNTED + $(counted_another_instance)))
    stop_agent
  done
}

sell_round 1
fleet_kill fleet-b
# One of the others takes over b's partitions: for the request timeout and margin (12.5 s) it
# waits out b's last requests, /healthz 503 meanwhile, and /readyz 200.
deadline=$((SECONDS + 60))
gainer=""
while [[ -z "$gainer" ]]; do
  for n in fleet-a fleet-c; do
    grep -q 'event=waiting_out_previous_owner' "$T/$n.log" && gainer="$n"
  done
  ((SECONDS < deadline)) || fail "a or c takes b's partitions over within 60 s" \
    "event=waiting_out_previous_owner" "$(grep -hE 'event=(fleet_|partitions_)' "$T"/fleet-[ac].log | tail -n 4)"
  sleep 0.2
done
port="$(operator_port "$gainer")"
healthz_code="$(curl -s -o "$T/healthz.body" -w '%{http_code}' --max-time 5 "http://127.0.0.1:$port/healthz" || true)"
readyz_code="$(curl -s -o "$T/readyz.body" -w '%{http_code}' --max-time 5 "http://127.0.0.1:$port/readyz" || true)"
if ! grep -q 'event=fleet_taken_over' "$T/$gainer.log"; then
  assert_eq "$gainer: /healthz while it takes b's partitions over" 503 "$healthz_code"
fi
assert_eq "$gainer: /readyz while it takes b's partitions over ($(cat "$T/readyz.body" 2>/dev/null))" \
  200 "$readyz_code"
fleet_wait_ready 120 fleet-a fleet-c
log "after b's kill: a=[$(fleet_owned fleet-a)] c=[$(fleet_owned fleet-c)]"
sell_round 2

# Every batch was taken by its partition's owner: the one that acknowledged it logs
# batch_acked; the others refused it naming the partition, and the agent went on.
reroutes="$(cat "$T"/agent.*.log | grep -c 'event=rerouting' || true)"
refused="$(cat "$T"/fleet-*.log | grep -c "event=batch_unavailable .*not this collector instance's store" || true)"
assert_eq "each refusal of another instance's store led the agent to try again elsewhere" \
  "$refused" "$reroutes"
assert_eq "the agents' metrics count those answers (reason=another_instance)" "$reroutes" "$COUNTED"
if grep -h 'tries in a row reached collector instances' "$T"/agent.*.log >"$T/stuck.txt"; then
  fail "no agent runs out of quick tries through a balancer of 3 instances" "none" "$(head -n 2 "$T/stuck.txt")"
fi

# The instances count those answers apart from their own trouble: outcome="another_instance",
# and still healthy (they are not 503s of Kafka's).
for n in fleet-a fleet-c; do
  port="$(sed -n 's/.*mod=collector event=operator_listening .*port=\([0-9]*\).*/\1/p' "$T/$n.log" | head -n 1)"
  curl -sS --max-time 10 "http://127.0.0.1:$port/metrics" >"$T/$n.metrics"
  assert_eq "$n: pos_collector_batches_total{outcome=\"another_instance\"} = its refusals in its log" \
    "$(grep -c "event=batch_unavailable .*not this collector instance's store" "$T/$n.log" || true)" \
    "$(awk '$1 == "pos_collector_batches_total{outcome=\"another_instance\"}" { n = $2 } END { print n + 0 }' "$T/$n.metrics")"
  assert_eq "$n: pos_collector_healthy" 1 \
    "$(awk '$1 == "pos_collector_healthy" { print $2 }' "$T/$n.metrics")"
done

# The balancer took the dead instance out, and never the live ones.
lb_log="$(cat "$T"/haproxy.*.log)"
grep -q 'fleet/fleet-b is DOWN' <<<"$lb_log" ||
  fail "haproxy's check of /readyz took the killed fleet-b out" "Server fleet/fleet-b is DOWN" \
    "$(grep -i 'fleet/' <<<"$lb_log" | tail -n 3)"
if grep -E 'fleet/fleet-[ac] is DOWN' <<<"$lb_log" >"$T/down.txt"; then
  fail "haproxy keeps fleet-a and fleet-c in, through the hand-over" "no DOWN" "$(head -n 2 "$T/down.txt")"
fi

kafka_read pos.sales.v1 sales
records_db sales
assert_eq "records in pos.sales.v1: every sale acknowledged" "$SOLD" "$KAFKA_RECORDS"
assert_eq "each sale once" "$SOLD" "$(rsql sales 'SELECT count(DISTINCT sale_id) FROM k;')"
assert_eq "each store's records in one partition" "$STORES" \
  "$(rsql sales 'SELECT count(*) FROM (SELECT key FROM k GROUP BY key HAVING count(DISTINCT partition) = 1);')"
log "$SOLD sales through the balancer, $reroutes batches answered by another instance and sent again"
log "passed"
