#!/usr/bin/env bash
# Issue 7 item 5: a batch of tiny protobuf objects (empty sale lines, two
# bytes each on the wire, about 80 bytes each once protobuf-c unpacks them)
# must be refused on its object count before it is unpacked. 32 MiB of empty
# lines (the default max_decoded) compress to a few KiB; the collector must
# answer 413 naming the limit, its peak memory (VmHWM) must stay far below
# what unpacking would take (about 1.4 GB), and it must keep serving.
# Also: a body of two concatenated zstd frames (RFC 8878) is one batch.
source "$(dirname "$0")/lib.sh"

make_pki S001 D1
write_collector_config kafka.brokers=
start_collector

vm_hwm_kib() { sed -n 's/^VmHWM:[[:space:]]*\([0-9]*\) kB/\1/p' "/proc/$COLLECTOR_PID/status"; }

# The envelope (a valid one, from pos-batch) followed by one sale of 16M empty lines.
"$BATCH_BIN" --out "$T/one.zst" --journal 2f0e0d0c0b0a09080706050403020100 --batch-seq 1 \
  --sales 1 >/dev/null
zstd -q -d -c "$T/one.zst" >"$T/one.pb"
# Keep the envelope (field 1) only: its key byte 0x0a, its length the next byte(s).
perl -e '
  local $/; open(my $f, "<", $ARGV[0]) or die; my $pb = <$f>;
  die "no envelope first" unless substr($pb, 0, 1) eq "\x0a";
  my ($len, $shift, $i) = (0, 0, 1);
  while (1) { my $b = ord(substr($pb, $i++, 1)); $len |= ($b & 0x7f) << $shift;
              last unless $b & 0x80; $shift += 7; }
  my $lines = 16 * 1024 * 1024 - 1024;  # the envelope must fit too
  my $sale = "\x62\x00" x $lines;
  my $n = length($sale); my $varint = "";
  while ($n >= 0x80) { $varint .= chr(($n & 0x7f) | 0x80); $n >>= 7; } $varint .= chr($n);
  print substr($pb, 0, $i + $len), "\x12", $varint, $sale;
' "$T/one.pb" >"$T/bomb.pb"
zstd -q -19 -c "$T/bomb.pb" >"$T/bomb.zst"
log "bomb: $(stat -c %s "$T/bomb.pb") bytes of protobuf in $(stat -c %s "$T/bomb.zst") bytes of zstd"

before="$(vm_hwm_kib)"
collector_curl /v1/batches -X POST -H 'Content-Type: application/x-protobuf' \
  -H 'Content-Encoding: zstd' --data-binary @"$T/bomb.zst" >"$T/bomb.answer"
body="$(cat "$T/bomb.answer")"
after="$(vm_hwm_kib)"
log "collector VmHWM before the bomb ${before} KiB, after ${after} KiB"
assert_eq "bomb of empty sale lines: status [$body]" 413 "$HTTP_STATUS"
assert_contains "413 names the limit" "holds more than 500 lines" "$body"
# 32 MiB decompressed plus slack; unpacking would have taken about 1.4 GB.
((after - before < 128 * 1024)) ||
  fail "collector peak memory growth with the bomb" "under 131072 KiB" "$((after - before)) KiB"

# --- two zstd frames, one batch ----------------------------------------------------
"$BATCH_BIN" --out "$T/two.zst" --journal 3f0e0d0c0b0a09080706050403020100 --batch-seq 1 \
  --sales 4 >/dev/null
zstd -q -d -c "$T/two.zst" >"$T/two.pb"
size="$(stat -c %s "$T/two.pb")"
head -c $((size / 2)) "$T/two.pb" | zstd -q -c >"$T/frames.zst"
tail -c +$((size / 2 + 1)) "$T/two.pb" | zstd -q -c >>"$T/frames.zst"
collector_curl /v1/batches -X POST -H 'Content-Type: application/x-protobuf' \
  -H 'Content-Encoding: zstd' --data-binary @"$T/frames.zst" >/dev/null
assert_eq "a batch in two concatenated zstd frames: status" 200 "$HTTP_STATUS"

send_batch device-S001-D1 --journal 4f0e0d0c0b0a09080706050403020100 --batch-seq 1 --sales 5
assert_eq "a good batch after the bomb: status" 200 "$(batch_field status)"
stop_collector
