#!/usr/bin/env bash
# Issue 9: the store manager's page at / answers "are our sales reaching
# head office?" in a real browser. Headless Chromium loads the page from the
# real agent at 360 px (a phone) and 1280 px (a laptop), lets its script
# fetch /status.json, and the rendered DOM must show the verdict in words:
#   sending  collector up, every sale acknowledged
#   behind   collector gone, sales waiting: "cannot be reached", "nothing is lost"
#   stopped  the device certificate expired: "certificate expired", call IT
# and the device certificate's state (issue 13): valid until a date with
# the days left and when it renews itself while sending; when it expired, a
# banner saying head office must issue a new enrolment token.
# Screenshots of each state and width are kept as the run's artifacts in
# BUILD/test-artifacts/status-page/.
source "$(dirname "$0")/lib.sh"

CHROMIUM="$(command -v chromium || command -v chromium-browser || true)"
[[ -n "$CHROMIUM" ]] || fail "chromium is required (apt-get install chromium)"
SHOTS="$T/screenshots"
mkdir -p "$SHOTS"

# browse STATE WIDTH: the page after its script ran, as Chromium's DOM, in
# $T/STATE-WIDTH.html, and a screenshot in $SHOTS/STATE-WIDTH.png.
browse() {
  local state="$1" width="$2" rc=0
  # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
  # The virtual time budget lets the page's fetch of /status.json finish.
  local flags=(--headless=new --no-sandbox --disable-gpu --no-first-run --hide-scrollbars
    --user-data-dir="$T/chromium" --window-size="$width,900" --virtual-time-budget=5000)
  timeout 90 "$CHROMIUM" "${flags[@]}" --dump-dom "$AGENT_URL/" >"$T/$state-$width.html" \
    2>"$T/chromium.$state-$width.log" || rc=$?
  assert_eq "chromium --dump-dom at $width px ($(tail -n 3 "$T/chromium.$state-$width.log"))" 0 "$rc"
  timeout 90 "$CHROMIUM" "${flags[@]}" --screenshot="$SHOTS/$state-$width.png" "$AGENT_URL/" \
    >>"$T/chromium.$state-$width.log" 2>&1 || rc=$?
  assert_eq "chromium --screenshot at $width px" 0 "$rc"
  [[ -s "$SHOTS/$state-$width.png" ]] || fail "a screenshot of the $state page at $width px"
}

# headline FILE: the verdict's headline as the browser rendered it.
headline() { sed -n 's/.*<p id="headline">\([^<]*\)<\/p>.*/\1/p' "$1"; }
reason() { sed -n 's/.*<p id="reason">\([^<]*\)<\/p>.*/\1/p' "$1"; }
action() { sed -n 's/.*<p id="action">\([^<]*\)<\/p>.*/\1/p' "$1"; }
# cert_alert FILE: the certificate banner's words when it is shown.
cert_alert() { sed -n 's/.*<div id="cert-alert" role="alert"[^>]*style="display: block;">\([^<]*\)<\/div>.*/\1/p' "$1"; }
# cert_list FILE: the certificate section's terms and values, "; "-separated.
cert_list() {
  grep -o '<dl id="cert-list">.*</dl>' "$1" | sed 's/<\/dl>.*//; s/<\/d[td]>/; /g; s/<[^>]*>//g'
}

# expect_page STATE HEADLINE REASON_PART ACTION_PART: at both widths.
expect_page() {
  local state="$1" width file
  for width in 360 1280; do
    browse "$state" "$width"
    file="$T/$state-$width.html"
    assert_eq "$state page at $width px: the verdict's headline" "$2" "$(headline "$file")"
    assert_contains "$state page at $width px: the reason" "$3" "$(reason "$file")"
    assert_contains "$state page at $width px: what to do" "$4" "$(action "$file")"
    grep -q "<section id=\"verdict\" aria-live=\"polite\" class=\"$state\">" "$file" ||
      fail "$state page at $width px: the verdict is coloured as $state" "class=\"$state\"" \
        "$(grep -o '<section id="verdict"[^>]*>' "$file")"
    assert_contains "$state page at $width px: the store" "S001" "$(grep -o '<span id="store">[^<]*' "$file")"
    grep -q 'id="stale" role="alert" style="display: none;"' "$file" ||
      fail "$state page at $width px: it reached /status.json" "no stale warning" \
        "$(grep -o '<div id="stale"[^/]*' "$file")"
  done
  log "$state: '$(headline "$T/$state-360.html")' / '$(reason "$T/$state-360.html")'"
}

# verdict_state: the verdict's state in /status.json.
verdict_state() {
  status_json
  json_get "$STATUS_JSON" '$.verdict.state'
}

# wait_verdict STATE TIMEOUT
wait_verdict() {
  local deadline=$((SECONDS + $2)) got=""
  while :; do
    got="$(verdict_state)"
    [[ "$got" == "$1" ]] && return 0
    ((SECONDS < deadline)) || fail "/status.json verdict within $2 s ($STATUS_JSON)" "$1" "$got"
    sleep 0.2
  done
}

make_pki
write_collector_config kafka.brokers=
start_collector
write_tokens
# Renewal on (issue 13): the page shows when the certificate renews itself.
# No token and nothing listening at the enrolment URL: nothing is sent.
ENROL=(enrol.url=https://127.0.0.1:9 enrol.token_file="$T/enrol.token")
write_agent_config "${ENROL[@]}"
start_agent

# The page itself: one small HTML answer, nothing fetched from elsewhere.
http GET /
assert_eq "GET / status" 200 "$HTTP_STATUS"
assert_contains "GET / is HTML" "text/html" "$(header Content-Type)"
((${#HTTP_BODY} < 65536)) || fail "the page is under 64 KB" "< 65536" "${#HTTP_BODY}"
if grep -Eq '(src|href)="(https?:)?//' <<<"$HTTP_BODY"; then
  fail "the page loads nothing from elsewhere" "no external src/href" \
    "$(grep -Eo '(src|href)="(https?:)?//[^"]*' <<<"$HTTP_BODY" | head -n 3)"
fi

# ---- sending ----------------------------------------------------------------
for i in 1 2 3; do
  post_sales "$TOKEN_T1" "$(sale_json sale_id="\"T1-page-$i\"" business_time="\"$(date +%FT%T%:z)\"")"
  assert_eq "sale $i: status [$HTTP_BODY]" 201 "$HTTP_STATUS"
done
push_until_sent 60
wait_verdict sending 30
expect_page sending "Sending" "Every sale has reached head office" ""
# Today's sales as the browser drew them: the count, and a chart of 24 hours.
for width in 360 1280; do
  file="$T/sending-$width.html"
  grep -q '<span class="big">3 sales</span>' "$file" ||
    fail "today's sales at $width px" "3 sales" "$(grep -o '<div id="sales-body">.\{0,200\}' "$file")"
  assert_eq "hour bars in the chart at $width px" 24 "$(grep -o '<rect ' "$file" | wc -l)"
  # The device certificate (30 days, from tests/tools/pki.sh): its end, the
  # days left, when it renews itself; no banner.
  assert_contains "the certificate's end at $width px" "Valid until" "$(cert_list "$file")"
  assert_contains "the certificate's days left at $width px" "29 days left" "$(cert_list "$file")"
  assert_contains "the certificate's renewal at $width px" "Renews by itself" "$(cert_list "$file")"
  assert_eq "no certificate banner at $width px" "" "$(cert_alert "$file")"
done

# ---- behind: the collector is gone -----------------------------------------
kill_collector
for i in 4 5; do
  post_sales "$TOKEN_T1" "$(sale_json sale_id="\"T1-page-$i\"")"
  assert_eq "sale $i: status [$HTTP_BODY]" 201 "$HTTP_STATUS"
done
kill -USR1 "$AGENT_PID"
wait_verdict behind 30
expect_page behind "Behind: head office cannot be reached" "2 sales waiting; nothing is lost" \
  "Check the store's internet"

# ---- stopped: the device certificate expired ------------------------------
stop_agent
write_agent_config agent.device_id=D9 uplink.cert="$PKI/expired.crt" uplink.key="$PKI/expired.key" \
  "${ENROL[@]}"
start_agent
wait_verdict stopped 10
expect_page stopped "Stopped: certificate expired" "certificate expired on" "Call head office IT"
status_json
assert_eq "status.json enrolment.state with an expired certificate" expired \
  "$(json_get "$STATUS_JSON" '$.enrolment.state')"
# The banner says, above everything, what only head office can fix.
for width in 360 1280; do
  file="$T/stopped-$width.html"
  assert_contains "the certificate banner at $width px" "certificate expired on" "$(cert_alert "$file")"
  assert_contains "the banner says who fixes it, and how, at $width px" \
    "head office IT: they must issue a new enrolment token for store S001, device D9" "$(cert_alert "$file")"
  assert_contains "the certificate section at $width px" "EXPIRED on" "$(cert_list "$file")"
  assert_contains "the renewal at $width px" "Needs a new enrolment token from head office" \
    "$(cert_list "$file")"
done
assert_eq "the agent says once, as a line of its own, that its certificate expired" 1 \
  "$(grep -c 'mod=enrol event=certificate_expired' "$AGENT_LOG")"
# The uplink's attempts say why too, once as a line of their own (issue 13),
# once the collector is back and refuses the certificate.
pin_collector_port
start_collector
kill -USR1 "$AGENT_PID"
deadline=$((SECONDS + 20))
until grep -q 'event=device_certificate_expired' "$AGENT_LOG"; do
  ((SECONDS < deadline)) || fail "the agent logs event=device_certificate_expired" \
    "a line" "$(tail -n 5 "$AGENT_LOG")"
  sleep 0.2
done
assert_eq "event=device_certificate_expired logged once for the certificate" 1 \
  "$(grep -c 'event=device_certificate_expired' "$AGENT_LOG")"
assert_contains "the uplink's error names the expired certificate and what to do" \
  "cannot renew an expired certificate itself" "$(grep 'mod=uplink event=error' "$AGENT_LOG" | tail -n 1)"

# The screenshots stay as the run's artifacts, in the build tree (the test's
# own directory goes when it passes).
ARTIFACTS="$POS_BUILD_DIR/test-artifacts/status-page"
mkdir -p "$ARTIFACTS"
cp "$SHOTS"/*.png "$ARTIFACTS/"
assert_eq "screenshots kept in $ARTIFACTS (3 states x 2 widths)" 6 "$(ls "$ARTIFACTS"/*.png | wc -l)"
log "screenshots: $ARTIFACTS"
