#!/usr/bin/env bash
# A store reconnecting resumes its TLS session from a session ticket (issue
# 15, item 5), with openssl s_client as the store: an abbreviated handshake,
# counted in the metrics as resumed. The ticket keys come from
# server.ticket_key_file, so a collector process started later with the same
# file (what another instance behind a load balancer is) resumes the session
# too; one with another key falls back to a full handshake, no error. A
# ticket sealed under another CRL (published since, or another instance's) is
# not taken: a device revoked since makes a full handshake and is refused.
# The agent, reconnecting after the collector closed its idle connection,
# resumes its session too. The key exchange is on P-256 whatever the store
# offers first. A key file that others can read, or that is too
# short, is refused at start with what to do.
source "$(dirname "$0")/lib.sh"

command -v openssl >/dev/null || skip "openssl is not installed"
make_pki S002 D1
start_broker --partitions 2
head -c 32 /dev/urandom >"$T/ticket.key"
chmod 600 "$T/ticket.key"
write_collector_config server.ticket_key_file="$T/ticket.key"
start_collector

# connect NAME CERT [SESSION_IN]: one connection as CERT (device-S001-D1...)
# asking GET /healthz; its session (with the ticket) saved in $T/NAME.sess.
# Prints s_client's output.
connect() {
  local name="$1" cert="$2" in="${3:-}" args=()
  [[ -n "$in" ]] && args=(-sess_in "$T/$in.sess")
  printf 'GET /healthz HTTP/1.1\r\nHost: collector\r\nConnection: close\r\n\r\n' |
    timeout 20 openssl s_client -connect "127.0.0.1:$COLLECTOR_PORT" -tls1_2 -ign_eof \
      -CAfile "$PKI/ca.crt" -cert "$PKI/$cert.crt" -key "$PKI/$cert.key" \
      -sess_out "$T/$name.sess" "${args[@]}" >"$T/$name.out" 2>&1 || true
  cat "$T/$name.out"
}
operator_port() { sed -n 's/.*event=operator_listening .*port=\([0-9]*\).*/\1/p' "$COLLECTOR_LOG" | head -n1; }
handshakes() { # KIND: pos_collector_tls_handshakes_total{kind=KIND} of the running collector
  local n
  n="$(curl -sS --max-time 10 "http://127.0.0.1:$(operator_port)/metrics" |
    sed -n "s/^pos_collector_tls_handshakes_total{kind=\"$1\"} //p")"
  echo "${n:-0}"
}
# (start_collector's /healthz polls are full handshakes of their own: counted from here.)
full0="$(handshakes full)"
resumed0="$(handshakes resumed)"

out="$(connect first device-S001-D1)"
assert_match "first connection: a full handshake" '^New, ' "$(grep -E '^(New|Reused), ' <<<"$out")"
assert_match "first connection: the collector issued a session ticket" 'TLS session ticket lifetime hint: 43200' "$out"
assert_match "first connection: GET /healthz answered" 'HTTP/1.1 200' "$out"
out="$(connect second device-S001-D1 first)"
assert_match "reconnect with the ticket: the session resumed" '^Reused, ' "$(grep -E '^(New|Reused), ' <<<"$out")"
assert_match "resumed connection: GET /healthz answered" 'HTTP/1.1 200' "$out"
assert_eq "metrics: full handshakes" $((full0 + 1)) "$(handshakes full)"
assert_eq "metrics: resumed handshakes" $((resumed0 + 1)) "$(handshakes resumed)"

# The key exchange is on P-256 (the certificates' curve, with X25519 the cheapest mbedTLS
# offers) even for a store that offers P-521 first: mbedTLS's own default order would pick
# P-521, twice the CPU on each side.
out="$(printf 'GET /healthz HTTP/1.1\r\nHost: collector\r\nConnection: close\r\n\r\n' |
  timeout 20 openssl s_client -connect "127.0.0.1:$COLLECTOR_PORT" -tls1_2 -ign_eof \
    -groups P-521:P-384:P-256 -CAfile "$PKI/ca.crt" -cert "$PKI/device-S001-D1.crt" \
    -key "$PKI/device-S001-D1.key" 2>&1 || true)"
assert_match "a store offering P-521 first: the key exchange is on P-256" \
  'Server Temp Key: ECDH, prime256v1' "$(grep 'Server Temp Key' <<<"$out" || true)"

# The agent keeps its session: after the collector closes its idle
# connection, its next push reconnects with the ticket.
stop_collector
write_collector_config server.ticket_key_file="$T/ticket.key" server.idle_timeout=1s
start_collector
full0="$(handshakes full)"
resumed0="$(handshakes resumed)"
write_tokens
write_agent_config
start_agent
run_load --clients 1 --sales 5 --batch 5 --prefix A
push_until_sent 60
# The collector closes the agent's connection once idle for 1 s: wait until
# no connection to its port is established (/proc/net/tcp, state 01).
port_hex="$(printf '%04X' "$COLLECTOR_PORT")"
established() { awk -v p=":$port_hex" '$2 ~ p"$" && $4 == "01"' /proc/net/tcp | wc -l; }
deadline=$((SECONDS + 60))
until (($(established) == 0)); do
  ((SECONDS < deadline)) || fail "the collector closes the agent's idle connection" 0 "$(established)"
  sleep 0.2
done
run_load --clients 1 --sales 5 --batch 5 --prefix B
push_until_sent 60
assert_eq "agent: one full handshake (its first connection)" $((full0 + 1)) "$(handshakes full)"
assert_gt "agent: its reconnection resumed the session" "$resumed0" "$(handshakes resumed)"
stop_agent

# Another process with the same key file: what a second instance is.
stop_collector
start_collector
out="$(connect third device-S001-D1 first)"
assert_match "another collector process, same ticket_key_file: resumed" '^Reused, ' "$(grep -E '^(New|Reused), ' <<<"$out")"
assert_match "another process: GET /healthz answered" 'HTTP/1.1 200' "$out"
assert_eq "metrics of that process: resumed" 1 "$(handshakes resumed)"

# A ticket of another key: a full handshake, no error.
stop_collector
head -c 32 /dev/urandom >"$T/other.key"
chmod 600 "$T/other.key"
write_collector_config server.ticket_key_file="$T/other.key"
start_collector
out="$(connect fourth device-S001-D1 first)"
assert_match "a ticket of another key: a full handshake instead" '^New, ' "$(grep -E '^(New|Reused), ' <<<"$out")"
assert_match "another key: GET /healthz answered" 'HTTP/1.1 200' "$out"
assert_eq "metrics: no resumption with another key" 0 "$(handshakes resumed)"

# Revoked after its ticket was issued: the ticket, sealed under the CRL before,
# is not taken; the full handshake refuses the device.
out="$(connect s002 device-S002-D1)"
assert_match "S002 before its revocation: answered" 'HTTP/1.1 200' "$out"
bash "$POS_SOURCE_DIR/tests/tools/pki.sh" revoke "$PKI" device-S002-D1
stop_collector
start_collector
out="$(connect s002-again device-S002-D1 s002)"
[[ "$out" != *"Reused, "* ]] || fail "revoked device: its ticket of the CRL before is not taken" "no Reused" "$out"
[[ "$out" != *"HTTP/1.1 200"* ]] || fail "revoked device: no answer to its request" "no 200" "$out"
grep -q 'event=tls_handshake_failed .*revoked' "$COLLECTOR_LOG" ||
  fail "revoked device: refused in the full handshake, logged" "a line with revoked" \
    "$(tail -n 5 "$COLLECTOR_LOG")"
assert_eq "metrics: no resumption for the revoked device" 0 "$(handshakes resumed)"
J=0f0e0d0c0b0a09080706050403020100
send_batch device-S001-D1 --store S001 --journal "$J" --batch-seq 1 --first-seq 1 --sales 3
assert_eq "S001 still sends: status" 200 "$(batch_field status)"

# Key files the collector refuses to start with.
stop_collector
chmod 644 "$T/other.key"
assert_match "a key file others can read: refused" 'can be read by its group or others.*chmod 600' \
  "$(timeout 20 "$COLLECTOR_BIN" --config "$COLLECTOR_CONFIG" 2>&1 | grep -v 'mod=kafka')"
head -c 16 /dev/urandom >"$T/short.key"
chmod 600 "$T/short.key"
write_collector_config server.ticket_key_file="$T/short.key"
assert_match "a key file of 16 bytes: refused" 'holds 16 bytes, fewer than the 32' \
  "$(timeout 20 "$COLLECTOR_BIN" --config "$COLLECTOR_CONFIG" 2>&1 | grep -v 'mod=kafka')"
log "passed"
