#!/usr/bin/env bash
# The Buildroot and Yocto recipes are pinned and declare their licences
# (issue 11, item 5): the Yocto recipe had SRCREV = "${AUTOREV}" and an empty
# llhttp sha256sum, neither declared the MIT llhttp compiled in, and
# Buildroot had no .hash file. Checked without Buildroot or Yocto:
# - no AUTOREV, no empty or placeholder sum; SRCREV a full commit id;
# - Buildroot: pos-agent.hash has a sha256 for the release tarball, llhttp's
#   and every POS_AGENT_LICENSE_FILES entry; REDISTRIBUTE = NO; the units
#   installed by POS_AGENT_INSTALL_INIT_SYSTEMD from files the tree has;
#   users by POS_AGENT_USERS;
# - Yocto: LICENSE names both, LIC_FILES_CHKSUM's md5 of LICENSE is the
#   file's (and the .hash's sha256 too); S and llhttp's path not under
#   ${WORKDIR} (UNPACKDIR-ready); mbedTLS 2.28 preferred by the conf snippet;
# - both pin the same llhttp (version and sha256);
# - in a git checkout with the pinned commit: scripts/release-source.sh
#   makes, from that commit, the very sums committed (the tarball is
#   reproducible and the recipes are its). POS_LLHTTP_TARBALL=<v*.tar.gz>
#   checks llhttp's sums against a downloaded llhttp archive too.
set -euo pipefail
export LC_ALL=C
: "${POS_SOURCE_DIR:?POS_SOURCE_DIR must name the source directory}"
TEST_NAME="$(basename "$0" .sh)"
fail() { echo "$TEST_NAME: FAIL: $*" >&2; exit 1; }
src="$POS_SOURCE_DIR"
br="$src/firmware-config/buildroot/pos-agent"
mk="$br/pos-agent.mk"
hash="$br/pos-agent.hash"
bb="$(ls "$src"/firmware-config/yocto/pos-agent_*.bb)"
[ "$(echo "$bb" | wc -l)" = 1 ] || fail "more than one Yocto recipe: $bb"
conf="$src/firmware-config/yocto/conf/distro/include/pos-agent.inc"
T="$(mktemp -d "${TMPDIR:-/tmp}/pos-fw-$TEST_NAME.XXXXXX")"
trap 'rm -rf "$T"' EXIT

mkvar() { sed -n "s/^$1 = //p" "$mk"; }
bbvar() { sed -n "s/^$1 = \"\\(.*\\)\"\$/\\1/p" "$bb"; }
hash_of() { awk -v f="$1" '$1 == "sha256" && $3 == f {print $2}' "$hash"; }

# Yocto: pinned, no empty sum.
! grep -n 'AUTOREV' "$bb" || fail "${bb##*/} follows a branch (AUTOREV): pin SRCREV"
srcrev="$(bbvar SRCREV)"
[[ "$srcrev" =~ ^[0-9a-f]{40}$ ]] || fail "${bb##*/}: SRCREV '$srcrev' is not a commit id"
ll_bb_sha="$(sed -n 's/^SRC_URI\[llhttp.sha256sum\] = "\(.*\)"$/\1/p' "$bb")"
[[ "$ll_bb_sha" =~ ^[0-9a-f]{64}$ ]] ||
  fail "${bb##*/}: llhttp's sha256sum '$ll_bb_sha' is empty or not a sha256"
! grep -nE '(sha256sum|md5sum)\] = ""|md5=("|\\|[[:space:]]|$)' "$bb" || fail "${bb##*/}: an empty sum"
grep -q '^LICENSE = "Proprietary & MIT"$' "$bb" ||
  fail "${bb##*/}: LICENSE does not declare the company's code and the MIT llhttp"
lic_md5="$(sed -n 's|.*file://LICENSE;md5=\([0-9a-f]*\).*|\1|p' "$bb")"
ll_lic_md5="$(sed -n 's|.*file://llhttp/LICENSE-MIT;md5=\([0-9a-f]*\).*|\1|p' "$bb")"
[[ "$ll_lic_md5" =~ ^[0-9a-f]{32}$ ]] || fail "${bb##*/}: no md5 of llhttp/LICENSE-MIT"
[ -f "$src/LICENSE" ] || fail "the project has no LICENSE file"
[ "$lic_md5" = "$(md5sum <"$src/LICENSE" | cut -d' ' -f1)" ] ||
  fail "${bb##*/}: LIC_FILES_CHKSUM md5 of LICENSE '$lic_md5' is not the file's (run scripts/release-source.sh)"
grep -nE '^S = |WORKDIR\}/(git|llhttp)' "$bb" &&
  fail "${bb##*/}: S or a source path set under WORKDIR (not UNPACKDIR-ready: S is the default)"
grep -q 'destsuffix=${BP}' "$bb" && grep -q 'LLHTTP_SOURCE_DIR=${S}/llhttp/src' "$bb" ||
  fail "${bb##*/}: the sources do not land where S is by default (destsuffix=\${BP})"
grep -q '^PREFERRED_VERSION_mbedtls = "2.28.%"$' "$conf" ||
  fail "${conf#"$src"/}: mbedTLS 2.28 is not pinned"
grep -q "PREFERRED_VERSION_mbedtls" "$bb" || fail "${bb##*/}: mbedTLS 2.28 not checked at parse"

# Buildroot: hashes of every download and licence file, the Buildroot ways.
[ -f "$hash" ] || fail "no ${hash#"$src"/}"
while read -r line; do
  case "$line" in ''|'#'*) continue ;; esac
  [[ "$line" =~ ^sha256\ \ [0-9a-f]{64}\ \ [^[:space:]]+$ ]] ||
    fail "${hash##*/}: not 'sha256  <sum>  <file>': $line"
done <"$hash"
version="$(mkvar POS_AGENT_VERSION)"
[ "${bb##*/}" = "pos-agent_$version.bb" ] || fail "${bb##*/} is not version $version of ${mk##*/}"
tarball="$(mkvar POS_AGENT_SOURCE | sed "s/\$(POS_AGENT_VERSION)/$version/")"
ll_version="$(mkvar POS_AGENT_LLHTTP_VERSION)"
[ "$ll_version" = "$(bbvar LLHTTP_VERSION)" ] ||
  fail "llhttp $ll_version in Buildroot, $(bbvar LLHTTP_VERSION) in Yocto"
[ -n "$(hash_of "$tarball")" ] || fail "${hash##*/}: no sha256 of $tarball"
[ "$(hash_of "v$ll_version.tar.gz")" = "$ll_bb_sha" ] ||
  fail "llhttp's sha256: '$(hash_of "v$ll_version.tar.gz")' in Buildroot, '$ll_bb_sha' in Yocto"
for f in $(mkvar POS_AGENT_LICENSE_FILES); do
  [ -n "$(hash_of "$f")" ] || fail "${hash##*/}: no sha256 of the licence file $f"
done
[ "$(hash_of LICENSE)" = "$(sha256sum <"$src/LICENSE" | cut -d' ' -f1)" ] ||
  fail "${hash##*/}: the sha256 of LICENSE is not the file's (run scripts/release-source.sh)"
[ "$(mkvar POS_AGENT_REDISTRIBUTE)" = NO ] || fail "${mk##*/}: sources would go into legal-info"
[ "$(mkvar POS_AGENT_LICENSE)" = "Proprietary, MIT (llhttp)" ] ||
  fail "${mk##*/}: licence '$(mkvar POS_AGENT_LICENSE)'"
sed -n '/^define POS_AGENT_INSTALL_INIT_SYSTEMD$/,/^endef$/p' "$mk" >"$T/init"
for unit in pos-agent.service pos-agent-firstboot.service; do
  grep -q "/firmware-config/$unit" "$T/init" && [ -f "$src/firmware-config/systemd/$unit" ] ||
    fail "${mk##*/}: POS_AGENT_INSTALL_INIT_SYSTEMD does not install $unit"
done
for f in tmpfiles.d/pos-agent.conf sysusers.d/pos-agent.conf; do
  grep -q "(@D)/firmware-config/$f" "$T/init" && [ -f "$src/firmware-config/$f" ] ||
    fail "${mk##*/}: POS_AGENT_INSTALL_INIT_SYSTEMD does not install $f"
done
grep -q -- '-DPOS_INSTALL_SYSTEMD=OFF' "$mk" ||
  fail "${mk##*/}: the units would be installed twice (cmake and INSTALL_INIT_SYSTEMD)"
grep -q '^define POS_AGENT_USERS$' "$mk" || fail "${mk##*/}: no POS_AGENT_USERS"

# The sums are the release's: made again from the pinned commit.
if ! git -C "$src" cat-file -e "$srcrev^{commit}" 2>/dev/null; then
  echo "$TEST_NAME: SKIP: static checks passed; commit $srcrev is not in $src" \
    "(not a git checkout, or a shallow one): the sums were not remade" >&2
  exit 77
fi
args=("$version" --commit "$srcrev" --out "$T/release")
[ -z "${POS_LLHTTP_TARBALL:-}" ] || args+=(--llhttp-tarball "$POS_LLHTTP_TARBALL")
bash "$src/scripts/release-source.sh" "${args[@]}" >"$T/release.log" 2>&1 ||
  { cat "$T/release.log" >&2; fail "scripts/release-source.sh ${args[*]}"; }
diff -u "$hash" "$T/release/buildroot/pos-agent/pos-agent.hash" >&2 ||
  fail "${hash##*/} is not what release-source.sh makes from $srcrev (above)"
diff -u "$mk" "$T/release/buildroot/pos-agent/pos-agent.mk" >&2 ||
  fail "${mk##*/} is not pinned as release-source.sh pins it (above)"
diff -u "$bb" "$T/release/yocto/${bb##*/}" >&2 ||
  fail "${bb##*/} is not pinned as release-source.sh pins it (above)"
# Reproducible: a second tarball is the same file.
bash "$src/scripts/release-source.sh" "$version" --commit "$srcrev" --out "$T/again" \
  >/dev/null 2>&1 || fail "release-source.sh, second run"
cmp -s "$T/release/$tarball" "$T/again/$tarball" || fail "$tarball differs between two runs"
echo "$TEST_NAME: PASS (release $version = $srcrev, $tarball $(hash_of "$tarball"))"
