# closure_lib.sh - sourced by the firmware tests that read the agent's
# closure of shared libraries: checks the environment, skips (77) in a
# cross build (scripts/footprint.sh reports those per architecture), makes
# $T (removed on exit) and writes the closure of $bin, as
# `footprint.sh --closure` prints it, to $T/closure ($triplet: the build's
# multiarch triplet).
set -euo pipefail
export LC_ALL=C
: "${POS_BUILD_DIR:?POS_BUILD_DIR must name the build directory}"
: "${POS_SOURCE_DIR:?POS_SOURCE_DIR must name the source directory}"
TEST_NAME="$(basename "$0" .sh)"
fail() { echo "$TEST_NAME: FAIL: $*" >&2; exit 1; }
if [ -n "${POS_EMULATOR:-}" ]; then
  echo "$TEST_NAME: SKIP: a cross build (footprint.sh reports it per architecture)" >&2
  exit 77
fi
T="$(mktemp -d "${TMPDIR:-/tmp}/pos-fw-$TEST_NAME.XXXXXX")"
trap 'rm -rf "$T"' EXIT

bin="$POS_BUILD_DIR/agent/pos-agent"
triplet="$(sed -n 's/^CMAKE_LIBRARY_ARCHITECTURE:[A-Z]*=//p' "$POS_BUILD_DIR/CMakeCache.txt")"
[ -n "$triplet" ] || triplet="$(gcc -print-multiarch)"
bash "$POS_SOURCE_DIR/scripts/footprint.sh" --closure "$bin" "$triplet" >"$T/closure" ||
  fail "footprint.sh --closure: $(cat "$T/closure")"
