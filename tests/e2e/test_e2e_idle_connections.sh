#!/usr/bin/env bash
# Issue 7 item 12: sockets that connect to the collector and never send a
# byte (or stall in the TLS handshake) must not lock the stores out. Many
# more idle connections than max_connections are opened and held; a device
# must still get its batch acknowledged, repeatedly. first_request_timeout is
# set as long as request_timeout here, so no timer helps: the collector has
# to make room by closing the oldest connection that has not sent a request.
source "$(dirname "$0")/lib.sh"

make_pki S001 D1
write_collector_config kafka.brokers= server.max_connections=32 \
  server.max_connections_per_ip=0 server.first_request_timeout=60s \
  server.request_timeout=60s server.idle_timeout=120s
start_collector

IDLE=200
idle_fds=()
for ((i = 0; i < IDLE; i++)); do
  exec {fd}<>"/dev/tcp/127.0.0.1/$COLLECTOR_PORT" || fail "open idle connection $i"
  idle_fds+=("$fd")
  # Every fourth starts a TLS record header and stalls there.
  if ((i % 4 == 0)); then printf '\x16\x03\x01\x02\x00' >&"$fd" || true; fi
done
log "$IDLE idle connections open to a collector with max_connections=32"

J=1f0e0d0c0b0a09080706050403020100
for seq in 1 2 3; do
  send_batch device-S001-D1 --journal "$J" --batch-seq "$seq" --sales 5
  assert_eq "batch $seq with $IDLE idle connections open: status [$BATCH_OUT]" 200 \
    "$(batch_field status)"
done
collector_curl /healthz >/dev/null
assert_eq "healthz with idle connections open" 200 "$HTTP_STATUS"

for fd in "${idle_fds[@]}"; do exec {fd}>&-; done
kill -0 "$COLLECTOR_PID" || fail "the collector is still running"
stop_collector
