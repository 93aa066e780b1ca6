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
source "$(dirname "$0")/enrol_lib.sh"

FLOOR_S=10

enrol_collector 2m
enrol_device

write_tokens
write_agent_config uplink.cert="$DEV/device.crt" uplink.key="$DEV/device.key" \
  enrol.url="https://127.0.0.1:$EST_PORT" enrol.token_file="$TOKEN_FILE" enrol.renew_at=0.25 \
  enrol.retry_floor="${FLOOR_S}s" enrol.retry_max=30s

# enrolment_type FIELD: its JSON type (true and false for the flags).
enrolment_type() {
  status_json
  json_type "$STATUS_JSON" "\$.enrolment.$1"
}

SALE_PREFIX=RF

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
grep 'mod=enrol event=renewal_refused' "$AGENT_LOG" | grep -c 'sales are still sent with the current certificate' >/dev/null ||
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
assert_sales_once
stop_agent
stop_collector
log "ok: refused while decommissioned, renewed after the undo, $SALES sales once each"
