#!/usr/bin/env bash
# Issue 13, item 2: "a certificate that expired while the store was offline
# cannot renew itself: the device says so plainly (status, page, a distinct
# log line) and re-enrols with a new token", as the agent lives it
# (agent/enrol/enrol_driver.c):
#   - the agent enrols with a token and sends; the collector goes away (the
#     store is offline); its renewals fail and are tried again after the
#     back-off; the certificate expires;
#   - /status.json says enrolment.state "expired", the log says it once as a
#     line of its own (mod=enrol event=certificate_expired), the page shows
#     a banner: head office must issue a new enrolment token;
#   - back online, the collector refuses the expired certificate and the
#     sales wait; head office issues a new token, it is written to the
#     configured token_file, and the same agent process (no restart)
#     re-enrols at its next look and sends: every sale in Kafka once.
# The collector issues 1-minute certificates.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/enrol_lib.sh"
CHROMIUM="$(command -v chromium || command -v chromium-browser || true)"
[[ -n "$CHROMIUM" ]] || fail "chromium is required (apt-get install chromium)"

enrol_collector 1m
# The collector comes back where the agent looks for it: both ports pinned.
pin_collector_port
sed -i "/^\[enrol\]/,/^\[/ s/^port = .*/port = $EST_PORT/" "$COLLECTOR_CONFIG"
grep -q "^port = $EST_PORT\$" "$COLLECTOR_CONFIG" ||
  fail "[enrol] port pinned in $COLLECTOR_CONFIG" "port = $EST_PORT" "$(cat "$COLLECTOR_CONFIG")"

enrol_device

write_tokens
write_agent_config uplink.cert="$DEV/device.crt" uplink.key="$DEV/device.key" \
  enrol.url="https://127.0.0.1:$EST_PORT" enrol.token_file="$TOKEN_FILE" \
  enrol.retry_floor=10s enrol.retry_max=30s

SALE_PREFIX=EX

# --- enrolled and sending ---------------------------------------------------------------------
start_agent
FIRST_PID="$AGENT_PID"
wait_for "the agent enrols with its token" 30 '$(agent_events enrolled) >= 1'
NOT_AFTER="$(openssl x509 -in "$DEV/device.crt" -noout -enddate | cut -d= -f2)"
sell
push_until_sent 60

# --- offline until the certificate expires ----------------------------------------------------
kill_collector
log "collector gone; the certificate ends $NOT_AFTER"
sell
sell
# The renewal (2/3 of the minute) fails and is tried again after the floor.
wait_for "two failed renewals while offline" 90 '$(agent_events renew_failed) >= 1 && $(agent_events renewing) >= 2'
wait_enrolment_state expired 90
log "expired: $(grep 'mod=enrol event=certificate_expired' "$AGENT_LOG" | head -n 1)"
assert_eq "the expiry is said once, as a line of its own" 1 "$(agent_events certificate_expired)"
grep 'mod=enrol event=certificate_expired' "$AGENT_LOG" | grep -c 'posctl enrol-token' >/dev/null ||
  fail "the line says what to do" "posctl enrol-token" "$(grep 'event=certificate_expired' "$AGENT_LOG")"
status_json
assert_eq "device.certificate_days_left once expired" -1 "$(json_get "$STATUS_JSON" '$.device.certificate_days_left')"
assert_eq "the verdict once expired" stopped "$(json_get "$STATUS_JSON" '$.verdict.state')"

# The page, as a store manager sees it (headless Chromium runs its script).
timeout 90 "$CHROMIUM" --headless=new --no-sandbox --disable-gpu --no-first-run \
  --user-data-dir="$T/chromium" --window-size=360,900 --virtual-time-budget=5000 \
  --dump-dom "$AGENT_URL/" >"$T/page.html" 2>"$T/chromium.log" ||
  fail "chromium --dump-dom: $(tail -n 3 "$T/chromium.log")"
banner="$(sed -n 's/.*<div id="cert-alert" role="alert"[^>]*style="display: block;">\([^<]*\)<\/div>.*/\1/p' "$T/page.html")"
assert_contains "the page's banner" "certificate expired on" "$banner"
assert_contains "the page's banner says what to do" "new enrolment token for store S001, device D1" "$banner"

# --- back online: the expired certificate is refused, sales wait ------------------------------
start_collector
kill -USR1 "$AGENT_PID"
deadline=$((SECONDS + 30))
until grep -q 'mod=uplink event=device_certificate_expired' "$AGENT_LOG"; do
  ((SECONDS < deadline)) || fail "the uplink finds its certificate expired once online" \
    "event=device_certificate_expired" "$(tail -n 3 "$AGENT_LOG")"
  kill -USR1 "$AGENT_PID"
  sleep 0.5
done
status_json
[[ "$(json_get "$STATUS_JSON" '$.sales_unsent')" -ge 2 ]] ||
  fail "the sales taken offline wait" ">= 2 unsent" "$(json_get "$STATUS_JSON" '$.sales_unsent')"
assert_eq "enrolment.state online, with no token" expired "$(json_get "$STATUS_JSON" '$.enrolment.state')"

# --- a new token: re-enrolled without a restart -------------------------------------------------
new_token "$TOKEN_FILE"
started=$SECONDS
wait_for "the agent re-enrols with the new token" 60 '$(agent_events enrolled) >= 2'
log "re-enrolled $((SECONDS - started)) s after the token was written"
assert_eq "the same agent process (no restart)" "$FIRST_PID" "$AGENT_PID"
[[ ! -e "$TOKEN_FILE" ]] || fail "the spent token file is deleted" "gone" "still there"
[[ "$(openssl x509 -in "$DEV/device.crt" -noout -enddate | cut -d= -f2)" != "$NOT_AFTER" ]] ||
  fail "a new certificate is installed" "another notAfter" "$NOT_AFTER"
sell
push_until_sent 60
wait_enrolment_state waiting 10
assert_eq "enrolment.last_result" enrolled "$(json_get "$STATUS_JSON" '$.enrolment.last_result')"

# --- every sale in Kafka exactly once ------------------------------------------------------------
assert_sales_once
stop_agent
stop_collector
log "ok: expired offline, said so, re-enrolled with a new token without a restart, $SALES sales once each"
