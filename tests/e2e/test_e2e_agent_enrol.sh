#!/usr/bin/env bash
# Issue 13, items 1, 2 and 5, driven by the agent itself (agent/enrol/enrol_driver.c):
#   - a device with no certificate and no token takes sales and says once
#     what it needs; a wrong token is refused, said once and not retried
#     until the token file changes;
#   - a brand-new device with no certificate or key, only a one-time token
#     in [enrol] token_file, enrols at the collector's EST listener, keeps
#     its key 0600, deletes the spent token, and its sales reach Kafka;
#   - it renews its certificate over simplereenroll before expiry, without
#     a restart, while sales keep flowing: each sale in Kafka exactly once;
#   - kill -9 right after a renewal started leaves an agent that starts
#     again on a matching pair and still sends.
# The collector's shortest lifetime (cert_lifetime = 1m; it backdates
# notBefore by a tenth of so short a lifetime) and renew_at 0.3 make
# renewals come about every 20 s; three are observed (the issue's count).
# POS_LONG=1: a 2-minute lifetime renewed at the default 2/3, as the issue
# asks it (about 3 minutes more; not in CI).
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/enrol_lib.sh"

LIFETIME=1m
RENEW_AT=0.3
RENEWALS=3
FLOOR=10s
RETRY_MAX=30s
if [[ "${POS_LONG:-0}" == 1 ]]; then
  LIFETIME=2m
  RENEW_AT=2/3
  RENEWALS=3
  FLOOR=40s
  RETRY_MAX=2m
fi

enrol_collector "$LIFETIME"
enrol_device

write_tokens
write_agent_config uplink.cert="$DEV/device.crt" uplink.key="$DEV/device.key" \
  enrol.url="https://127.0.0.1:$EST_PORT" enrol.token_file="$TOKEN_FILE" \
  enrol.retry_floor="$FLOOR" enrol.retry_max="$RETRY_MAX" enrol.renew_at="$RENEW_AT"

SALE_PREFIX=EN

# --- a brand-new device enrols ---------------------------------------------------------------
# First without a token: it takes sales and says what it needs, once.
mv "$TOKEN_FILE" "$T/real.token"
start_agent
sell
wait_for "the agent says it needs a token" 10 '$(agent_events needs_token) >= 1'
# A wrong token: refused, said once, not retried until the file changes.
printf '%s.00000000000000000000000000000000\n' "$(cut -d. -f1 "$T/real.token")" >"$TOKEN_FILE"
wait_for "the wrong token is refused" 30 '$(agent_events enrol_failed) >= 1'
grep "mod=enrol event=enrol_failed" "$AGENT_LOG" | grep -c "posctl enrol-token" >/dev/null ||
  fail "the refusal says what to do" "posctl enrol-token" "$(grep 'event=enrol_failed' "$AGENT_LOG")"
sleep 12
assert_eq "a refused token is not tried again until the file changes" 1 "$(agent_events enrolling)"
status_json
assert_eq "status.json enrolment.state with a refused token" needs_token "$(json_get "$STATUS_JSON" '$.enrolment.state')"
# The real token, written as the installer would (a new file).
cp "$T/real.token" "$TOKEN_FILE.tmp" && mv "$TOKEN_FILE.tmp" "$TOKEN_FILE"
started=$SECONDS
wait_for "the agent enrols with the new token" 30 '$(agent_events enrolled) >= 1'
log "enrolled in $((SECONDS - started)) s"
[[ -s "$DEV/device.crt" && -s "$DEV/device.key" ]] || fail "the enrolled pair is installed" "device.crt, device.key" "$(ls -l "$DEV")"
assert_eq "the device key's mode" 600 "$(stat -c %a "$DEV/device.key")"
[[ ! -e "$TOKEN_FILE" ]] || fail "the spent token file is deleted" "gone" "still there"
assert_eq "the certificate names this device" "URI:urn:pos:store:S001:device:D1" \
  "$(openssl x509 -in "$DEV/device.crt" -noout -ext subjectAltName 2>/dev/null | tail -n 1 | tr -d ' ')"
grep -q "mod=est event=enrolled .*store=S001 device=D1" "$COLLECTOR_LOG" ||
  fail "the collector logs the enrolment" "event=enrolled store=S001 device=D1" "$(grep 'mod=est' "$COLLECTOR_LOG")"
sell
push_until_sent 60
assert_eq "needs_token said once" 1 "$(agent_events needs_token)"
assert_eq "enrol_failed said once" 1 "$(agent_events enrol_failed)"
FIRST_PID="$AGENT_PID"

# --- renewals without a restart, sales flowing across them -------------------------------------
serial_before="$(openssl x509 -in "$DEV/device.crt" -noout -serial)"
renewed_before="$(est_events renewed)"
started=$SECONDS
deadline=$((SECONDS + 150))
while (($(est_events renewed) < renewed_before + RENEWALS)); do
  ((SECONDS < deadline)) || fail "$RENEWALS renewals within 150 s" ">= $((renewed_before + RENEWALS))" "$(est_events renewed)"
  kill -0 "$AGENT_PID" 2>/dev/null || fail "the agent runs through the renewals" "running" "exited"
  sell
  kill -USR1 "$AGENT_PID"
  sleep 2
done
log "$RENEWALS renewals in $((SECONDS - started)) s, $SALES sales so far"
push_until_sent 60
assert_eq "the same agent process after the renewals" "$FIRST_PID" "$AGENT_PID"
assert_eq "agent starts" 1 "$(grep -c 'event=ready' "$AGENT_LOG")"
[[ "$(agent_events renewed)" -ge "$RENEWALS" ]] || fail "the agent logs its renewals" ">= $RENEWALS" "$(agent_events renewed)"
[[ "$(openssl x509 -in "$DEV/device.crt" -noout -serial)" != "$serial_before" ]] ||
  fail "the installed certificate is a renewed one" "another serial" "the same"
assert_pair_matches "the pair on disk matches"
# The renewal client reloads the pair it renewed with under its own name.
grep -q "mod=enrol event=tls_reloaded" "$AGENT_LOG" ||
  fail "the enrolment client's reload is logged as enrol's" "mod=enrol event=tls_reloaded" \
    "$(grep 'event=tls_reloaded' "$AGENT_LOG")"
status_json
assert_eq "status.json enrolment.last_result" renewed "$(json_get "$STATUS_JSON" '$.enrolment.last_result')"
assert_eq "status.json enrolment.state" waiting "$(json_get "$STATUS_JSON" '$.enrolment.state')"
if grep -qE "mod=enrol event=renew_failed|event=device_certificate_expired" "$AGENT_LOG"; then
  fail "renewals without an error" "none" "$(grep -E 'event=(renew_failed|device_certificate_expired)' "$AGENT_LOG" | head -3)"
fi

# --- kill -9 right after a renewal starts ------------------------------------------------------
# The collector is stopped (SIGSTOP) so that the request is surely in
# flight when the agent dies: its new key is on disk as <key>.pending.
renewing="$(agent_events renewing)"
kill -STOP "$COLLECTOR_PID"
wait_for "the next renewal starts" 90 '$(agent_events renewing) > renewing'
sleep 0.5
kill_agent
kill -CONT "$COLLECTOR_PID"
log "killed the agent during a renewal"
[[ -s "$DEV/device.key.pending" ]] || fail "the renewal's key is pending on disk when the agent dies" \
  "device.key.pending" "$(ls "$DEV")"
assert_eq "the pending key's mode" 600 "$(stat -c %a "$DEV/device.key.pending")"
assert_pair_matches "the live pair on disk matches after kill -9"
start_agent
if grep -q "event=identity_unusable" "$AGENT_LOG"; then
  fail "the agent starts on a matching pair after kill -9" "no identity_unusable" "$(grep identity_unusable "$AGENT_LOG")"
fi
sell
# The restarted agent renews at once (its renewal time has passed), with
# the key left pending: the pair is compared once that install is done.
wait_for "a renewal after the restart" 60 '$(agent_events renewed) >= 1'
grep -q "mod=enrol event=renewing .*key=pending" "$AGENT_LOG" ||
  fail "the restarted agent renews with the pending key" "key=pending" "$(grep 'event=renewing' "$AGENT_LOG")"
assert_pair_matches "the pair on disk matches after the restart's renewal"
[[ ! -e "$DEV/device.key.pending" ]] || fail "the pending key is gone once installed" "no device.key.pending" "$(ls "$DEV")"
push_until_sent 60
sell
push_until_sent 60

# --- every sale in Kafka exactly once -----------------------------------------------------------
assert_sales_once
stop_agent
stop_collector
log "ok: enrolled, $(est_events renewed) renewals, $SALES sales once each"
