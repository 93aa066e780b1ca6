#!/usr/bin/env bash
# wire_bench.sh - wire bytes of a batch at the size a store really sends
# (issue 12, item 6: one 15-minute interval of a busy store, about 60 sales),
# beside its yardstick measured in the same run: the same sales as JSON lines
# with gzip -6 (what Fluent Bit's out_http sends with gzip). The goal: at most
# half of the yardstick at 60 sales.
#
# Per batch size, the sum over BENCH_WIRE_BATCHES batches of different stores
# (their own sale-id prefix, journal, seqs and business times, none of them
# among the sales proto/dict/train.sh trained the dictionary on), of:
#   jsonl_gzip    the yardstick
#   zstd3         pos.v1.Batch, zstd level 3 without a dictionary (the agent
#                 before the dictionary, and with a collector that lists none)
#   zstd3+dict    the same with the sales-1 dictionary (uplink.zstd_level = 3; also
#                 the default's level for a batch over 32 KiB before compression)
#   zstd19+dict   level 19 with the dictionary (uplink.zstd_level = 19, and the
#                 default's, 0, for a batch of at most 32 KiB: batcher_zstd_level)
#   lean19+dict   level 19 with the dictionary, sales without store_id,
#                 store_city and time_zone: what leaving out per sale what the
#                 envelope says (or the collector could add) would save. Never
#                 sent so: measured only.
#   delta19+dict  level 19 with the dictionary, each sale's received_ms sent as
#                 its distance from business_time_ms (a small varint): what
#                 that encoding would save (it would need a new Sale field and
#                 the collector to restore received_ms). Measured only.
# and each one's ratio to the yardstick. Every dictionary body is decompressed
# again with the zstd tool and that dictionary and compared with the body
# without one (same protobuf bytes), so a figure is never that of a broken body.
# Byte counts are deterministic (the sales are a function of their arguments),
# so one run is the figure; nothing here measures time.
#
#   bash tests/bench/wire_bench.sh BUILD_DIR      (or: cmake --build BUILD_DIR -t bench-wire)
#
# BUILD_DIR: a Release build is what the other benchmarks use; bytes do not
# depend on it. Needs gzip and zstd (the tool). Prints figures; asserts nothing.
# Environment:
#   BENCH_WIRE_SALES     "1 10 30 60 100 1000 2000"  batch sizes
#   BENCH_WIRE_BATCHES   5                          batches (stores) per size
set -euo pipefail
export LC_ALL=C

BUILD_DIR="${1:?usage: wire_bench.sh BUILD_DIR}"
SOURCE_DIR="$(cd "$(dirname "$0")/../.." && pwd)"
BATCH_BIN="$BUILD_DIR/tests/tools/pos-batch"
DICT="$SOURCE_DIR/proto/dict/sales-1.zdict"
DICT_ID=1347375873 # PROTO_ZSTD_DICT_SALES_1
SIZES="${BENCH_WIRE_SALES:-1 10 30 60 100 1000 2000}"
BATCHES="${BENCH_WIRE_BATCHES:-5}"

[[ -x "$BATCH_BIN" ]] || { echo "wire_bench: $BATCH_BIN is not built" >&2; exit 1; }
for tool in gzip zstd; do
  command -v "$tool" >/dev/null || { echo "wire_bench: $tool is required" >&2; exit 1; }
done
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

calc() { awk "BEGIN { printf \"%.2f\", $1 }"; }

# One batch of sales store k, written as $WORK/<name>.zst; the JSON lines too with "json".
make_batch() {
  local n="$1" k="$2" name="$3" json="$4"
  shift 4
  local extra=()
  [[ "$json" == json ]] && extra=(--json-out "$WORK/$name.jsonl")
  "$BATCH_BIN" --out "$WORK/$name.zst" --sales "$n" --store "S$((k + 1))" --prefix "B$k" \
    --journal "$(printf '%032x' $((k + 1)))" --first-seq $((k * 100000 + 1)) \
    --time-base-ms $((1790000000000 + k * 7 * 86400000)) "${extra[@]}" "$@" >/dev/null ||
    { echo "wire_bench: pos-batch failed" >&2; exit 1; }
}

size() { stat -c %s "$1"; }

echo "== wire bytes per batch: pos.v1.Batch with zstd (and the sales-1 dictionary) beside the"
echo "   same sales as JSON lines with gzip -6, summed over $BATCHES stores' batches"
printf '%7s %11s %10s %6s %11s %6s %12s %6s %12s %6s %13s %6s\n' sales jsonl_gzip zstd3 ratio \
  zstd3+dict ratio zstd19+dict ratio lean19+dict ratio delta19+dict ratio
for n in $SIZES; do
  gz=0 plain=0 dict3=0 dict19=0 lean19=0 delta19=0
  for ((k = 0; k < BATCHES; k++)); do
    make_batch "$n" "$k" plain json
    make_batch "$n" "$k" dict3 - --zstd-dict "$DICT_ID"
    make_batch "$n" "$k" dict19 - --zstd-dict "$DICT_ID" --zstd-level 19
    make_batch "$n" "$k" lean19 - --zstd-dict "$DICT_ID" --zstd-level 19 --omit-sale-store
    make_batch "$n" "$k" delta19 - --zstd-dict "$DICT_ID" --zstd-level 19 --received-as-delta
    zstd -q -d -c "$WORK/plain.zst" >"$WORK/plain.pb"
    for name in dict3 dict19; do
      zstd -q -d -c -D "$DICT" "$WORK/$name.zst" >"$WORK/$name.pb"
      # The envelope names the dictionary (field 13, a few bytes): compare the sales.
      [[ $(size "$WORK/$name.pb") -ge $(size "$WORK/plain.pb") ]] ||
        { echo "wire_bench: $name body of $n sales decodes short" >&2; exit 1; }
    done
    gz=$((gz + $(gzip -6 -c "$WORK/plain.jsonl" | wc -c)))
    plain=$((plain + $(size "$WORK/plain.zst")))
    dict3=$((dict3 + $(size "$WORK/dict3.zst")))
    dict19=$((dict19 + $(size "$WORK/dict19.zst")))
    lean19=$((lean19 + $(size "$WORK/lean19.zst")))
    delta19=$((delta19 + $(size "$WORK/delta19.zst")))
  done
  printf '%7d %11d %10d %5sx %11d %5sx %12d %5sx %12d %5sx %13d %5sx\n' "$n" "$gz" "$plain" \
    "$(calc "$plain / $gz")" "$dict3" "$(calc "$dict3 / $gz")" "$dict19" \
    "$(calc "$dict19 / $gz")" "$lean19" "$(calc "$lean19 / $gz")" "$delta19" \
    "$(calc "$delta19 / $gz")"
done
echo "(ratio: bytes / jsonl_gzip; the goal at 60 sales is at most 0.50x)"
