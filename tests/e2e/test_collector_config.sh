#!/usr/bin/env bash
# pos-collector's configuration: the documented example
# (collector/collector.conf.example) is exactly what the key table prints,
# a good file passes --check-config, and mistakes fail naming file, line and
# key, both when checked and when starting; a missing certificate file stops
# the start with a message naming it.
source "$(dirname "$0")/lib.sh"

assert_eq "collector.conf.example is what --print-example-config prints (regenerate it)" "" \
  "$(diff <("$COLLECTOR_BIN" --print-example-config) "$POS_SOURCE_DIR/collector/collector.conf.example")"

bash "$POS_SOURCE_DIR/tests/tools/pki.sh" init "$PKI"
good="$T/collector.conf"
cat >"$good" <<CONF
[collector]
instance_id = config-test
[server]
listen_host = 127.0.0.1
port = 0
cert = $PKI/server.crt
key = $PKI/server.key
ca = $PKI/ca.crt
crl = $PKI/crl.pem
max_body = 8M
[kafka]
brokers =
checkpoint_interval = 5s
CONF
out="$("$COLLECTOR_BIN" --check-config --config "$good")" || fail "--check-config of a good file exits 0"
assert_contains "effective config" "server.max_body = 8M" "$out"
assert_contains "effective config" "kafka.checkpoint_interval = 5s" "$out"

# expect_bad WHAT LINE KEY TEXT: TEXT appended as line LINE of the good file fails.
expect_bad() {
  local what="$1" line="$2" key="$3" text="$4" rc=0 err
  { cat "$good"; printf '%s\n' "$text"; } >"$T/bad.conf"
  err="$("$COLLECTOR_BIN" --check-config --config "$T/bad.conf" 2>&1 >/dev/null)" || rc=$?
  assert_eq "$what: --check-config exit status" 1 "$rc"
  assert_contains "$what: names file and line" "$T/bad.conf:$line:" "$err"
  assert_contains "$what: names the key" "$key" "$err"
  rc=0
  err="$(timeout 10 "$COLLECTOR_BIN" --config "$T/bad.conf" 2>&1 >/dev/null)" || rc=$?
  assert_eq "$what: starting exits 1" 1 "$rc"
  assert_contains "$what: starting names file and line" "$T/bad.conf:$line:" "$err"
}
n=$(( $(wc -l <"$good") + 1 ))
expect_bad "unknown key" "$n" "produce_timeot" "produce_timeot = 5s"
expect_bad "duration without unit" "$n" "produce_timeout" "produce_timeout = 5"
expect_bad "size with a bad unit" "$((n + 1))" "max_body" "[server]
max_body = 8T"
expect_bad "port out of range" "$((n + 1))" "port" "[server]
port = 70000"

# An instance_id whose keys could be another instance's ("a/1" and "a").
sed "s|^instance_id = .*|instance_id = config-test/1|" "$good" >"$T/badid.conf"
rc=0
err="$("$COLLECTOR_BIN" --check-config --config "$T/badid.conf" 2>&1 >/dev/null)" || rc=$?
assert_eq "instance_id with a '/': --check-config exit status" 1 "$rc"
assert_contains "instance_id with a '/': says why and what to use" \
  "[collector] instance_id \"config-test/1\" holds a '/', which would make its keys in pos.ingest-state.v1 look like another instance's: use letters, digits, '.', '_' or '-'" "$err"

# A certificate file that is not there: the start fails and says which.
sed "s|^cert = .*|cert = $T/missing.crt|" "$good" >"$T/nocert.conf"
rc=0
err="$(timeout 20 "$COLLECTOR_BIN" --config "$T/nocert.conf" 2>&1 >/dev/null)" || rc=$?
assert_eq "missing certificate: exit status" 1 "$rc"
assert_contains "missing certificate: names the file" "$T/missing.crt" "$err"
log "collector configuration errors name file, line and key"
