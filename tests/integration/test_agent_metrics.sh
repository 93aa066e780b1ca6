#!/usr/bin/env bash
# The agent's operator listener ([metrics]): GET /metrics passes promtool's
# checks and counts every sale journaled (duplicates not again), with the
# group-commit histogram and the backlog gauges with their limits; GET
# /healthz is 200 while the agent does its job and 503 with the reason when
# it cannot: batches failing longer than [metrics] uplink_unhealthy_after,
# or a journal refusing sales.
source "$(dirname "$0")/lib.sh"

command -v promtool >/dev/null || fail "promtool is required (apt-get install prometheus)"

# metrics_url: sets METRICS_URL from the agent's event=metrics_listening.
metrics_url() {
  local line
  line="$(grep -m1 'event=metrics_listening' "$AGENT_LOG" || true)"
  METRICS_PORT="$(sed -n 's/.*[[:space:]]port=\([0-9][0-9]*\).*/\1/p' <<<"$line")"
  [[ "$METRICS_PORT" =~ ^[0-9]+$ ]] || fail "the agent logs event=metrics_listening with its port" "port=<N>" "$line"
  METRICS_URL="http://127.0.0.1:$METRICS_PORT"
}

# scrape: GET /metrics into $T/metrics.txt, checked by promtool.
scrape() {
  local status
  status="$(curl -sS -o "$T/metrics.txt" -D "$T/metrics.headers" -w '%{http_code}' --max-time 10 "$METRICS_URL/metrics")"
  assert_eq "GET /metrics status" 200 "$status"
  assert_contains "GET /metrics Content-Type" "text/plain; version=0.0.4" "$(cat "$T/metrics.headers")"
  promtool check metrics <"$T/metrics.txt" >"$T/promtool.out" 2>&1 ||
    fail "promtool check metrics accepts the agent's /metrics" "no problems" "$(cat "$T/promtool.out")"
}

# sample NAME_WITH_LABELS: the value of that sample line in the last scrape.
sample() {
  awk -v name="$1" '$1 == name { print $2; found = 1; exit } END { if (!found) print "missing" }' "$T/metrics.txt"
}

# healthz: GET /healthz; sets HEALTH_STATUS and HEALTH_BODY.
healthz() {
  HEALTH_STATUS="$(curl -sS -o "$T/healthz.body" -w '%{http_code}' --max-time 10 "$METRICS_URL/healthz")"
  HEALTH_BODY="$(cat "$T/healthz.body")"
}

# wait_unhealthy WHAT PATTERN: /healthz turns 503 with PATTERN in its body (30 s).
wait_unhealthy() {
  local deadline=$((SECONDS + 30))
  while :; do
    healthz
    [[ "$HEALTH_STATUS" == 503 && "$HEALTH_BODY" =~ $2 ]] && break
    ((SECONDS < deadline)) || fail "$1" "503 matching /$2/" "$HEALTH_STATUS $HEALTH_BODY"
    sleep 0.2
  done
  log "healthz: $HEALTH_STATUS $HEALTH_BODY"
}

write_tokens

# --- sales counted, histograms and gauges, healthy --------------------------------
write_config metrics.port=0 journal.max_size=64M
start_agent
metrics_url
run_load --clients 2 --sales 57 --batch 3 --prefix M
SOLD="$(load_field ok)"
assert_gt "sales pos-load had acknowledged" 56 "$SOLD"
run_load --clients 1 --sales 5 --batch 1 --prefix M # the same five again: duplicates
post_sales "" "$(sale_json)" # no token
expect_status "a sale without a token" 401
scrape
assert_gt "pos_agent_sales_requests_total 201 created" 0 "$(sample 'pos_agent_sales_requests_total{status="201",outcome="created"}')"
assert_eq "pos_agent_sales_requests_total 200 retry" 5 "$(sample 'pos_agent_sales_requests_total{status="200",outcome="retry"}')"
assert_eq "pos_agent_sales_requests_total 401 unauthorized" 1 "$(sample 'pos_agent_sales_requests_total{status="401",outcome="unauthorized"}')"
assert_eq "pos_agent_sales_journaled_total (duplicates not counted)" "$SOLD" "$(sample pos_agent_sales_journaled_total)"
assert_eq "sales in the journal" "$SOLD" "$(journal_count)"
COMMITS="$(sample pos_agent_journal_commit_seconds_count)"
assert_gt "group commits observed" 0 "$COMMITS"
assert_eq "commit histogram: +Inf bucket = count" "$COMMITS" "$(sample 'pos_agent_journal_commit_seconds_bucket{le="+Inf"}')"
assert_gt "commit size histogram sum (sales and duplicates)" "$((SOLD - 1))" "$(sample pos_agent_journal_commit_writes_sum)"
assert_eq "pos_agent_sales_unsent (uplink off)" "$SOLD" "$(sample pos_agent_sales_unsent)"
assert_eq "pos_agent_journal_max_bytes is journal.max_size" 67108864 "$(sample pos_agent_journal_max_bytes)"
assert_gt "pos_agent_journal_bytes" 0 "$(sample pos_agent_journal_bytes)"
assert_eq "pos_agent_healthy" 1 "$(sample pos_agent_healthy)"
healthz
assert_eq "healthz while the journal takes sales and the uplink is off" "200 ok" "$HEALTH_STATUS $HEALTH_BODY"
assert_eq "POST /metrics" 405 "$(curl -sS -o /dev/null -w '%{http_code}' -X POST "$METRICS_URL/metrics")"
assert_eq "the POS API does not serve /metrics" 404 "$(curl -sS -o /dev/null -w '%{http_code}' "$AGENT_URL/metrics")"
stop_agent

# --- the uplink failing longer than uplink_unhealthy_after ------------------------
# Port 1 on loopback (tcpmux, privileged, never served here): every push
# fails to connect.
DEAD_PORT=1
write_config metrics.port=0 metrics.uplink_unhealthy_after=1s uplink.url="https://127.0.0.1:$DEAD_PORT" \
  uplink.interval=1s uplink.jitter=0 uplink.backoff_min=100ms uplink.backoff_max=1s \
  uplink.heartbeat_interval=0 uplink.cert="$T/none.crt" uplink.key="$T/none.key" uplink.ca="$T/none.crt"
start_agent
metrics_url
wait_unhealthy "healthz once batches have failed longer than uplink_unhealthy_after" "not reaching head office.*$SOLD sales waiting"
scrape
assert_eq "pos_agent_healthy" 0 "$(sample pos_agent_healthy)"
ERRORS="$(awk '$1 ~ /^pos_agent_uplink_errors_total\{/ { n += $NF } END { print n + 0 }' "$T/metrics.txt")"
assert_gt "pos_agent_uplink_errors_total, all reasons" 0 "$ERRORS"
assert_gt "pos_agent_uplink_failing_seconds" 0 "$(sample pos_agent_uplink_failing_seconds | cut -d. -f1)"
assert_gt "pos_agent_oldest_unsent_age_seconds" -1 "$(sample pos_agent_oldest_unsent_age_seconds | cut -d. -f1)"
stop_agent

# --- a journal refusing sales ----------------------------------------------------
rm -f "$JOURNAL" "$JOURNAL"-*
write_config metrics.port=0 journal.max_size=256K
start_agent
metrics_url
healthz
assert_eq "healthz before the journal is full" 200 "$HEALTH_STATUS"
LOAD_OUT="$("$LOAD_BIN" --url "$AGENT_URL" --token "$TOKEN_T1" --terminal T1 \
  --time-base "$LOAD_TIME_BASE" --clients 1 --sales 50000 --batch 10 --prefix F \
  --allow-failures --max-failures 1 2>"$T/load.err")" || fail "pos-load while filling: $(cat "$T/load.err")"
grep -q ' 503=' "$T/load.err" || fail "the journal filled up with a 503" "503=1" "$(cat "$T/load.err")"
wait_unhealthy "healthz while the journal refuses sales" "journal is not taking sales"
scrape
assert_eq "pos_agent_journal_full" 1 "$(sample pos_agent_journal_full)"
assert_eq "pos_agent_journal_max_bytes" 262144 "$(sample pos_agent_journal_max_bytes)"
assert_gt 'pos_agent_journal_write_errors_total{error="full"}' 0 \
  "$(sample 'pos_agent_journal_write_errors_total{error="full"}')"
assert_gt 'pos_agent_sales_requests_total{status="503",outcome="journal_full"}' 0 \
  "$(sample 'pos_agent_sales_requests_total{status="503",outcome="journal_full"}')"
stop_agent
log "ok"
