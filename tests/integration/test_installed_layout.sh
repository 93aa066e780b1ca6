#!/usr/bin/env bash
# test_installed_layout.sh - the firmware's install tree is usable as a
# root-file-system overlay: 'cmake --install --component agent' into a
# DESTDIR puts every file where the systemd unit, tmpfiles.d and sysusers.d
# expect it, the installed pos-agent accepts the installed configuration
# (the example and every profile pass --check-config), and, run with the
# installed config (its absolute paths moved under the overlay), it starts,
# becomes ready, takes a sale and stops cleanly.
source "$(dirname "$0")/lib.sh"

ROOT="$T/root"
cache="$POS_BUILD_DIR/CMakeCache.txt"
prefix="$(sed -n 's/^CMAKE_INSTALL_PREFIX:[A-Z]*=//p' "$cache")"
[[ -n "$prefix" ]] || fail "CMAKE_INSTALL_PREFIX in $cache"
grep -q '^POS_DEVICE_PROFILE:' "$cache" ||
  fail "the build includes firmware-config/packaging.cmake (POS_DEVICE_PROFILE in $cache)"
unitdir="$(sed -n 's/^POS_SYSTEMD_UNITDIR:[A-Z]*=//p' "$cache")"
tmpfilesdir="$(sed -n 's/^POS_TMPFILESDIR:[A-Z]*=//p' "$cache")"
sysusersdir="$(sed -n 's/^POS_SYSUSERSDIR:[A-Z]*=//p' "$cache")"
under_prefix() { [[ "$1" == /* ]] && echo "$1" || echo "$prefix/$1"; }
unit="$ROOT$(under_prefix "$unitdir")/pos-agent.service"
firstboot_unit="$ROOT$(under_prefix "$unitdir")/pos-agent-firstboot.service"
tmpfiles="$ROOT$(under_prefix "$tmpfilesdir")/pos-agent.conf"
sysusers="$ROOT$(under_prefix "$sysusersdir")/pos-agent.conf"

# ---- 1. install into the overlay ------------------------------------------

log "cmake --install --component agent into $ROOT (prefix $prefix)"
DESTDIR="$ROOT" cmake --install "$POS_BUILD_DIR" --component agent >"$T/install.log" 2>&1 ||
  fail "cmake --install --component agent: $(tail -n 5 "$T/install.log")"

installed_bin="$ROOT$prefix/bin/pos-agent"
[[ -x "$installed_bin" ]] ||
  fail "pos-agent is in the install component 'agent' (install(TARGETS pos-agent ... COMPONENT agent))" \
    "$installed_bin" "$(cd "$ROOT" && find . -type f | sort | tr '\n' ' ')"
for f in "$ROOT/etc/pos-agent/agent.conf" "$ROOT$prefix/share/pos-agent/agent.conf.example" \
  "$ROOT$prefix/share/pos-agent/terminals.example" "$ROOT$prefix/share/pos-agent/recipes.csv" \
  "$ROOT$prefix/share/pos-agent/profiles/counter-terminal.conf" \
  "$ROOT$prefix/share/pos-agent/profiles/store-hub.conf" "$unit" "$firstboot_unit" "$tmpfiles" \
  "$sysusers"; do
  [[ -f "$f" ]] || fail "installed file ${f#"$ROOT"}" "present" "missing"
done
# Nothing but the device's files: no test tools, no collector, no /var.
unexpected="$(cd "$ROOT" && find . -type f ! -path "./etc/pos-agent/*" \
  ! -path ".$prefix/bin/pos-agent" ! -path ".$prefix/share/pos-agent/*" \
  ! -path ".${unit#"$ROOT"}" ! -path ".${firstboot_unit#"$ROOT"}" ! -path ".${tmpfiles#"$ROOT"}" \
  ! -path ".${sysusers#"$ROOT"}" | sort)"
assert_eq "files outside the device's layout" "" "$unexpected"
assert_eq "mode of /etc/pos-agent/agent.conf (readable by group pos-agent only)" 640 \
  "$(stat -c %a "$ROOT/etc/pos-agent/agent.conf")"
# The secrets file is provisioned per device, never in an image.
[[ ! -e "$ROOT/etc/pos-agent/terminals" ]] || fail "no /etc/pos-agent/terminals in the install tree"
[[ -d "$ROOT/etc/pos-agent/agent.conf.d" ]] || fail "the drop-in directory /etc/pos-agent/agent.conf.d"

# The installed binary, through the emulator for a cross build.
AGENT_BIN="$installed_bin"
if [[ -n "${POS_EMULATOR:-}" ]]; then
  printf '#!/usr/bin/env bash\nexec %s %q "$@"\n' "$POS_EMULATOR" "$installed_bin" \
    >"$T/pos-agent.installed"
  chmod +x "$T/pos-agent.installed"
  AGENT_BIN="$T/pos-agent.installed"
fi

# ---- 2. the systemd unit agrees with the layout ------------------------------

unit_value() { sed -n "s/^$1=//p" "$unit"; }
exec_start="$(unit_value ExecStart)"
assert_eq "unit ExecStart" "$prefix/bin/pos-agent --config /etc/pos-agent/agent.conf" "$exec_start"
assert_eq "unit Type" notify "$(unit_value Type)"
assert_match "unit WatchdogSec" '^[0-9]+s?$' "$(unit_value WatchdogSec)"
assert_eq "unit User" pos-agent "$(unit_value User)"
assert_eq "unit ProtectSystem" strict "$(unit_value ProtectSystem)"
assert_eq "unit NoNewPrivileges" yes "$(unit_value NoNewPrivileges)"
read_write="$(unit_value ReadWritePaths)"

"$AGENT_BIN" --check-config --config "$ROOT/etc/pos-agent/agent.conf" >"$T/effective.conf" ||
  fail "installed pos-agent --check-config on the installed /etc/pos-agent/agent.conf"
journal_path="$(sed -n 's/^journal\.path = //p' "$T/effective.conf")"
journal_dir="$(dirname "$journal_path")"
assert_contains "ReadWritePaths holds the journal's directory" " $journal_dir " " $read_write "
# Nothing writable that the agent does not use (an unread spool only fills the flash).
assert_eq "ReadWritePaths: the journal's directory alone" "$journal_dir" "$read_write"
var_dirs="$(awk '$1 == "d" && $2 ~ /^\/var\// { print $2 }' "$tmpfiles" | tr '\n' ' ')"
assert_eq "tmpfiles.d directories under /var: the journal's alone" "$journal_dir " "$var_dirs"
for dir in $read_write; do
  grep -Eq "^d[[:space:]]+${dir#-}[[:space:]]" "$tmpfiles" ||
    fail "tmpfiles.d creates every ReadWritePaths directory" "a 'd ${dir#-}' line" "$(cat "$tmpfiles")"
done
grep -Eq '^u[[:space:]]+pos-agent[[:space:]]' "$sysusers" || fail "sysusers.d creates user pos-agent"

if command -v systemd-analyze >/dev/null; then
  # Checks every directive. It wants ExecStart's program on this machine:
  # a copy of the unit names the overlay's.
  mkdir -p "$T/verify"
  for u in "$unit" "$firstboot_unit"; do
    sed "s|^ExecStart=$prefix/bin/pos-agent|ExecStart=$installed_bin|" "$u" \
      >"$T/verify/$(basename "$u")"
  done
  systemd-analyze verify "$T/verify/pos-agent.service" "$T/verify/pos-agent-firstboot.service" \
    >"$T/verify.log" 2>&1 ||
    fail "systemd-analyze verify pos-agent.service: $(cat "$T/verify.log")"
  log "systemd-analyze verify: ok"
fi

# ---- 3. every shipped configuration passes --check-config ---------------------

for conf in "$ROOT$prefix/share/pos-agent/agent.conf.example" \
  "$ROOT$prefix/share/pos-agent/profiles/"*.conf "$ROOT/etc/pos-agent/agent.conf"; do
  rc=0
  "$AGENT_BIN" --check-config --config "$conf" >"$T/check.out" 2>"$T/check.err" || rc=$?
  assert_eq "pos-agent --check-config ${conf#"$ROOT"} ($(cat "$T/check.err"))" 0 "$rc"
done

# ---- 4. run it from the overlay ----------------------------------------------

# What provisioning and tmpfiles.d do on the device: the terminals file,
# the journal's directory.
{
  cat "$ROOT$prefix/share/pos-agent/terminals.example"
  echo "T1 $TOKEN_T1"
} >"$ROOT/etc/pos-agent/terminals"
chmod 0640 "$ROOT/etc/pos-agent/terminals"
mkdir -p "$ROOT$journal_dir"
chmod 0700 "$ROOT$journal_dir"

# The installed config with its absolute paths moved under the overlay,
# and any free loopback port (the test may run beside a real agent).
JOURNAL="$ROOT$journal_path"
awk -v root="$ROOT" '
  /^[[:space:]]*\[/ { section = $0; gsub(/[][[:space:]]/, "", section) }
  {
    key = $0; sub(/[[:space:]]*=.*/, "", key); gsub(/^[[:space:]]+/, "", key)
    if (section == "journal" && key == "path") { sub(/=[[:space:]]*/, "= " root) }
    else if (section == "api" && key == "terminal_tokens") { sub(/=[[:space:]]*/, "= " root) }
    else if (section == "api" && key == "port") { $0 = "port = 0" }
    else if (section == "api" && key == "listen_host") { $0 = "listen_host = 127.0.0.1" }
    print
  }' "$ROOT/etc/pos-agent/agent.conf" >"$CONFIG"
"$AGENT_BIN" --check-config --config "$CONFIG" >"$T/effective.run" ||
  fail "--check-config on the adapted config"
assert_contains "adapted journal.path" "journal.path = $JOURNAL" "$(cat "$T/effective.run")"

start_agent "$CONFIG"
log "installed agent ready on port $AGENT_PORT"
status_json
assert_eq "status.json journal_writable" 1 "$(json_get "$STATUS_JSON" '$.journal_writable')"
[[ -f "$JOURNAL" ]] || fail "the journal is where the installed config puts it" "$JOURNAL" "missing"
post_sales "$TOKEN_T1" "$(sale_json sale_id='"T1-LAYOUT-1"')"
expect_status "POST /v1/sales to the installed agent" 201
assert_eq "journal rows" 1 "$(journal_count)"
stop_agent
