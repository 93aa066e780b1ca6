#!/usr/bin/env bash
# cross/build.sh leaves the build machine's apt as it found it (issue 11,
# item 7): a foreign architecture it added for multiarch packages that then
# could not be installed is removed again, with the package lists fetched
# for it, on every way out (fallback to a sysroot, an error later, success),
# and kept only when its packages got installed; the sysroot's mirror is
# the machine's own apt source, and without one it stops and says so.
#
# No network and nothing of the real machine is touched: the real dpkg
# works on a package database of the test's own (DPKG_ADMINDIR), apt's
# sources and lists are the test's own (APT_CONFIG), and apt-get, apt-cache,
# debootstrap and sudo are stand-ins on PATH that act as a mirror with a
# broken index for the target architecture would.
set -euo pipefail
export LC_ALL=C
: "${POS_SOURCE_DIR:?POS_SOURCE_DIR must name the source directory}"
TEST_NAME="$(basename "$0" .sh)"
T="$(mktemp -d "${TMPDIR:-/tmp}/pos-fw-$TEST_NAME.XXXXXX")"
trap 'rm -rf "$T"' EXIT
fail() { echo "$TEST_NAME: FAIL: $*" >&2; exit 1; }
codename="$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")"

# ---- the stand-ins ----------------------------------------------------------
mkdir -p "$T/bin" "$T/etc/sources.list.d" "$T/lists" "$T/cache"
cat >"$T/bin/sudo" <<'EOF'
#!/bin/sh
exec "$@"
EOF
# apt-get: "update" fetches the target's index (a list file appears);
# "install" of a :armhf package fails as on a mirror mid-sync, unless
# STUB_INSTALL_OK=1 (or hangs: STUB_INSTALL_SLOW=1); host packages install.
cat >"$T/bin/apt-get" <<'EOF'
#!/bin/bash
lists="$STUB_LISTS"
case " $* " in
  *" update "*)
    for a in $(dpkg --print-foreign-architectures); do
      touch "$lists/mirror_dists_x_main_binary-${a}_Packages"
    done
    exit 0 ;;
  *" install "*)
    if [[ " $* " == *":armhf "* ]] && [ "${STUB_INSTALL_SLOW:-0}" = 1 ]; then
      echo "slow apt-get install (stand-in)" >&2
      exec sleep 60
    fi
    if [[ " $* " == *":armhf "* ]] && [ "${STUB_INSTALL_OK:-0}" != 1 ]; then
      echo "E: Unable to correct problems, you have held broken packages." >&2
      exit 100
    fi
    exit 0 ;;
esac
exit 0
EOF
printf '#!/bin/sh\nexit 0\n' >"$T/bin/apt-cache"
printf '#!/bin/bash\necho "debootstrap (stand-in): cannot reach ${!#}" >&2\nexit 1\n' \
  >"$T/bin/debootstrap"
chmod +x "$T/bin"/*
cat >"$T/apt.conf" <<EOF
Dir::Etc::sourcelist "$T/etc/sources.list";
Dir::Etc::sourceparts "$T/etc/sources.list.d/";
Dir::State::lists "$T/lists/";
Dir::Cache "$T/cache/";
EOF
export APT_CONFIG="$T/apt.conf" STUB_LISTS="$T/lists" PATH="$T/bin:$PATH"
export POS_SYSROOT_DIR="$T/sysroot"

# A fresh package database with no foreign architecture.
new_admindir() {
  rm -rf "$T/dpkg"
  mkdir -p "$T/dpkg/updates" "$T/dpkg/info"
  : >"$T/dpkg/status"
  export DPKG_ADMINDIR="$T/dpkg"
}
foreign() { dpkg --print-foreign-architectures | tr '\n' ' '; }

build() {  # build ARGS...: runs cross/build.sh, output in $T/out; its rc echoed
  local rc=0
  bash "$POS_SOURCE_DIR/cross/build.sh" "$@" >"$T/out" 2>&1 || rc=$?
  echo "$rc"
}

cat >"$T/etc/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: http://127.0.0.1:9/debian
Suites: $codename $codename-updates
Components: main
EOF

# ---- 1. multiarch fails, sysroot fallback fails later: armhf removed -------
new_admindir
rc="$(build armhf --deps-only)"
[ "$rc" != 0 ] || { cat "$T/out"; fail "the stand-in debootstrap fails: build.sh must too"; }
grep -q "falling back to a $codename sysroot" "$T/out" || { cat "$T/out"; fail "no fallback"; }
[ -z "$(foreign)" ] || { cat "$T/out"; fail "armhf left as a foreign architecture: $(foreign)"; }
if ls "$T/lists" | grep -c binary-armhf >/dev/null; then
  fail "armhf package lists left behind: $(ls "$T/lists")"
fi
echo "ok: failed multiarch install then failed sysroot: no armhf left (rc $rc)"

# ---- 2. stopped during the multiarch install: armhf removed too ------------
new_admindir
# Its own process group, as a terminal's foreground job is.
STUB_INSTALL_SLOW=1 setsid bash "$POS_SOURCE_DIR/cross/build.sh" armhf --deps-only \
  >"$T/out" 2>&1 &
pid=$!
for _ in $(seq 1 600); do
  grep -q "slow apt-get install" "$T/out" 2>/dev/null && break
  sleep 0.1
done
grep -q "slow apt-get install" "$T/out" || { cat "$T/out"; fail "build.sh never installed"; }
[ "$(foreign)" = "armhf " ] || fail "build.sh did not add armhf before installing"
# A CI timeout or systemd stops the whole group with TERM (an INT would be
# ignored here: a non-interactive shell's background jobs ignore it).
kill -TERM -- "-$pid"
wait "$pid" || true
[ -z "$(foreign)" ] || { cat "$T/out"; fail "stopped: armhf left behind: $(foreign)"; }
grep -q "remove-architecture armhf" "$T/out" || { cat "$T/out"; fail "stopped: no word of it"; }
echo "ok: stopped (TERM) during the multiarch install: no armhf left"

# ---- 3. multiarch installs: armhf is in use and stays -----------------------
new_admindir
STUB_INSTALL_OK=1 build armhf --deps-only >/dev/null
[ "$(foreign)" = "armhf " ] || { cat "$T/out"; fail "installed multiarch: armhf must stay"; }
echo "ok: multiarch packages installed: armhf kept"

# ---- 4. an architecture that was there before is never removed -------------
new_admindir
dpkg --add-architecture armhf
build armhf --deps-only >/dev/null
[ "$(foreign)" = "armhf " ] || { cat "$T/out"; fail "removed an architecture it did not add"; }
echo "ok: an architecture added before build.sh ran stays"

# ---- 5. the mirror is the machine's own apt source, never one of its own ----
rm -f "$T/etc/sources.list.d"/*
cat >"$T/etc/sources.list" <<EOF
deb-src http://127.0.0.2/src $codename main
deb [arch=amd64 signed-by=/k.gpg] http://127.0.0.3/debian-security $codename-security main
deb [arch=amd64 signed-by=/k.gpg] http://127.0.0.4/debian $codename main
EOF
[ "$(bash "$POS_SOURCE_DIR/cross/build.sh" armhf --print-mirror)" = http://127.0.0.4/debian ] ||
  fail "one-line sources.list: wrong mirror"
: >"$T/etc/sources.list"
cat >"$T/etc/sources.list.d/a.sources" <<EOF
Enabled: no
Types: deb
URIs: http://127.0.0.5/disabled
Suites: $codename

Suites: $codename-security
URIs: http://127.0.0.6/security
Types: deb

URIs: http://127.0.0.7/debian
Suites: $codename $codename-updates
Types: deb deb-src
EOF
[ "$(bash "$POS_SOURCE_DIR/cross/build.sh" armhf --print-mirror)" = http://127.0.0.7/debian ] ||
  fail "deb822 sources: wrong mirror (disabled stanza or field order)"
rm -f "$T/etc/sources.list.d"/*
rc=0
bash "$POS_SOURCE_DIR/cross/build.sh" armhf --print-mirror >"$T/out" 2>&1 || rc=$?
[ "$rc" != 0 ] && ! grep -q '://' "$T/out" && grep -q 'no enabled "deb" source' "$T/out" ||
  { cat "$T/out"; fail "no apt source: must stop with a clear error and name no mirror"; }
new_admindir
rc="$(build armhf --sysroot --deps-only)"
[ "$rc" != 0 ] && grep -q 'no "deb" source' "$T/out" && ! grep -q '://' "$T/out" ||
  { cat "$T/out"; fail "sysroot without an apt source: must stop and say so"; }
echo "ok: the mirror is apt's own; none gives a clear error"
echo "$TEST_NAME: PASS"
