#!/usr/bin/env bash
# A firmware build is hardened (issue 11, item 6): the agent binary of an
# optimized build (Release, RelWithDebInfo, MinSizeRel; not sanitized) has
# full RELRO (-z relro -z now: BIND_NOW and a GNU_RELRO segment), stack
# protection (__stack_chk_fail) and fortified libc calls (__*_chk, from
# _FORTIFY_SOURCE); a 32-bit one (armhf) calls glibc's 64-bit time
# functions (_TIME_BITS=64: __clock_gettime64, never clock_gettime) and
# 64-bit file offsets. firmware-config/hardening.cmake sets the flags.
#
#   tests/firmware/test_release_hardened.sh [BINARY]
#
# Without BINARY: $POS_BUILD_DIR/agent/pos-agent, skipped (77) when that
# build is not one that ships (Debug, sanitized, -DPOS_HARDEN=OFF).
# cross/build.sh ARCH --release runs it on the binary it built.
set -euo pipefail
export LC_ALL=C
TEST_NAME="$(basename "$0" .sh)"
fail() { echo "$TEST_NAME: FAIL: $*" >&2; exit 1; }

bin="${1:-}"
if [ -z "$bin" ]; then
  : "${POS_BUILD_DIR:?POS_BUILD_DIR or a BINARY argument is needed}"
  cache="$POS_BUILD_DIR/CMakeCache.txt"
  type="$(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$cache")"
  sanitize="$(sed -n 's/^POS_SANITIZE:[A-Z]*=//p' "$cache")"
  harden="$(sed -n 's/^POS_HARDEN:[A-Z]*=//p' "$cache")"
  case "$type" in
    Release|RelWithDebInfo|MinSizeRel) ;;
    *) echo "$TEST_NAME: SKIP: a $type build is not hardened (Release-type builds are)" >&2
       exit 77 ;;
  esac
  if [ "$sanitize" = ON ] || [ "$harden" = OFF ]; then
    echo "$TEST_NAME: SKIP: POS_SANITIZE=$sanitize POS_HARDEN=$harden" >&2
    exit 77
  fi
  bin="$POS_BUILD_DIR/agent/pos-agent"
fi
[ -f "$bin" ] || fail "$bin: no such binary"

dynamic="$(readelf -d "$bin")"
segments="$(readelf -lW "$bin")"
symbols="$(readelf --dyn-syms -W "$bin" | awk '$7 == "UND" { sub(/@.*/, "", $8); print $8 }' |
  sort -u)"
class="$(readelf -h "$bin" | awk '/Class:/ { print $2 }')"

grep -Eq '\(FLAGS\).*BIND_NOW|\(FLAGS_1\).*NOW' <<<"$dynamic" ||
  fail "$bin: no BIND_NOW (link with -Wl,-z,now)"
grep -q 'GNU_RELRO' <<<"$segments" || fail "$bin: no GNU_RELRO segment (link with -Wl,-z,relro)"
grep -qx '__stack_chk_fail' <<<"$symbols" ||
  fail "$bin: no __stack_chk_fail (compile with -fstack-protector-strong)"
fortified="$(grep -E '^__.*_chk$' <<<"$symbols" | grep -vx '__stack_chk_fail' | tr '\n' ' ')"
[ -n "$fortified" ] || fail "$bin: no fortified libc call (__*_chk; compile with -D_FORTIFY_SOURCE=2)"
echo "$TEST_NAME: $bin: BIND_NOW, GNU_RELRO, __stack_chk_fail, fortified: $fortified"

if [ "$class" = ELF32 ]; then
  grep -qx '__clock_gettime64' <<<"$symbols" ||
    fail "$bin: 32-bit without __clock_gettime64: time_t is 32 bits (-D_TIME_BITS=64)"
  legacy="$(grep -xE 'clock_gettime|gmtime_r|time|stat|fstat|lstat|stat64|fstat64|utimensat' \
    <<<"$symbols" | tr '\n' ' ' || true)"
  [ -z "$legacy" ] || fail "$bin: 32-bit time or file calls (no _TIME_BITS=64?): $legacy"
  echo "$TEST_NAME: $bin: 32-bit with 64-bit time_t (__clock_gettime64) and file offsets"
fi
echo "$TEST_NAME: PASS"
