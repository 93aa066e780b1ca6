#!/usr/bin/env bash
# Issue 9: the manager's password is kept as a salted PBKDF2-HMAC-SHA256
# hash, never in clear. `pos-agent --hash-password` reads it on stdin and
# prints the line for [api] manager_password_file; OpenSSL, an independent
# implementation, must derive the same hash from the line's salt and count.
# The agent accepts the right password and refuses a wrong one against
# that line; a file from before hashes (the password itself) still works
# and is logged once as password_plain_text; a line that looks like a hash
# but is not one is a 503 saying how to make it again. /actions/push is
# answered 409 (the uplink is off) once the password passed, 401 otherwise.
source "$(dirname "$0")/lib.sh"

PASSWORD='Pizza forno 42!'
PASSWORD_FILE="$T/manager-password"

# ---- the helper ---------------------------------------------------------------
line="$(printf '%s\n' "$PASSWORD" | "$AGENT_BIN" --hash-password)" ||
  fail "pos-agent --hash-password exits 0"
assert_match "the password line's form" '^pbkdf2-sha256\$[0-9]+\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+$' "$line"
[[ "$line" != *"$PASSWORD"* ]] || fail "the line does not hold the password" "no clear text" "$line"
IFS='$' read -r _ iterations salt64 hash64 <<<"$line"
assert_gt "PBKDF2 iterations" 9999 "$iterations"
expected="$(openssl kdf -keylen 32 -kdfopt digest:SHA256 -kdfopt "pass:$PASSWORD" \
  -kdfopt "hexsalt:$(printf '%s' "$salt64" | base64 -d | od -An -tx1 | tr -d ' \n')" \
  -kdfopt "iter:$iterations" PBKDF2 | tr -d ':\n' | tr 'A-F' 'a-f')"
actual="$(printf '%s' "$hash64" | base64 -d | od -An -tx1 | tr -d ' \n')"
assert_eq "the hash is PBKDF2-HMAC-SHA256 of the password (openssl kdf)" "$expected" "$actual"
second="$(printf '%s\n' "$PASSWORD" | "$AGENT_BIN" --hash-password)"
[[ "$second" != "$line" ]] || fail "each line has its own salt" "two different lines" "$line twice"

rc=0
: | "$AGENT_BIN" --hash-password >"$T/empty.out" 2>"$T/empty.err" || rc=$?
[[ $rc -ne 0 ]] || fail "--hash-password without a password fails" "non-zero" "$rc"
assert_contains "--hash-password without a password says how" "standard input" "$(cat "$T/empty.err")"

# ---- the agent against the hashed line ----------------------------------------
printf '%s\n' "$line" >"$PASSWORD_FILE"
write_tokens
write_config api.manager_password_file="$PASSWORD_FILE"
start_agent

push_as() { http POST /actions/push -u "manager:$1"; }

push_as "$PASSWORD"
assert_eq "the right password against the hash: past the check ($HTTP_BODY)" 409 "$HTTP_STATUS"
assert_contains "409 because the uplink is off" "uplink is off" "$HTTP_BODY"
push_as "$PASSWORD"
assert_eq "the right password again (remembered)" 409 "$HTTP_STATUS"
push_as "pizza forno 42!"
assert_eq "a wrong password against the hash" 401 "$HTTP_STATUS"
# Guessing is paced: each hash check costs the loop that answers the tills.
push_as "another guess"
assert_eq "a second guess within a second" 429 "$HTTP_STATUS"
assert_eq "Retry-After on the paced guess" 1 "$(header Retry-After)"
sleep 1.1
push_as "$line"
assert_eq "the hash line itself is not the password" 401 "$HTTP_STATUS"
sleep 1.1
http POST /actions/push
assert_eq "no password" 401 "$HTTP_STATUS"
assert_contains "a 401 challenges HTTP clients" "Basic" "$(header WWW-Authenticate)"
sleep 1.1
http POST /actions/push -u manager:wrong -H 'X-Status-Page: 1'
assert_eq "the page's wrong password" 401 "$HTTP_STATUS"
assert_eq "no challenge to the page (the browser's login box would cover it)" "" \
  "$(header WWW-Authenticate)"

# ---- a file from before hashes -------------------------------------------------
printf '%s\n' "$PASSWORD" >"$PASSWORD_FILE"
push_as "$PASSWORD"
assert_eq "a plain-text password file still works ($HTTP_BODY)" 409 "$HTTP_STATUS"
push_as "wrong"
assert_eq "a plain-text password file refuses a wrong password" 401 "$HTTP_STATUS"
push_as "$PASSWORD"
assert_eq "password_plain_text is logged once" 1 "$(grep -c 'event=password_plain_text' "$AGENT_LOG")"
assert_contains "the log says how to convert" "pos-agent --hash-password" \
  "$(grep 'event=password_plain_text' "$AGENT_LOG")"

# ---- a damaged line ---------------------------------------------------------------
sleep 1.1 # past the pause after the page's wrong guess above
printf 'pbkdf2-sha256$100000$not base64!$x\n' >"$PASSWORD_FILE"
push_as "$PASSWORD"
assert_eq "a damaged hash line" 503 "$HTTP_STATUS"
assert_contains "503 says how to make it again" "pos-agent --hash-password" "$HTTP_BODY"
