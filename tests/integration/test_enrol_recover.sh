#!/usr/bin/env bash
# A renewal of the device certificate stopped half way (power cut, kill -9)
# is finished or undone when the agent starts, before its uplink reads the
# files (agent/enrol/enrol_install.c): a committed key with its staged
# certificate is completed, a key staged alone is thrown away, and a live
# pair that cannot work is reported (event=identity_unusable) while the
# agent goes on taking sales.
source "$(dirname "$0")/lib.sh"

command -v openssl >/dev/null || fail "openssl is required"

for pair in old new; do
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$T/$pair.key" -out "$T/$pair.crt" -days 2 \
    -subj /CN=urn:pos:store:S001:device:D1 2>/dev/null
done
CERT="$T/uplink.cert"
KEY="$T/uplink.key"

# live_pair: "old" or "new" when uplink.cert and uplink.key are that pair.
live_pair() {
  local pair
  for pair in old new; do
    if cmp -s "$CERT" "$T/$pair.crt" && cmp -s "$KEY" "$T/$pair.key"; then
      echo "$pair"
      return
    fi
  done
  echo "mixed"
}

write_tokens
# The uplink points at a port nobody listens on: only the files matter here.
write_config uplink.url=https://127.0.0.1:9 uplink.cert="$CERT" uplink.key="$KEY" \
  uplink.ca="$T/old.crt" uplink.interval=1h

# --- stopped after the key's rename: finished --------------------------------------
cp "$T/new.key" "$KEY"
cp "$T/old.crt" "$CERT"
cp "$T/new.crt" "$CERT.new"
assert_eq "the live pair before the start" mixed "$(live_pair)"
start_agent
assert_contains "the agent finishes the install" "event=install_completed" "$(cat "$AGENT_LOG")"
assert_eq "the live pair after the start" new "$(live_pair)"
[[ ! -e "$CERT.new" ]] || fail "the staged certificate is gone" "no $CERT.new" "it is there"
stop_agent

# --- stopped while staging: undone ---------------------------------------------------
cp "$T/old.key" "$KEY"
cp "$T/old.crt" "$CERT"
cp "$T/new.key" "$KEY.new"
printf 'half a key' >"$KEY.new.tmp.4242"
start_agent
assert_contains "the agent undoes the install" "event=install_rolled_back" "$(cat "$AGENT_LOG")"
assert_eq "the live pair after the start" old "$(live_pair)"
[[ ! -e "$KEY.new" && ! -e "$KEY.new.tmp.4242" ]] ||
  fail "the staged and temporary keys are gone" "neither" "$(ls "$T")"
stop_agent

# --- a pair that cannot work: said, and sales still taken ----------------------------
cp "$T/new.key" "$KEY"
cp "$T/old.crt" "$CERT"
start_agent
assert_contains "the agent says its pair cannot work" "event=identity_unusable" "$(cat "$AGENT_LOG")"
assert_contains "and what to do" "new enrolment token" "$(cat "$AGENT_LOG")"
post_sales "$TOKEN_T1" "$(sale_json)"
expect_status "a sale with an unusable device certificate" 201
stop_agent
log "ok"
