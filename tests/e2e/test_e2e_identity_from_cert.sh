#!/usr/bin/env bash
# Identity from the certificate, never the body (issue 7, items 4 and 13),
# over mutual TLS against broker + collector:
#  - a second device of the store sending under a journal_id first used by
#    another device (a cloned disk image) gets 403 with the code
#    BATCH_ACK_CODE_JOURNAL_OF_ANOTHER_DEVICE, not a duplicate's 200;
#  - a batch or heartbeat whose body names another device than the
#    certificate is refused with 403;
#  - heartbeats are keyed store_id/device_id in pos.agent-status.v1, carry
#    the certificate's device, and may come zstd-compressed.
source "$(dirname "$0")/lib.sh"

make_pki S001 D2
start_broker --partitions 2
write_collector_config
start_collector

J=c10ec10ec10ec10ec10ec10ec10ec10e

# post_as CERT FILE PATH [curl args]: POSTs FILE as protobuf with CERT; sets
# HTTP_STATUS, leaves the answer in $T/answer.bin.
post_as() {
  local cert="$1" file="$2" path="$3"
  shift 3
  HTTP_STATUS="$(curl -sS -o "$T/answer.bin" -w '%{http_code}' --max-time 10 \
    --cacert "$PKI/ca.crt" --cert "$PKI/$cert.crt" --key "$PKI/$cert.key" \
    -H 'Content-Type: application/x-protobuf' "$@" --data-binary "@$file" \
    "$COLLECTOR_URL$path" 2>"$T/curl.err")" || HTTP_STATUS="${HTTP_STATUS:-000}"
}

# --- a journal_id used by two devices ------------------------------------------------------------
send_batch device-S001-D1 --device D1 --journal "$J" --batch-seq 1 --first-seq 1 --sales 3
assert_eq "device D1, batch 1 of journal $J: status" 200 "$(batch_field status)"
# D2 runs a copy of D1's disk: same journal, its own sales under the same seqs.
"$BATCH_BIN" --out "$T/clone.zst" --store S001 --device D2 --journal "$J" --batch-seq 1 \
  --first-seq 1 --sales 2 --prefix CLONE >/dev/null || fail "pos-batch --out"
post_as device-S001-D2 "$T/clone.zst" /v1/batches -H 'Content-Encoding: zstd'
assert_eq "device D2 sending under D1's journal: status" 403 "$HTTP_STATUS"
protoc --decode=pos.v1.BatchAck -I "$POS_SOURCE_DIR/proto" "$POS_SOURCE_DIR/proto/pos/v1/pos.proto" \
  <"$T/answer.bin" >"$T/answer.txt" 2>&1 || fail "the 403 carries a BatchAck: $(cat "$T/answer.txt")"
assert_contains "the 403's code" "code: BATCH_ACK_CODE_JOURNAL_OF_ANOTHER_DEVICE" "$(cat "$T/answer.txt")"
assert_contains "the 403's message names the owner" "belongs to device D1" "$(cat "$T/answer.txt")"

# --- a body naming another device than the certificate --------------------------------------------
"$BATCH_BIN" --out "$T/spoof.zst" --store S001 --device D1 --journal 0123456789abcdef0123456789abcdef \
  --batch-seq 1 --first-seq 1 --sales 2 --prefix SPOOF >/dev/null || fail "pos-batch --out"
post_as device-S001-D2 "$T/spoof.zst" /v1/batches -H 'Content-Encoding: zstd'
assert_eq "device D2's certificate, envelope naming D1: status" 403 "$HTTP_STATUS"
protoc --decode=pos.v1.BatchAck -I "$POS_SOURCE_DIR/proto" "$POS_SOURCE_DIR/proto/pos/v1/pos.proto" \
  <"$T/answer.bin" >"$T/answer.txt" 2>&1 || fail "the 403 carries a BatchAck: $(cat "$T/answer.txt")"
assert_contains "the 403's code" "code: BATCH_ACK_CODE_IDENTITY_MISMATCH" "$(cat "$T/answer.txt")"

kafka_read pos.sales.v1 sales
records_db sales
assert_eq "records in pos.sales.v1 (D1's batch only)" 3 "$(rsql sales 'SELECT count(*) FROM k;')"
assert_eq "records whose device_id header is not D1" 0 "$(rsql sales "SELECT count(*) FROM k WHERE h_device_id IS NOT 'D1';")"

# --- heartbeats: keyed store/device, the certificate's device, zstd ------------------------------
printf 'unsent_sales: 7\n' | protoc --encode=pos.v1.Heartbeat -I "$POS_SOURCE_DIR/proto" \
  "$POS_SOURCE_DIR/proto/pos/v1/pos.proto" >"$T/hb.bin" || fail "protoc --encode Heartbeat"
zstd -q -f "$T/hb.bin" -o "$T/hb.zst" || fail "zstd"
post_as device-S001-D2 "$T/hb.zst" /v1/heartbeat -H 'Content-Encoding: zstd'
assert_eq "zstd heartbeat of D2: status" 200 "$HTTP_STATUS"
post_as device-S001-D1 "$T/hb.bin" /v1/heartbeat
assert_eq "plain heartbeat of D1: status" 200 "$HTTP_STATUS"
printf 'device_id: "D1"\nunsent_sales: 1\n' | protoc --encode=pos.v1.Heartbeat -I "$POS_SOURCE_DIR/proto" \
  "$POS_SOURCE_DIR/proto/pos/v1/pos.proto" >"$T/hb-spoof.bin" || fail "protoc --encode Heartbeat"
post_as device-S001-D2 "$T/hb-spoof.bin" /v1/heartbeat
assert_eq "heartbeat naming D1 with D2's certificate: status" 403 "$HTTP_STATUS"

timeout 30 kcat -b "$KAFKA_BOOT" -C -t pos.agent-status.v1 -e -q -f '%k\n' | sort >"$T/status.keys" ||
  fail "kcat reads pos.agent-status.v1"
assert_eq "pos.agent-status.v1 keys" "S001/D1 S001/D2" "$(tr '\n' ' ' <"$T/status.keys" | sed 's/ $//')"
kafka_read pos.agent-status.v1 status HeartbeatRecords
assert_eq "heartbeats in pos.agent-status.v1" 2 "$KAFKA_RECORDS"
assert_eq "heartbeats carrying the certificate's device D2" 1 "$(grep -c 'device_id: "D2"' "$T/status.txt")"
assert_eq "heartbeats carrying the certificate's device D1" 1 "$(grep -c 'device_id: "D1"' "$T/status.txt")"
stop_collector
