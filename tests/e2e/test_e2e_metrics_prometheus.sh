#!/usr/bin/env bash
# Both programs' operator listeners as Prometheus sees them: /metrics on the
# agent and on the collector pass `promtool check metrics`; a real
# Prometheus (Debian's prometheus), started here on a free loopback port
# with its storage in the test's directory and a 1 s scrape interval,
# scrapes both, and its query API returns the agent's sales counter equal to
# the sales posted and the collector's produced counter equal to what Kafka
# holds. The collector's /healthz turns 503 with the reason while Kafka does
# not take batches, and 200 again once it does; so does the agent's, whose
# batches fail meanwhile.
source "$(dirname "$0")/lib.sh"

for tool in promtool prometheus; do
  command -v "$tool" >/dev/null || fail "$tool is required (apt-get install prometheus)"
done

# listener_port LOG EVENT: the port an event=EVENT line of LOG names.
listener_port() {
  local line port
  line="$(grep -m1 "event=$2 " "$1" || true)"
  port="$(sed -n 's/.*[[:space:]]port=\([0-9][0-9]*\).*/\1/p' <<<"$line")"
  [[ "$port" =~ ^[0-9]+$ ]] || fail "$1 logs event=$2 with its port" "port=<N>" "$line"
  echo "$port"
}

# check_metrics NAME URL: GET URL/metrics into $T/NAME.metrics, checked by promtool.
check_metrics() {
  local status
  status="$(curl -sS -o "$T/$1.metrics" -w '%{http_code}' --max-time 10 "$2/metrics")"
  assert_eq "$1 GET /metrics" 200 "$status"
  promtool check metrics <"$T/$1.metrics" >"$T/$1.promtool" 2>&1 ||
    fail "promtool check metrics accepts the $1's /metrics" "no problems" "$(cat "$T/$1.promtool")"
}

# sample FILE NAME_WITH_LABELS: a sample's value, or "missing".
sample() {
  awk -v name="$2" '$1 == name { print $2; found = 1; exit } END { if (!found) print "missing" }' "$1"
}

# healthz URL [PATH]: GET URL/healthz (or URL/PATH); sets HEALTH_STATUS, HEALTH_BODY.
healthz() {
  rm -f "$T/healthz.body"
  HEALTH_STATUS="$(curl -sS -o "$T/healthz.body" -w '%{http_code}' --max-time 10 "$1/${2:-healthz}")" || true
  HEALTH_BODY="$(cat "$T/healthz.body" 2>/dev/null || echo "(no body)")"
}

make_pki
start_broker --partitions 2
write_collector_config kafka.produce_timeout=2s operator.unhealthy_after=1s
start_collector
COLLECTOR_OPS="http://127.0.0.1:$(listener_port "$COLLECTOR_LOG" operator_listening)"

write_tokens
write_agent_config metrics.port=0 metrics.uplink_unhealthy_after=1s
start_agent
AGENT_OPS="http://127.0.0.1:$(listener_port "$AGENT_LOG" metrics_listening)"

run_load --clients 2 --sales 40 --batch 4 --prefix P
SOLD="$(load_field ok)"
assert_gt "sales acknowledged to the POS" 0 "$SOLD"
push_until_sent 60

check_metrics agent "$AGENT_OPS"
check_metrics collector "$COLLECTOR_OPS"
assert_eq "agent pos_agent_sales_journaled_total" "$SOLD" "$(sample "$T/agent.metrics" pos_agent_sales_journaled_total)"
assert_eq "agent pos_agent_sales_unsent" 0 "$(sample "$T/agent.metrics" pos_agent_sales_unsent)"
assert_gt "agent pos_agent_batch_ack_seconds_count" 0 "$(sample "$T/agent.metrics" pos_agent_batch_ack_seconds_count)"
assert_gt "agent pos_agent_batch_seal_seconds_count" 0 "$(sample "$T/agent.metrics" pos_agent_batch_seal_seconds_count)"
assert_eq "collector pos_collector_sales_produced_total" "$SOLD" "$(sample "$T/collector.metrics" pos_collector_sales_produced_total)"
assert_eq "collector pos_collector_stores_seen" 1 "$(sample "$T/collector.metrics" pos_collector_stores_seen)"
ACCEPTED="$(sample "$T/collector.metrics" 'pos_collector_batches_total{outcome="accepted"}')"
assert_gt "collector batches accepted" 0 "$ACCEPTED"
assert_eq "collector delivery histogram count = batches accepted" "$ACCEPTED" \
  "$(sample "$T/collector.metrics" 'pos_collector_batch_delivery_seconds_count{outcome="accepted"}')"
assert_eq "collector pos_collector_state_ready" 1 "$(sample "$T/collector.metrics" pos_collector_state_ready)"
# The certificates' expiry, as Unix times: what openssl reads in the same files.
cert_end() { date -u -d "$(openssl x509 -noout -enddate -in "$1" | cut -d= -f2)" +%s; }
assert_eq "agent pos_agent_cert_not_after_timestamp_seconds: the device certificate's notAfter" \
  "$(cert_end "$PKI/device-$STORE-$DEVICE.crt")" \
  "$(awk '{ printf "%d", $1 }' <<<"$(sample "$T/agent.metrics" pos_agent_cert_not_after_timestamp_seconds)")"
assert_eq "collector pos_collector_tls_cert_not_after_timestamp_seconds: the server certificate's notAfter" \
  "$(cert_end "$PKI/server.crt")" \
  "$(awk '{ printf "%d", $1 }' <<<"$(sample "$T/collector.metrics" pos_collector_tls_cert_not_after_timestamp_seconds)")"
healthz "$AGENT_OPS"
assert_eq "agent /healthz" "200 ok" "$HEALTH_STATUS $HEALTH_BODY"
healthz "$COLLECTOR_OPS"
assert_eq "collector /healthz" "200 ok" "$HEALTH_STATUS $HEALTH_BODY"
healthz "$COLLECTOR_OPS" readyz
assert_eq "collector /readyz (a load balancer's check)" "200 ready" "$HEALTH_STATUS $HEALTH_BODY"

# --- a real Prometheus scrapes both ----------------------------------------------
cat >"$T/prometheus.yml" <<YAML
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: pos-agent
    static_configs:
      - targets: ['${AGENT_OPS#http://}']
  - job_name: pos-collector
    static_configs:
      - targets: ['${COLLECTOR_OPS#http://}']
YAML
promtool check config "$T/prometheus.yml" >"$T/promtool.config" 2>&1 ||
  fail "promtool accepts the test's prometheus.yml" "SUCCESS" "$(cat "$T/promtool.config")"
# start_prometheus: on a random loopback port (another one if that is
# taken), until its /-/ready answers; sets PROM_PID, PROM_URL and PROM_LOG.
start_prometheus() {
  local attempt deadline
  for attempt in 1 2 3 4 5 6 7 8; do
    PROM_PORT=$((20000 + RANDOM % 30000))
    PROM_URL="http://127.0.0.1:$PROM_PORT"
    prometheus --config.file="$T/prometheus.yml" --storage.tsdb.path="$T/prometheus-data" \
      --web.listen-address="127.0.0.1:$PROM_PORT" >"$T/prometheus.$attempt.log" 2>&1 &
    PROM_PID=$!
    deadline=$((SECONDS + 60))
    while kill -0 "$PROM_PID" 2>/dev/null; do
      if [[ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$PROM_URL/-/ready")" == 200 ]]; then
        on_cleanup "kill $PROM_PID 2>/dev/null; wait $PROM_PID 2>/dev/null"
        PROM_LOG="$T/prometheus.$attempt.log"
        log "prometheus ready on $PROM_URL (pid $PROM_PID)"
        return 0
      fi
      ((SECONDS < deadline)) || break
      sleep 0.2
    done
    kill "$PROM_PID" 2>/dev/null
    wait "$PROM_PID" 2>/dev/null
    grep -q "address already in use" "$T/prometheus.$attempt.log" ||
      fail "prometheus starts and answers /-/ready within 60 s" "ready" "$(tail -n 5 "$T/prometheus.$attempt.log")"
  done
  fail "prometheus finds a free loopback port in 8 attempts"
}
start_prometheus

# prom_value QUERY: the first result's value from the query API ("" if none).
prom_value() {
  local body
  body="$(curl -sS --max-time 5 "$PROM_URL/api/v1/query" --data-urlencode "query=$1" 2>/dev/null)" || return 0
  [[ "$(json_valid "$body")" == 1 ]] || return 0
  [[ "$(json_get "$body" '$.status')" == success ]] || return 0
  json_get "$body" '$.data.result[0].value[1]'
}

# wait_prom WHAT QUERY WANT: until the query returns WANT (90 s: Prometheus
# starting on a busy machine, then scraping every second).
wait_prom() {
  local deadline=$((SECONDS + 90)) value=""
  while :; do
    kill -0 "$PROM_PID" 2>/dev/null || fail "prometheus is running" "running" "$(tail -n 5 "$PROM_LOG")"
    value="$(prom_value "$2")"
    [[ "$value" == "$3" ]] && break
    ((SECONDS < deadline)) || fail "$1 (Prometheus query $2)" "$3" "${value:-no result}"
    sleep 0.5
  done
  log "prometheus: $2 = $value"
}
wait_prom "Prometheus scrapes the agent" 'up{job="pos-agent"}' 1
wait_prom "Prometheus scrapes the collector" 'up{job="pos-collector"}' 1
wait_prom "the agent's sales counter in Prometheus equals the sales posted" \
  'pos_agent_sales_journaled_total{job="pos-agent"}' "$SOLD"
wait_prom "the collector's produced counter in Prometheus equals the sales posted" \
  'pos_collector_sales_produced_total{job="pos-collector"}' "$SOLD"
wait_prom "a percentage of the journal's limit can be drawn" \
  'pos_agent_journal_bytes / pos_agent_journal_max_bytes > bool 0' 1

# --- Kafka not taking batches: the collector and the agent say so -----------------
pause_broker
on_cleanup "kill -CONT $BROKER_PID 2>/dev/null"
run_load --clients 1 --sales 5 --batch 5 --prefix Q
SOLD=$((SOLD + $(load_field ok)))
deadline=$((SECONDS + 120))
while :; do
  kill -USR1 "$AGENT_PID"
  sleep 1
  healthz "$COLLECTOR_OPS"
  [[ "$HEALTH_STATUS" == 503 && "$HEALTH_BODY" =~ Kafka\ is\ not\ taking\ batches|rebuilding ]] && break
  ((SECONDS < deadline)) || fail "collector /healthz while the broker is stopped" "503 naming Kafka" "$HEALTH_STATUS $HEALTH_BODY"
done
log "collector healthz with the broker stopped: $HEALTH_STATUS $HEALTH_BODY"
if [[ "$HEALTH_BODY" =~ Kafka\ is\ not\ taking\ batches ]]; then
  healthz "$COLLECTOR_OPS" readyz
  [[ "$HEALTH_STATUS" == 503 && "$HEALTH_BODY" =~ ^not\ ready:\ Kafka\ is\ not\ taking\ batches ]] ||
    fail "collector /readyz while Kafka takes no batch" "503 not ready: Kafka is not taking batches" \
      "$HEALTH_STATUS $HEALTH_BODY"
fi
deadline=$((SECONDS + 120))
while :; do
  kill -USR1 "$AGENT_PID"
  sleep 1
  healthz "$AGENT_OPS"
  [[ "$HEALTH_STATUS" == 503 && "$HEALTH_BODY" =~ not\ reaching\ head\ office ]] && break
  ((SECONDS < deadline)) || fail "agent /healthz while its batches fail" "503 not reaching head office" "$HEALTH_STATUS $HEALTH_BODY"
done
log "agent healthz with the broker stopped: $HEALTH_STATUS $HEALTH_BODY"
resume_broker
push_until_sent 180
for ops in "$COLLECTOR_OPS" "$AGENT_OPS" "$COLLECTOR_OPS readyz"; do
  deadline=$((SECONDS + 120))
  # shellcheck disable=SC2086 # "URL PATH" for the collector's /readyz
  until healthz $ops; [[ "$HEALTH_STATUS" == 200 ]]; do
    ((SECONDS < deadline)) || fail "$ops/healthz once the broker is back" 200 "$HEALTH_STATUS $HEALTH_BODY"
    sleep 0.5
  done
done
check_metrics agent "$AGENT_OPS"
assert_gt "agent uplink errors while Kafka was stopped" 0 \
  "$(awk '$1 ~ /^pos_agent_uplink_errors_total\{/ { n += $NF } END { print n + 0 }' "$T/agent.metrics")"
wait_prom "the agent's sales counter after the outage" 'pos_agent_sales_journaled_total{job="pos-agent"}' "$SOLD"
check_metrics collector "$COLLECTOR_OPS"
assert_gt "collector batches answered 503 while Kafka was stopped" 0 \
  "$(sample "$T/collector.metrics" 'pos_collector_batches_total{outcome="unavailable"}')"
stop_agent
log "ok"
