#!/usr/bin/env bash
# Our C never calls the functions that overflow or hide errors: sprintf,
# vsprintf, strcpy, strcat, strtok, gets, atoi, atol, atoll (use snprintf,
# memcpy with a checked length, strtok_r-free parsing, strtol with end and
# errno checks). Lists every call found, with file and line.
set -euo pipefail
cd "${POS_SOURCE_DIR:?}"
found="$(git ls-files '*.c' '*.h' 2>/dev/null | xargs grep -nE \
  '(^|[^_[:alnum:]])(sprintf|vsprintf|strcpy|strcat|strtok|gets|atoi|atol|atoll)[[:space:]]*\(' || true)"
if [[ -n "$found" ]]; then
  echo "banned calls (see STYLE.md):" >&2
  echo "$found" >&2
  exit 1
fi
echo "no banned calls in $(git ls-files '*.c' '*.h' | wc -l) C files"
