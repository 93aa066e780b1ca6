#!/usr/bin/env bash
# Issue 9: the status page shows the device's clock against head office's.
# The collector's clock comes back in every heartbeat's answer; /status.json
# (device.clock_skew_s) says how far this device's clock is from it. Here
# both run on one machine: the skew must be known, and about zero.
source "$(dirname "$0")/lib.sh"

make_pki
start_broker --partitions 1
write_collector_config
start_collector
write_tokens
write_agent_config uplink.heartbeat_interval=1s
start_agent
deadline=$((SECONDS + 30))
while :; do
  status_json
  [[ "$(json_type "$STATUS_JSON" '$.device.clock_skew_s')" == integer ]] && break
  ((SECONDS < deadline)) || fail "device.clock_skew_s within 30 s of heartbeats every second" "an integer" \
    "$(json_get "$STATUS_JSON" '$.device')"
  sleep 0.5
done
skew="$(json_get "$STATUS_JSON" '$.device.clock_skew_s')"
((skew >= -2 && skew <= 2)) || fail "one machine's clock against itself" "-2..2 s" "$skew s"
stop_agent
stop_collector
