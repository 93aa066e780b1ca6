#!/usr/bin/env bash
# Our C never calls the functions that overflow or hide errors: sprintf,
# vsprintf, strcpy, strcat, strtok, gets, atoi, atol, atoll (use snprintf,
# memcpy with a checked length, strtok_r-free parsing, strtol with end and
# errno checks). Lists every call found, with file and line.
#
# The files are found with find, not git, so that the check holds in a
# tarball or an exported tree too; and a check that read no file fails,
# since it would otherwise pass whatever the code says.
set -euo pipefail
cd "${POS_SOURCE_DIR:?}"
mapfile -d '' files < <(find agent collector platform proto tests \
  \( -name 'build*' -prune \) -o \( -name '*.c' -o -name '*.h' \) -type f -print0)
if [ "${#files[@]}" -lt 20 ]; then
  echo "banned-call check: found only ${#files[@]} C files under $POS_SOURCE_DIR;" \
       "is POS_SOURCE_DIR the source tree?" >&2
  exit 1
fi
found="$(grep -nE \
  '(^|[^_[:alnum:]])(sprintf|vsprintf|strcpy|strcat|strtok|gets|atoi|atol|atoll)[[:space:]]*\(' \
  "${files[@]}" || true)"
if [[ -n "$found" ]]; then
  echo "banned calls (see STYLE.md):" >&2
  echo "$found" >&2
  exit 1
fi
echo "no banned calls in ${#files[@]} C files"
