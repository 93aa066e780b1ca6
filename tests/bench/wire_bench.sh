#!/usr/bin/env bash
# wire_bench.sh - wire bytes of a batch at the size a store really sends
# (issue 12, item 6: one 15-minute interval of a busy store, about 60 sales),
# beside its yardstick measured in the same run: the same sales as JSON lines
# with gzip -6 (what Fluent Bit's out_http sends with gzip). The goal: at most
# half of the yardstick at 60 sales.
#
# Per batch size, the sum over BENCH_WIRE_BATCHES batches of different stores
# (their own sale-id prefix, journal, seqs and business times, none of them
# among the sales proto/dict/train.sh trained the dictionaries on), of:
#   jsonl_gzip    the yardstick
#   zstd3         pos.v1.Batch, zstd level 3 without a dictionary (an agent
#                 before the dictionaries, and with a collector that lists none)
#   zstd19+dict1  level 19 with the sales-1 dictionary, canonical sales: what
#                 the agent sends by default to a collector that lists sales-1
#                 only (the release before compact sales)
#   same_sales    compact sales with sales-2 at the agent's default level (below),
#                 on exactly the sales of the JSON lines, store_city and time_zone
#                 included (the agent never has those two)
#   agent         what the agent sends by default to a collector that lists
#                 sales-2 (this release's): compact sales (business_time_ms,
#                 received_ms and seq as differences, store_id left to the
#                 envelope: pos.proto, Sale.business_time_step_ms) with the
#                 sales-2 dictionary, trained on such sales, at the default
#                 level, uplink.zstd_level = 0 (batcher_zstd_level: 19 up to
#                 32 KiB of protobuf before compression, 3 above); the sales
#                 as the agent builds them, without store_city and time_zone
#                 (pos-batch --omit-sale-store). The goal is on this column.
# and each one's ratio to the yardstick. The JSON lines carry store_city and
# time_zone (an export of the sales with what head office knows of the store),
# as they always have. Every dictionary body is decompressed again with the
# zstd tool and its dictionary and compared with the protobuf pos-batch says it
# packed (--pb-out; compact for sales-2), so a figure is never that of a broken
# body.
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
DICT1="$SOURCE_DIR/proto/dict/sales-1.zdict"
DICT1_ID=1347375873 # PROTO_ZSTD_DICT_SALES_1
DICT2="$SOURCE_DIR/proto/dict/sales-2.zdict"
DICT2_ID=1347375874 # PROTO_ZSTD_DICT_SALES_2, compact sales
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

echo "== wire bytes per batch: pos.v1.Batch with zstd (and the sales-1 or sales-2 dictionary)"
echo "   beside the same sales as JSON lines with gzip -6, summed over $BATCHES stores' batches"
printf '%7s %11s %10s %6s %13s %6s %11s %6s %10s %6s\n' sales jsonl_gzip zstd3 ratio \
  zstd19+dict1 ratio same_sales ratio agent ratio
for n in $SIZES; do
  gz=0 plain=0 dict19=0 same=0 agent=0
  for ((k = 0; k < BATCHES; k++)); do
    make_batch "$n" "$k" plain json
    make_batch "$n" "$k" dict19 - --zstd-dict "$DICT1_ID" --zstd-level 19 \
      --pb-out "$WORK/canonical.pb"
    make_batch "$n" "$k" same - --zstd-dict "$DICT2_ID" --zstd-level 0 --pb-out "$WORK/same.pb" \
      --compact-sales
    make_batch "$n" "$k" agent - --zstd-dict "$DICT2_ID" --zstd-level 0 --pb-out "$WORK/agent.pb" \
      --compact-sales --omit-sale-store
    zstd -q -d -c -D "$DICT1" "$WORK/dict19.zst" | cmp -s - "$WORK/canonical.pb" ||
      { echo "wire_bench: the sales-1 body of $n sales is not the batch's protobuf" >&2; exit 1; }
    for name in same agent; do
      zstd -q -d -c -D "$DICT2" "$WORK/$name.zst" | cmp -s - "$WORK/$name.pb" ||
        { echo "wire_bench: the $name body of $n sales is not the compact protobuf" >&2; exit 1; }
    done
    gz=$((gz + $(gzip -6 -c "$WORK/plain.jsonl" | wc -c)))
    plain=$((plain + $(size "$WORK/plain.zst")))
    dict19=$((dict19 + $(size "$WORK/dict19.zst")))
    same=$((same + $(size "$WORK/same.zst")))
    agent=$((agent + $(size "$WORK/agent.zst")))
  done
  printf '%7d %11d %10d %5sx %13d %5sx %11d %5sx %10d %5sx\n' "$n" "$gz" "$plain" \
    "$(calc "$plain / $gz")" "$dict19" "$(calc "$dict19 / $gz")" "$same" \
    "$(calc "$same / $gz")" "$agent" "$(calc "$agent / $gz")"
done
echo "(ratio: bytes / jsonl_gzip; the goal at 60 sales is at most 0.50x, for the agent column)"
