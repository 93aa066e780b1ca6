#!/usr/bin/env bash
# release-source.sh - the source release of pos-edge, as the Buildroot and
# Yocto recipes take it: a reproducible tarball of one commit, and the
# recipes pinned to it.
#
#   scripts/release-source.sh VERSION [--commit REV] [--out DIR]
#                             [--llhttp-tarball FILE] [--update-recipes]
#
# Makes in DIR (default build-release/):
#   pos-edge-VERSION.tar.gz    git archive of REV (default HEAD), prefix
#                              pos-edge-VERSION/, every mtime the commit's,
#                              gzip -n: the same bytes each time, anywhere
#   SHA256SUMS                 its sha256
#   buildroot/pos-agent/       the Buildroot package, POS_AGENT_VERSION and
#                              pos-agent.hash (tarball, llhttp, licence files)
#   yocto/pos-agent_VERSION.bb SRCREV = REV, LIC_FILES_CHKSUM of LICENSE and
#                              llhttp's LICENSE-MIT, llhttp's sha256
#   yocto/conf/                the configuration snippet (mbedTLS 2.28)
# from the recipes in this working tree (firmware-config/{buildroot,yocto}),
# only their pinned values replaced. --update-recipes writes them back into
# firmware-config/, to be committed as the release's pins.
#
# The tarball is of the commit, never of the working tree. REV's CMake
# project version and newest debian/changelog entry must be VERSION.
# llhttp's sums are taken from the recipes as they are, unless
# --llhttp-tarball names a downloaded release archive of llhttp
# (v<X.Y.Z>.tar.gz, GitHub's archive of the tag release/v<X.Y.Z>): then its
# version and sums are computed from it.
set -euo pipefail
export LC_ALL=C TZ=UTC
unset GZIP
cd "$(dirname "$0")/.."
top="$(pwd)"

die() { echo "release-source.sh: $*" >&2; exit 1; }
usage() { sed -n '6,7p' "$0" | sed 's/^# *//' >&2; exit 2; }

version="" rev=HEAD out="$top/build-release" llhttp_tarball="" update=0
while [ $# -gt 0 ]; do
  case "$1" in
    --commit) rev="${2:?--commit needs a revision}"; shift 2 ;;
    --out) out="${2:?--out needs a directory}"; shift 2 ;;
    --llhttp-tarball) llhttp_tarball="${2:?--llhttp-tarball needs a file}"; shift 2 ;;
    --update-recipes) update=1; shift ;;
    -h|--help) usage ;;
    -*) die "unknown option $1" ;;
    *) [ -z "$version" ] || usage; version="$1"; shift ;;
  esac
done
[ -n "$version" ] || usage
[[ "$version" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] ||
  die "version '$version' is not X.Y.Z (the recipes' file names and PV are made of it)"

commit="$(git rev-parse --verify --quiet "$rev^{commit}")" ||
  die "'$rev' is not a commit of this repository"
cmake_version="$(git show "$commit:CMakeLists.txt" |
  sed -n 's/^project(pos-edge VERSION \([0-9.]*\).*/\1/p')"
[ "$cmake_version" = "$version" ] ||
  die "commit $commit is version '$cmake_version' (CMakeLists.txt project()), not $version"
[[ "$(git show "$commit:firmware-config/debian/changelog" | sed -n 1p)" == *"($version)"* ]] ||
  die "the newest entry of firmware-config/debian/changelog at $commit is not $version"
git cat-file -e "$commit:LICENSE" 2>/dev/null ||
  die "commit $commit has no LICENSE (the recipes declare it)"
[ "$rev" != HEAD ] || git diff --quiet HEAD -- . ':!firmware-config/buildroot' \
  ':!firmware-config/yocto' ||
  echo "release-source.sh: note: uncommitted changes are not in the tarball (it is of $commit)" >&2

br_src="$top/firmware-config/buildroot/pos-agent"
bb_src="$(ls "$top"/firmware-config/yocto/pos-agent_*.bb)"
[ "$(echo "$bb_src" | wc -l)" = 1 ] || die "more than one firmware-config/yocto/pos-agent_*.bb"

# The tarball: no setting of the user's may change its bytes (umask, line
# ends), and gzip -n leaves out the name and time.
mkdir -p "$out"
tarball="pos-edge-$version.tar.gz"
git -c tar.umask=0002 -c core.autocrlf=false -c core.eol=lf \
  archive --format=tar --prefix="pos-edge-$version/" "$commit" | gzip -n -9 >"$out/$tarball.tmp"
mv "$out/$tarball.tmp" "$out/$tarball"
tar_sha="$(sha256sum <"$out/$tarball" | cut -d' ' -f1)"
(cd "$out" && sha256sum "$tarball" >SHA256SUMS)
lic_sha="$(git show "$commit:LICENSE" | sha256sum | cut -d' ' -f1)"
lic_md5="$(git show "$commit:LICENSE" | md5sum | cut -d' ' -f1)"

# llhttp: from the given archive, else as the recipes pin it now.
if [ -n "$llhttp_tarball" ]; then
  [ -f "$llhttp_tarball" ] || die "no file $llhttp_tarball"
  ll_top="$(tar -tzf "$llhttp_tarball" | sed -n 1p)"
  ll_version="$(echo "$ll_top" | sed -n 's|^llhttp-release-v\([0-9.]*\)/.*|\1|p')"
  [ -n "$ll_version" ] ||
    die "$llhttp_tarball is not GitHub's archive of an llhttp release tag (top: $ll_top)"
  ll_sha="$(sha256sum <"$llhttp_tarball" | cut -d' ' -f1)"
  tar -xzOf "$llhttp_tarball" "llhttp-release-v$ll_version/LICENSE-MIT" >"$out/LICENSE-MIT.tmp" ||
    die "$llhttp_tarball has no LICENSE-MIT"
  ll_lic_sha="$(sha256sum <"$out/LICENSE-MIT.tmp" | cut -d' ' -f1)"
  ll_lic_md5="$(md5sum <"$out/LICENSE-MIT.tmp" | cut -d' ' -f1)"
  rm -f "$out/LICENSE-MIT.tmp"
else
  ll_version="$(sed -n 's/^POS_AGENT_LLHTTP_VERSION = //p' "$br_src/pos-agent.mk")"
  ll_sha="$(awk -v f="v$ll_version.tar.gz" '$1 == "sha256" && $3 == f {print $2}' \
    "$br_src/pos-agent.hash" 2>/dev/null || true)"
  ll_lic_sha="$(awk '$1 == "sha256" && $3 == "llhttp/LICENSE-MIT" {print $2}' \
    "$br_src/pos-agent.hash" 2>/dev/null || true)"
  ll_lic_md5="$(sed -n 's|.*file://llhttp/LICENSE-MIT;md5=\([0-9a-f]*\).*|\1|p' "$bb_src")"
  [ -n "$ll_version" ] && [ -n "$ll_sha" ] && [ -n "$ll_lic_sha" ] && [ -n "$ll_lic_md5" ] ||
    die "the recipes do not pin llhttp's sums: give --llhttp-tarball v<X.Y.Z>.tar.gz"
fi

# Buildroot: the package as it is, its version and hash file the release's.
mkdir -p "$out/buildroot/pos-agent"
cp "$br_src/Config.in" "$br_src/80-pos-agent.preset" "$out/buildroot/pos-agent/"
sed -e "s/^POS_AGENT_VERSION = .*/POS_AGENT_VERSION = $version/" \
  -e "s/^POS_AGENT_LLHTTP_VERSION = .*/POS_AGENT_LLHTTP_VERSION = $ll_version/" \
  "$br_src/pos-agent.mk" >"$out/buildroot/pos-agent/pos-agent.mk"
cat >"$out/buildroot/pos-agent/pos-agent.hash" <<EOF
# Written by scripts/release-source.sh $version: the tarball of commit
# $commit
# (the script makes it again, byte for byte, from that commit)
sha256  $tar_sha  $tarball
# llhttp $ll_version: GitHub's archive of the tag release/v$ll_version of
# nodejs/llhttp (where the sum comes from: firmware-config/README.md)
sha256  $ll_sha  v$ll_version.tar.gz
# Licence files
sha256  $lic_sha  LICENSE
sha256  $ll_lic_sha  llhttp/LICENSE-MIT
EOF

# Yocto: the recipe pinned to the commit, named for the version.
mkdir -p "$out/yocto"
rm -f "$out"/yocto/pos-agent_*.bb
sed -e "s/^SRCREV = .*/SRCREV = \"$commit\"/" \
  -e "s/^LLHTTP_VERSION = .*/LLHTTP_VERSION = \"$ll_version\"/" \
  -e "s/^SRC_URI\[llhttp.sha256sum\] = .*/SRC_URI[llhttp.sha256sum] = \"$ll_sha\"/" \
  -e "s|file://LICENSE;md5=[0-9a-f]*|file://LICENSE;md5=$lic_md5|" \
  -e "s|file://llhttp/LICENSE-MIT;md5=[0-9a-f]*|file://llhttp/LICENSE-MIT;md5=$ll_lic_md5|" \
  "$bb_src" >"$out/yocto/pos-agent_$version.bb"
rm -rf "$out/yocto/conf"
cp -R "$top/firmware-config/yocto/conf" "$out/yocto/conf"

if [ "$update" = 1 ]; then
  cp "$out/buildroot/pos-agent/pos-agent.mk" "$out/buildroot/pos-agent/pos-agent.hash" "$br_src/"
  rm "$bb_src"
  cp "$out/yocto/pos-agent_$version.bb" "$top/firmware-config/yocto/"
  echo "release-source.sh: firmware-config/ pinned to $commit; commit it:" >&2
  echo "  git add firmware-config/buildroot firmware-config/yocto &&" \
    "git commit -m 'release $version: recipes pinned to ${commit:0:12}'" >&2
fi
echo "$out/$tarball $tar_sha"
echo "commit $commit"
