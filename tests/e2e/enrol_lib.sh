#!/usr/bin/env bash
# enrol_lib.sh - what the agent's enrolment tests share (issue 13): a
# collector with an EST listener, a device directory with a one-time token,
# and the checks they all make. Sourced after lib.sh.

POSCTL_BIN="$POS_BUILD_DIR/collector/posctl"
[[ -x "$POSCTL_BIN" ]] || fail "$POSCTL_BIN is not built (cmake --build $POS_BUILD_DIR)"
emulated POSCTL_BIN
unset POSCTL_CONFIG

# enrol_collector LIFETIME: a broker and a collector whose [enrol] listener
# issues certificates for LIFETIME; sets EST_PORT and ADMIN (posctl's
# connection as head office).
enrol_collector() {
  make_pki
  start_broker --partitions 1
  write_collector_config enrol.ca_cert="$PKI/ca/ca.crt" enrol.ca_key="$PKI/ca/ca.key" \
    enrol.listen_host=127.0.0.1 enrol.port=0 enrol.cert_lifetime="$1"
  start_collector
  EST_PORT="$(sed -n 's/.*event=enrol_listening .*[[:space:]]port=\([0-9][0-9]*\).*/\1/p' "$COLLECTOR_LOG")"
  [[ "$EST_PORT" =~ ^[0-9]+$ ]] ||
    fail "the collector logs its EST listener's port" "event=enrol_listening port=N" \
      "$(grep 'event=enrol' "$COLLECTOR_LOG")"
  ADMIN=(--url "$COLLECTOR_URL" --ca "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key")
}

# posctl ARGS...: posctl as head office; its output in $T/posctl.out; a
# failure fails the test.
posctl() {
  timeout 60 "$POSCTL_BIN" "${ADMIN[@]}" "$@" >"$T/posctl.out" 2>"$T/posctl.err" ||
    fail "posctl $*: $(cat "$T/posctl.err")"
}

# new_token FILE: a one-time token for S001/D1 from head office, written to
# FILE as an installer would (a new file, renamed into place).
new_token() {
  posctl enrol-token --store S001 --device D1 --valid-for 1h
  cp "$T/posctl.out" "$1.tmp"
  mv "$1.tmp" "$1"
}

# enrol_device: the device as the installer leaves it, a directory for its
# pair ($DEV) and a token in $TOKEN_FILE.
enrol_device() {
  DEV="$T/device"
  mkdir -p "$DEV"
  TOKEN_FILE="$DEV/enrol.token"
  new_token "$TOKEN_FILE"
}

# est_events EVENT: the collector's mod=est event=EVENT lines, all its runs.
est_events() { cat "$T"/collector.*.log | grep -c "mod=est event=$1" || true; }
# agent_events EVENT: the current agent's mod=enrol event=EVENT lines.
agent_events() { grep -c "mod=enrol event=$1" "$AGENT_LOG" || true; }

# wait_for WHAT TIMEOUT CONDITION: until the arithmetic CONDITION holds
# (evaluated afresh each time), the agent running all along.
wait_for() {
  local what="$1" timeout="$2" condition="$3" deadline=$((SECONDS + $2))
  until eval "(( $condition ))"; do
    ((SECONDS < deadline)) || fail "$what within $timeout s" "$condition" "not yet"
    kill -0 "$AGENT_PID" 2>/dev/null || fail "the agent runs" "running" "exited: $(tail -n 3 "$AGENT_LOG")"
    sleep 0.2
  done
}

# enrolment FIELD: /status.json's enrolment.FIELD, asked afresh (in $(...),
# so $STATUS_JSON is not updated).
enrolment() {
  status_json
  json_get "$STATUS_JSON" "\$.enrolment.$1"
}

# wait_enrolment_state STATE TIMEOUT: until /status.json's enrolment.state
# is STATE; $STATUS_JSON is then that answer.
wait_enrolment_state() {
  local deadline=$((SECONDS + $2)) got=""
  while :; do
    status_json
    got="$(json_get "$STATUS_JSON" '$.enrolment.state')"
    [[ "$got" == "$1" ]] && return 0
    ((SECONDS < deadline)) || fail "/status.json enrolment.state within $2 s ($STATUS_JSON)" "$1" "$got"
    sleep 0.2
  done
}

# assert_pair_matches WHAT: the key and certificate on disk belong together.
# Read again (3 tries) when a read fell between an install's two renames,
# which the agent's own reader also refuses and retries (enrol.h).
assert_pair_matches() {
  local key cert try
  for try in 1 2 3; do
    key="$(openssl pkey -in "$DEV/device.key" -pubout 2>/dev/null | sha256sum)"
    cert="$(openssl x509 -in "$DEV/device.crt" -noout -pubkey 2>/dev/null | sha256sum)"
    [[ "$key" == "$cert" ]] && return 0
    sleep 0.3
  done
  assert_eq "$1" "$key" "$cert"
}

# sell: one more sale, <SALE_PREFIX>-<n>, taken with 201.
SALES=0
sell() {
  SALES=$((SALES + 1))
  post_sales "$TOKEN_T1" "$(sale_json sale_id="\"$SALE_PREFIX-$(printf '%04d' "$SALES")\"")"
  assert_eq "sale $SALE_PREFIX-$SALES taken" 201 "$HTTP_STATUS"
}

# assert_sales_once: every sale sold is in pos.sales.v1 once, as journaled.
assert_sales_once() {
  kafka_read pos.sales.v1 sales
  records_db sales
  assert_eq "sale records in pos.sales.v1" "$SALES" "$KAFKA_RECORDS"
  assert_eq "distinct sale ids in pos.sales.v1" "$SALES" "$(rsql sales "SELECT count(DISTINCT sale_id) FROM k;")"
  check_sales_match_journal sales "$SALES"
}
