#!/usr/bin/env bash
# Regenerates the seed files of tests/fuzz/corpus/ that are made by tools
# rather than by hand, so that they follow the code:
#
#   bash tests/fuzz/make_corpus.sh BUILD_DIR     (BUILD_DIR has tests/tools/pos-batch)
#
#   corpus/batch/   real /v1/batches bodies from pos-batch (zstd + pos.v1.Batch):
#                   live and replay batches, one with an invalid sale, one with 20
#                   sales, one with each zstd dictionary (sales-2: compact sales),
#                   a truncated frame, a frame with trailing bytes, a
#                   declared-size bomb, random bytes
#   corpus/config/  the shipped agent.conf.example and device profiles
#
# The hand-made seeds (corpus/sale-json/, corpus/http/, corpus/config/*.ini)
# are not touched. The output is deterministic for fixed --journal and
# --time-base-ms, so rerunning it changes nothing unless the codec did.
set -euo pipefail

build="${1:?usage: make_corpus.sh BUILD_DIR}"
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
batch_tool="$build/tests/tools/pos-batch"
if [ ! -x "$batch_tool" ]; then
  echo "make_corpus.sh: no $batch_tool (build the pos-batch target)" >&2
  exit 1
fi

out="$here/corpus/batch"
mkdir -p "$out"
common=(--store 1001 --device D1 --journal 00112233445566778899aabbccddeeff
        --time-base-ms 1790000000000 --prefix B)
pb() { "$batch_tool" "${common[@]}" "$@" >/dev/null; }
pb --out "$out/live-3-sales.zst" --sales 3 --batch-seq 1 --first-seq 1
pb --out "$out/live-20-sales.zst" --sales 20 --batch-seq 7 --first-seq 101
pb --out "$out/live-invalid-sale.zst" --sales 2 --invalid 1 --batch-seq 2 --first-seq 4
pb --out "$out/replay-2-sales.zst" --sales 2 --kind replay --resync-id R-2026-11 --batch-seq 1
pb --out "$out/empty-batch.zst" --sales 0 --batch-seq 3
pb --out "$out/live-sales-1-dictionary.zst" --sales 5 --batch-seq 4 --first-seq 8 \
  --zstd-dict 1347375873
pb --out "$out/live-compact-sales-2.zst" --sales 5 --batch-seq 5 --first-seq 13 \
  --zstd-dict 1347375874
pb --out "$out/garbage-truncated.zst" --garbage truncated --sales 2
pb --out "$out/garbage-trailing.zst" --garbage trailing --sales 2
pb --out "$out/garbage-random.zst" --garbage random --sales 1
pb --out "$out/bomb-declared.zst" --bomb declared --bomb-size 40000000

cp "$root/firmware-config/agent.conf.example" "$here/corpus/config/agent.conf.example"
cp "$root/firmware-config/profiles/counter-terminal.conf" "$here/corpus/config/"
cp "$root/firmware-config/profiles/store-hub.conf" "$here/corpus/config/"
echo "make_corpus.sh: wrote $(ls "$out" | wc -l) batch bodies and 3 config files"
