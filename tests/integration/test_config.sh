#!/usr/bin/env bash
# pos-agent --check-config: a good file passes and prints the effective
# configuration; unknown keys and bad values fail naming file, line and key;
# the documented example (firmware-config/agent.conf.example) passes and
# lists every key of the agent's config table.
source "$(dirname "$0")/lib.sh"

write_tokens
mkdir -p "$T/cfg"

# check_config FILE: runs --check-config; sets CHECK_RC, CHECK_OUT, CHECK_ERR.
check_config() {
  CHECK_RC=0
  "$AGENT_BIN" --check-config --config "$1" >"$T/check.out" 2>"$T/check.err" || CHECK_RC=$?
  CHECK_OUT="$(cat "$T/check.out")"
  CHECK_ERR="$(cat "$T/check.err")"
}

# good_config FILE [EXTRA_LINE [AFTER_LINE]]: the good file, with EXTRA_LINE
# inserted after line AFTER_LINE (default: at the end).
good_config() {
  cat >"$1" <<EOF
[agent]
store_id = S001
device_id = D1
log_level = info

[journal]
path = $T/journal.db
max_size = 0
group_commit_max = 1024

[api]
listen_host = 127.0.0.1
port = 0
terminal_tokens = $TOKENS
max_body = 4M
max_sales_per_request = 1000
EOF
  if [[ $# -ge 2 ]]; then
    if [[ $# -ge 3 ]]; then
      sed -i "${3}a $2" "$1"
    else
      printf '%s\n' "$2" >>"$1"
    fi
  fi
}

# expect_config_error WHAT FILE LINE KEY: --check-config fails with
# "FILE:LINE: ..." naming KEY on stderr, and so does starting the agent.
expect_config_error() {
  local what="$1" file="$2" line="$3" key="$4"
  check_config "$file"
  assert_eq "$what: --check-config exit status, EX_CONFIG (stderr: $CHECK_ERR)" 78 "$CHECK_RC"
  assert_contains "$what: error names file and line" "$file:$line:" "$CHECK_ERR"
  assert_contains "$what: error names the key" "$key" "$CHECK_ERR"
  local rc=0
  timeout 10 "$AGENT_BIN" --config "$file" >/dev/null 2>"$T/run.err" || rc=$?
  assert_eq "$what: pos-agent --config exit status, EX_CONFIG ($(cat "$T/run.err"))" 78 "$rc"
  assert_contains "$what: pos-agent --config error names file and line" "$file:$line:" "$(cat "$T/run.err")"
}

# --- a good file ---------------------------------------------------------------------
good_config "$T/cfg/good.conf"
check_config "$T/cfg/good.conf"
assert_eq "--check-config on a good file: exit status (stderr: $CHECK_ERR)" 0 "$CHECK_RC"
assert_match "effective config shows store_id" '(^|[[:space:].])store_id *= *S001' "$CHECK_OUT"
assert_match "effective config shows the journal path" "path *= *$T/journal.db" "$CHECK_OUT"
assert_match "effective config shows defaults of keys not in the file" 'retention_days *= *90' "$CHECK_OUT"
[[ ! -e "$T/journal.db" ]] || fail "--check-config creates no journal" "no $T/journal.db" "it exists"

# --- unknown keys and bad values ------------------------------------------------------------
good_config "$T/cfg/unknown.conf" "colour = blue" 13
expect_config_error "unknown key" "$T/cfg/unknown.conf" 14 colour

# An unknown section: the error is on its header (17) or its first key (18).
good_config "$T/cfg/section.conf"
printf '[uplink2]\ninterval = 15m\n' >>"$T/cfg/section.conf"
check_config "$T/cfg/section.conf"
assert_eq "unknown section: --check-config exit status (stderr: $CHECK_ERR)" 78 "$CHECK_RC"
assert_match "unknown section: error names file and line" "$T/cfg/section.conf:1[78]:" "$CHECK_ERR"
assert_contains "unknown section: error names the section" uplink2 "$CHECK_ERR"

good_config "$T/cfg/port.conf"
sed -i 's/^port = 0$/port = abc/' "$T/cfg/port.conf"
expect_config_error "port = abc" "$T/cfg/port.conf" 13 port

good_config "$T/cfg/range.conf"
sed -i 's/^port = 0$/port = 70000/' "$T/cfg/range.conf"
expect_config_error "port = 70000" "$T/cfg/range.conf" 13 port

good_config "$T/cfg/unit.conf" "idle_timeout = 15"
expect_config_error "idle_timeout without a unit" "$T/cfg/unit.conf" 17 idle_timeout

good_config "$T/cfg/size.conf"
sed -i 's/^max_body = 4M$/max_body = 4 parsecs/' "$T/cfg/size.conf"
expect_config_error "max_body = 4 parsecs" "$T/cfg/size.conf" 15 max_body

good_config "$T/cfg/level.conf"
sed -i 's/^log_level = info$/log_level = chatty/' "$T/cfg/level.conf"
expect_config_error "log_level = chatty" "$T/cfg/level.conf" 4 log_level

good_config "$T/cfg/group.conf"
sed -i 's/^group_commit_max = 1024$/group_commit_max = 0/' "$T/cfg/group.conf"
expect_config_error "group_commit_max = 0" "$T/cfg/group.conf" 9 group_commit_max

# Where a key belongs matters: port is not an [agent] key.
good_config "$T/cfg/place.conf" "port = 8080" 3
expect_config_error "port in [agent]" "$T/cfg/place.conf" 4 port

# [enrol]: a token with nowhere to spend it, and a renewal point that is no fraction.
good_config "$T/cfg/enrol-token.conf"
printf '[uplink]\nurl = https://127.0.0.1:1\n[enrol]\ntoken_file = %s/token\n' "$T" >>"$T/cfg/enrol-token.conf"
expect_config_error "[enrol] token_file without url" "$T/cfg/enrol-token.conf" 20 token_file
assert_contains "[enrol] token_file without url: says to set url" "set url" "$CHECK_ERR"
for bad in 3/2 0 100% abc; do
  good_config "$T/cfg/enrol-renew.conf"
  printf '[enrol]\nrenew_at = %s\n' "$bad" >>"$T/cfg/enrol-renew.conf"
  expect_config_error "[enrol] renew_at = $bad" "$T/cfg/enrol-renew.conf" 18 renew_at
done
for good in 2/3 0.5 75%; do
  good_config "$T/cfg/enrol-renew.conf"
  printf '[enrol]\nrenew_at = %s\n' "$good" >>"$T/cfg/enrol-renew.conf"
  check_config "$T/cfg/enrol-renew.conf"
  assert_eq "[enrol] renew_at = $good: --check-config exit status (stderr: $CHECK_ERR)" 0 "$CHECK_RC"
done
good_config "$T/cfg/enrol-retry.conf"
printf '[enrol]\nretry_floor = 2h\nretry_max = 1h\n' >>"$T/cfg/enrol-retry.conf"
expect_config_error "[enrol] retry_floor above retry_max" "$T/cfg/enrol-retry.conf" 18 retry_floor

# [journal] row_format: a name it does not know, and json beside compact_rows = true
# (the old spelling of compact) say what to write; compact_rows = true with slim is
# not a contradiction (slim rows are compact too).
good_config "$T/cfg/rows.conf" "row_format = thin" 9
expect_config_error "row_format = thin" "$T/cfg/rows.conf" 10 row_format
assert_contains "row_format = thin: names the choices" "json, compact or slim" "$CHECK_ERR"
good_config "$T/cfg/rows.conf" "compact_rows = true" 9
sed -i '10a row_format = json' "$T/cfg/rows.conf"
expect_config_error "compact_rows = true with row_format = json" "$T/cfg/rows.conf" 11 row_format
assert_contains "row_format = json with compact_rows: says what to change" "remove compact_rows" "$CHECK_ERR"
for good in "row_format = slim" "row_format = compact" "compact_rows = true"; do
  good_config "$T/cfg/rows.conf" "$good" 9
  [[ "$good" == compact_rows* ]] || sed -i '10a compact_rows = true' "$T/cfg/rows.conf"
  check_config "$T/cfg/rows.conf"
  assert_eq "[journal] $good (with compact_rows = true): exit status (stderr: $CHECK_ERR)" 0 "$CHECK_RC"
done

# --- a missing file ----------------------------------------------------------------------------
check_config "$T/cfg/missing.conf"
assert_eq "--check-config on a missing file: exit status" 78 "$CHECK_RC"
assert_contains "missing file: error names the file" "$T/cfg/missing.conf" "$CHECK_ERR"
assert_match "missing file: error says why" '[Nn]o such file|not found|cannot (open|read)|does not exist' "$CHECK_ERR"

# --- command line ----------------------------------------------------------------------------------
rc=0
version="$("$AGENT_BIN" --version 2>&1)" || rc=$?
assert_eq "--version exit status" 0 "$rc"
assert_match "--version output" '[0-9]+\.[0-9]+\.[0-9]+' "$version"
rc=0
"$AGENT_BIN" --no-such-option >/dev/null 2>&1 || rc=$?
[[ $rc -ne 0 ]] || fail "an unknown option is an error" "non-zero exit" "$rc"

# --- the documented example ----------------------------------------------------------------------
rc=0
"$AGENT_BIN" --print-example-config >"$T/example.conf" 2>"$T/example.err" || rc=$?
assert_eq "--print-example-config exit status ($(cat "$T/example.err"))" 0 "$rc"

# keys_of FILE: "section.key" for every key line of FILE, commented out
# ("; key = value", "# key = value") or not, sorted and unique.
keys_of() {
  awk '
    /^[ \t]*\[[A-Za-z0-9_.-]+\][ \t]*$/ { gsub(/[][ \t]/, ""); section = $0; next }
    {
      line = $0
      sub(/^[ \t]*[;#][ \t]*/, "", line)
      if (match(line, /^[a-z_][a-z0-9_]*[ \t]*=/)) {
        key = substr(line, 1, RLENGTH - 1); gsub(/[ \t]/, "", key)
        print section "." key
      }
    }' "$1" | sort -u
}
keys_of "$T/example.conf" >"$T/keys.table"
[[ $(wc -l <"$T/keys.table") -ge 11 ]] ||
  fail "--print-example-config lists the keys of the table" ">= 11 keys" "$(tr '\n' ' ' <"$T/keys.table")"
for key in agent.store_id agent.device_id agent.log_level journal.path journal.max_size \
  journal.group_commit_max api.listen_host api.port api.terminal_tokens api.max_body \
  api.max_sales_per_request; do
  grep -qx "$key" "$T/keys.table" || fail "--print-example-config lists $key" "$key" "$(tr '\n' ' ' <"$T/keys.table")"
done

FIRMWARE_EXAMPLE="$POS_SOURCE_DIR/firmware-config/agent.conf.example"
[[ -f "$FIRMWARE_EXAMPLE" ]] || fail "firmware-config/agent.conf.example exists" "a file" "missing"
keys_of "$FIRMWARE_EXAMPLE" >"$T/keys.firmware"
missing="$(comm -23 "$T/keys.table" "$T/keys.firmware" | tr '\n' ' ')"
assert_eq "keys of the table missing from firmware-config/agent.conf.example" "" "$missing"
extra="$(comm -13 "$T/keys.table" "$T/keys.firmware" | tr '\n' ' ')"
assert_eq "keys in firmware-config/agent.conf.example the agent does not know" "" "$extra"

# [posdb]: a POS database to tail needs its mapping, in plain SQL names.
source "$(dirname "$0")/posdb_lib.sh"
posdb_config() { # FILE MONEY SKU: a whole tailer section, good but for MONEY and SKU
  good_config "$1"
  posdb_sections "$1" "$T/vendor.db" "$2" "$3"
}
posdb_config "$T/cfg/posdb-good.conf" minor plu
check_config "$T/cfg/posdb-good.conf"
assert_eq "a whole [posdb] mapping passes (stderr: $CHECK_ERR)" 0 "$CHECK_RC"
posdb_config "$T/cfg/posdb-money.conf" cents plu
expect_config_error "[posdb] money = cents" "$T/cfg/posdb-money.conf" 20 "money"
assert_contains "[posdb] money = cents: says what to give" "give decimal" "$CHECK_ERR"
posdb_config "$T/cfg/posdb-sku.conf" minor "plu; DROP TABLE items"
check_config "$T/cfg/posdb-sku.conf"
assert_eq "[posdb.lines] sku not a column name: EX_CONFIG" 78 "$CHECK_RC"
assert_contains "[posdb.lines] sku not a column name: names it" \
  '[posdb.lines] sku = "plu; DROP TABLE items": is not a plain SQL column name' "$CHECK_ERR"
posdb_config "$T/cfg/posdb-kind.conf" minor plu
sed -i "/^kind = 'sale'$/d" "$T/cfg/posdb-kind.conf"
check_config "$T/cfg/posdb-kind.conf"
assert_eq "[posdb.sales] kind missing: EX_CONFIG" 78 "$CHECK_RC"
assert_contains "[posdb.sales] kind missing: names it" "[posdb.sales] kind is empty: every sale needs it" \
  "$CHECK_ERR"

# Both examples pass --check-config, with their paths pointed at this test's directory.
for example in "$T/example.conf" "$FIRMWARE_EXAMPLE"; do
  # (only [journal]'s path: [posdb] path stays empty, the tailer off)
  awk -v journal="$T/example-journal.db" -v tokens="$TOKENS" '
    /^\[/ { section = $0 }
    section == "[journal]" && /^[;#]*[ \t]*path[ \t]*=/ { print "path = " journal; next }
    /^[;#]*[ \t]*terminal_tokens[ \t]*=/ { print "terminal_tokens = " tokens; next }
    { print }' "$example" >"$T/cfg/example.conf"
  check_config "$T/cfg/example.conf"
  assert_eq "--check-config on $example: exit status (stderr: $CHECK_ERR)" 0 "$CHECK_RC"
done

# And the agent runs on the good file (the check did not lie).
write_config
start_agent
status_json
stop_agent
