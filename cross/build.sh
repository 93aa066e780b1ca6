#!/usr/bin/env bash
# cross/build.sh - cross-builds pos-agent for one POS device architecture
# on a Debian 12 build machine, and optionally runs its tests under qemu-user.
#
#   cross/build.sh ARCH [--test] [--release] [--package] [--jobs N]
#
#   ARCH        aarch64 (arm64), armhf (arm), x86_64 (amd64)
#   --test      then run ctest (unit, integration and e2e tests) under qemu-user
#   --release   a firmware build: POS_TESTS=OFF (no tests, no fault hooks),
#               into build-ARCH-release/ instead of build-ARCH/
#   --package   then make the .deb with CPack (needs --release: a package
#               never carries a test build)
#   --deps-only install the packages and stop
#   --jobs N    parallel compile jobs (default: nproc)
#
# What it does, each step skipped when already done:
#   1. dpkg --add-architecture for the target, apt-get update once after it;
#   2. apt-get install the cross compiler (gcc-<triplet>), qemu-user, the
#      build machine's own build tools (cmake, protoc-c, llhttp sources) and
#      the target's multiarch -dev packages (libuv1-dev:arm64 ...);
#   3. cmake with cross/<triplet>.cmake into build-ARCH/, and build.
# It uses sudo for apt when not run as root.
#
# Environment:
#   POS_CTEST_ARGS   extra ctest arguments (e.g. "-L unit")
#   POS_NO_INSTALL=1 never call apt (fail instead if something is missing)
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
jobs="$(nproc)"
while [ $# -gt 0 ]; do
  case "$1" in
    --test) run_tests=1 ;;
    --release) release=1 ;;
    --package) package=1 ;;
    --deps-only) deps_only=1 ;;
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
  aarch64|arm64) arch=aarch64 triplet=aarch64-linux-gnu deb_arch=arm64 ;;
  armhf|arm|armv7) arch=armhf triplet=arm-linux-gnueabihf deb_arch=armhf ;;
  x86_64|amd64) arch=x86_64 triplet=x86_64-linux-gnu deb_arch=amd64 ;;
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
build_dir="build-$arch"
[ "$release" = 1 ] && build_dir="build-$arch-release"

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

log() { echo "cross/build.sh [$arch]: $*" >&2; }

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

wanted=("${native_packages[@]}")
if [ "$deb_arch" = "$host_arch" ]; then
  wanted+=(gcc "${target_dev[@]}")
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

if [ ${#missing[@]} -gt 0 ]; then
  if [ "${POS_NO_INSTALL:-0}" = 1 ]; then
    log "missing packages and POS_NO_INSTALL=1: ${missing[*]}"
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  need_update=0
  if [ "$deb_arch" != "$host_arch" ] &&
     ! dpkg --print-foreign-architectures | grep -qx "$deb_arch"; then
    log "dpkg --add-architecture $deb_arch"
    $sudo dpkg --add-architecture "$deb_arch"
    need_update=1
  fi
  # The package lists know the target's packages only after an update
  # that followed --add-architecture.
  if [ "$deb_arch" != "$host_arch" ] &&
     ! apt-cache policy "libc6:$deb_arch" 2>/dev/null | grep -q 'Candidate: [0-9]'; then
    need_update=1
  fi
  apt_update() {
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
  update_failed=0
  [ "$need_update" = 0 ] || apt_update
  log "installing: ${missing[*]}"
  # Stale package lists fail the install: refresh them once.
  if ! apt_install; then
    [ "$need_update" = 1 ] || apt_update
    if ! apt_install; then
      log "cannot install the packages for $deb_arch (see apt's message above)"
      if [ "$update_failed" = 1 ]; then
        log "apt-get update could not fetch every index: the $deb_arch libraries cannot match"
        log "the build machine's versions (Multi-Arch: same). Retry when the mirror is in sync."
      fi
      exit 1
    fi
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
  cmake_args+=(-DPOS_TESTS=OFF)
else
  cmake_args+=(-DPOS_TESTS=ON)
fi
# A build directory configured for another toolchain cannot be reused.
if [ -f "$build_dir/CMakeCache.txt" ] &&
   ! grep -q "^CMAKE_TOOLCHAIN_FILE:[A-Z]*=$toolchain\$" "$build_dir/CMakeCache.txt"; then
  log "$build_dir was configured with another toolchain: starting it afresh"
  rm -rf "$build_dir"
fi

log "configure into $build_dir/"
cmake "${cmake_args[@]}"
log "build (-j$jobs)"
cmake --build "$build_dir" -j"$jobs"
log "built $build_dir/agent/pos-agent: $(file -b "$build_dir/agent/pos-agent" | cut -d, -f1-2)"

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

if [ "$package" = 1 ]; then
  log "cpack -G DEB"
  (cd "$build_dir" && cpack -G DEB)
  ls -l "$build_dir"/*.deb >&2
fi
