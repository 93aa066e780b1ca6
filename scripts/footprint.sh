#!/usr/bin/env bash
# footprint.sh - how much pos-agent costs a POS device, per architecture:
# stripped binary size (and its text/data/bss), the shared libraries it
# links (readelf NEEDED, with the Debian package and size of each), the
# full closure of shared libraries the device must carry (NEEDED of NEEDED
# ..., from the libraries the build linked: multiarch or its sysroot), and
# the agent's idle resident memory.
#
#   scripts/footprint.sh [ARCH...]      default: x86_64 aarch64 armhf
#   scripts/footprint.sh --closure BINARY TRIPLET [SYSROOT]
#                                       the closure alone: one line per library
#                                       (soname, bytes, path, package), then total
#
# Measures the firmware builds (POS_TESTS=OFF, as flashed) in
# build-ARCH-release/, built (or brought up to date) with
# 'cross/build.sh ARCH --release'. Idle memory is measured on the build
# machine's own architecture only: under qemu-user the resident set is the
# emulator's (translated code, its own heap), not the agent's. The agent
# runs with a temporary configuration (loopback, any free port, journal in
# a temporary directory); "idle" is 3 s after it logged event=ready, no
# sale posted.
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

# closure BINARY TRIPLET SYSROOT: every shared library BINARY loads,
# breadth first: "soname bytes path package" lines, then "total N BYTES";
# a soname found nowhere is "soname ? - (not found)".
closure() {
  local bin="$1" triplet="$2" sysroot="$3" soname path bytes total=0 count=0
  local -a queue
  local -A seen=()
  mapfile -t queue < <(readelf -d "$bin" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
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
  [ $# -ge 3 ] || { echo "usage: footprint.sh --closure BINARY TRIPLET [SYSROOT]" >&2; exit 2; }
  closure "$2" "$3" "${4:-}"
  exit 0
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

# measure_idle BINARY: idle VmRSS/VmHWM of the agent run natively.
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
  printf '    idle memory (native, 3 s after ready): VmRSS %s kB (anonymous %s kB, file-backed %s kB), peak VmHWM %s kB, %s threads\n' \
    "$rss" "$anon" "$file" "$hwm" "$threads"
}

echo "pos-agent footprint ($(date -u +%Y-%m-%dT%H:%M:%SZ), $(git describe --always --dirty 2>/dev/null || echo 'no git'))"
echo

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

  strip_tool="$(tool_for "$triplet" strip)"
  size_tool="$(tool_for "$triplet" size)"
  "$strip_tool" -o "$tmp/pos-agent.$arch" "$bin"
  stripped=$(stat -c %s "$tmp/pos-agent.$arch")
  unstripped=$(stat -c %s "$bin")
  printf '    binary: %s stripped (%s bytes; %s with debug info)\n' \
    "$(human "$stripped")" "$stripped" "$(human "$unstripped")"
  if read -r text data bss _ < <("$size_tool" "$tmp/pos-agent.$arch" | awk 'NR == 2'); then
    printf '    sections: text %s, data %s, bss %s bytes\n' "$text" "$data" "$bss"
  fi

  # The libraries the build linked: multiarch, or cross/build.sh's sysroot.
  sysroot="$(sed -n 's/^POS_CROSS_SYSROOT:[A-Z]*=//p' "$build_dir/CMakeCache.txt")"
  closure "$bin" "$triplet" "$sysroot" >"$tmp/closure.$arch"
  echo "    shared libraries (NEEDED)${sysroot:+, from the sysroot $sysroot}:"
  total=0
  while read -r lib; do
    if read -r _ bytes _ pkg < <(awk -v s="$lib" '$1 == s' "$tmp/closure.$arch") &&
       [ "$bytes" != "?" ]; then
      total=$((total + bytes))
      printf '      %-22s %10s  %s\n' "$lib" "$(human "$bytes")" "$pkg"
    else
      printf '      %-22s %10s  %s\n' "$lib" "?" "(not installed for $triplet on this machine)"
    fi
  done < <(readelf -d "$bin" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
  printf '      %-22s %10s  (direct dependencies, as Debian ships them)\n' \
    "total" "$(human "$total")"
  read -r _ count closure_total < <(tail -n 1 "$tmp/closure.$arch")
  echo "    full closure (every library loaded, what the device must carry):" \
    "$count libraries, $(human "$closure_total")"
  # Biggest first, grouped by package.
  head -n -1 "$tmp/closure.$arch" | awk '$2 != "?" { size[$4] += $2; libs[$4] = libs[$4] " " $1 }
    END { for (p in size) printf "%d %s%s\n", size[p], p, libs[p] }' | sort -rn |
    while read -r bytes pkg libs; do
      printf '      %10s  %-28s %s\n' "$(human "$bytes")" "$pkg" "$libs"
    done
  if grep -q ' ? - (not found)$' "$tmp/closure.$arch"; then
    echo "      not found: $(awk '$2 == "?" { printf "%s ", $1 }' "$tmp/closure.$arch")"
  fi

  case "$arch:$host_arch" in
    x86_64:x86_64|aarch64:aarch64|armhf:armv7l|armhf:armv8l)
      measure_idle "$bin" || true ;;
    *)
      echo "    idle memory: not measured: under qemu-user the resident set is the emulator's," \
        "not the agent's; the native ($host_arch) figure is the guide" ;;
  esac
  echo
done
