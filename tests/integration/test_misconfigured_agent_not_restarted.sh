#!/usr/bin/env bash
# A misconfigured or unprovisioned agent fails well at boot (issue 11, item
# 2): it exits with EX_CONFIG (78), which the unit lists in
# RestartPreventExitStatus= (no restart every 5 s, forever, and a journal
# line each time), logs the error once, and tells systemd why (STATUS=, what
# `systemctl status pos-agent` shows). A failure a restart may mend (the port
# taken) still exits 1 and is restarted.
#
# The agent runs as systemd runs it: NOTIFY_SOCKET names a socket that
# tests/tools/pos-notify-listen reads, as systemd would.
source "$(dirname "$0")/lib.sh"

NOTIFY_BIN="$POS_BUILD_DIR/tests/tools/pos-notify-listen"
[[ -x "$NOTIFY_BIN" ]] || fail "$NOTIFY_BIN not built"
emulated NOTIFY_BIN
EX_CONFIG=78
UNIT="$POS_SOURCE_DIR/firmware-config/systemd/pos-agent.service"

# boot NAME CONFIG [ARGS...]: runs pos-agent --config CONFIG as the unit
# would; sets BOOT_RC, BOOT_ERR (its stderr) and BOOT_NOTIFY (what systemd
# was told, one message a line).
boot() {
  local name="$1" config="$2" sock="$T/n.$1.sock" listener
  shift 2
  "$NOTIFY_BIN" "$sock" >"$T/notify.$name" 2>"$T/notify.$name.err" &
  listener=$!
  for _ in $(seq 1 200); do
    [[ -S "$sock" ]] && break
    sleep 0.05
  done
  [[ -S "$sock" ]] || fail "pos-notify-listen bound $sock: $(cat "$T/notify.$name.err")"
  BOOT_RC=0
  NOTIFY_SOCKET="$sock" timeout 30 "$AGENT_BIN" --config "$config" "$@" >/dev/null \
    2>"$T/boot.$name.err" || BOOT_RC=$?
  # Datagrams sent before the exit are queued on the socket: let it read them.
  sleep 0.2
  kill -TERM "$listener"
  wait "$listener" || true
  BOOT_ERR="$(cat "$T/boot.$name.err")"
  BOOT_NOTIFY="$(cat "$T/notify.$name")"
}

# expect_config_failure NAME WHAT: the last boot failed on its configuration
# or provisioning, WHAT (a fixed string) said once on stderr and in STATUS=.
expect_config_failure() {
  local name="$1" what="$2" said
  assert_eq "$name: exit status EX_CONFIG (stderr: $BOOT_ERR)" "$EX_CONFIG" "$BOOT_RC"
  said="$(grep -c -F -- "$what" "$T/boot.$name.err" || true)"
  assert_eq "$name: the error is logged once (stderr: $BOOT_ERR)" 1 "$said"
  assert_match "$name: STATUS= says it is configuration (told: $BOOT_NOTIFY)" \
    '^STATUS=not started, configuration' "$BOOT_NOTIFY"
  assert_contains "$name: STATUS= says why" "$what" "$BOOT_NOTIFY"
  [[ "$BOOT_NOTIFY" != *READY=1* ]] || fail "$name: READY=1 sent by an agent that did not start"
}

write_tokens
mkdir -p "$T/bad"

# ---- the unit does not restart on it ---------------------------------------------
prevent="$(sed -n 's/^RestartPreventExitStatus=//p' "$UNIT")"
assert_contains "pos-agent.service RestartPreventExitStatus=" " $EX_CONFIG " " $prevent "
assert_eq "pos-agent.service Restart=" on-failure "$(sed -n 's/^Restart=//p' "$UNIT")"

# ---- configuration errors ---------------------------------------------------------
write_config "$T/bad/unknown.conf" agent.colour=blue
boot unknown "$T/bad/unknown.conf"
expect_config_failure unknown "unknown key colour in [agent]"
rc=0
"$AGENT_BIN" --check-config --config "$T/bad/unknown.conf" >/dev/null 2>&1 || rc=$?
assert_eq "--check-config on it: EX_CONFIG too" "$EX_CONFIG" "$rc"

boot missing "$T/bad/no-such.conf"
expect_config_failure missing "$T/bad/no-such.conf: cannot read the config file"

# Provisioning's drop-in, at fault: named.
write_config "$T/bad/dropin.conf" uplink.url=https://127.0.0.1:1
mkdir -p "$T/bad/dropin.conf.d"
printf '[agent]\ndevice_id =\n' >"$T/bad/dropin.conf.d/50-provisioning.conf"
boot dropin "$T/bad/dropin.conf"
expect_config_failure dropin "dropin.conf.d/50-provisioning.conf:2: [agent] device_id is empty"

# ---- provisioning errors: found when starting -------------------------------------
write_config "$T/bad/notokens.conf" api.terminal_tokens="$T/bad/terminals" \
  journal.path="$T/j-notokens.db"
boot notokens "$T/bad/notokens.conf"
expect_config_failure notokens "terminal tokens $T/bad/terminals cannot be read"

printf '# nothing provisioned yet\n' >"$T/bad/terminals"
boot emptytokens "$T/bad/notokens.conf"
expect_config_failure emptytokens "terminal tokens $T/bad/terminals has no tokens"

write_config "$T/bad/tls.conf" api.tls_cert="$T/bad/api.crt" api.tls_key="$T/bad/api.key" \
  journal.path="$T/j-tls.db"
boot tls "$T/bad/tls.conf"
expect_config_failure tls "$T/bad/api.crt"

# ---- a failure a restart may mend is restarted: exit 1 -------------------------------
write_config
start_agent
write_config "$T/bad/taken.conf" api.port="$AGENT_PORT" journal.path="$T/j-taken.db"
boot taken "$T/bad/taken.conf"
assert_eq "port taken: exit status 1, restarted (stderr: $BOOT_ERR)" 1 "$BOOT_RC"
assert_match "port taken: STATUS= says it restarts" '^STATUS=not started: .*\(restarting\)' \
  "$BOOT_NOTIFY"
stop_agent

log "ok"
