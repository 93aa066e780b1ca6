#!/usr/bin/env bash
# A collector taking batch after batch reuses its memory: a decoded batch of
# 1,000 sales is an arena of about a megabyte, and with glibc's default
# thresholds each such block was mmap'ed and munmap'ed per batch, its pages
# faulted in (and zeroed by the kernel) again every time: some 300 minor
# page faults per batch, a tenth of the collector's CPU under
# tests/bench/uplink_bench.sh. collector/main.c sets the thresholds
# (collector_malloc_tune) so that blocks that size come from the heap and
# stay there between batches. Counted, not timed: minor faults of the
# collector (/proc/PID/stat) over 4 stores x 40 batches of 1,000 sales sent
# at once, after 10 each to warm up, per batch.
source "$(dirname "$0")/lib.sh"

make_pki S002 D1 S003 D1 S004 D1
start_broker --partitions 4
write_collector_config
start_collector
# Under a sanitizer the allocator is the sanitizer's, not glibc's: the
# collector says its thresholds were refused, and there is nothing to measure.
if grep -q 'event=malloc_defaults' "$COLLECTOR_LOG"; then
  stop_collector
  skip "the collector's allocator is not glibc's (a sanitizer build): mallopt was refused"
fi

minflt() { sed 's/.*) //' "/proc/$COLLECTOR_PID/stat" | awk '{ print $8 }'; }

# stores_send FIRST_BATCH COUNT: the four stores send COUNT batches of 1,000
# sales each at once, as uplink_bench.sh does (the decodes overlap on the
# workers), and every batch must be answered 200.
stores_send() {
  local first="$1" count="$2" store pids=() i=0
  for store in S001 S002 S003 S004; do
    "$BATCH_BIN" --url "$COLLECTOR_URL" --cacert "$PKI/ca.crt" --cert "$PKI/device-$store-D1.crt" \
      --key "$PKI/device-$store-D1.key" --timeout 60 --store "$store" \
      --journal "$(printf '%032x' $((7000 + ${store#S})))" --batch-seq "$first" \
      --first-seq $(((first - 1) * 1000 + 1)) --sales 1000 --count "$count" --quiet \
      >"$T/send.$store.out" 2>&1 &
    pids+=($!)
  done
  for store in S001 S002 S003 S004; do
    wait "${pids[$i]}" || fail "store $store's batches: $(cat "$T/send.$store.out")"
    i=$((i + 1))
    assert_eq "store $store: batches answered 200" "$count" \
      "$(batch_field answered_200 "$(cat "$T/send.$store.out")")"
  done
}

stores_send 1 10
before="$(minflt)"
stores_send 11 40
after="$(minflt)"
per_batch=$(((after - before) / 160))
log "minor page faults of the collector: $((after - before)) over 160 batches, $per_batch per batch"
# The arena alone is about 250 pages a batch when it is not reused; what
# is left (librdkafka's buffers, the TLS records) is a few dozen at most.
if ((per_batch > 100)); then
  fail "the collector reuses a batch's memory for the next (minor faults per batch)" "<= 100" \
    "$per_batch"
fi
stop_collector
