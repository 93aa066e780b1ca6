#!/usr/bin/env bash
# The collector's front door, against its embedded Kafka (no brokers
# configured: it logs the bootstrap address and kcat reads it). No client
# certificate, a certificate from another CA, an expired one and a revoked
# one are refused in the handshake; a device of store S002 sending a batch
# for S001, and an admin certificate sending a batch, get 403; each refusal
# is logged with its reason. Decompression bombs and garbage bodies get 400,
# and the collector keeps serving: good batches afterwards get 200. An
# expired CRL and another CA's CRL are refused on SIGHUP, the CRL in use
# stays (a store keeps sending, the revoked device stays out), and the
# days until the CRL expires are in the log and the metrics.
source "$(dirname "$0")/lib.sh"

make_pki S002 D1
write_collector_config kafka.brokers= kafka.embedded_partitions=4 server.max_decoded=1M
start_collector
log "embedded Kafka at $KAFKA_BOOT"

J=0f0e0d0c0b0a09080706050403020100

# expect_log WHAT REGEX: a line matching REGEX appears in the collector's log within 5 s.
expect_log() {
  local deadline=$((SECONDS + 5))
  until grep -Eq -- "$2" "$COLLECTOR_LOG"; do
    ((SECONDS < deadline)) || fail "$1: collector log line" "matching /$2/" "$(tail -n 3 "$COLLECTOR_LOG")"
    sleep 0.05
  done
  log "$1: $(grep -E -- "$2" "$COLLECTOR_LOG" | tail -n 1)"
}

# handshake_refused WHAT CERT_NAME REASON_REGEX: no HTTP answer at all, and
# the collector logs the failed handshake from our port with the reason.
handshake_refused() {
  local what="$1" cert="$2" reason="$3" port
  send_batch "$cert" --journal "$J" --batch-seq 1 --sales 5
  assert_eq "$what: pos-batch gets no HTTP answer (exit 3) [$BATCH_OUT]" 3 "$BATCH_RC"
  assert_eq "$what: status" 0 "$(batch_field status)"
  port="$(batch_field local_port)"
  if [[ "$port" =~ ^[1-9][0-9]*$ ]]; then
    expect_log "$what" "event=tls_handshake_failed peer=[^ ]*:$port .*reason=.*$reason"
  else
    expect_log "$what" "event=tls_handshake_failed .*reason=.*$reason"
  fi
}

handshake_refused "no client certificate" "" '[Nn]o client certific'
handshake_refused "certificate from another CA" foreign 'not correctly signed'
handshake_refused "expired certificate" expired 'expired'
handshake_refused "revoked certificate" revoked 'revoked'

# curl, independently of pos-batch: no client certificate, no answer.
rc=0
curl -sS --max-time 10 --cacert "$PKI/ca.crt" -o /dev/null -X POST --data-binary x \
  "$COLLECTOR_URL/v1/batches" 2>"$T/curl.err" || rc=$?
assert_gt "curl without a client certificate fails (exit status)" 0 "$rc"

# --- identity: the certificate's store, not the body's ------------------------------
send_batch device-S002-D1 --store S001 --journal "$J" --batch-seq 1 --sales 5
assert_eq "S002's device sending a batch for S001: status" 403 "$(batch_field status)"
assert_contains "403 says why" "S002" "$(batch_field message)"
expect_log "batch for another store" 'event=batch_refused .*store=S002 .*status=403 .*reason=".*S002.*S001'

send_batch admin --journal "$J" --batch-seq 1 --sales 5
assert_eq "admin certificate sending a batch: status" 403 "$(batch_field status)"
assert_match "403 for an admin certificate says why" 'device' "$(batch_field message)"

# --- hostile bodies ------------------------------------------------------------------------
refused_before="$(grep -c 'event=batch_refused.*status=400' "$COLLECTOR_LOG" || true)"
for bomb in stream declared; do
  send_batch device-S001-D1 --bomb "$bomb" --bomb-size 64M
  log "bomb ($bomb): $BATCH_OUT"
  assert_eq "decompression bomb ($bomb): status" 400 "$(batch_field status)"
  assert_match "decompression bomb ($bomb): body bytes (tiny)" '^[0-9]{1,5}$' "$(batch_field body_bytes)"
  assert_contains "decompression bomb ($bomb): the answer says why" "decompresses to more than" "$(batch_field message)"
done
for garbage in random zstd truncated trailing; do
  send_batch device-S001-D1 --garbage "$garbage" --journal "$J"
  log "garbage ($garbage): $BATCH_OUT"
  assert_eq "garbage body ($garbage): status" 400 "$(batch_field status)"
  [[ -n "$(batch_field message)" ]] || fail "garbage body ($garbage): the answer says why" "a message" "$BATCH_OUT"
done
assert_eq "collector log: 400 refusals with a reason" "$((refused_before + 6))" \
  "$(grep -c 'event=batch_refused .*status=400 .*reason="[^"]' "$COLLECTOR_LOG" || true)"
kill -0 "$COLLECTOR_PID" 2>/dev/null || fail "the collector survives bombs and garbage"

# --- and it keeps serving ----------------------------------------------------------------------
collector_curl /healthz >/dev/null
assert_eq "GET /healthz after the refusals" 200 "$HTTP_STATUS"
send_batch device-S001-D1 --journal "$J" --batch-seq 1 --first-seq 1 --sales 10
assert_eq "a good batch after the refusals: status" 200 "$(batch_field status)"
assert_eq "a good batch after the refusals: acked_batch_seq" 1 "$(batch_field acked_batch_seq)"
send_batch device-S002-D1 --store S002 --journal "$J" --batch-seq 1 --first-seq 1 --sales 7
assert_eq "S002's own batch: status" 200 "$(batch_field status)"

kafka_read pos.sales.v1 sales
records_db sales
assert_eq "records in the embedded Kafka: S001's and S002's" "S001|10
S002|7" "$(rsql sales 'SELECT key, count(*) FROM k GROUP BY key ORDER BY key;')"
assert_eq "records whose key is not their store_id" 0 "$(rsql sales 'SELECT count(*) FROM k WHERE key IS NOT store_id;')"
assert_eq "records from refused requests" 0 "$(rsql sales 'SELECT count(*) FROM k WHERE store_id = '"'"'S001'"'"' AND seq > 10;')"
kafka_read pos.dlq.v1 dlq
assert_eq "records in pos.dlq.v1 (nothing refused is dead-lettered)" 0 "$KAFKA_RECORDS"

# --- a CRL that would lock the fleet out is refused on SIGHUP (issue 13) ------------------
# expect_log_count WHAT N REGEX: N lines match REGEX within 5 s.
expect_log_count() {
  local deadline=$((SECONDS + 5))
  until (($(grep -Ec -- "$3" "$COLLECTOR_LOG" || true) >= $2)); do
    ((SECONDS < deadline)) || fail "$1: collector log lines" "$2 matching /$3/" "$(tail -n 3 "$COLLECTOR_LOG")"
    sleep 0.05
  done
  log "$1: $(grep -E -- "$3" "$COLLECTOR_LOG" | tail -n 1)"
}
operator_port="$(sed -n 's/.*event=operator_listening .*port=\([0-9]*\).*/\1/p' "$COLLECTOR_LOG" | head -n1)"
# crl_days: days until the CRL in use expires, from the collector's metrics.
crl_days() {
  local at
  at="$(curl -sS --max-time 10 "http://127.0.0.1:$operator_port/metrics" |
    sed -n 's/^pos_collector_tls_crl_next_update_timestamp_seconds \([-0-9.e+]*\)$/\1/p')"
  [[ -n "$at" ]] || fail "metrics: pos_collector_tls_crl_next_update_timestamp_seconds"
  awk -v at="$at" -v now="$(date +%s)" 'BEGIN { printf "%.2f\n", (at - now) / 86400 }'
}
expect_log "the CRL's expiry at start" 'event=tls_loaded .*crl_days_left=(29|30)\.'
days="$(crl_days)"
assert_match "metrics: days until the CRL expires (30-day CRL)" '^(29|30)\.' "$days"
cp "$PKI/crl.pem" "$T/crl.good.pem"
bash "$POS_SOURCE_DIR/tests/tools/pki.sh" crl-expired "$PKI" "$PKI/crl.pem"
bash "$POS_SOURCE_DIR/tests/tools/pki.sh" crl-other "$PKI" "$T/crl.other.pem"
kill -HUP "$COLLECTOR_PID"
expect_log_count "an expired CRL refused on reload" 1 \
  'event=tls_reload_failed .*expired at 2020-02-01 00:00:00 UTC.*action="kept the certificate, key, CA and CRL in use'
cp "$T/crl.other.pem" "$PKI/crl.pem"
kill -HUP "$COLLECTOR_PID"
expect_log_count "another CA's CRL refused on reload" 1 \
  'event=tls_reload_failed .*issued by \\"CN=Somebody Else.s CA\\", which is not a CA of ca_file'
send_batch device-S002-D1 --store S002 --journal "$J" --batch-seq 2 --first-seq 8 --sales 5
assert_eq "S002 keeps sending after both refused reloads: status" 200 "$(batch_field status)"
assert_eq "S002 keeps sending: acked_batch_seq" 2 "$(batch_field acked_batch_seq)"
handshake_refused "revoked certificate, the CRL in use kept" revoked 'revoked'
assert_match "metrics: the CRL in use is not the expired one" '^(29|30)\.' "$(crl_days)"
# Every refusal above is counted by reason (two without a certificate: pos-batch's and curl's).
metrics="$(curl -sS --max-time 10 "http://127.0.0.1:$operator_port/metrics")"
for expected in no_certificate:2 not_trusted:1 expired:1 revoked:2; do
  assert_eq "metrics: TLS refusals counted as ${expected%%:*}" "${expected#*:}" \
    "$(sed -n "s/^pos_collector_tls_refusals_total{reason=\"${expected%%:*}\"} //p" <<<"$metrics")"
done
cp "$T/crl.good.pem" "$PKI/crl.pem"
kill -HUP "$COLLECTOR_PID"
expect_log "a good CRL taken on reload" 'event=tls_reloaded .*crl_days_left=(29|30)\.'
kill -0 "$COLLECTOR_PID" 2>/dev/null || fail "the collector survives the reloads"
stop_collector
