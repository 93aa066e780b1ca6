#!/usr/bin/env bash
# The libFuzzer targets of tests/fuzz/: build them and run them.
#
#   bash scripts/fuzz.sh --smoke              CI: build into build-fuzz/, replay every
#                                             target's corpus and regressions, then fuzz
#                                             each for FUZZ_SMOKE_SECONDS (default 20);
#                                             fails on any crash, leak, UB or timeout
#   bash scripts/fuzz.sh TARGET SECONDS       a long run of one target (sale-json, batch,
#                                             http, config, recipes, pkcs7; "all" runs each in turn);
#                                             new inputs go to build-fuzz/corpus/TARGET,
#                                             a crash to build-fuzz/artifacts/TARGET/
#   bash scripts/fuzz.sh --build              build only
#
# Environment: FUZZ_BUILD_DIR (default build-fuzz), FUZZ_JOBS (parallel fuzzing
# processes for long runs, default 1), FUZZ_SMOKE_SECONDS, FUZZ_ARGS (more
# libFuzzer flags, e.g. "-only_ascii=1").
#
# A long run, e.g. overnight on a spare machine:
#   FUZZ_JOBS=4 bash scripts/fuzz.sh batch 28800
# It starts from the seeds in tests/fuzz/corpus/TARGET plus what earlier runs
# found (build-fuzz/corpus/TARGET). Each run ends with libFuzzer's figures:
# execs (stat::number_of_executed_units), execs/s, and cov:/ft: in the last
# status line. To keep a finding, minimise it
#   build-fuzz/tests/fuzz/fuzz-TARGET -minimize_crash=1 -runs=10000 CRASH_FILE
# and commit it under tests/fuzz/regressions/TARGET/ with the fix: --smoke
# and ctest -L fuzz replay it from then on. To fold what a long run found
# back into the seeds: fuzz-TARGET -merge=1 tests/fuzz/corpus/TARGET build-fuzz/corpus/TARGET
#
# Needs clang 14 and its libFuzzer/sanitizer runtimes (scripts/deps.sh installs them).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
build="${FUZZ_BUILD_DIR:-$root/build-fuzz}"
targets=(sale-json batch http config recipes pkcs7)
smoke_seconds="${FUZZ_SMOKE_SECONDS:-20}"

usage() {
  sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

build_targets() {
  bash "$root/scripts/deps.sh"
  cmake -S "$root" -B "$build" -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=Debug \
    -DPOS_SANITIZE=ON -DPOS_FUZZ=ON >/dev/null
  cmake --build "$build" -j "$(nproc)" --target fuzz-sale-json fuzz-batch fuzz-http fuzz-config \
    fuzz-recipes fuzz-pkcs7
}

# The flags every run shares. Leaks are errors; a slow input is an error
# after 25 s (the HTTP target's slowest path waits out a 2 s timer);
# -rss_limit_mb catches allocations of the kind issue 7 item 5 describes.
common_flags() {
  local target=$1
  local flags=(-detect_leaks=1 -timeout=25 -rss_limit_mb=2048 -print_final_stats=1)
  if [ -f "$root/tests/fuzz/dict/$target.dict" ]; then
    flags+=("-dict=$root/tests/fuzz/dict/$target.dict")
  fi
  case "$target" in
    http) flags+=(-max_len=8192) ;;
    batch) flags+=(-max_len=65536) ;;
    *) flags+=(-max_len=16384) ;;
  esac
  # shellcheck disable=SC2206
  flags+=(${FUZZ_ARGS:-})
  printf '%s\n' "${flags[@]}"
}

seed_dirs() {
  local target=$1
  echo "$root/tests/fuzz/corpus/$target"
  if [ -d "$root/tests/fuzz/regressions/$target" ]; then
    echo "$root/tests/fuzz/regressions/$target"
  fi
}

# run TARGET SECONDS: fuzz into build-fuzz/corpus/TARGET (seeds read, never written).
run_target() {
  local target=$1 seconds=$2 jobs=${FUZZ_JOBS:-1}
  local binary="$build/tests/fuzz/fuzz-$target"
  local work="$build/corpus/$target" artifacts="$build/artifacts/$target/"
  local flags seeds
  [ -x "$binary" ] || { echo "fuzz.sh: no $binary: build first" >&2; return 1; }
  mkdir -p "$work" "$artifacts"
  mapfile -t flags < <(common_flags "$target")
  mapfile -t seeds < <(seed_dirs "$target")
  echo "fuzz.sh: fuzz-$target for ${seconds}s (jobs=$jobs)" >&2
  if [ "$jobs" -gt 1 ]; then
    flags+=("-fork=$jobs" -ignore_crashes=0)
  fi
  # Set the working directory so libFuzzer's own logs land in the build tree.
  (cd "$build" && "$binary" "${flags[@]}" -max_total_time="$seconds" \
     -artifact_prefix="$artifacts" "$work" "${seeds[@]}")
}

# replay TARGET: every seed and regression once (what ctest -L fuzz does).
replay_target() {
  local target=$1 binary="$build/tests/fuzz/fuzz-$1" seeds flags
  mapfile -t flags < <(common_flags "$target")
  mapfile -t seeds < <(seed_dirs "$target")
  echo "fuzz.sh: replaying the seeds of fuzz-$target" >&2
  (cd "$build" && "$binary" "${flags[@]}" -runs=0 "${seeds[@]}")
}

case "${1:-}" in
  --build)
    build_targets
    ;;
  --smoke)
    build_targets
    failed=()
    for t in "${targets[@]}"; do
      if ! replay_target "$t" || ! run_target "$t" "$smoke_seconds"; then
        failed+=("$t")
      fi
    done
    if [ ${#failed[@]} -gt 0 ]; then
      echo "fuzz.sh: FAILED: ${failed[*]} (the reproducer is in $build/artifacts/<target>/)" >&2
      exit 1
    fi
    echo "fuzz.sh: smoke run passed: ${targets[*]}" >&2
    ;;
  sale-json|batch|http|config|recipes|pkcs7|all)
    [ $# -eq 2 ] && [[ "$2" =~ ^[0-9]+$ ]] || usage
    build_targets
    if [ "$1" = all ]; then
      for t in "${targets[@]}"; do run_target "$t" "$2"; done
    else
      run_target "$1" "$2"
    fi
    ;;
  *)
    usage
    ;;
esac
