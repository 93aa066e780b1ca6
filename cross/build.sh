#!/usr/bin/env bash
# cross/build.sh - cross-builds pos-agent for one POS device architecture
# on a Debian 12 build machine, and optionally runs its tests under qemu-user.
#
#   cross/build.sh ARCH [--test] [--release] [--package] [--jobs N]
#
#   ARCH        aarch64 (arm64), armhf (arm), x86_64 (amd64)
#   --test      then run ctest (unit, integration and e2e tests) under qemu-user
#   --release   a firmware build: POS_TESTS=OFF (no tests, no fault hooks),
#               POS_COLLECTOR=OFF (the agent alone), hardened, into
#               build-ARCH-release/ instead of build-ARCH/
#   --package   then make the .deb with CPack (needs --release: a package
#               never carries a test build)
#   --deps-only install the packages (and make the sysroot) and stop
#   --sysroot   take the target's libraries from a debootstrap sysroot
#               instead of multiarch -dev packages (cross/README.md);
#               armhf and aarch64 fall back to it by themselves when
#               their multiarch packages cannot be installed
#   --jobs N    parallel compile jobs (default: nproc)
#   --print-mirror  print the Debian mirror a sysroot would come from (the
#               machine's own apt source for its release) and stop
#
# What it does, each step skipped when already done:
#   1. dpkg --add-architecture for the target, apt-get update once after it;
#   2. apt-get install the cross compiler (gcc-<triplet>), qemu-user, the
#      build machine's own build tools (cmake, protoc-c, llhttp sources) and
#      the target's multiarch -dev packages (libuv1-dev:arm64 ...);
#   2b. in sysroot mode (--sysroot, or armhf whose multiarch packages
#      cannot be installed): debootstrap --foreign the target's libraries
#      into a sysroot instead (once; cached), and record its dpkg database
#      (for the .deb's Depends);
#   3. cmake with cross/<triplet>.cmake into build-ARCH/, and build;
#   4. --test: ctest; --package: cpack (in sysroot mode, then check that
#      every linked library's package is in the .deb's Depends).
# It uses sudo for apt when not run as root. It leaves apt as it found it: an
# architecture it added (step 1) is removed again on every exit unless its
# packages got installed, and it names no mirror of its own.
#
# Environment:
#   POS_CTEST_ARGS   extra ctest arguments (e.g. "-L unit")
#   POS_NO_INSTALL=1 never call apt (fail instead if something is missing)
#   POS_SYSROOT_DIR  where the sysroot goes (default
#                    /var/tmp/pos-sysroot/<release>-<arch>)
#   APT_CONFIG, DPKG_ADMINDIR  as for apt and dpkg (where the sources and the
#                    package database are)
set -euo pipefail
script="$(readlink -f "$0")"
cd "$(dirname "$script")/.."

usage() {
  sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$script"
}

arch=""
run_tests=0
release=0
package=0
deps_only=0
sysroot_opt=0
print_mirror=0
jobs="$(nproc)"
while [ $# -gt 0 ]; do
  case "$1" in
    --test) run_tests=1 ;;
    --release) release=1 ;;
    --package) package=1 ;;
    --deps-only) deps_only=1 ;;
    --sysroot) sysroot_opt=1 ;;
    --print-mirror) print_mirror=1 ;;
    --jobs) jobs="${2:?--jobs needs a number}"; shift ;;
    -h|--help) usage; exit 0 ;;
    -*) echo "cross/build.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    *)
      [ -z "$arch" ] || { echo "cross/build.sh: one ARCH only" >&2; exit 2; }
      arch="$1" ;;
  esac
  shift
done

case "$arch" in
  aarch64|arm64) arch=aarch64 triplet=aarch64-linux-gnu deb_arch=arm64 qemu=qemu-aarch64 ;;
  armhf|arm|armv7) arch=armhf triplet=arm-linux-gnueabihf deb_arch=armhf qemu=qemu-arm ;;
  x86_64|amd64) arch=x86_64 triplet=x86_64-linux-gnu deb_arch=amd64 qemu=qemu-x86_64 ;;
  "") echo "cross/build.sh: name an architecture: aarch64, armhf or x86_64" >&2; exit 2 ;;
  *) echo "cross/build.sh: unknown architecture '$arch': use aarch64, armhf or x86_64" >&2; exit 2 ;;
esac
if [ "$package" = 1 ] && [ "$release" = 0 ]; then
  echo "cross/build.sh: --package needs --release (a package never carries a test build)" >&2
  exit 2
fi
if [ "$run_tests" = 1 ] && [ "$release" = 1 ]; then
  echo "cross/build.sh: --release builds no tests; drop --test or --release" >&2
  exit 2
fi

host_arch="$(dpkg --print-architecture)"
if [ "$sysroot_opt" = 1 ] && [ "$deb_arch" = "$host_arch" ]; then
  echo "cross/build.sh: --sysroot is for a cross build ($arch is this machine's own)" >&2
  exit 2
fi
build_dir="build-$arch"
[ "$release" = 1 ] && build_dir="build-$arch-release"

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

log() { echo "cross/build.sh [$arch]: $*" >&2; }

# ---- apt as found -----------------------------------------------------------
#
# A foreign architecture this run adds (dpkg --add-architecture, for the
# multiarch -dev packages) stays only when those packages got installed.
# Otherwise (their install failed and the build fell back to a sysroot, or
# the run stopped on an error or a signal) it is removed on the way out,
# with the package lists its apt-get update fetched: left behind, a target
# architecture whose index the mirror serves broken fails every later
# apt-get update on the build machine.
added_arch=""          # set while this run's foreign architecture is unused
lists_before=""        # that architecture's package lists before it was added
arch_lists() {
  local lists
  eval "$(apt-config shell lists Dir::State::lists/d)"
  ls -1 "${lists:-/var/lib/apt/lists/}" 2>/dev/null | grep -e "_binary-${deb_arch}_" || true
}
remove_added_arch() {
  local lists f
  [ -n "$added_arch" ] || return 0
  if ! $sudo dpkg --remove-architecture "$added_arch"; then
    log "could not remove the foreign architecture $added_arch this run added (see dpkg's"
    log "message: packages of it are installed?): remove them, then dpkg --remove-architecture"
    added_arch=""
    return 1
  fi
  log "dpkg --remove-architecture $added_arch (added by this run, not used)"
  eval "$(apt-config shell lists Dir::State::lists/d)"
  while IFS= read -r f; do
    [ -z "$f" ] || printf '%s\n' "$lists_before" | grep -qxF -e "$f" ||
      $sudo rm -f "${lists:-/var/lib/apt/lists/}$f"
  done < <(arch_lists)
  added_arch=""
}
on_exit() {
  local rc=$?
  trap - EXIT
  remove_added_arch || true
  exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

# ---- 1. packages ---------------------------------------------------------

installed() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}

# The build machine's own tools: compiler driver for build-time programs,
# protoc-c, the llhttp C sources (arch-independent), dpkg-shlibdeps for
# CPack, and what the integration tests drive the agent with.
native_packages=(cmake make pkg-config protobuf-c-compiler node-llhttp dpkg-dev file
                 curl sqlite3 binutils)
# The target's libraries (headers + .so + .pc), Multi-Arch: same.
target_dev=(libsqlite3-dev libuv1-dev libcurl4-openssl-dev libmbedtls-dev
            libprotobuf-c-dev libzstd-dev librdkafka-dev libinih-dev libjansson-dev
            libcmocka-dev)

# ---- the sysroot's helpers (used in 1b) -----------------------------------

codename="$(. /etc/os-release && echo "${VERSION_CODENAME:-}")"
[ -n "$codename" ] || codename=bookworm
sysroot_dir="${POS_SYSROOT_DIR:-/var/tmp/pos-sysroot/$codename-$deb_arch}"
sysroot_dir="$(realpath -m "$sysroot_dir")"
# The -dev packages need not depend on libc6-dev (crt1.o, libc.so).
sysroot_include=(libc6-dev "${target_dev[@]}")
sysroot_stamp="$codename $deb_arch ${sysroot_include[*]}"

# Architectures whose failed multiarch install falls back to a sysroot.
sysroot_fallback_arches=(armhf arm64)
sysroot_fallback_ok() {
  local a
  [ "$deb_arch" != "$host_arch" ] || return 1
  for a in "${sysroot_fallback_arches[@]}"; do
    [ "$a" = "$deb_arch" ] && return 0
  done
  return 1
}

sysroot_complete() {
  [ -f "$sysroot_dir/.pos-sysroot" ] &&
    [ "$(cat "$sysroot_dir/.pos-sysroot")" = "$sysroot_stamp" ]
}

# The build machine's Debian mirror: the first enabled "deb" source of the
# machine's release, in the order apt reads them (Dir::Etc::sourcelist, then
# Dir::Etc::sourceparts: *.list one-line and *.sources deb822 files, sorted
# by name). The only registry the machine is set up to reach; there is no
# mirror of this script's own. Prints nothing when there is none.
debian_mirror() {
  local sourcelist sourceparts f
  eval "$(apt-config shell sourcelist Dir::Etc::sourcelist/f sourceparts Dir::Etc::sourceparts/d)"
  for f in "${sourcelist:-/etc/apt/sources.list}" "${sourceparts:-/etc/apt/sources.list.d/}"*; do
    [ -f "$f" ] || continue
    case "$f" in
      */sources.list|*.list)
        # deb [ options ] uri suite component...
        awk -v suite="$codename" '$1 == "deb" {
            i = 2; if ($2 ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
            if ($(i + 1) == suite) { print $i; exit } }' "$f" ;;
      *.sources)
        # One stanza at a time (fields in any order): Types with deb,
        # Suites with the release, not Enabled: no.
        awk -v suite="$codename" '
          function check() {
            if (deb && hassuite && !disabled && uri != "") { print uri; found = 1; exit }
          }
          /^[ \t]*$/ { check(); deb = hassuite = disabled = 0; uri = ""; next }
          /^#/ { next }
          tolower($1) == "types:" { for (i = 2; i <= NF; i++) if ($i == "deb") deb = 1 }
          tolower($1) == "uris:" { uri = $2 }
          tolower($1) == "suites:" { for (i = 2; i <= NF; i++) if ($i == suite) hassuite = 1 }
          tolower($1) == "enabled:" && tolower($2) == "no" { disabled = 1 }
          END { if (!found) check() }' "$f" ;;
    esac
  done | sed -n 1p  # reads all: no SIGPIPE under pipefail
}

if [ "$print_mirror" = 1 ]; then
  mirror="$(debian_mirror)"
  if [ -z "$mirror" ]; then
    log "no enabled \"deb\" source for $codename in apt's sources (sources.list and"
    log "sources.list.d/*.list, *.sources): add the machine's Debian mirror there"
    exit 1
  fi
  echo "$mirror"
  exit 0
fi

# The sysroot's dpkg database, written from the .deb files that went into
# it (dpkg itself cannot unpack them: their maintainer scripts are the
# target's): per package its control fields in var/lib/dpkg/status, its file
# list (info/<pkg>.list, <pkg>:<arch> for Multi-Arch: same as dpkg names
# them) and its shlibs and symbols files. CPack's dpkg-shlibdeps reads the
# Depends of an armhf .deb from it (firmware-config/packaging.cmake), the
# way it reads the build machine's for arm64 and amd64.
# record_sysroot_db ROOT DEB...
record_sysroot_db() {
  local root="$1" deb ctl fields pkg name ma db f
  shift
  db="$(mktemp -d "${TMPDIR:-/tmp}/pos-sysroot-db.XXXXXX")"
  mkdir -p "$db/info"
  : >"$db/status"
  for deb in "$@"; do
    fields="$(dpkg-deb -f "$deb")"
    pkg="$(dpkg-deb -f "$deb" Package)"
    ma="$(dpkg-deb -f "$deb" Multi-Arch)"
    name="$pkg"
    [ "$ma" != same ] || name="$pkg:$(dpkg-deb -f "$deb" Architecture)"
    # Status after Package, as dpkg writes it.
    printf '%s\n' "$fields" |
      awk 'NR == 1 { print; print "Status: install ok installed"; next } { print }' >>"$db/status"
    echo >>"$db/status"
    # ./usr/lib/x/ -> /usr/lib/x ; ./ -> /.
    dpkg-deb --fsys-tarfile "$deb" | tar -t |
      sed -e 's|^\./|/|' -e 's|^/$|/.|' -e 's|\(.\)/$|\1|' >"$db/info/$name.list"
    ctl="$db/ctl"
    rm -rf "$ctl"
    mkdir "$ctl"
    dpkg-deb -e "$deb" "$ctl"
    for f in shlibs symbols; do
      [ ! -f "$ctl/$f" ] || cp "$ctl/$f" "$db/info/$name.$f"
    done
  done
  rm -rf "$db/ctl"
  # The multiarch layout (info/<pkg>:<arch>.list), as dpkg >= 1.16.2 has it.
  echo 1 >"$db/info/format"
  echo "$deb_arch" >"$db/arch"
  $sudo rm -rf "$root/var/lib/dpkg.pos-new"
  $sudo mkdir -p "$root/var/lib"
  $sudo cp -r "$db" "$root/var/lib/dpkg.pos-new"
  rm -rf "$db"
  # Keep what debootstrap put there besides (alternatives/, parts/ ...).
  $sudo cp -r "$root/var/lib/dpkg.pos-new/." "$root/var/lib/dpkg/"
  $sudo rm -rf "$root/var/lib/dpkg.pos-new"
  $sudo touch "$root/var/lib/dpkg/.pos-sysroot-db"
}

sysroot_has_db() {
  [ -f "$sysroot_dir/var/lib/dpkg/.pos-sysroot-db" ] && [ -s "$sysroot_dir/var/lib/dpkg/status" ]
}

# A sysroot made before record_sysroot_db existed has no dpkg database:
# fetch the very .deb files debootstrap used again (its debootstrap/deburis
# names them, version and all), check them against the sysroot's own
# Packages index (SHA256), and record it. Needed only to package.
sysroot_add_db() {
  local dl uri pkg ver file want have index
  exec 9>>"$sysroot_dir.lock"
  flock 9
  if sysroot_has_db; then
    exec 9>&-
    return 0
  fi
  index="$(ls "$sysroot_dir"/var/lib/apt/lists/*_binary-"${deb_arch}"_Packages 2>/dev/null | head -n1)"
  if [ ! -f "$sysroot_dir/debootstrap/deburis" ] || [ -z "$index" ]; then
    log "sysroot: $sysroot_dir has no dpkg database and no debootstrap records to make one:"
    log "delete it (it is made again on the next run)"
    exit 1
  fi
  log "sysroot: recording its dpkg database (fetching its $(wc -l <"$sysroot_dir/debootstrap/deburis") .deb files again)"
  dl="$(mktemp -d "${TMPDIR:-/tmp}/pos-sysroot-debs.XXXXXX")"
  while read -r pkg ver uri; do
    file="$dl/${uri##*/}"
    if ! curl -fsS --retry 3 -o "$file" "$uri"; then
      log "sysroot: cannot fetch $uri ($pkg $ver is no longer on the mirror?):"
      log "delete $sysroot_dir to make it again from the mirror's current release"
      rm -rf "$dl"
      exit 1
    fi
    want="$(awk -v p="$pkg" -v v="$ver" '
        /^Package: / { P = $2 } /^Version: / { V = $2 }
        /^SHA256: / { if (P == p && V == v) { print $2; exit } }' "$index")"
    have="$(sha256sum "$file" | cut -d' ' -f1)"
    if [ -z "$want" ] || [ "$want" != "$have" ]; then
      log "sysroot: $uri does not match the sysroot's index (SHA256 ${have} != '${want}'):"
      log "delete $sysroot_dir to make it again"
      rm -rf "$dl"
      exit 1
    fi
  done <"$sysroot_dir/debootstrap/deburis"
  record_sysroot_db "$sysroot_dir" "$dl"/*.deb
  rm -rf "$dl"
  exec 9>&-
}

make_sysroot() {
  local mirror tmp deb link target
  mirror="$(debian_mirror)"
  mirror="${mirror%%$'\n'*}"
  if [ -z "$mirror" ]; then
    log "sysroot: no \"deb\" source for $codename in /etc/apt/sources.list{,.d}: add the"
    log "machine's Debian mirror there (the sysroot is made from the same mirror apt uses)"
    return 1
  fi
  mkdir -p "$(dirname "$sysroot_dir")" 2>/dev/null || $sudo mkdir -p "$(dirname "$sysroot_dir")"
  # One builder at a time (other builds on this machine may want it too).
  exec 9>>"$sysroot_dir.lock"
  flock 9
  if sysroot_complete; then
    log "sysroot: $sysroot_dir (made meanwhile by another build)"
    exec 9>&-
    return 0
  fi
  tmp="$sysroot_dir.new"
  # Only ever remove a sysroot this script made (an outdated one).
  if [ -e "$sysroot_dir" ]; then
    if [ ! -f "$sysroot_dir/.pos-sysroot" ]; then
      log "$sysroot_dir exists but is not a sysroot of cross/build.sh: set POS_SYSROOT_DIR"
      exit 1
    fi
    log "sysroot: $sysroot_dir is outdated ($(cat "$sysroot_dir/.pos-sysroot")): making it again"
    $sudo rm -rf "$sysroot_dir"
  fi
  $sudo rm -rf "$tmp"
  log "debootstrap --foreign $codename ($deb_arch) from $mirror into $sysroot_dir"
  $sudo debootstrap --arch="$deb_arch" --foreign --variant=minbase \
    --include="$(IFS=,; echo "${sysroot_include[*]}")" "$codename" "$tmp" "$mirror"
  log "sysroot: unpacking the -dev packages and their libraries"
  for deb in "$tmp"/var/cache/apt/archives/*.deb; do
    # --keep-directory-symlink: /lib, /bin ... are merged-/usr links.
    dpkg-deb --fsys-tarfile "$deb" |
      $sudo tar -x -C "$tmp" --keep-directory-symlink --no-same-owner
  done
  record_sysroot_db "$tmp" "$tmp"/var/cache/apt/archives/*.deb
  $sudo find "$tmp/var/cache/apt/archives" -name '*.deb' -delete
  # Absolute symlinks (libfoo.so -> /lib/<triplet>/libfoo.so.1) point at
  # the build machine's files: make them relative, inside the sysroot.
  while IFS= read -r -d '' link; do
    target="$(readlink "$link")"
    $sudo ln -sfn "$(realpath -m -s --relative-to="$(dirname "$link")" "$tmp$target")" "$link"
  done < <($sudo find "$tmp/usr" -xdev -type l -lname '/*' -print0)
  # The target's loader cache, made by the target's own (static) ldconfig:
  # with qemu -L, ld.so would otherwise read the build machine's cache.
  if ! $sudo "${qemu:-qemu-$deb_arch}" "$tmp/sbin/ldconfig" -r "$tmp" 2>/dev/null; then
    $sudo rm -f "$tmp/etc/ld.so.cache"
    $sudo touch "$tmp/etc/ld.so.cache"  # empty: ld.so searches its default directories
  fi
  for p in "${sysroot_include[@]}"; do
    if ! ls "$tmp/usr/share/doc/$p" >/dev/null 2>&1; then
      log "sysroot: $p was not unpacked (see debootstrap's messages above)"
      exit 1
    fi
  done
  echo "$sysroot_stamp" | $sudo tee "$tmp/.pos-sysroot" >/dev/null
  $sudo mv "$tmp" "$sysroot_dir"
  exec 9>&-
  log "sysroot: $sysroot_dir ($(du -sh "$sysroot_dir" | cut -f1))"
}

# Whether the target's libraries come from the multiarch -dev packages
# (the default) or from a sysroot (see 1b).
mode=multiarch
[ "$sysroot_opt" = 1 ] && mode=sysroot
# A cached, complete sysroot stands in for multiarch packages that are not
# installed: no apt round that is known to fail on every run (see 1b).
if [ "$mode" = multiarch ] && sysroot_fallback_ok && sysroot_complete; then
  for p in "${target_dev[@]}"; do
    if ! installed "$p:$deb_arch"; then
      log "$p:$deb_arch is not installed and a sysroot is cached: using $sysroot_dir"
      log "(remove it, or install the :$deb_arch packages, to build against multiarch again)"
      mode=sysroot
      break
    fi
  done
fi

wanted_packages() {
  wanted=("${native_packages[@]}")
  if [ "$deb_arch" = "$host_arch" ]; then
    wanted+=(gcc "${target_dev[@]}")
  elif [ "$mode" = sysroot ]; then
    # The sysroot has the target's C library and loader: no -cross libc.
    wanted+=("gcc-${triplet//_/-}" qemu-user debootstrap)
  else
    # The cross C library the compiler links with (it only Recommends it).
    wanted+=("gcc-${triplet//_/-}" "libc6-dev-$deb_arch-cross" qemu-user)
    for p in "${target_dev[@]}"; do
      wanted+=("$p:$deb_arch")
    done
  fi
  missing=()
  for p in "${wanted[@]}"; do
    installed "$p" || missing+=("$p")
  done
}

# install_missing: apt-get install "${missing[@]}"; fails (after its
# messages) when apt cannot.
update_done=0
update_failed=0
install_missing() {
  if [ "${POS_NO_INSTALL:-0}" = 1 ]; then
    log "missing packages and POS_NO_INSTALL=1: ${missing[*]}"
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  local need_update=0
  if [ "$mode" = multiarch ] && [ "$deb_arch" != "$host_arch" ] &&
     ! dpkg --print-foreign-architectures | grep -qx "$deb_arch"; then
    log "dpkg --add-architecture $deb_arch"
    lists_before="$(arch_lists)"
    $sudo dpkg --add-architecture "$deb_arch"
    added_arch="$deb_arch"
    need_update=1
  fi
  # The package lists know the target's packages only after an update
  # that followed --add-architecture.
  if [ "$mode" = multiarch ] && [ "$deb_arch" != "$host_arch" ] &&
     ! apt-cache policy "libc6:$deb_arch" 2>/dev/null | grep -q 'Candidate: [0-9]'; then
    need_update=1
  fi
  apt_update() {
    [ "$update_done" = 0 ] || return 0
    update_done=1
    # Every index must arrive: a target arch missing its security index
    # pins its libraries below the build machine's, and Multi-Arch: same
    # packages must have one version on all architectures. A mirror caught
    # mid-sync serves such an index; it usually heals within minutes.
    local attempt
    for attempt in 1 2 3; do
      log "apt-get update (attempt $attempt)"
      if $sudo apt-get update -q -o Acquire::Retries=3; then
        return 0
      fi
      [ "$attempt" = 3 ] || sleep $((attempt * 15))
    done
    log "apt-get update failed for some index (see above): trying with the lists apt has"
    update_failed=1
    return 0
  }
  apt_install() {
    $sudo apt-get install -y -q --no-install-recommends -o Acquire::Retries=3 "${missing[@]}"
  }
  [ "$need_update" = 0 ] || apt_update
  log "installing: ${missing[*]}"
  # Stale package lists fail the install: refresh them once.
  if ! apt_install; then
    [ "$need_update" = 1 ] || apt_update
    if ! apt_install; then
      log "cannot install the packages for $deb_arch (see apt's message above)"
      if [ "$mode" = multiarch ] && [ "$update_failed" = 1 ]; then
        log "apt-get update could not fetch every index: the $deb_arch libraries cannot match"
        log "the build machine's versions (Multi-Arch: same). Retry when the mirror is in sync."
      fi
      return 1
    fi
  fi
}

wanted_packages
if [ ${#missing[@]} -gt 0 ] && ! install_missing; then
  if [ "$mode" = multiarch ] && sysroot_fallback_ok; then
    # The sysroot needs no foreign architecture: leave none behind, nor
    # its index for later apt runs (a sysroot build installs host tools).
    remove_added_arch || exit 1
    log "falling back to a $codename sysroot for $deb_arch (debootstrap): its libraries"
    log "come from $codename main alone, so they need not match the build machine's"
    mode=sysroot
    wanted_packages
    if [ ${#missing[@]} -gt 0 ] && ! install_missing; then
      exit 1
    fi
  else
    exit 1
  fi
fi
# The target's packages are installed: the architecture is in use now.
[ "$mode" != multiarch ] || added_arch=""

# ---- 1b. the sysroot --------------------------------------------------------
#
# For a target whose multiarch -dev packages cannot be installed (their
# versions must equal the build machine's, which a mirror with a broken
# security index for that architecture prevents), or with --sysroot: a
# Debian root filesystem of the target's architecture made by debootstrap
# from the machine's own mirror and release, main only, so every library in
# it comes from one self-consistent set. --foreign makes debootstrap only
# download and unpack (nothing of the target runs); it unpacks just the base
# system, so the -dev packages and their libraries it downloaded are
# unpacked here. Made once, then reused: its stamp file names what went in.
if [ "$mode" = sysroot ]; then
  if ! sysroot_complete; then
    make_sysroot
  else
    log "sysroot: $sysroot_dir (cached)"
  fi
  # CPack's dpkg-shlibdeps takes an armhf .deb's Depends from the
  # sysroot's dpkg database (firmware-config/packaging.cmake).
  if [ "$package" = 1 ] && ! sysroot_has_db; then
    sysroot_add_db
  fi
fi

if [ "$deps_only" = 1 ]; then
  log "packages installed"
  exit 0
fi

# ---- 2. configure and build ----------------------------------------------

toolchain="$PWD/cross/$triplet.cmake"
cmake_args=(-S . -B "$build_dir" -DCMAKE_TOOLCHAIN_FILE="$toolchain")
if [ "$release" = 1 ]; then
  # The firmware: the agent alone (no collector, no librdkafka).
  cmake_args+=(-DPOS_TESTS=OFF -DPOS_COLLECTOR=OFF)
else
  cmake_args+=(-DPOS_TESTS=ON)
fi
want_sysroot=""
if [ "$mode" = sysroot ]; then
  # cross/common.cmake: CMAKE_SYSROOT, pkg-config and qemu -L from it.
  want_sysroot="$sysroot_dir"
  cmake_args+=(-DPOS_CROSS_SYSROOT:PATH="$sysroot_dir")
fi
# A build directory configured for another toolchain, or with another
# sysroot (or none), cannot be reused.
if [ -f "$build_dir/CMakeCache.txt" ]; then
  have_sysroot="$(sed -n 's/^POS_CROSS_SYSROOT:[A-Z]*=//p' "$build_dir/CMakeCache.txt")"
  if ! grep -q "^CMAKE_TOOLCHAIN_FILE:[A-Z]*=$toolchain\$" "$build_dir/CMakeCache.txt"; then
    log "$build_dir was configured with another toolchain: starting it afresh"
    rm -rf "$build_dir"
  elif [ "$have_sysroot" != "$want_sysroot" ]; then
    log "$build_dir was configured with sysroot '${have_sysroot:-(none)}': starting it afresh"
    rm -rf "$build_dir"
  fi
fi

log "configure into $build_dir/"
cmake "${cmake_args[@]}"
log "build (-j$jobs)"
cmake --build "$build_dir" -j"$jobs"
log "built $build_dir/agent/pos-agent: $(file -b "$build_dir/agent/pos-agent" | cut -d, -f1-2)"
if [ "$release" = 1 ]; then
  # A firmware build: full RELRO, stack protector, fortified calls, and on
  # 32-bit targets 64-bit time_t (firmware-config/hardening.cmake).
  bash tests/firmware/test_release_hardened.sh "$build_dir/agent/pos-agent" >&2
fi

# ---- 3. tests under qemu-user ------------------------------------------------

if [ "$run_tests" = 1 ]; then
  # The toolchain file names the emulator (CMAKE_CROSSCOMPILING_EMULATOR):
  # ctest runs the unit tests through it, and hands it to the integration
  # tests' scripts as POS_EMULATOR.
  # The tests' temporary files in a directory of this run's own, so that
  # builds for other architectures (or native test runs) on the same
  # machine never meet them. Kept when a test failed, for a post-mortem.
  test_tmp="$(mktemp -d "${TMPDIR:-/tmp}/pos-ctest-$arch.XXXXXX")"
  log "ctest${POS_CTEST_ARGS:+ $POS_CTEST_ARGS} (TMPDIR=$test_tmp)"
  # shellcheck disable=SC2086
  TMPDIR="$test_tmp" ctest --test-dir "$build_dir" --output-on-failure -j2 ${POS_CTEST_ARGS:-}
  rm -rf "$test_tmp"
fi

# ---- 4. package -----------------------------------------------------------

# CPack runs dpkg-shlibdeps with --ignore-missing-info: a library whose
# package it cannot find gives no Depends and no error. The sysroot's
# database is this script's own making, so check it here: every library the
# agent links (NEEDED) must have its package in Depends.
check_sysroot_depends() {
  local deb="$1" depends soname list pkg bad=0
  depends="$(dpkg-deb -f "$deb" Depends)"
  log "Depends: $depends"
  while read -r soname; do
    list="$(grep -l -x -F -e "/lib/$triplet/$soname" -e "/usr/lib/$triplet/$soname" \
              "$sysroot_dir"/var/lib/dpkg/info/*.list | head -n1 || true)"
    pkg="$(basename "${list:-?}" .list)"
    pkg="${pkg%%:*}"
    if [ -z "$list" ]; then
      log "$soname (NEEDED by pos-agent) is in no package of the sysroot's dpkg database"
      bad=1
    elif ! printf '%s\n' "$depends" | tr ',|' '\n\n' | awk '{ print $1 }' | grep -q -x -F "$pkg"; then
      log "$soname (NEEDED by pos-agent) is in $pkg, which is not in Depends"
      bad=1
    fi
  done < <(readelf -d "$build_dir/agent/pos-agent" | sed -n 's/.*(NEEDED).*\[\(.*\)\]$/\1/p')
  if [ "$bad" = 1 ]; then
    log "$deb: its Depends miss linked libraries (see above): removing it"
    rm -f "$deb"
    exit 1
  fi
}

if [ "$package" = 1 ]; then
  log "cpack -G DEB"
  [ "$mode" != sysroot ] || rm -f "$build_dir"/pos-agent_*_"$deb_arch".deb
  (cd "$build_dir" && cpack -G DEB)
  ls -l "$build_dir"/*.deb >&2
  if [ "$mode" = sysroot ]; then
    check_sysroot_depends "$(ls "$build_dir"/pos-agent_*_"$deb_arch".deb)"
  fi
fi
