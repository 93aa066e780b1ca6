#!/usr/bin/env bash
# Issue 11 item 3: a device with no RTC starts in 1970. Sales taken then
# were journaled and forwarded with 1970 times, silently. Now: they are
# journaled (201), the clock is flagged (status.json device.clock, the
# page's banner, one log line), the rows are recorded in clock_pending and
# held back from batches; once the clock is set (in the same boot, even by
# another agent process) their received_ms is corrected from CLOCK_BOOTTIME
# to the real time of receipt, in the journal and in Kafka, and every sale
# reaches Kafka exactly once. A run with a right clock shows no flag.
#
# The agent runs under libfaketime (Debian's faketime): its wall clock is
# read from a file the test rewrites while it runs; CLOCK_MONOTONIC and
# CLOCK_BOOTTIME stay real (FAKETIME_DONT_FAKE_MONOTONIC=1).
source "$(dirname "$0")/lib.sh"

agent_under_faketime

now_ms() { date +%s%3N; }
set_clock_1970() { echo "@1970-01-01 00:00:00" >"$CLOCK_FILE"; }
set_clock_right() { echo "+0" >"$CLOCK_FILE"; }

# post_one ID: posts sale ID (201) and records the real time around it.
declare -A POSTED_BEFORE=() POSTED_AFTER=()
post_one() {
  POSTED_BEFORE[$1]="$(now_ms)"
  post_sales "$TOKEN_T1" "$(sale_json sale_id="\"$1\"")"
  expect_status "POST sale $1 with the device clock wrong" 201
  POSTED_AFTER[$1]="$(now_ms)"
}

# wait_clock STATE PENDING: status.json's device.clock says STATE with
# PENDING rows waiting (15 s at most).
wait_clock() {
  local deadline=$((SECONDS + 15))
  while :; do
    poke_writer
    status_json
    [[ "$(json_get "$STATUS_JSON" '$.device.clock.state')" == "$1" &&
      "$(json_get "$STATUS_JSON" '$.device.clock.pending_rows')" == "$2" ]] && return 0
    ((SECONDS < deadline)) || fail "status.json device.clock within 15 s" "state $1, $2 pending rows" \
      "$(json_get "$STATUS_JSON" '$.device.clock')"
    sleep 0.2
  done
}

# check_received_real WHAT: every sale posted has received_ms within 3 s
# of when it was really posted (in the journal).
check_received_real() {
  local id got
  for id in "${!POSTED_BEFORE[@]}"; do
    got="$(sql "SELECT received_ms FROM sales WHERE sale_id = '$id';")"
    [[ "$got" =~ ^[0-9]+$ ]] || fail "$1: sale $id is in the journal" "a received_ms" "$got"
    ((got >= POSTED_BEFORE[$id] - 3000 && got <= POSTED_AFTER[$id] + 3000)) ||
      fail "$1: received_ms of $id is the real time of receipt (journal)" \
        "${POSTED_BEFORE[$id]}..${POSTED_AFTER[$id]} (+-3 s)" "$got"
  done
}

make_pki
start_broker --partitions 1
write_collector_config
start_collector
write_tokens
write_agent_config

# ---- the clock in 1970: sales are taken and flagged --------------------------------
set_clock_1970
start_agent
post_one C-1
post_one C-2
wait_clock before_build 2
msg="$(json_get "$STATUS_JSON" '$.device.clock.message')"
assert_contains "the manager's message on status.json" "This device's clock is wrong (says 1 Jan 1970)" "$msg"
assert_contains "the manager's message says nothing is lost" "Sales are kept" "$msg"
[[ "$(json_get "$STATUS_JSON" '$.device.clock.build_time')" == 20* ]] ||
  fail "status.json names the build time" "20..." "$(json_get "$STATUS_JSON" '$.device.clock')"
# The page as a browser renders it: the banner, in words a manager reads.
CHROMIUM="$(command -v chromium || command -v chromium-browser || true)"
[[ -n "$CHROMIUM" ]] || fail "chromium is required (apt-get install chromium)"
# --no-sandbox: CI runs as root; the virtual time budget lets the page's
# fetch of /status.json finish.
timeout 90 "$CHROMIUM" --headless=new --no-sandbox --disable-gpu --no-first-run \
  --user-data-dir="$T/chromium" --virtual-time-budget=5000 --dump-dom "$AGENT_URL/" \
  >"$T/page.html" 2>"$T/chromium.log" || fail "chromium renders the status page ($(tail -n 3 "$T/chromium.log"))"
banner="$(grep -o '<div id="clock"[^>]*>[^<]*</div>' "$T/page.html" || true)"
assert_contains "the status page's clock banner is shown" 'style="display: block;"' "$banner"
assert_contains "the status page's clock banner" \
  "This device's clock is wrong (says 1 Jan 1970). Sales are kept; their times will be corrected when the clock is set." \
  "$(sed "s/&#39;/'/g; s/&apos;/'/g" <<<"$banner")"
assert_eq "log lines saying the clock is untrusted (one per change, not per sale)" 1 \
  "$(grep -c 'mod=clock event=untrusted' "$AGENT_LOG")"
assert_eq "clock_pending ranges for the two sales" "1|2" \
  "$(sql "SELECT count(*) || '|' || sum(last_seq - first_seq + 1) FROM clock_pending;")"
assert_eq "sales journaled with a 1970 clock keep its reading until repaired" 2 \
  "$(sql "SELECT count(*) FROM sales WHERE received_ms < 86400000;")"
# /metrics says so too.
metrics_port="$(sed -n 's/.*event=metrics_listening.*[[:space:]]port=\([0-9][0-9]*\).*/\1/p' "$AGENT_LOG" | head -n1)"
[[ "$metrics_port" =~ ^[0-9]+$ ]] || fail "the agent logs event=metrics_listening with its port"
curl -sS --max-time 10 "http://127.0.0.1:$metrics_port/metrics" >"$T/metrics.txt" ||
  fail "GET /metrics answers"
assert_eq "the clock on /metrics" "pos_agent_clock_pending_rows=2 pos_agent_clock_untrusted=1" \
  "$(awk '$1 == "pos_agent_clock_untrusted" || $1 == "pos_agent_clock_pending_rows" {
    print $1 "=" $2 }' "$T/metrics.txt" | sort | paste -sd' ')"
# Held back from batches: a push seals nothing while their times are wrong.
kill -USR1 "$AGENT_PID"
sleep 1
assert_eq "batches sealed while the clock is wrong" 0 "$(sql 'SELECT count(*) FROM batches;')"

# ---- a restart in the same boot, clock still wrong -------------------------------------
stop_agent
start_agent
post_one C-3
wait_clock before_build 3

# ---- the clock is set while this agent runs: repaired ----------------------------------
set_clock_right
wait_clock ok 0
assert_eq "clock_pending after the repair" 0 "$(sql 'SELECT count(*) FROM clock_pending;')"
check_received_real "set while running"
assert_eq "log lines saying the clock is trusted again" 1 "$(grep -c 'mod=clock event=trusted' "$AGENT_LOG")"
assert_eq "log lines of the repair" 1 "$(grep -c 'mod=clock event=repaired' "$AGENT_LOG")"
[[ "$(json_get "$STATUS_JSON" '$.device.clock.message')" == "" ]] ||
  fail "no clock message once it is right" "" "$(json_get "$STATUS_JSON" '$.device.clock.message')"

# ---- rows taken in 1970, the clock set while no agent runs: repaired at start -------
stop_agent
set_clock_1970
start_agent
post_one C-4
wait_clock before_build 1
stop_agent
set_clock_right
start_agent
wait_clock ok 0
check_received_real "set before a restart in the same boot"

# ---- every sale once in Kafka, with the real times, none flagged -----------------------
post_one C-5
push_until_sent 60
kafka_read pos.sales.v1 sales
records_db sales
check_sales_match_journal sales 5
for id in "${!POSTED_BEFORE[@]}"; do
  got="$(rsql sales "SELECT received_ms FROM k WHERE sale_id = '$id';")"
  ((got >= POSTED_BEFORE[$id] - 3000 && got <= POSTED_AFTER[$id] + 3000)) ||
    fail "received_ms of $id in Kafka is the real time of receipt" \
      "${POSTED_BEFORE[$id]}..${POSTED_AFTER[$id]} (+-3 s)" "$got"
done
assert_eq "sales in Kafka flagged received_ms_untrusted (all were repaired)" 0 \
  "$(grep -c 'received_ms_untrusted: true' "$T/sales.txt" || true)"
stop_agent

# ---- the same run with a right clock: no flag at all -----------------------------------
JOURNAL="$T/journal-right.db"
write_agent_config journal.path="$JOURNAL"
POSTED_BEFORE=() POSTED_AFTER=()
set_clock_right
start_agent
post_one R-1
wait_clock ok 0
[[ "$(json_get "$STATUS_JSON" '$.device.clock.message')" == "" ]] ||
  fail "a right clock: no clock message" "" "$(json_get "$STATUS_JSON" '$.device.clock')"
assert_eq "a right clock: clock_pending rows" 0 "$(sql 'SELECT count(*) FROM clock_pending;')"
assert_eq "a right clock: log lines about the clock" 0 "$(grep -c 'mod=clock' "$AGENT_LOG" || true)"
check_received_real "a right clock"
stop_agent
stop_collector
