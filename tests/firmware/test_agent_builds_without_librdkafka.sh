#!/usr/bin/env bash
# The agent builds alone, as a device build needs it (issue 11, item 5):
# with -DPOS_COLLECTOR=OFF -DPOS_TESTS=OFF the project configures on a
# machine without librdkafka (the Buildroot and Yocto recipes failed at
# configure: the collector's librdkafka was required even for a device),
# and has pos-agent but no collector; CMake refuses an mbedTLS other than
# 2.28 by name. librdkafka is hidden from pkg-config here (a directory of
# every .pc file but rdkafka's); the same tree with the collector on must
# then fail, or the hiding did not work.
set -euo pipefail
export LC_ALL=C
: "${POS_SOURCE_DIR:?POS_SOURCE_DIR must name the source directory}"
TEST_NAME="$(basename "$0" .sh)"
fail() { echo "$TEST_NAME: FAIL: $*" >&2; exit 1; }
if [ -n "${POS_EMULATOR:-}" ]; then
  echo "$TEST_NAME: SKIP: a cross build (cross/build.sh --release builds the agent alone)" >&2
  exit 77
fi
T="$(mktemp -d "${TMPDIR:-/tmp}/pos-fw-$TEST_NAME.XXXXXX")"
trap 'rm -rf "$T"' EXIT

mkdir -p "$T/pc"
IFS=: read -r -a pc_dirs <<<"$(pkg-config --variable pc_path pkg-config)"
for dir in "${pc_dirs[@]}"; do
  for pc in "$dir"/*.pc; do
    [ -e "$pc" ] || continue
    case "${pc##*/}" in rdkafka*.pc) continue ;; esac
    [ -e "$T/pc/${pc##*/}" ] || ln -s "$pc" "$T/pc/${pc##*/}"
  done
done
export PKG_CONFIG_LIBDIR="$T/pc" PKG_CONFIG_PATH=""
pkg-config --exists rdkafka && fail "rdkafka still visible to pkg-config"

configure() {  # configure DIR ARGS...: cmake into $T/DIR, its output in $T/DIR.log
  local dir="$1" rc=0
  shift
  cmake -S "$POS_SOURCE_DIR" -B "$T/$dir" -DCMAKE_BUILD_TYPE=Release "$@" >"$T/$dir.log" 2>&1 ||
    rc=$?
  return "$rc"
}

if configure with-collector -DPOS_TESTS=OFF; then
  fail "configured with the collector on and no librdkafka: the test hides nothing"
fi
grep -q rdkafka "$T/with-collector.log" || fail "the collector's failure names rdkafka: $(tail "$T/with-collector.log")"

configure agent-alone -DPOS_TESTS=OFF -DPOS_COLLECTOR=OFF ||
  fail "the agent alone does not configure without librdkafka: $(tail -n 15 "$T/agent-alone.log")"
cmake --build "$T/agent-alone" --target help >"$T/targets"
grep -q '\.\.\. pos-agent$' "$T/targets" || fail "no pos-agent target: $(cat "$T/targets")"
! grep -q 'pos-collector\|pos_collector' "$T/targets" || fail "a collector target in a device build"
echo "ok: -DPOS_COLLECTOR=OFF configures without librdkafka, pos-agent only"

configure tests-on -DPOS_COLLECTOR=OFF && fail "POS_COLLECTOR=OFF with the tests on configured"
grep -q 'add -DPOS_TESTS=OFF' "$T/tests-on.log" || fail "no word of POS_TESTS: $(tail "$T/tests-on.log")"

mkdir -p "$T/mbedtls3/mbedtls"
printf '#define MBEDTLS_VERSION_NUMBER 0x03040000\n' >"$T/mbedtls3/mbedtls/version.h"
configure mbedtls3 -DPOS_TESTS=OFF -DPOS_COLLECTOR=OFF -DMBEDTLS_INCLUDE_DIR="$T/mbedtls3" &&
  fail "configured against an mbedTLS that is not 2.28"
grep -q 'needs mbedTLS 2.28' "$T/mbedtls3.log" || fail "mbedTLS 3: $(tail "$T/mbedtls3.log")"
echo "ok: an mbedTLS other than 2.28 is refused by name"
echo "$TEST_NAME: PASS"
