#!/usr/bin/env bash
# Issue 13, item 2: "certificates of a store that head office has
# decommissioned are not renewed", as the agent lives it
# (agent/enrol/enrol_driver.c):
#   - the agent enrols with a token; head office decommissions the store
#     (posctl decommission --store S001); the agent's renewal is refused:
#     /status.json says enrolment.state "refused" with head office's words,
#     the log says it once as a line of its own (event=renewal_refused);
#   - it keeps sending sales with its current certificate, which is still
#     valid;
#   - it does not loop: its attempts are at least [enrol] retry_floor apart;
#   - once head office undoes the decommission (posctl decommission --undo)
#     its next attempt renews, without a restart; every sale in Kafka once.
# The collector issues 2-minute certificates and the agent renews at a
# quarter of the validity (about 20 s after issue), so that the refusals,
# the undo and the renewal all come well before the certificate's end.
source "$(dirname "$0")/lib.sh"

POSCTL_BIN="$POS_BUILD_DIR/collector/posctl"
[[ -x "$POSCTL_BIN" ]] || fail "$POSCTL_BIN is not built (cmake --build $POS_BUILD_DIR)"
emulated POSCTL_BIN
unset POSCTL_CONFIG

FLOOR_S=10

make_pki
start_broker --partitions 1
write_collector_config enrol.ca_cert="$PKI/ca/ca.crt" enrol.ca_key="$PKI/ca/ca.key" \
  enrol.listen_host=127.0.0.1 enrol.port=0 enrol.cert_lifetime=2m
start_collector
EST_PORT="$(sed -n 's/.*event=enrol_listening .*[[:space:]]port=\([0-9][0-9]*\).*/\1/p' "$COLLECTOR_LOG")"
[[ "$EST_PORT" =~ ^[0-9]+$ ]] || fail "the collector logs its EST listener's port" "event=enrol_listening port=N" \
  "$(grep 'event=enrol' "$COLLECTOR_LOG")"
ADMIN=(--url "$COLLECTOR_URL" --ca "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key")

# posctl ARGS...: runs posctl against the collector; fails the test if it fails.
posctl() {
  timeout 60 "$POSCTL_BIN" "${ADMIN[@]}" "$@" >"$T/posctl.out" 2>"$T/posctl.err" ||
    fail "posctl $*: $(cat "$T/posctl.err")"
}

DEV="$T/device"
mkdir -p "$DEV"
TOKEN_FILE="$DEV/enrol.token"
posctl enrol-token --store S001 --device D1 --valid-for 1h
cp "$T/posctl.out" "$TOKEN_FILE"

write_tokens
write_agent_config uplink.cert="$DEV/device.crt" uplink.key="$DEV/device.key" \
  enrol.url="https://127.0.0.1:$EST_PORT" enrol.token_file="$TOKEN_FILE" enrol.renew_at=0.25 \
  enrol.retry_floor="${FLOOR_S}s" enrol.retry_max=30s

# agent_events EVENT: the agent's mod=enrol event=EVENT lines.
agent_events() { grep -c "mod=enrol event=$1" "$AGENT_LOG" || true; }
# wait_for WHAT TIMEOUT CONDITION: until the arithmetic CONDITION holds.
wait_for() {
  local what="$1" timeout="$2" condition="$3" deadline=$((SECONDS + $2))
  until eval "(( $condition ))"; do
    ((SECONDS < deadline)) || fail "$what within $timeout s" "$condition" "not yet"
    kill -0 "$AGENT_PID" 2>/dev/null || fail "the agent runs" "running" "exited: $(tail -n 3 "$AGENT_LOG")"
    sleep 0.2
  done
}
# enrolment FIELD: /status.json's enrolment.FIELD.
enrolment() {
  status_json
  json_get "$STATUS_JSON" "\$.enrolment.$1"
}
# enrolment_type FIELD: its JSON type (true and false for the flags).
enrolment_type() {
  status_json
  json_type "$STATUS_JSON" "\$.enrolment.$1"
}
# wait_enrolment_state STATE TIMEOUT
wait_enrolment_state() {
  local deadline=$((SECONDS + $2)) got=""
  while :; do
    got="$(enrolment state)"
    [[ "$got" == "$1" ]] && return 0
    ((SECONDS < deadline)) || fail "/status.json enrolment.state within $2 s ($STATUS_JSON)" "$1" "$got"
    sleep 0.2
  done
}

SALES=0
sell() {
  SALES=$((SALES + 1))
  post_sales "$TOKEN_T1" "$(sale_json sale_id="\"RF-$(printf '%04d' "$SALES")\"")"
  assert_eq "sale RF-$SALES taken" 201 "$HTTP_STATUS"
}

# --- enrolled, then the store is decommissioned -------------------------------------------------
start_agent
wait_for "the agent enrols with its token" 30 '$(agent_events enrolled) >= 1'
posctl decommission --store S001
(($(agent_events renewing) == 0)) ||
  fail "the store is decommissioned before the agent's first renewal (the machine is too slow?)" \
    "no renewal yet" "$(grep 'event=renew' "$AGENT_LOG")"
sell
push_until_sent 60

# --- the renewal is refused, said plainly, sales still flow --------------------------------------
wait_for "the agent's renewal is refused" 60 '$(agent_events renewal_refused) >= 1'
wait_enrolment_state refused 10
assert_contains "enrolment.last_result quotes head office" "store S001 was decommissioned by head office" \
  "$(enrolment last_result)"
assert_eq "enrolment.renewal_refused" true "$(enrolment_type renewal_refused)"
grep 'mod=enrol event=renewal_refused' "$AGENT_LOG" | grep -q 'sales are still sent with the current certificate' ||
  fail "the refusal's line says what it means for sales" "sales are still sent" \
    "$(grep 'event=renewal_refused' "$AGENT_LOG")"
sell
push_until_sent 60
# A second attempt, also refused: said once all the same, and not sooner
# than the floor after the first.
wait_for "a second attempt after the floor" 60 '$(agent_events renewing) >= 2 && $(agent_events renewed) == 0'
wait_enrolment_state refused 30
assert_eq "enrolment.failures after two refusals" 2 "$(enrolment failures)"
assert_eq "the refusal is logged once while nothing changes" 1 "$(agent_events renewal_refused)"
if grep -q "mod=enrol event=renew_failed" "$AGENT_LOG"; then
  fail "a refusal is not logged as a failure" "no renew_failed" "$(grep 'event=renew_failed' "$AGENT_LOG")"
fi
# ms_of LINE: its ts= as milliseconds since the epoch.
ms_of() { date -d "$(sed -n 's/^ts=\([^ ]*\) .*/\1/p' <<<"$1")" +%s%3N; }
previous=""
while IFS= read -r line; do
  now_ms="$(ms_of "$line")"
  if [[ -n "$previous" ]]; then
    # The floor counts from the attempt's whole second: 1 s of slack.
    ((now_ms - previous >= (FLOOR_S - 1) * 1000)) ||
      fail "renewal attempts at least retry_floor ($FLOOR_S s) apart" ">= $(((FLOOR_S - 1) * 1000)) ms" \
        "$((now_ms - previous)) ms"
  fi
  previous="$now_ms"
done < <(grep 'mod=enrol event=renewing' "$AGENT_LOG")
log "refused twice, $(agent_events renewing) attempts at least $FLOOR_S s apart"

# --- head office puts the store back: the next attempt renews ------------------------------------
serial_before="$(openssl x509 -in "$DEV/device.crt" -noout -serial)"
posctl decommission --store S001 --undo
wait_for "the agent renews once the store is in service" 60 '$(agent_events renewed) >= 1'
wait_enrolment_state waiting 10
assert_eq "enrolment.last_result after the renewal" renewed "$(enrolment last_result)"
assert_eq "enrolment.renewal_refused after the renewal" false "$(enrolment_type renewal_refused)"
[[ "$(openssl x509 -in "$DEV/device.crt" -noout -serial)" != "$serial_before" ]] ||
  fail "a new certificate is installed" "another serial" "the same"
assert_eq "the same agent process throughout" 1 "$(grep -c 'event=ready' "$AGENT_LOG")"
sell
push_until_sent 60

# --- every sale in Kafka exactly once ------------------------------------------------------------
kafka_read pos.sales.v1 sales
records_db sales
assert_eq "sale records in pos.sales.v1" "$SALES" "$KAFKA_RECORDS"
assert_eq "distinct sale ids in pos.sales.v1" "$SALES" "$(rsql sales "SELECT count(DISTINCT sale_id) FROM k;")"
check_sales_match_journal sales "$SALES"
stop_agent
stop_collector
log "ok: refused while decommissioned, renewed after the undo, $SALES sales once each"
