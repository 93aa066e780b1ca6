#!/usr/bin/env bash
# Installs what is needed, builds and runs every test.
#
#   bash scripts/test.sh                 gcc, RelWithDebInfo, into build/
#   bash scripts/test.sh --sanitize      clang with ASan + UBSan, into build-sanitize/
#
# POS_CTEST_ARGS adds ctest arguments, e.g. POS_CTEST_ARGS="-L unit" or
# "-LE fault" (the fault harness's short run, about 3 minutes, is the slowest
# test: see tests/fault/run.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/deps.sh

build_dir=build
cmake_args=()
if [ "${1:-}" = "--sanitize" ]; then
  build_dir=build-sanitize
  cmake_args=(-DPOS_SANITIZE=ON -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=Debug)
  export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
  export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
fi

cmake -S . -B "$build_dir" "${cmake_args[@]}"
cmake --build "$build_dir" -j"$(nproc)"
ctest --test-dir "$build_dir" --output-on-failure -j2 ${POS_CTEST_ARGS:-}
