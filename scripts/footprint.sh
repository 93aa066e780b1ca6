#!/usr/bin/env bash
# footprint.sh - how much pos-agent costs a POS device, per architecture:
# stripped binary size (and its text/data/bss), the shared libraries it
# links (readelf NEEDED, with the Debian package and size of each), the
# full closure of shared libraries the device must carry (NEEDED of NEEDED
# ..., from the libraries the build linked: multiarch or its sysroot), and
# the agent's idle resident memory; then before and after the agent
# dropped libcurl for its own uplink on mbedTLS (issue 11: one TLS stack).
#
#   scripts/footprint.sh [--before COMMIT] [ARCH...]
#                                       default: x86_64 aarch64 armhf
#   scripts/footprint.sh --closure BINARY TRIPLET [SYSROOT [SONAME...]]
#                                       the closure alone: one line per library
#                                       (soname, bytes, path, package), then total;
#                                       SONAMEs are loaded as if NEEDED too
#
# Measures the firmware builds (POS_TESTS=OFF, as flashed) in
# build-ARCH-release/, built (or brought up to date) with
# 'cross/build.sh ARCH --release'. Idle memory is measured on the build
# machine's own architecture only: under qemu-user the resident set is the
# emulator's (translated code, its own heap), not the agent's. The agent
# runs with a temporary configuration (loopback, any free port, journal in
# a temporary directory); "idle" is 3 s after it logged event=ready, no
# sale posted.
#
# Before and after: without --before, "before" is computed from this build:
# its closure plus that of libcurl.so.4 (what the agent NEEDED up to
# commit 5d465b4, besides what it still needs), from the same multiarch
# libraries or sysroot. With --before COMMIT (e.g. 5d465b4), COMMIT's tree
# is exported (git archive) to build-before-COMMIT/ and built there by its
# own 'cross/build.sh ARCH --release': its binary, real closure and idle
# memory are reported beside this build's.
set -euo pipefail
cd "$(dirname "$0")/.."

# lib_path SONAME TRIPLET SYSROOT: the file the loader would map, or nothing.
lib_path() {
  local dir
  for dir in "$3/usr/lib/$2" "$3/lib/$2" "$3/usr/lib" "$3/lib"; do
    if [ -e "$dir/$1" ]; then
      readlink -f "$dir/$1"
      return 0
    fi
  done
  # A multiarch cross build links the cross C library (libc6-<arch>-cross).
  if [ -z "$3" ] && [ -e "/usr/$2/lib/$1" ]; then
    readlink -f "/usr/$2/lib/$1"
  fi
}

# lib_package PATH TRIPLET SYSROOT: the Debian package that ships it ("?"
# if none): dpkg knows a file by the path its package ships (/lib or
# /usr/lib: merged /usr reaches both); a sysroot has its own database.
lib_package() {
  local file="${1#"$3"}" known pkg="" admin=()
  [ -z "$3" ] || admin=(--admindir="$3/var/lib/dpkg")
  for known in "$file" "/lib/$2/${file##*/}" "/usr/lib/$2/${file##*/}"; do
    pkg="$(dpkg-query "${admin[@]}" -S "$known" 2>/dev/null | head -n 1 | cut -d: -f1-2 || true)"
    [ -z "$pkg" ] || break
  done
  echo "${pkg:-?}"
}

# closure BINARY TRIPLET SYSROOT [SONAME...]: every shared library BINARY
# loads (and the SONAMEs with theirs, as if BINARY needed them), breadth
# first: "soname bytes path package" lines, then "total N BYTES"; a soname
# found nowhere is "soname ? - (not found)".
closure() {
  local bin="$1" triplet="$2" sysroot="$3" soname path bytes total=0 count=0
  local -a queue
  local -A seen=()
  mapfile -t queue < <(readelf -d "$bin" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'
    [ $# -le 3 ] || printf '%s\n' "${@:4}")
  while [ ${#queue[@]} -gt 0 ]; do
    soname="${queue[0]}"
    queue=("${queue[@]:1}")
    [ -z "${seen[$soname]:-}" ] || continue
    seen[$soname]=1
    path="$(lib_path "$soname" "$triplet" "$sysroot")"
    if [ -z "$path" ]; then
      echo "$soname ? - (not found)"
      continue
    fi
    bytes=$(stat -c %s "$path")
    total=$((total + bytes))
    count=$((count + 1))
    echo "$soname $bytes $path $(lib_package "$path" "$triplet" "$sysroot")"
    mapfile -t -O "${#queue[@]}" queue < <(readelf -d "$path" |
      sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
  done
  echo "total $count $total"
}

if [ "${1:-}" = --closure ]; then
  if [ $# -lt 3 ]; then
    echo "usage: footprint.sh --closure BINARY TRIPLET [SYSROOT [SONAME...]]" >&2
    exit 2
  fi
  closure "$2" "$3" "${4:-}" "${@:5}"
  exit 0
fi

before_commit=""
if [ "${1:-}" = --before ]; then
  [ $# -ge 2 ] || { echo "usage: footprint.sh [--before COMMIT] [ARCH...]" >&2; exit 2; }
  before_commit="$(git rev-parse --short "$2^{commit}")" ||
    { echo "footprint.sh: --before $2: not a commit of this repository" >&2; exit 2; }
  shift 2
fi
archs=("$@")
[ ${#archs[@]} -gt 0 ] || archs=(x86_64 aarch64 armhf)

host_arch="$(uname -m)"
tmp="$(mktemp -d "${TMPDIR:-/tmp}/pos-footprint.XXXXXX")"
agent_pid=""
cleanup() {
  if [ -n "$agent_pid" ] && kill -0 "$agent_pid" 2>/dev/null; then
    kill -KILL "$agent_pid" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT

triplet_of() {
  case "$1" in
    x86_64) echo x86_64-linux-gnu ;;
    aarch64) echo aarch64-linux-gnu ;;
    armhf) echo arm-linux-gnueabihf ;;
    *) echo "footprint.sh: unknown architecture '$1': use x86_64, aarch64 or armhf" >&2; return 1 ;;
  esac
}

# A tool for the target (TRIPLET-strip), else the build machine's.
tool_for() {
  local triplet="$1" tool="$2"
  if command -v "$triplet-$tool" >/dev/null; then
    echo "$triplet-$tool"
  else
    echo "$tool"
  fi
}

human() {
  awk -v b="$1" 'BEGIN { if (b >= 1048576) printf "%.2f MiB", b / 1048576;
                         else printf "%.1f KiB", b / 1024 }'
}

# measure_idle BINARY: idle VmRSS/VmHWM of the agent run natively; sets
# IDLE_RSS_KB.
IDLE_RSS_KB=""
measure_idle() {
  local bin="$1" run="$tmp/run" log rss hwm anon file threads
  mkdir -p "$run"
  printf '# footprint run\nT1 %s\n' "$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')" \
    >"$run/terminals"
  cat >"$run/agent.conf" <<EOF
[agent]
store_id = FOOTPRINT
device_id = D1
log_level = info

[journal]
path = $run/journal.db

[api]
listen_host = 127.0.0.1
port = 0
terminal_tokens = $run/terminals
EOF
  log="$run/agent.log"
  "$bin" --config "$run/agent.conf" >/dev/null 2>"$log" &
  agent_pid=$!
  local deadline=$((SECONDS + 15))
  until grep -q 'event=ready' "$log"; do
    if ! kill -0 "$agent_pid" 2>/dev/null || [ $SECONDS -ge $deadline ]; then
      echo "    idle memory: the agent did not become ready:" >&2
      tail -n 5 "$log" >&2
      kill -KILL "$agent_pid" 2>/dev/null || true
      agent_pid=""
      return 1
    fi
    sleep 0.1
  done
  sleep 3
  rss="$(awk '/^VmRSS:/ { print $2 }' "/proc/$agent_pid/status")"
  hwm="$(awk '/^VmHWM:/ { print $2 }' "/proc/$agent_pid/status")"
  anon="$(awk '/^RssAnon:/ { print $2 }' "/proc/$agent_pid/status")"
  file="$(awk '/^RssFile:/ { print $2 }' "/proc/$agent_pid/status")"
  threads="$(awk '/^Threads:/ { print $2 }' "/proc/$agent_pid/status")"
  kill -TERM "$agent_pid"
  wait "$agent_pid" 2>/dev/null || true
  agent_pid=""
  IDLE_RSS_KB="$rss"
  printf '    idle memory (native, 3 s after ready): VmRSS %s kB (anonymous %s kB, file-backed %s kB), peak VmHWM %s kB, %s threads\n' \
    "$rss" "$anon" "$file" "$hwm" "$threads"
}

echo "pos-agent footprint ($(date -u +%Y-%m-%dT%H:%M:%SZ), $(git describe --always --dirty 2>/dev/null || echo 'no git'))"
echo

# report BIN TRIPLET SYSROOT KEY: binary size, NEEDED, full closure and
# (natively) idle memory of BIN; leaves its closure in $tmp/closure.KEY
# and sets STRIPPED_BYTES and IDLE_RSS_KB.
STRIPPED_BYTES=""
report() {
  local bin="$1" triplet="$2" sysroot="$3" key="$4" strip_tool size_tool unstripped total
  local lib bytes pkg count closure_total text data bss
  strip_tool="$(tool_for "$triplet" strip)"
  size_tool="$(tool_for "$triplet" size)"
  "$strip_tool" -o "$tmp/pos-agent.$key" "$bin"
  STRIPPED_BYTES=$(stat -c %s "$tmp/pos-agent.$key")
  unstripped=$(stat -c %s "$bin")
  printf '    binary: %s stripped (%s bytes; %s with debug info)\n' \
    "$(human "$STRIPPED_BYTES")" "$STRIPPED_BYTES" "$(human "$unstripped")"
  if read -r text data bss _ < <("$size_tool" "$tmp/pos-agent.$key" | awk 'NR == 2'); then
    printf '    sections: text %s, data %s, bss %s bytes\n' "$text" "$data" "$bss"
  fi

  closure "$bin" "$triplet" "$sysroot" >"$tmp/closure.$key"
  echo "    shared libraries (NEEDED)${sysroot:+, from the sysroot $sysroot}:"
  total=0
  while read -r lib; do
    if read -r _ bytes _ pkg < <(awk -v s="$lib" '$1 == s' "$tmp/closure.$key") &&
       [ "$bytes" != "?" ]; then
      total=$((total + bytes))
      printf '      %-22s %10s  %s\n' "$lib" "$(human "$bytes")" "$pkg"
    else
      printf '      %-22s %10s  %s\n' "$lib" "?" "(not installed for $triplet on this machine)"
    fi
  done < <(readelf -d "$bin" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
  printf '      %-22s %10s  (direct dependencies, as Debian ships them)\n' \
    "total" "$(human "$total")"
  read -r _ count closure_total < <(tail -n 1 "$tmp/closure.$key")
  echo "    full closure (every library loaded, what the device must carry):" \
    "$count libraries, $(human "$closure_total")"
  by_package "$tmp/closure.$key"
  if grep -q ' ? - (not found)$' "$tmp/closure.$key"; then
    echo "      not found: $(awk '$2 == "?" { printf "%s ", $1 }' "$tmp/closure.$key")"
  fi

  IDLE_RSS_KB=""
  case "$arch:$host_arch" in
    x86_64:x86_64|aarch64:aarch64|armhf:armv7l|armhf:armv8l)
      measure_idle "$bin" || true ;;
    *)
      echo "    idle memory: not measured: under qemu-user the resident set is the emulator's," \
        "not the agent's; the native ($host_arch) figure is the guide" ;;
  esac
}

# by_package CLOSURE_FILE: its libraries grouped by package, biggest first.
by_package() {
  head -n -1 "$1" | awk '$2 != "?" { size[$4] += $2; libs[$4] = libs[$4] " " $1 }
    END { for (p in size) printf "%d %s%s\n", size[p], p, libs[p] }' | sort -rn |
    while read -r bytes pkg libs; do
      printf '      %10s  %-28s %s\n' "$(human "$bytes")" "$pkg" "$libs"
    done
}

# compare KEY_BEFORE KEY_AFTER HOW: the closures side by side, what went.
compare() {
  local before="$tmp/closure.$1" after="$tmp/closure.$2" how="$3"
  local n_before b_before n_after b_after gone
  read -r _ n_before b_before < <(tail -n 1 "$before")
  read -r _ n_after b_after < <(tail -n 1 "$after")
  echo "    before and after (the uplink on mbedTLS instead of libcurl: one TLS stack)"
  echo "      before: $n_before libraries, $(human "$b_before") ($how)"
  echo "      after:  $n_after libraries, $(human "$b_after") (this build)"
  awk -v nb="$n_before" -v bb="$b_before" -v na="$n_after" -v ba="$b_after" 'BEGIN {
    printf "      closure: %d fewer libraries (%.0f%%), %.2f MiB less (%.0f%%)%s\n",
      nb - na, nb ? 100 * (nb - na) / nb : 0, (bb - ba) / 1048576, bb ? 100 * (bb - ba) / bb : 0,
      (bb && 2 * ba <= bb) ? ": at least halved" : ": NOT halved" }'
  gone="$(awk 'NR == FNR { if ($1 != "total") keep[$1] = 1; next }
    $1 != "total" && !($1 in keep) { printf "%s ", $1 }' "$after" "$before")"
  echo "      no longer carried: ${gone:-nothing}"
}

# build_before ARCH: COMMIT's agent, built by COMMIT's own cross/build.sh
# in build-before-COMMIT/; prints the binary's path, or fails.
build_before() {
  local dir="build-before-$before_commit"
  if [ ! -f "$dir/.exported" ]; then
    rm -rf "$dir"
    mkdir -p "$dir"
    git archive "$before_commit" | tar -x -C "$dir"
    touch "$dir/.exported"
  fi
  (cd "$dir" && cross/build.sh "$1" --release) >"$tmp/build-before-$1.log" 2>&1 || return 1
  echo "$dir/build-$1-release/agent/pos-agent"
}

for arch in "${archs[@]}"; do
  triplet="$(triplet_of "$arch")"
  build_dir="build-$arch-release"
  bin="$build_dir/agent/pos-agent"
  echo "== $arch ($triplet)"
  # Always through the build script: it builds what is missing or stale
  # (incrementally), so the figures are never those of an old binary.
  if ! cross/build.sh "$arch" --release >"$tmp/build-$arch.log" 2>&1; then
    echo "    NOT BUILT: 'cross/build.sh $arch --release' failed; its last lines:"
    grep -v '^\(Get\|Selecting\|Preparing\|Unpacking\|Setting up\)' "$tmp/build-$arch.log" |
      tail -n 8 | sed 's/^/      /'
    echo
    continue
  fi
  # The libraries the build linked: multiarch, or cross/build.sh's sysroot.
  sysroot="$(sed -n 's/^POS_CROSS_SYSROOT:[A-Z]*=//p' "$build_dir/CMakeCache.txt")"
  report "$bin" "$triplet" "$sysroot" "$arch"
  after_bytes="$STRIPPED_BYTES"
  after_rss="$IDLE_RSS_KB"

  if [ -n "$before_commit" ]; then
    echo "  -- before: commit $before_commit, built by its own cross/build.sh $arch --release"
    if ! before_bin="$(build_before "$arch")"; then
      echo "    NOT BUILT; its last lines:"
      tail -n 8 "$tmp/build-before-$arch.log" | sed 's/^/      /'
      echo
      continue
    fi
    before_sysroot="$(sed -n 's/^POS_CROSS_SYSROOT:[A-Z]*=//p' \
      "${before_bin%/agent/pos-agent}/CMakeCache.txt")"
    report "$before_bin" "$triplet" "$before_sysroot" "$arch.before"
    compare "$arch.before" "$arch" "commit $before_commit as built, its real closure"
    awk -v b="$STRIPPED_BYTES" -v a="$after_bytes" 'BEGIN {
      printf "      binary (stripped): %.1f KiB before, %.1f KiB after (%+.1f KiB)\n",
        b / 1024, a / 1024, (a - b) / 1024 }'
    if [ -n "$IDLE_RSS_KB" ] && [ -n "$after_rss" ]; then
      echo "      idle VmRSS: $IDLE_RSS_KB kB before, $after_rss kB after" \
        "($((after_rss - IDLE_RSS_KB)) kB)"
    fi
  elif awk '$1 == "libcurl.so.4" { found = 1 } END { exit found }' "$tmp/closure.$arch"; then
    closure "$bin" "$triplet" "$sysroot" libcurl.so.4 >"$tmp/closure.$arch.computed"
    if grep -q '^libcurl.so.4 ? ' "$tmp/closure.$arch.computed"; then
      echo "    before and after: libcurl.so.4 is not installed for $triplet here; use" \
        "--before 5d465b4 to build the agent that linked it"
    else
      compare "$arch.computed" "$arch" \
        "computed: this closure plus libcurl.so.4's, which the agent linked up to 5d465b4"
    fi
  else
    echo "    before and after: this agent still links libcurl.so.4"
  fi
  echo
done
