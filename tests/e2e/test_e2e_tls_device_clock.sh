#!/usr/bin/env bash
# Issue 11, item 3 (TLS): a device with no RTC boots in 1970. Every
# certificate then looks "not yet valid", and the uplink's error must name
# the device's clock, not an untrusted collector: the agent runs under
# libfaketime (wall clock at 1970-01-01T00:01:02Z, monotonic clock real so
# its timers work) against a real collector with the test PKI; its log
# says the collector's certificate is valid from a date the device's clock
# has not reached and to set the clock. Then the same agent with the real
# clock gets its heartbeats through.
source "$(dirname "$0")/lib.sh"

faketime_lib=""
for lib in /usr/lib/*/faketime/libfaketime.so.1 /usr/lib/faketime/libfaketime.so.1; do
  [[ -e "$lib" ]] && faketime_lib="$lib" && break
done
[[ -n "$faketime_lib" ]] || fail "libfaketime is required (apt-get install faketime)"

make_pki
write_collector_config kafka.brokers= kafka.embedded_partitions=1
start_collector
write_tokens
write_agent_config uplink.heartbeat_interval=1s

# Under sanitizers, ASan needs ASAN_FAKETIME_OPTIONS beside libfaketime (lib.sh).
LD_PRELOAD="$faketime_lib" FAKETIME="@1970-01-01 00:01:02" FAKETIME_DONT_FAKE_MONOTONIC=1 \
  FAKETIME_NO_CACHE=1 ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}$ASAN_FAKETIME_OPTIONS" \
  start_agent
deadline=$((SECONDS + 30))
until grep -q "this device's clock says 1970-01-01T00:0" "$AGENT_LOG"; do
  ((SECONDS < deadline)) || fail "the uplink's TLS error names the device's clock within 30 s" \
    "this device's clock says 1970-01-01T00:0..." "$(grep -m3 'mod=uplink' "$AGENT_LOG")"
  sleep 0.2
done
line="$(grep -m1 "this device's clock says" "$AGENT_LOG")"
log "agent at 1970: $line"
assert_contains "the error is about the collector's TLS certificate" \
  "127.0.0.1:$COLLECTOR_PORT: TLS: the collector's certificate is valid from 20" "$line"
assert_contains "the error says what to do" "set the device clock" "$line"
if grep -q "not trusted" <<<"$line"; then
  fail "a clock in 1970 is not reported as an untrusted certificate" "the device clock" "$line"
fi
stop_agent

# The same device with a set clock: heartbeats get through, no clock error.
start_agent
deadline=$((SECONDS + 30))
while :; do
  status_json
  # The collector's clock comes back only in a heartbeat's answer.
  [[ "$(json_type "$STATUS_JSON" '$.device.clock_skew_s')" == integer ]] && break
  ((SECONDS < deadline)) || fail "heartbeats answered by the collector with the real clock" \
    "device.clock_skew_s" "$(grep -m3 'mod=uplink' "$AGENT_LOG")"
  sleep 0.2
done
if grep -q "this device's clock says" "$AGENT_LOG"; then
  fail "no clock error with the real clock" "none" "$(grep -m1 "device's clock" "$AGENT_LOG")"
fi
stop_agent
stop_collector
