#!/usr/bin/env bash
# The footprint counts every library the device must carry (issue 11,
# item 6): scripts/footprint.sh --closure follows NEEDED through the
# libraries themselves, so libcurl's own TLS stack and the rest of what it
# pulls in are counted, not only the agent's direct NEEDED (which showed
# 5.7 MiB of a 21 MiB closure). Checked on this build's agent: the closure
# holds every direct dependency once, every library of it is found with
# its package, and each library's own NEEDED are in it too.
source "$(dirname "$0")/closure_lib.sh"
head -n -1 "$T/closure" >"$T/libs"
read -r word count total < <(tail -n 1 "$T/closure")
[ "$word" = total ] || fail "no total line: $(tail -n 1 "$T/closure")"

readelf -d "$bin" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' >"$T/direct"
while read -r lib; do
  [ "$(awk -v s="$lib" '$1 == s' "$T/libs" | wc -l)" = 1 ] ||
    fail "direct dependency $lib is not in the closure exactly once"
done <"$T/direct"
! grep -q ' ? - (not found)$' "$T/libs" || fail "libraries not found: $(grep 'not found' "$T/libs")"
! awk '$4 == "?"' "$T/libs" | grep -c . >/dev/null || fail "libraries without a package: $(awk '$4 == "?"' "$T/libs")"
# Closed: the NEEDED of every library are in it.
while read -r _ _ path _; do
  while read -r dep; do
    awk -v s="$dep" '$1 == s { found = 1 } END { exit !found }' "$T/libs" ||
      fail "$path needs $dep, which the closure lacks"
  done < <(readelf -d "$path" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
done <"$T/libs"
[ "$count" -gt "$(wc -l <"$T/direct")" ] ||
  fail "the closure ($count) is no larger than the direct dependencies: transitive ones missing?"
direct_bytes="$(awk 'NR == FNR { d[$1] = 1; next } ($1 in d) { s += $2 } END { print s + 0 }' \
  "$T/direct" "$T/libs")"
echo "$TEST_NAME: $(wc -l <"$T/direct") direct libraries, $direct_bytes bytes;" \
  "closure $count libraries, $total bytes"
echo "$TEST_NAME: PASS"
