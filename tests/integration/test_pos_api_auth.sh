#!/usr/bin/env bash
# Issue 7 item 8: the POS API judges the terminal token on the request's
# headers, before it reads the body. Hosts without a token posting large
# bodies (max_body is 4M) are answered 401 before their body is taken in
# (curl stops uploading when the answer arrives), and the agent's peak
# memory (VmHWM) does not grow by what they sent. Other endpoints take no
# large or chunked body from anyone. A terminal with its token is served.
source "$(dirname "$0")/lib.sh"

write_tokens
write_config api.max_body=4M
start_agent

vm_hwm_kib() { sed -n 's/^VmHWM:[[:space:]]*\([0-9]*\) kB/\1/p' "/proc/$AGENT_PID/status"; }

BODY_BYTES=$((4 * 1024 * 1024 - 64))
{ printf '['; head -c $((BODY_BYTES - 2)) /dev/zero | tr '\0' ' '; printf ']'; } >"$T/big.json"
CLIENTS=32

before="$(vm_hwm_kib)"
pids=()
for ((i = 0; i < CLIENTS; i++)); do
  # --limit-rate: the whole body would take two seconds or more to send, so
  # an answer that came after it would show in size_upload.
  curl -sS -o "$T/c$i.body" -w '%{http_code} %{size_upload}\n' --max-time 60 -H 'Expect:' \
    -H 'Content-Type: application/json' --limit-rate 2M --data-binary @"$T/big.json" \
    "$AGENT_URL/v1/sales" >"$T/c$i.out" 2>"$T/c$i.err" &
  pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid" || true; done
after="$(vm_hwm_kib)"
log "agent VmHWM before ${before} KiB, after $CLIENTS unauthenticated 4 MiB posts ${after} KiB"
for ((i = 0; i < CLIENTS; i++)); do
  read -r status uploaded <"$T/c$i.out" || fail "client $i: no curl output: $(cat "$T/c$i.err")"
  assert_eq "client $i without a token: status" 401 "$status"
  [[ "$uploaded" -lt "$BODY_BYTES" ]] ||
    fail "client $i: answered before its body was sent" "fewer than $BODY_BYTES bytes uploaded" "$uploaded"
  assert_contains "client $i: the 401 says what to send" "Authorization: Bearer" "$(cat "$T/c$i.body")"
done
# The bodies would be 128 MiB; the headers are a few KiB.
((after - before < 16 * 1024)) ||
  fail "agent peak memory growth from unauthenticated bodies" "under 16384 KiB" "$((after - before)) KiB"
grep -q 'event=unauthorized .*body=not_read' "$AGENT_LOG" ||
  fail "the agent logs the refusals" "event=unauthorized ... body=not_read" "$(tail -n 3 "$AGENT_LOG")"

# A wrong token, chunked: refused on the headers as well.
http POST /v1/sales -H 'Content-Type: application/json' -H 'Authorization: Bearer not-a-token-at-all' \
  -H 'Transfer-Encoding: chunked' --data-binary @"$T/big.json"
assert_eq "chunked body with a wrong token: status" 401 "$HTTP_STATUS"
assert_eq "401 challenge" 'Bearer realm="pos-agent"' "$(header WWW-Authenticate)"

# Endpoints that take no body refuse a large one without reading it.
http POST /actions/push --data-binary @"$T/big.json"
assert_eq "4 MiB body to /actions/push: status" 413 "$HTTP_STATUS"
assert_contains "413 says the endpoint takes no body" "takes no request body" "$HTTP_BODY"

# The right token still gets its sale journaled.
post_sales "$TOKEN_T1" "$(sale_json sale_id="\"T1-auth-1\"")"
assert_eq "sale with T1's token: status [$HTTP_BODY]" 201 "$HTTP_STATUS"
http POST /v1/sales -H "Authorization: Bearer $TOKEN_T1" -H 'Content-Type: text/plain' \
  --data-binary "$(sale_json sale_id='"T1-auth-2"')"
assert_eq "sale sent as text/plain: status" 415 "$HTTP_STATUS"
stop_agent
