#!/usr/bin/env bash
# Issue 11 item 3, the cases a repair cannot fix:
# - sales taken with the clock in 1970 in a boot that ended before the
#   clock was set (here: their clock_pending ranges name another boot, as
#   a reboot leaves them) are sent as they are, flagged
#   (Sale.received_ms_untrusted) into Kafka, and the heartbeat and
#   status.json count them; sales taken with a right clock are not flagged;
# - a clock set back behind the newest sale journaled (behind_journal) is
#   flagged in status.json and in the heartbeat, which the collector puts on
#   pos.agent-status.v1. (A clock before the test certificates' notBefore
#   gets no TLS at all, so "behind" is made by a clock first set two days
#   ahead, then right.) The collector's time in the heartbeat's answer
#   then settles it: a device clock that agrees with it is right, one that
#   does not has its sales' times corrected from the collector's.
# Every sale reaches Kafka exactly once. The agent runs under libfaketime.
source "$(dirname "$0")/lib.sh"

agent_under_faketime

post_one() {
  post_sales "$TOKEN_T1" "$(sale_json sale_id="\"$1\"")"
  expect_status "POST sale $1" 201
}

# wait_clock_field PATH VALUE: status.json's PATH becomes VALUE (15 s at most).
wait_clock_field() {
  local deadline=$((SECONDS + 15))
  while :; do
    poke_writer
    status_json
    [[ "$(json_get "$STATUS_JSON" "$1")" == "$2" ]] && return 0
    ((SECONDS < deadline)) || fail "status.json $1 within 15 s" "$2" \
      "$(json_get "$STATUS_JSON" '$.device.clock')"
    sleep 0.2
  done
}

# wait_heartbeat PATTERN: a heartbeat on pos.agent-status.v1 matches
# PATTERN (protoc text, one field a line; 30 s at most).
wait_heartbeat() {
  local deadline=$((SECONDS + 30))
  while :; do
    kafka_read pos.agent-status.v1 status HeartbeatRecords
    grep -q -- "$1" "$T/status.txt" && return 0
    ((SECONDS < deadline)) || fail "a heartbeat on pos.agent-status.v1 within 30 s" "$1" \
      "$(grep clock "$T/status.txt" | tail -n 4)"
    sleep 1
  done
}

make_pki
start_broker --partitions 1
write_collector_config
start_collector
write_tokens
write_agent_config uplink.heartbeat_interval=1s

# A sale of today first, with a right clock: the page's "today" must still
# count it after a restart, past rows of 1970 journaled after it.
echo "+0" >"$CLOCK_FILE"
start_agent
post_sales "$TOKEN_T1" "$(sale_json sale_id='"P-1"' business_time="\"$(date +%Y-%m-%dT%H:%M:%S%:z)\"")"
expect_status "POST sale P-1 (today, right clock)" 201
stop_agent

# ---- sales of a boot that ended before its clock was set ----------------------------
echo "@1970-01-01 00:00:00" >"$CLOCK_FILE"
start_agent
post_one U-1
post_one U-2
wait_clock_field '$.device.clock.pending_rows' 2
stop_agent
# What a reboot leaves: the ranges name a boot that is not this one.
sql "UPDATE clock_pending SET boot_id = 'a-boot-that-ended';"
echo "+0" >"$CLOCK_FILE"
start_agent
wait_clock_field '$.device.clock.state' ok
assert_eq "rows of an ended boot waiting for a repair" 0 \
  "$(json_get "$STATUS_JSON" '$.device.clock.pending_rows')"
assert_eq "rows of an ended boot never repaired (status.json)" 2 \
  "$(json_get "$STATUS_JSON" '$.device.clock.unrepaired_rows')"
assert_eq "rows of an ended boot keep their 1970 reading" 2 \
  "$(sql "SELECT count(*) FROM sales WHERE received_ms < 86400000;")"
post_sales "$TOKEN_T1" "$(sale_json sale_id='"R-1"' business_time="\"$(date +%Y-%m-%dT%H:%M:%S%:z)\"")"
expect_status "POST sale R-1 (today, right clock)" 201
status_json
assert_eq "today's sales on the page after a restart (rows of 1970 between them)" 2 \
  "$(json_get "$STATUS_JSON" '$.today.sales')"
push_until_sent 60
kafka_read pos.sales.v1 sales
records_db sales
check_sales_match_journal sales 4
awk '/^record \{/ { id = ""; flag = 0 } /^  sale_id:/ { id = $2 }
     /^  received_ms_untrusted: true/ { flag = 1 } /^\}/ { print id, flag }' "$T/sales.txt" |
  tr -d '"' | sort >"$T/flags"
assert_eq "Sale.received_ms_untrusted in Kafka (the ended boot's sales only)" \
  "P-1 0|R-1 0|U-1 1|U-2 1" "$(paste -sd'|' "$T/flags")"
wait_heartbeat "clock_unrepaired_rows: 2"
grep -q "clock_state: DEVICE_CLOCK_STATE_OK" "$T/status.txt" ||
  fail "the heartbeat's clock_state" DEVICE_CLOCK_STATE_OK "$(grep clock_state "$T/status.txt" | tail -n1)"
grep -q "build_time_ms: [1-9]" "$T/status.txt" ||
  fail "the heartbeat names the build time" "build_time_ms: <ms>" "$(grep build_time "$T/status.txt" | tail -n1)"
# Head office's view of the store (the collector's admin API) says so too.
store="$(curl -sS --max-time 10 --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" \
  --key "$PKI/admin.key" "$COLLECTOR_URL/v1/admin/stores/$STORE")" ||
  fail "GET /v1/admin/stores/$STORE answers"
assert_eq "the admin API's device clock (state, unrepaired rows)" "ok|2" \
  "$(json_get "$store" '$.store.devices[0].clock.state')|$(json_get "$store" '$.store.devices[0].clock.unrepaired_rows')"
stop_agent

# ---- a clock set back behind the newest sale (no collector's time yet) ----------------
write_agent_config uplink.heartbeat_interval=0
# A new boot: the collector's time the last run kept (meta clock_reference,
# written whenever a heartbeat answer came in time) is of this boot, so it
# would judge the clock at once; as after a reboot, there is none.
sql "DELETE FROM meta WHERE key = 'clock_reference';"
echo "+2d" >"$CLOCK_FILE"
start_agent
post_one F-1
wait_clock_field '$.device.clock.state' ok
echo "+0" >"$CLOCK_FILE"
wait_clock_field '$.device.clock.state' behind_journal
F2_BEFORE="$(date +%s%3N)"
post_one F-2
F2_AFTER="$(date +%s%3N)"
wait_clock_field '$.device.clock.pending_rows' 1
assert_contains "the manager's message for a clock set back" "earlier than sales it already took" \
  "$(json_get "$STATUS_JSON" '$.device.clock.message')"
assert_eq "log lines saying the clock is untrusted (one per change, not per sale)" 1 \
  "$(grep -c 'mod=clock event=untrusted' "$AGENT_LOG")"
stop_agent

# ---- the heartbeat says so; the collector's time then settles it -----------------------
# The device clock is right (the rows ahead were the wrong ones): the first
# heartbeat carries behind_journal, its answer's clock agrees with the
# device's, and F-2 is corrected (by about nothing) and no longer pending.
write_agent_config uplink.heartbeat_interval=1s
start_agent
wait_heartbeat "clock_state: DEVICE_CLOCK_STATE_BEHIND_JOURNAL"
grep -q "clock_pending_rows: 1" "$T/status.txt" ||
  fail "the heartbeat counts the rows waiting" "clock_pending_rows: 1" \
    "$(grep clock_pending "$T/status.txt" | tail -n1)"
wait_clock_field '$.device.clock.state' ok
wait_clock_field '$.device.clock.pending_rows' 0
got="$(sql "SELECT received_ms FROM sales WHERE sale_id = 'F-2';")"
((got >= F2_BEFORE - 3000 && got <= F2_AFTER + 3000)) ||
  fail "received_ms of F-2 after the collector's time settled the clock" \
    "$F2_BEFORE..$F2_AFTER (+-3 s)" "$got"
stop_agent

# ---- a clock two days ahead while the collector answers: corrected from its time -------
echo "+2d" >"$CLOCK_FILE"
start_agent
wait_clock_field '$.device.clock.state' differs_from_collector
assert_contains "the manager's message for a clock not head office's" \
  "not the time head office has" "$(json_get "$STATUS_JSON" '$.device.clock.message')"
G1_BEFORE="$(date +%s%3N)"
post_one G-1
G1_AFTER="$(date +%s%3N)"
wait_clock_field '$.device.clock.pending_rows' 0
got="$(sql "SELECT received_ms FROM sales WHERE sale_id = 'G-1';")"
((got >= G1_BEFORE - 3000 && got <= G1_AFTER + 3000)) ||
  fail "received_ms of G-1 (device clock 2 days ahead) from the collector's time" \
    "$G1_BEFORE..$G1_AFTER (+-3 s)" "$got"
wait_heartbeat "clock_state: DEVICE_CLOCK_STATE_DIFFERS_FROM_COLLECTOR"

# ---- every sale once in Kafka; only the ended boot's flagged ---------------------------
push_until_sent 60
kafka_read pos.sales.v1 sales
records_db sales
check_sales_match_journal sales 7
awk '/^record \{/ { id = ""; flag = 0 } /^  sale_id:/ { id = $2 }
     /^  received_ms_untrusted: true/ { flag = 1 } /^\}/ { print id, flag }' "$T/sales.txt" |
  tr -d '"' | sort >"$T/flags"
assert_eq "Sale.received_ms_untrusted in Kafka at the end" \
  "F-1 0|F-2 0|G-1 0|P-1 0|R-1 0|U-1 1|U-2 1" "$(paste -sd'|' "$T/flags")"
stop_agent
stop_collector
