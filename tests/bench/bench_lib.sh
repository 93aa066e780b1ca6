# shellcheck shell=bash disable=SC2034,SC2153
# bench_lib.sh - what the collector's benchmarks share: a test broker and a
# collector on it, started and waited for. Sourced; the caller sets WORK (a
# directory of its own), BROKER_BIN, COLLECTOR_BIN and a die function.

# bench_start_broker PARTITIONS: starts pos-broker; sets BROKER_PID and BOOT.
bench_start_broker() {
  : >"$WORK/broker.out"
  "$BROKER_BIN" --partitions "$1" >>"$WORK/broker.out" 2>"$WORK/broker.log" &
  BROKER_PID=$!
  for ((i = 0; i < 150; i++)); do
    grep -q '^bootstrap=' "$WORK/broker.out" && break
    sleep 0.1
  done
  BOOT="$(sed -n 's/^bootstrap=\([^[:space:]]*\).*/\1/p' "$WORK/broker.out" | head -n 1)"
  [[ -n "$BOOT" ]] || die "pos-broker printed no bootstrap="
}

# bench_start_collector CONFIG: starts pos-collector (its log in
# $WORK/collector.log); sets COLLECTOR_PID and PORT, its API's port.
# bench_tls_collector_conf FILE [LINE...]: a collector config for a bench against the broker
# started ($BOOT): mutual TLS with the PKI of pki.sh init in $WORK/pki, the ticket key
# $WORK/ticket.key, any number of connections from one address, idle ones kept an hour; each
# LINE is added to [server].
bench_tls_collector_conf() {
  local file="$1" line
  shift
  {
    printf '[collector]\ninstance_id = bench-collector\n\n[server]\n'
    printf 'listen_host = 127.0.0.1\nport = 0\n'
    printf 'cert = %s\nkey = %s\n' "$WORK/pki/server.crt" "$WORK/pki/server.key"
    printf 'ca = %s\ncrl = %s\n' "$WORK/pki/ca.crt" "$WORK/pki/crl.pem"
    printf 'ticket_key_file = %s\nmax_connections_per_ip = 0\nidle_timeout = 1h\n' \
      "$WORK/ticket.key"
    for line in "$@"; do printf '%s\n' "$line"; done
    printf '\n[kafka]\nbrokers = %s\n' "$BOOT"
  } >"$file"
}

bench_start_collector() {
  # Created before the process: the port is read from the log while it may not have opened it yet.
  : >"$WORK/collector.log"
  "$COLLECTOR_BIN" --config "$1" 2>>"$WORK/collector.log" >/dev/null &
  COLLECTOR_PID=$!
  PORT=""
  for ((i = 0; i < 150; i++)); do
    PORT="$(sed -n 's/.*mod=collector event=listening .*[[:space:]]port=\([0-9][0-9]*\).*/\1/p' \
      "$WORK/collector.log" | head -n 1)"
    [[ -n "$PORT" ]] && break
    kill -0 "$COLLECTOR_PID" 2>/dev/null || die "pos-collector exited"
    sleep 0.1
  done
  [[ -n "$PORT" ]] || die "pos-collector logged no port"
}
