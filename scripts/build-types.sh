#!/usr/bin/env bash
# Builds every build type that ships or that a developer uses, with gcc and
# clang, warnings as errors: a warning that only -O3 or -O0 shows (gcc's
# stringop checks, say) fails here rather than on a firmware engineer's
# machine.
#
#   bash scripts/build-types.sh [TYPE...]     default: Release Debug MinSizeRel
#
# RelWithDebInfo (gcc) and Debug (clang, sanitizers) are built by
# scripts/test.sh already. Each build goes into build-types/<type>-<cc>/.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/deps.sh

types=("$@")
if [ ${#types[@]} -eq 0 ]; then
  types=(Release Debug MinSizeRel)
fi
for type in "${types[@]}"; do
  for cc in gcc clang; do
    dir="build-types/$type-$cc"
    echo "== $type with $cc into $dir"
    cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE="$type" -DCMAKE_C_COMPILER="$cc" >/dev/null
    if ! cmake --build "$dir" -j"$(nproc)" >"$dir/build.log" 2>&1; then
      grep -E -B2 -A8 'error|warning:' "$dir/build.log" | head -60 >&2
      echo "build-types.sh: $type with $cc does not build warning-free (log: $dir/build.log)" >&2
      exit 1
    fi
  done
done
echo "build-types.sh: ${types[*]} build warning-free with gcc and clang"
