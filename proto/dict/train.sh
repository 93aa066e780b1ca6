#!/usr/bin/env bash
# train.sh - trains a zstd dictionary for pos.v1.Batch bodies on generated sales.
#
#   bash proto/dict/train.sh BUILD_DIR OUT.zdict DICT_ID [MAX_BYTES]
#
# The samples are the uncompressed protobuf of batches of 20 to 120 sales (a
# store's 15-minute interval is about 60) made by pos-batch's sale generator
# (tests/tools/pos_batch.c): 16 stores, each with its own sale-id prefix,
# journal and seqs, their business times spread over two years from
# 2026-01-01 so that the dictionary does not learn one day's timestamps. The
# benchmark (tests/bench/wire_bench.sh) measures on sales of none of these
# stores, at another time. From sales-2 (DICT_ID 1347375874) on, a dictionary
# is used with compact sales (pos.proto, BatchEnvelope.compact_sales), so its
# samples are compact too, and shaped as the agent sends them: without
# store_city and time_zone, which it never has (pos-batch --omit-sale-store).
# Needs the zstd command-line tool (Debian: zstd).
#
# A dictionary, once committed under an id, is never changed: the agent and
# the collector must hold the same bytes for an id. Training again (another
# generator, another zstd) makes a new dictionary with a NEW id and a new
# file (sales-2.zdict), added beside the old one (proto/dict/README.md).
set -euo pipefail
export LC_ALL=C

BUILD_DIR="${1:?usage: train.sh BUILD_DIR OUT.zdict DICT_ID [MAX_BYTES]}"
OUT="${2:?usage: train.sh BUILD_DIR OUT.zdict DICT_ID [MAX_BYTES]}"
DICT_ID="${3:?usage: train.sh BUILD_DIR OUT.zdict DICT_ID [MAX_BYTES]}"
MAX_BYTES="${4:-32768}"
BATCH_BIN="$BUILD_DIR/tests/tools/pos-batch"
[[ -x "$BATCH_BIN" ]] || { echo "train.sh: $BATCH_BIN is not built" >&2; exit 1; }
command -v zstd >/dev/null || { echo "train.sh: the zstd tool is required" >&2; exit 1; }

# proto_zstd_dictionary_compacts: sales-2 (0x504F5302) and later.
compact=()
((DICT_ID >= 1347375874)) && compact=(--compact-sales --omit-sale-store)
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# 2026-01-01T00:00:00Z, and 45 days between one store's samples and the next's.
base_ms=1767225600000
step_ms=$((45 * 86400000))
sample=0
for store in $(seq 1 16); do
  seq_at=1
  for interval in $(seq 0 11); do
    sales=$((20 + (store * 37 + interval * 11) % 101))
    sample=$((sample + 1))
    "$BATCH_BIN" --out "$WORK/$sample.zst" --sales "$sales" --store "S$((700 + store * 13))" \
      --device "D$((1 + store % 3))" --prefix "P$((store * 7))" \
      --journal "$(printf '%032x' $((store * 977)))" --batch-seq $((interval + 1)) \
      --first-seq "$seq_at" \
      --time-base-ms $((base_ms + store * step_ms + interval * 900000)) \
      --pb-out "$WORK/$sample.pb" "${compact[@]}" >/dev/null
    rm "$WORK/$sample.zst"
    seq_at=$((seq_at + sales))
  done
done
zstd -q --train "$WORK"/*.pb --maxdict="$MAX_BYTES" --dictID="$DICT_ID" -o "$OUT" -f
echo "train.sh: $OUT: $(stat -c %s "$OUT") bytes, dictID $DICT_ID, from $sample batches"
