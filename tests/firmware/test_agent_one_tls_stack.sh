#!/usr/bin/env bash
# The agent carries one TLS stack (issue 11, item 6): its uplink is our own
# HTTP client on mbedTLS, so pos-agent links no libcurl, and nothing in its
# whole closure of shared libraries is another TLS or crypto stack
# (OpenSSL, GnuTLS, nettle) or what libcurl pulled in (krb5, LDAP, ssh2).
# And a device build (-DPOS_COLLECTOR=OFF -DPOS_TESTS=OFF) configures on
# a machine without libcurl at all: libcurl is hidden from pkg-config here
# (a directory of every .pc file but libcurl's); the same tree with the
# collector on must then fail naming libcurl, or the hiding did not work.
source "$(dirname "$0")/closure_lib.sh"
if readelf -d "$bin" | grep -c 'NEEDED.*libcurl' >/dev/null; then
  fail "pos-agent links libcurl: $(readelf -d "$bin" | grep NEEDED)"
fi
grep -q '^libmbedtls\.so' "$T/closure" || fail "pos-agent links no mbedTLS: $(cat "$T/closure")"
stacks='^(libcurl|libssl|libcrypto|libgnutls|libnettle|libhogweed|libgssapi|libkrb5|libldap'
stacks+='|libssh|librtmp|libnghttp2|libpsl|libidn2)'
other="$(grep -E "$stacks" "$T/closure" | cut -d' ' -f1 | tr '\n' ' ' || true)"
[ -z "$other" ] || fail "a second TLS stack (or libcurl's dependencies) in the closure: $other"
echo "ok: $(tail -n 1 "$T/closure" | awk '{print $2 " libraries, " $3 " bytes"}'), mbedTLS only"
# Before and after as footprint.sh reports them: this closure against this
# closure plus libcurl's (what the agent NEEDED up to 5d465b4): at least halved.
bash "$POS_SOURCE_DIR/scripts/footprint.sh" --closure "$bin" "$triplet" "" libcurl.so.4 \
  >"$T/before"
if grep -q '^libcurl.so.4 ? ' "$T/before"; then
  echo "note: libcurl.so.4 is not installed for $triplet: before/after not compared"
else
  read -r _ _ after_bytes < <(tail -n 1 "$T/closure")
  read -r _ _ before_bytes < <(tail -n 1 "$T/before")
  [ $((2 * after_bytes)) -le "$before_bytes" ] ||
    fail "the closure is not halved: $before_bytes bytes with libcurl, $after_bytes without"
  echo "ok: closure $before_bytes bytes with libcurl, $after_bytes without"
fi

mkdir -p "$T/pc"
IFS=: read -r -a pc_dirs <<<"$(pkg-config --variable pc_path pkg-config)"
for dir in "${pc_dirs[@]}"; do
  for pc in "$dir"/*.pc; do
    [ -e "$pc" ] || continue
    case "${pc##*/}" in libcurl*.pc) continue ;; esac
    [ -e "$T/pc/${pc##*/}" ] || ln -s "$pc" "$T/pc/${pc##*/}"
  done
done
export PKG_CONFIG_LIBDIR="$T/pc" PKG_CONFIG_PATH=""
! pkg-config --exists libcurl || fail "libcurl still visible to pkg-config"

if cmake -S "$POS_SOURCE_DIR" -B "$T/with-collector" -DPOS_TESTS=OFF \
  >"$T/with-collector.log" 2>&1; then
  fail "configured with the collector on and no libcurl: the test hides nothing"
fi
grep -q libcurl "$T/with-collector.log" ||
  fail "no word of libcurl: $(tail "$T/with-collector.log")"
cmake -S "$POS_SOURCE_DIR" -B "$T/device" -DPOS_TESTS=OFF -DPOS_COLLECTOR=OFF \
  -DCMAKE_BUILD_TYPE=Release >"$T/device.log" 2>&1 ||
  fail "a device build does not configure without libcurl: $(tail -n 15 "$T/device.log")"
! grep -qi curl "$T/device/CMakeCache.txt" || fail "a device build looked for libcurl"
echo "ok: -DPOS_COLLECTOR=OFF configures without libcurl"
echo "$TEST_NAME: PASS"
