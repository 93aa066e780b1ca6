#!/usr/bin/env bash
# Head office's admin API (issue 10, items 1, 3 and 5, collector side):
# resync and push-now commands issued with an admin certificate, kept in
# pos.control.v1 with who issued them, listed, looked up and cancelled (409
# once finished), carried to the store's device in its next ack, finished
# by the device's report in a heartbeat, and still there after a restart
# and a kill -9; the fleet view of a store with a real agent heartbeating;
# a device certificate refused (403, logged).
source "$(dirname "$0")/lib.sh"

make_pki S001 D2 S777 A S777 B
start_broker --partitions 2
write_collector_config
start_collector
pin_collector_port

# admin METHOD PATH [BODY] [CERT]: the admin API; sets HTTP_STATUS and ANSWER.
admin() {
  local cert="${4:-admin}" data=()
  [[ -n "${3:-}" ]] && data=(-H 'Content-Type: application/json' --data-binary "$3")
  HTTP_STATUS="$(curl -sS -o "$T/admin.body" -w '%{http_code}' --max-time 20 -X "$1" \
    --cacert "$PKI/ca.crt" --cert "$PKI/$cert.crt" --key "$PKI/$cert.key" "${data[@]}" \
    "$COLLECTOR_URL$2" 2>"$T/admin.err")" || HTTP_STATUS="${HTTP_STATUS:-000}"
  ANSWER="$(cat "$T/admin.body")"
}

# admin_ok METHOD PATH [BODY] WANT: like admin, failing unless the status is WANT.
admin_ok() {
  local want="${*: -1}"
  admin "${@:1:$#-1}"
  [[ "$HTTP_STATUS" == "$want" ]] || fail "$1 $2 ${3:-}: status" "$want" "$HTTP_STATUS $ANSWER"
}

# heartbeat_as DEVICE TEXT [STORE]: a hand-made pos.v1.Heartbeat (protobuf text) from DEVICE of
# STORE (S001);
# its HeartbeatAck decoded (protobuf text) in ACK.
heartbeat_as() {
  printf '%s\n' "$2" | protoc --encode=pos.v1.Heartbeat -I "$POS_SOURCE_DIR/proto" \
    "$POS_SOURCE_DIR/proto/pos/v1/pos.proto" >"$T/hb.bin" || fail "protoc encodes the heartbeat"
  HTTP_STATUS="$(curl -sS -o "$T/hb.ack" -w '%{http_code}' --max-time 20 --cacert "$PKI/ca.crt" \
    --cert "$PKI/device-${3:-S001}-$1.crt" --key "$PKI/device-${3:-S001}-$1.key" \
    -H 'Content-Type: application/x-protobuf' --data-binary @"$T/hb.bin" \
    "$COLLECTOR_URL/v1/heartbeat")" || true
  assert_eq "heartbeat of $1: status" 200 "$HTTP_STATUS"
  ACK="$(protoc --decode=pos.v1.HeartbeatAck -I "$POS_SOURCE_DIR/proto" \
    "$POS_SOURCE_DIR/proto/pos/v1/pos.proto" <"$T/hb.ack")" || fail "protoc decodes the HeartbeatAck"
}

# ack_states: "id=STATE ..." of the commands in ACK, sorted.
ack_states() {
  awk '/^commands \{/ {id = ""; st = "COMMAND_STATE_UNSPECIFIED"}
    /^  command_id:/ {id = $2; gsub(/"/, "", id)}
    /^  state:/ {st = $2}
    /^\}/ {if (id != "") print id "=" st; id = ""}' <<<"$ACK" | sort | tr '\n' ' ' | sed 's/ $//'
}

# ---- a device certificate is refused, and logged ----------------------------------------------
admin GET /v1/admin/stores "" device-S001-D1
assert_eq "a device certificate on the admin API: status" 403 "$HTTP_STATUS"
assert_contains "the refusal is JSON with an error" '"error"' "$(cat "$T/admin.body")"
grep -q 'event=refused .*path=/v1/admin/stores status=403 reason="not an admin certificate"' \
  "$COLLECTOR_LOG" || fail "the collector logs the refusal" 'reason="not an admin certificate"' \
  "$(grep refused "$COLLECTOR_LOG")"
admin POST /v1/admin/resync '{"store_id": "S001", "from": "2026-01-01"}' device-S001-D1
assert_eq "a device certificate asking a resync: status" 403 "$HTTP_STATUS"

# ---- a store never seen: accepted, with a warning -----------------------------------------------
admin_ok POST /v1/admin/push-now '{"store_id": "S777"}' 201
answer="$ANSWER"
assert_contains "a store never seen: warning" "never seen" "$(json_get "$answer" '$.warnings[0]')"
assert_eq "no target yet" '[]' "$(json_get "$answer" '$.command.target_devices')"
UNTARGETED="$(json_get "$answer" '$.command.command_id')"
# Its first device to get an ack takes it; the store's other device never gets it.
heartbeat_as A 'agent_version: "hand-made"' S777
assert_contains "S777's first device: its ack carries the command" "$UNTARGETED" "$ACK"
heartbeat_as B 'agent_version: "hand-made"' S777
if grep -q "$UNTARGETED" <<<"$ACK"; then
  fail "S777's second device: its ack does not carry the command" "no $UNTARGETED" "$ACK"
fi
heartbeat_as A 'agent_version: "hand-made"' S777
assert_contains "S777's first device: still carried to it" "$UNTARGETED" "$ACK"
admin_ok GET "/v1/admin/commands/$UNTARGETED" 200
assert_eq "the first device delivered to is its target" '["A"]' \
  "$(json_get "$ANSWER" '$.command.target_devices')"

# ---- a real agent heartbeating every second ------------------------------------------------------
write_tokens
write_agent_config uplink.heartbeat_interval=1s
start_agent
deadline=$((SECONDS + 30))
while :; do
  admin GET /v1/admin/stores/S001
  answer="$ANSWER"
  [[ "$HTTP_STATUS" == 200 && "$(json_type "$answer" '$.store.devices[0].last_heartbeat')" == text ]] &&
    break
  ((SECONDS < deadline)) || fail "S001 in the fleet view within 30 s" 200 "$HTTP_STATUS $answer"
  sleep 0.3
done
assert_eq "store S001: its device" D1 "$(json_get "$answer" '$.store.devices[0].device_id')"
assert_match "store S001: agent version" '.+' "$(json_get "$answer" '$.store.devices[0].agent_version')"
days="$(json_get "$answer" '$.store.devices[0].cert_days_left')"
((days > 0)) || fail "the device certificate's days left (from the client certificate)" "> 0" "$days"
drift="$(json_get "$answer" '$.store.devices[0].clock_drift_ms')"
((drift > -5000 && drift < 5000)) || fail "clock drift on one machine" "-5000..5000 ms" "$drift"
assert_eq "store S001 is not lagging" 0 "$(json_get "$answer" '$.store.lagging')"

# D2 becomes a known device of S001 through one heartbeat of its own.
heartbeat_as D2 'agent_version: "hand-made" device_clock_ms: 1'

# ---- bad requests --------------------------------------------------------------------------------
admin_ok POST /v1/admin/resync '{"store_id": "S001", "from": "2999-01-01"}' 400
admin_ok POST /v1/admin/resync '{"store_id": "S001", "from": "2026-11-02", "to": "2026-11-01"}' \
  400
admin_ok POST /v1/admin/resync '{"store_id": "S001", "from": "yesterday"}' 400
admin_ok POST /v1/admin/resync '{"store_id": "S001", "from": "2026-01-01", "device_id": "D9"}' \
  400
admin_ok POST /v1/admin/push-now '{"store_id": ' 400
admin_ok GET /v1/admin/resync "" 405
admin_ok GET /v1/admin/commands/no-such-command "" 404
admin_ok GET /v1/admin/stores/S999 "" 404

# ---- commands: issued, listed, looked up ---------------------------------------------------------
admin_ok POST /v1/admin/resync \
  '{"store_id": "S001", "from": "2026-01-01T00:00:00+01:00", "to": "2026-01-02"}' 201
answer="$ANSWER"
RESYNC="$(json_get "$answer" '$.command.command_id')"
assert_match "a resync's id" '^resync-[0-9]{8}T[0-9]{6}Z-[0-9a-f]{6}$' "$RESYNC"
assert_eq "resync: from (the offset read as UTC)" 2025-12-31T23:00:00Z "$(json_get "$answer" '$.command.from')"
assert_eq "resync: to" 2026-01-02T00:00:00Z "$(json_get "$answer" '$.command.to')"
assert_eq "resync: state" pending "$(json_get "$answer" '$.command.state')"
assert_eq "resync: issued_by (the admin certificate's name)" hq-ops "$(json_get "$answer" '$.command.issued_by')"
assert_eq "resync: targets (D1 and D2 heartbeat)" '["D1","D2"]' "$(json_get "$answer" '$.command.target_devices')"
admin_ok POST /v1/admin/push-now '{"store_id": "S001", "device_id": "D1"}' 201
answer="$ANSWER"
PUSH="$(json_get "$answer" '$.command.command_id')"
assert_eq "push-now: targets" '["D1"]' "$(json_get "$answer" '$.command.target_devices')"
admin_ok POST /v1/admin/resync '{"store_id": "S001", "from": "2026-01-01", "device_id": "D2"}' 201
answer="$ANSWER"
RESYNC_D2="$(json_get "$answer" '$.command.command_id')"
# A target that has not reported a command yet is listed as pending, with its last heartbeat:
# a dead till holding a command up is plain to see.
assert_eq "a silent target: listed" D2 "$(json_get "$answer" '$.command.devices[0].device_id')"
assert_eq "a silent target: pending" pending "$(json_get "$answer" '$.command.devices[0].state')"
assert_eq "a silent target: its last heartbeat" text \
  "$(json_type "$answer" '$.command.devices[0].last_heartbeat')"
assert_match "a silent target: its last heartbeat's age" '^[0-9]+$' \
  "$(json_get "$answer" '$.command.devices[0].last_heartbeat_age_s')"
assert_contains "a silent target: said so" "has not reported" \
  "$(json_get "$answer" '$.command.devices[0].message')"
assert_eq "targets not reported yet" 1 "$(json_get "$answer" '$.command.devices_not_reported')"

# (state=all: the agent may have finished the push-now already; the open
# ones are those not finished.)
admin_ok GET '/v1/admin/commands?store_id=S001&state=all' 200
answer="$ANSWER"
assert_eq "commands of S001, newest first" "$RESYNC_D2 $PUSH $RESYNC" \
  "$(json_get "$answer" '$.commands[0].command_id') $(json_get "$answer" '$.commands[1].command_id') $(json_get "$answer" '$.commands[2].command_id')"
admin_ok GET '/v1/admin/commands?store_id=S001' 200
answer="$ANSWER"
assert_eq "open commands of S001 include both resyncs" "$RESYNC_D2 $RESYNC" \
  "$(json_get "$answer" '$.commands' | grep -o '"resync-[^"]*"' | tr -d '"' | head -n 2 | tr '\n' ' ' | sed 's/ $//')"
admin_ok GET '/v1/admin/commands?state=all' 200
answer="$ANSWER"
assert_eq "commands of every store" 4 "$(json_get "$answer" '$.commands' | grep -o '"command_id"' | wc -l)"
admin_ok GET "/v1/admin/commands/$RESYNC" 200
answer="$ANSWER"
assert_eq "one command by id" "$RESYNC" "$(json_get "$answer" '$.command.command_id')"

# ---- the agent gets them in its next ack -----------------------------------------------------------
deadline=$((SECONDS + 30))
until grep -q "command_id=$PUSH" "$AGENT_LOG" && grep -q "command_id=$RESYNC" "$AGENT_LOG"; do
  ((SECONDS < deadline)) || fail "the agent logs both commands from its acks within 30 s" \
    "command_id=$PUSH and $RESYNC" "$(grep command "$AGENT_LOG" | tail -n 5)"
  sleep 0.3
done
if grep -q "command_id=$RESYNC_D2" "$AGENT_LOG"; then
  fail "D1 is not given a command for D2 only" "no command_id=$RESYNC_D2" "$(grep "$RESYNC_D2" "$AGENT_LOG")"
fi

# D2's acks carry the store's open commands that target it: not the push-now for D1 only.
heartbeat_as D2 'agent_version: "hand-made"'
acked="$(ack_states)"
log "D2's ack: $acked"
assert_match "D2's ack: the resync of both devices" "(^| )$RESYNC=COMMAND_STATE_(PENDING|RUNNING)( |\$)" "$acked"
assert_contains "D2's ack: the resync of D2" "$RESYNC_D2=COMMAND_STATE_PENDING" "$acked"
assert_eq "D2's ack: those two only" 2 "$(wc -w <<<"$acked")"
# So do its BatchAcks (200).
send_batch device-S001-D2 --device D2 --journal d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2 --batch-seq 1 \
  --first-seq 1 --sales 2
assert_eq "D2's batch: status" 200 "$(batch_field status)"
assert_contains "D2's BatchAck carries the resync of D2" "$RESYNC_D2" "$(batch_field commands)"
assert_contains "D2's BatchAck carries the resync of both" "$RESYNC" "$(batch_field commands)"
admin_ok GET /v1/admin/stores/S001 200
assert_eq "D2's last batch in the fleet view" text "$(json_type "$ANSWER" '$.store.devices[1].last_batch')"

# ---- a report finishes a command; a finished one cannot be cancelled -------------------------------
heartbeat_as D2 "command_reports { command_id: \"$RESYNC\" state: COMMAND_STATE_RUNNING done_sales: 5 total_sales: 10 }"
admin_ok GET "/v1/admin/commands/$RESYNC" 200
answer="$ANSWER"
assert_eq "a resync one target reports running" running "$(json_get "$answer" '$.command.state')"
assert_eq "its progress" "5/10" "$(json_get "$answer" '$.command.replayed_sales')/$(json_get "$answer" '$.command.total_sales')"
# device:D2 (or D1 first, with an agent that runs resyncs: a report of either moves it)
assert_match "updated by a device" '^device:D[12]$' "$(json_get "$answer" '$.command.updated_by')"
heartbeat_as D2 "command_reports { command_id: \"$RESYNC_D2\" state: COMMAND_STATE_INCOMPLETE available_from_ms: 1767225600000 message: \"sales before 2026-01-01 are gone\" }"
admin_ok GET "/v1/admin/commands/$RESYNC_D2" 200
answer="$ANSWER"
assert_eq "its only target reported INCOMPLETE" incomplete "$(json_get "$answer" '$.command.state')"
assert_eq "the device's available_from" 2026-01-01T00:00:00Z "$(json_get "$answer" '$.command.devices[0].available_from')"
admin_ok POST "/v1/admin/commands/$RESYNC_D2/cancel" "" 409
answer="$ANSWER"
assert_contains "409 says the state" incomplete "$(json_get "$answer" '$.error')"
admin_ok POST "/v1/admin/commands/$RESYNC/cancel" "" 200
answer="$ANSWER"
assert_eq "a running command cancelled" cancelled "$(json_get "$answer" '$.command.state')"
assert_eq "cancelled by" hq-ops "$(json_get "$answer" '$.command.updated_by')"
# D2 last reported it running: its acks carry it, cancelled, until D2 reports it stopped.
heartbeat_as D2 'agent_version: "hand-made"'
assert_eq "D2's ack: the cancelled resync it still runs" "$RESYNC=COMMAND_STATE_CANCELLED" "$(ack_states)"
heartbeat_as D2 "command_reports { command_id: \"$RESYNC\" state: COMMAND_STATE_CANCELLED }"
assert_eq "D2's ack once it reported the cancel" "" "$(ack_states)"
admin_ok POST "/v1/admin/commands/no-such/cancel" "" 404

# states_now: "id=state ..." of every command of S001.
states_now() {
  admin_ok GET '/v1/admin/commands?store_id=S001&state=all' 200
  sqlite3 -batch :memory: "SELECT group_concat(json_extract(value, '\$.command_id') || '=' ||
    json_extract(value, '\$.state'), ' ') FROM json_each($(_sql_quote "$ANSWER"), '\$.commands');"
}
admin_ok GET '/v1/admin/stores?lagging=30m' 200
assert_eq "no store lags by 30 minutes" 0 "$(json_get "$ANSWER" '$.stores' | grep -o '"store_id"' | wc -l)"
# The agent stops here, so that no report of its own moves a command between the reads below.
stop_agent
before="$(states_now)"
log "commands: $before"
assert_contains "the cancelled resync" "$RESYNC=cancelled" "$before"
assert_contains "the incomplete resync" "$RESYNC_D2=incomplete" "$before"

# ---- they survive a restart, and a kill -9 -----------------------------------------------------------
stop_collector
start_collector
assert_eq "commands after a restart" "$before" "$(states_now)"
kill_collector
start_collector
assert_eq "commands after a kill -9" "$before" "$(states_now)"
admin_ok GET /v1/admin/stores/S001 200
answer="$ANSWER"
assert_eq "the fleet view after a kill -9: devices" "D1 D2" \
  "$(json_get "$answer" '$.store.devices[0].device_id') $(json_get "$answer" '$.store.devices[1].device_id')"
assert_eq "the store's newest resync" "$RESYNC_D2" "$(json_get "$answer" '$.store.resync.command_id')"

timeout 30 kcat -b "$KAFKA_BOOT" -C -t pos.control.v1 -e -q -f '%k\n' >"$T/control.keys" ||
  fail "kcat reads pos.control.v1"
for id in "$RESYNC" "$RESYNC_D2" "$PUSH"; do
  grep -qx "S001/command/$id" "$T/control.keys" || fail "pos.control.v1 holds $id" \
    "S001/command/$id" "$(sort -u "$T/control.keys")"
done

# ---- lagging stores ------------------------------------------------------------------------------
admin_ok GET '/v1/admin/stores?lagging=2s' 200
answer="$ANSWER"
assert_eq "with the agent stopped, S001 lags by 2 s" S001 "$(json_get "$answer" '$.stores[0].store_id')"
admin_ok GET '/v1/admin/stores?lagging=soon' 400
stop_collector
