#!/usr/bin/env bash
# Issue 7 item 8: the POS API over TLS ([api] tls_cert and tls_key), as the
# store hub runs it on the LAN. A terminal posts a sale over HTTPS and gets
# its 201; the manager's status page answers over HTTPS; plain HTTP on the
# TLS port gets no HTTP answer at all; a config with only one of the two
# keys is refused by --check-config, naming the missing one.
source "$(dirname "$0")/lib.sh"

PKI="$T/pki"
bash "$POS_SOURCE_DIR/tests/tools/pki.sh" init "$PKI" >"$T/pki.log" 2>&1 ||
  fail "pki.sh init $PKI: $(cat "$T/pki.log")"

write_tokens
write_config api.tls_cert="$PKI/server.crt" api.tls_key="$PKI/server.key"
start_agent
assert_contains "the agent logs that its API is on TLS" "tls=on" \
  "$(grep -m1 'event=listening' "$AGENT_LOG")"
AGENT_URL="https://127.0.0.1:$AGENT_PORT"

post_sales "$TOKEN_T1" "$(sale_json sale_id='"T1-tls-1"')" --cacert "$PKI/ca.crt"
assert_eq "sale over HTTPS: status [$HTTP_BODY]" 201 "$HTTP_STATUS"
assert_eq "sale over HTTPS: seq" 1 "$(json_get "$HTTP_BODY" "$.seq")"
assert_eq "the sale is in the journal" 1 "$(journal_count)"
post_sales "" "$(sale_json sale_id='"T1-tls-2"')" --cacert "$PKI/ca.crt"
assert_eq "sale over HTTPS without a token: status" 401 "$HTTP_STATUS"
http GET /status.json --cacert "$PKI/ca.crt"
assert_eq "status page over HTTPS: status" 200 "$HTTP_STATUS"

# Plain HTTP on the TLS port: no HTTP answer, nothing journaled.
rc=0
out="$(curl -sS --max-time 10 -o /dev/null -w '%{http_code}' -X POST \
  -H "Authorization: Bearer $TOKEN_T1" -H 'Content-Type: application/json' \
  --data-binary "$(sale_json sale_id='"T1-plain-1"')" "http://127.0.0.1:$AGENT_PORT/v1/sales" \
  2>"$T/plain.err")" || rc=$?
assert_gt "plain HTTP to the TLS port fails (curl exit status)" 0 "$rc"
assert_eq "plain HTTP to the TLS port: no HTTP status" 000 "${out:-000}"
assert_eq "nothing journaled from plain HTTP" 1 "$(journal_count)"
stop_agent

# Only one of the two keys: refused, naming the missing one.
write_config "$T/half.conf" api.tls_cert="$PKI/server.crt"
rc=0
"$AGENT_BIN" --check-config --config "$T/half.conf" >/dev/null 2>"$T/half.err" || rc=$?
assert_gt "--check-config with tls_cert and no tls_key: exit status" 0 "$rc"
assert_contains "the error names the missing key" "[api] tls_key is empty" "$(cat "$T/half.err")"
