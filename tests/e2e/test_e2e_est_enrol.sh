#!/usr/bin/env bash
# Issue 13, items 1 and 5: enrolment over EST (RFC 7030) with head office's
# one-time tokens, driven by foreign EST clients (openssl req + curl), and
# the certificate it gives used by an agent whose sales reach Kafka.
#   - /cacerts serves the issuing CA as a certs-only PKCS#7 openssl reads;
#   - posctl enrol-token prints a token; simpleenroll with it returns a
#     certificate naming the token's store and device (not the request's),
#     chaining to the CA, for client authentication, for the request's key;
#   - the same request again (its answer lost) gets a certificate for the
#     same key, also after a restart; the same token twice, an expired token, another store's token, a wrong
#     secret and none at all are refused, each saying why; a bad request
#     leaves its token usable;
#   - pos.control.v1 holds the token's hash, never the token; a restarted
#     collector still refuses a used token;
#   - simplereenroll renews over the current certificate (mutual TLS), and
#     not without one;
#   - a store head office decommissioned (posctl decommission) gets no
#     certificate, renewal or token, also after a restart, until --undo;
#   - an agent with the enrolled certificate sends a sale, in Kafka once.
source "$(dirname "$0")/lib.sh"

POSCTL_BIN="$POS_BUILD_DIR/collector/posctl"
[[ -x "$POSCTL_BIN" ]] || fail "$POSCTL_BIN is not built (cmake --build $POS_BUILD_DIR)"
emulated POSCTL_BIN
unset POSCTL_CONFIG

make_pki
start_broker --partitions 1
write_collector_config enrol.ca_cert="$PKI/ca/ca.crt" enrol.ca_key="$PKI/ca/ca.key" \
  enrol.listen_host=127.0.0.1 enrol.port=0 enrol.cert_lifetime=10m
# start_enrolling_collector: start_collector, then EST_URL (its EST
# listener, from event=enrol_listening) and ADMIN (posctl's options).
start_enrolling_collector() {
  start_collector
  local port
  port="$(sed -n 's/.*event=enrol_listening .*[[:space:]]port=\([0-9][0-9]*\).*/\1/p' "$COLLECTOR_LOG")"
  [[ "$port" =~ ^[0-9]+$ ]] || fail "the collector logs its EST listener's port" "event=enrol_listening port=N" \
    "$(grep -c . "$COLLECTOR_LOG") lines, none"
  EST_URL="https://127.0.0.1:$port/.well-known/est"
  ADMIN=(--url "$COLLECTOR_URL" --ca "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key")
}
start_enrolling_collector

# est_post OP USER:TOKEN BODYFILE [curl args]: a foreign EST client's POST to
# the EST listener, no client certificate; sets HTTP_STATUS, body in $T/est.body.
est_post() {
  local op="$1" user="$2" body="$3"
  shift 3
  local auth=()
  [[ -n "$user" ]] && auth=(--user "$user")
  HTTP_STATUS="$(curl -sS -o "$T/est.body" -D "$T/est.headers" -w '%{http_code}' --max-time 10 \
    --cacert "$PKI/ca.crt" "${auth[@]}" -H 'Content-Type: application/pkcs10' \
    -H 'Content-Transfer-Encoding: base64' --data-binary @"$body" "$@" "$EST_URL/$op" \
    2>"$T/est.curl.err")" || HTTP_STATUS="${HTTP_STATUS:-000}"
}

# new_request NAME: a P-256 key and its PKCS#10 request, as openssl makes
# them, asking for a name the collector must not give; $T/NAME.key, $T/NAME.b64.
new_request() {
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$T/$1.key" \
    -subj "/CN=urn:pos:store:S999:device:EVIL" -outform DER -out "$T/$1.der" 2>"$T/openssl.err" ||
    fail "openssl req makes a request: $(cat "$T/openssl.err")"
  base64 "$T/$1.der" >"$T/$1.b64"
}

# token STORE DEVICE [DURATION]: posctl enrol-token; sets TOKEN.
token() {
  local valid=()
  [[ -n "${3:-}" ]] && valid=(--valid-for "$3")
  TOKEN="$(timeout 60 "$POSCTL_BIN" "${ADMIN[@]}" enrol-token --store "$1" --device "$2" \
    "${valid[@]}" 2>"$T/posctl.err")" || fail "posctl enrol-token --store $1 --device $2: $(cat "$T/posctl.err")"
  [[ "$TOKEN" =~ ^[0-9a-f]{16}\.[0-9a-f]{32}$ ]] || fail "posctl prints the token alone" "<id>.<secret>" "$TOKEN"
}

# certificate_from NAME: the answer in $T/est.body as $T/NAME.crt (PEM).
certificate_from() {
  grep -qi '^content-type: application/pkcs7-mime' "$T/est.headers" ||
    fail "the answer is application/pkcs7-mime" "pkcs7-mime" "$(cat "$T/est.headers")"
  base64 -d "$T/est.body" >"$T/$1.p7" || fail "the answer is base64" base64 "$(head -c 200 "$T/est.body")"
  openssl pkcs7 -inform DER -in "$T/$1.p7" -print_certs -out "$T/$1.crt" 2>"$T/openssl.err" ||
    fail "openssl pkcs7 -print_certs reads the answer: $(cat "$T/openssl.err")"
}

# --- /cacerts -------------------------------------------------------------------------
HTTP_STATUS="$(curl -sS -o "$T/est.body" -D "$T/est.headers" -w '%{http_code}' --max-time 10 \
  --cacert "$PKI/ca.crt" "$EST_URL/cacerts" 2>"$T/est.curl.err")" || true
assert_eq "GET cacerts without a client certificate ($(cat "$T/est.curl.err"))" 200 "$HTTP_STATUS"
certificate_from cacerts
assert_eq "cacerts is the issuing CA" "$(openssl x509 -in "$PKI/ca/ca.crt" -noout -fingerprint -sha256)" \
  "$(openssl x509 -in "$T/cacerts.crt" -noout -fingerprint -sha256)"

# --- a token, used once ---------------------------------------------------------------
token S001 D7 1h
new_request d7
est_post simpleenroll "S001/D7:$TOKEN" "$T/d7.b64"
assert_eq "simpleenroll with the token ($(cat "$T/est.body"))" 200 "$HTTP_STATUS"
certificate_from d7
openssl verify -CAfile "$PKI/ca.crt" -purpose sslclient "$T/d7.crt" >"$T/verify.out" 2>&1 ||
  fail "the certificate chains to the CA, for client authentication: $(cat "$T/verify.out")"
san="$(openssl x509 -in "$T/d7.crt" -noout -ext subjectAltName 2>/dev/null | tail -n 1 | tr -d ' ')"
assert_eq "the certificate names the token's store and device, not the request's" \
  "URI:urn:pos:store:S001:device:D7" "$san"
assert_eq "the certificate is for the request's key" \
  "$(openssl pkey -in "$T/d7.key" -pubout 2>/dev/null | sha256sum)" \
  "$(openssl x509 -in "$T/d7.crt" -noout -pubkey | sha256sum)"
grep -q "mod=est event=enrolled .*store=S001 device=D7" "$COLLECTOR_LOG" ||
  fail "the collector logs the enrolment" "event=enrolled store=S001 device=D7" "$(grep 'mod=est' "$COLLECTOR_LOG")"
USED_TOKEN="$TOKEN"

# The answer lost (a power cut, a timeout): the same request again gets a
# certificate for the same key, and only that.
est_post simpleenroll "S001/D7:$USED_TOKEN" "$T/d7.b64"
assert_eq "the same request again with its used token ($(cat "$T/est.body"))" 200 "$HTTP_STATUS"
certificate_from d7-repeat
assert_eq "the repeat certifies the same key" "$(openssl x509 -in "$T/d7.crt" -noout -pubkey | sha256sum)" \
  "$(openssl x509 -in "$T/d7-repeat.crt" -noout -pubkey | sha256sum)"

new_request again
est_post simpleenroll "S001/D7:$USED_TOKEN" "$T/again.b64"
assert_eq "the same token a second time" 403 "$HTTP_STATUS"
grep -q "used already" "$T/est.body" || fail "the refusal says the token was used" "used already" "$(cat "$T/est.body")"

# Two devices racing with one token (different keys): one certificate.
token S003 D1 1h
new_request race1
new_request race2
racers=()
for k in 1 2 3 4; do
  curl -sS -o "$T/race.$k.body" -w '%{http_code}' --max-time 10 --cacert "$PKI/ca.crt" \
    --user "S003/D1:$TOKEN" -H 'Content-Type: application/pkcs10' \
    --data-binary @"$T/race$(((k + 1) % 2 + 1)).b64" "$EST_URL/simpleenroll" >"$T/race.$k.status" 2>/dev/null &
  racers+=($!)
done
wait "${racers[@]}" || true
statuses="$(cat "$T"/race.*.status | tr '\n' ' ')"
# The key that won may be asked again (a repeat, 200); the other key never gets one.
won="$(grep -l '^200$' "$T"/race.*.status | wc -l)"
((won >= 1)) || fail "one of four racing requests with one token gets a certificate" ">= 1 200" "$statuses"
for k in 1 2 3 4; do
  if [[ "$(cat "$T/race.$k.status")" == 200 ]]; then
    base64 -d "$T/race.$k.body" >"$T/race.$k.p7"
    openssl pkcs7 -inform DER -in "$T/race.$k.p7" -print_certs 2>/dev/null |
      openssl x509 -noout -pubkey | sha256sum
  fi
done | sort -u >"$T/race.keys"
assert_eq "certificates issued to racing requests with one token are for one key ($statuses)" 1 \
  "$(wc -l <"$T/race.keys")"

# --- tokens that must not enrol -------------------------------------------------------
token S001 D8 1s
sleep 2
est_post simpleenroll "S001/D8:$TOKEN" "$T/again.b64"
assert_eq "an expired token" 403 "$HTTP_STATUS"
grep -q "expired" "$T/est.body" || fail "the refusal says the token expired" "expired" "$(cat "$T/est.body")"

token S002 D1 1h
OTHER_STORE_TOKEN="$TOKEN"
est_post simpleenroll "S001/D1:$OTHER_STORE_TOKEN" "$T/again.b64"
assert_eq "a token of another store" 403 "$HTTP_STATUS"
grep -q "issued for device D1 of store S002" "$T/est.body" ||
  fail "the refusal names the token's store" "issued for device D1 of store S002" "$(cat "$T/est.body")"

est_post simpleenroll "S002/D1:${OTHER_STORE_TOKEN%.*}.00000000000000000000000000000000" "$T/again.b64"
assert_eq "a wrong secret" 401 "$HTTP_STATUS"
est_post simpleenroll "" "$T/again.b64"
assert_eq "no token at all" 401 "$HTTP_STATUS"
grep -qi '^www-authenticate: basic' "$T/est.headers" || fail "401 asks for Basic authentication" \
  "WWW-Authenticate: Basic" "$(cat "$T/est.headers")"

# A request that is not one: refused, and the token is still good.
printf 'not a request' | base64 >"$T/junk.b64"
est_post simpleenroll "S002/D1:$OTHER_STORE_TOKEN" "$T/junk.b64"
assert_eq "a bad request with a good token" 400 "$HTTP_STATUS"
est_post simpleenroll "S002/D1:$OTHER_STORE_TOKEN" "$T/again.b64"
assert_eq "the token after the bad request ($(cat "$T/est.body"))" 200 "$HTTP_STATUS"

# --- Kafka keeps the hash, never the token ------------------------------------------------
timeout 60 kcat -b "$KAFKA_BOOT" -C -t pos.control.v1 -e -q -f '%k\t%s\n' >"$T/control.kcat" 2>"$T/kcat.err" ||
  fail "kcat reads pos.control.v1: $(cat "$T/kcat.err")"
grep -aq "^S001/enrol-token/${USED_TOKEN%.*}" "$T/control.kcat" ||
  fail "pos.control.v1 holds the token's record" "S001/enrol-token/${USED_TOKEN%.*}" "$(cut -f1 "$T/control.kcat")"
if grep -aq "${USED_TOKEN#*.}" "$T/control.kcat"; then
  fail "pos.control.v1 never holds a token's secret" "its hash only" "the secret"
fi

# --- a restarted collector remembers the use ------------------------------------------------
stop_collector
start_enrolling_collector
est_post simpleenroll "S001/D7:$USED_TOKEN" "$T/again.b64"
assert_eq "a used token after the collector's restart" 403 "$HTTP_STATUS"
est_post simpleenroll "S001/D7:$USED_TOKEN" "$T/d7.b64"
assert_eq "its device's lost request after the collector's restart ($(cat "$T/est.body"))" 200 "$HTTP_STATUS"

# --- renewal over the current certificate ---------------------------------------------------
new_request d7b
est_post simplereenroll "" "$T/d7b.b64"
assert_eq "simplereenroll without a certificate" 403 "$HTTP_STATUS"
est_post simplereenroll "" "$T/d7b.b64" --cert "$T/d7.crt" --key "$T/d7.key"
assert_eq "simplereenroll with the current certificate ($(cat "$T/est.body"))" 200 "$HTTP_STATUS"
certificate_from d7b
assert_eq "the renewed certificate names the same device" "URI:urn:pos:store:S001:device:D7" \
  "$(openssl x509 -in "$T/d7b.crt" -noout -ext subjectAltName 2>/dev/null | tail -n 1 | tr -d ' ')"
[[ "$(openssl x509 -in "$T/d7b.crt" -noout -serial)" != "$(openssl x509 -in "$T/d7.crt" -noout -serial)" ]] ||
  fail "the renewal is a new certificate" "another serial" "the same"
# On the API port too (a client certificate is required there anyway).
HTTP_STATUS="$(curl -sS -o "$T/est.body" -w '%{http_code}' --max-time 10 --cacert "$PKI/ca.crt" \
  --cert "$T/d7b.crt" --key "$T/d7b.key" -H 'Content-Type: application/pkcs10' \
  --data-binary @"$T/d7.b64" "$COLLECTOR_URL/.well-known/est/simplereenroll" 2>"$T/est.curl.err")" || true
assert_eq "simplereenroll on [server] port ($(cat "$T/est.body"))" 200 "$HTTP_STATUS"

# --- a decommissioned store gets no certificate ------------------------------------------------
token S001 D9 1h
STORE_TOKEN="$TOKEN"
timeout 60 "$POSCTL_BIN" "${ADMIN[@]}" decommission --store S001 >"$T/posctl.out" 2>"$T/posctl.err" ||
  fail "posctl decommission --store S001: $(cat "$T/posctl.err")"
new_request d9
est_post simplereenroll "" "$T/d9.b64" --cert "$T/d7b.crt" --key "$T/d7b.key"
assert_eq "renewal for a decommissioned store" 403 "$HTTP_STATUS"
grep -q "store S001 was decommissioned by head office" "$T/est.body" ||
  fail "the refusal says the store was decommissioned" "was decommissioned" "$(cat "$T/est.body")"
est_post simpleenroll "S001/D9:$STORE_TOKEN" "$T/d9.b64"
assert_eq "enrolment with a token issued before the store was decommissioned" 403 "$HTTP_STATUS"
timeout 60 "$POSCTL_BIN" "${ADMIN[@]}" enrol-token --store S001 --device D9 >/dev/null 2>"$T/posctl.err" &&
  fail "posctl enrol-token for a decommissioned store is refused" "exit 1" "a token"
grep -q "decommissioned" "$T/posctl.err" || fail "posctl says why" "decommissioned" "$(cat "$T/posctl.err")"
# Still so after a restart (pos.control.v1), and undone.
stop_collector
start_enrolling_collector
est_post simplereenroll "" "$T/d9.b64" --cert "$T/d7b.crt" --key "$T/d7b.key"
assert_eq "renewal for a decommissioned store after the collector's restart" 403 "$HTTP_STATUS"
timeout 60 "$POSCTL_BIN" "${ADMIN[@]}" decommission --store S001 --undo >"$T/posctl.out" 2>"$T/posctl.err" ||
  fail "posctl decommission --store S001 --undo: $(cat "$T/posctl.err")"
est_post simpleenroll "S001/D9:$STORE_TOKEN" "$T/d9.b64"
assert_eq "the token once the store is back in service ($(cat "$T/est.body"))" 200 "$HTTP_STATUS"
# Counted by operation and status since this start: the refused renewal, the enrolment.
operator_port="$(sed -n 's/.*event=operator_listening .*port=\([0-9]*\).*/\1/p' "$COLLECTOR_LOG" | head -n1)"
curl -sS --max-time 10 "http://127.0.0.1:$operator_port/metrics" >"$T/metrics.txt" ||
  fail "GET /metrics on the operator port $operator_port"
assert_eq "EST renewals refused, in the metrics" 1 \
  "$(sed -n 's/^pos_collector_est_requests_total{op="simplereenroll",status="403"} //p' "$T/metrics.txt")"
assert_eq "EST enrolments, in the metrics" 1 \
  "$(sed -n 's/^pos_collector_est_requests_total{op="simpleenroll",status="200"} //p' "$T/metrics.txt")"

# --- the enrolled device sends sales ------------------------------------------------------------
write_tokens
write_agent_config agent.device_id=D7 uplink.cert="$T/d7b.crt" uplink.key="$T/d7b.key"
start_agent
post_sales "$TOKEN_T1" "$(sale_json sale_id='"EST-0001"')"
assert_eq "a sale to the enrolled device's agent" 201 "$HTTP_STATUS"
push_until_sent 60
kafka_read pos.sales.v1 sales
records_db sales
assert_eq "the enrolled device's sale in pos.sales.v1 once" 1 \
  "$(rsql sales "SELECT count(*) FROM k WHERE sale_id = 'EST-0001' AND store_id = 'S001';")"
stop_agent
stop_collector
