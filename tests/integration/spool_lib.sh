# spool_lib.sh - what the spool directory's tests share (sourced after
# lib.sh): the directory, its configuration, sales as NDJSON lines, files
# dropped the way a till should (written under NAME.tmp, then renamed),
# and waits for a file to land in done/ or failed/.

SPOOL="$T/spool"
mkdir -p "$SPOOL"

# spool_config [section.key=value ...]: write_config with the spool on
# $SPOOL, a 1 s settle time and a 2 s rescan (tests wait for seconds, not
# the defaults' half-minutes).
spool_config() {
  write_config spool.dir="$SPOOL" spool.settle=1s spool.rescan=2s "$@"
}

# spool_sale ID [key=RAWJSON ...]: one valid sale line (lib.sh's sale_json)
# with sale_id ID.
spool_sale() {
  local id="$1"
  shift
  sale_json sale_id="\"$id\"" "$@"
}

# spool_drop NAME LINE...: writes the lines to $SPOOL/.NAME.tmp, then
# renames it to NAME (the convention a till follows).
spool_drop() {
  local name="$1"
  shift
  printf '%s\n' "$@" >"$SPOOL/.$name.tmp"
  mv "$SPOOL/.$name.tmp" "$SPOOL/$name"
}

# spool_generate FILE PREFIX COUNT: COUNT sales PREFIX-1 .. PREFIX-COUNT,
# one per line, written by awk (a 100 MB file in seconds).
spool_generate() {
  local file="$1" prefix="$2" count="$3" template
  template="$(spool_sale '@ID@')"
  awk -v n="$count" -v p="$prefix" -v t="$template" 'BEGIN {
    split(t, parts, "@ID@")
    for (i = 1; i <= n; i++) printf "%s%s-%d%s\n", parts[1], p, i, parts[2]
  }' >"$file"
}

# spool_wait_file PATH [SECONDS]: waits (60 s by default) until PATH exists.
spool_wait_file() {
  local path="$1" limit="${2:-60}"
  local deadline=$((SECONDS + limit))
  while [[ ! -e "$path" ]]; do
    if [[ -n "$AGENT_PID" ]] && ! kill -0 "$AGENT_PID" 2>/dev/null; then
      fail "the agent died while waiting for $path"
    fi
    ((SECONDS < deadline)) || fail "$path appears within $limit s" "the file" \
      "$(ls -R "$SPOOL" | tr '\n' ' ')"
    sleep 0.1
  done
}

# spool_position: the spool's journaled position ("" = none).
spool_position() {
  sql "SELECT coalesce((SELECT position FROM ingest_progress WHERE source = 'spool'), '');"
}

# spool_slow_flash: from here on start_agent runs the agent with every
# fsync slowed to 20 ms (tests/tools/fsync_shim.c through LD_PRELOAD), a
# store's flash, so that a file takes long enough to be killed in the
# middle of on any machine. The caller checks SHIM_LIB exists first.
SHIM_LIB="$POS_BUILD_DIR/tests/tools/libpos-fsync-shim.so"
spool_slow_flash() {
  local real="$AGENT_BIN"
  AGENT_BIN="$T/pos-agent-slow-flash"
  {
    echo '#!/bin/sh'
    echo 'export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0"'
    printf 'POS_FSYNC_DELAY_US=20000 LD_PRELOAD=%q exec %q "$@"\n' "$SHIM_LIB" "$real"
  } >"$AGENT_BIN"
  chmod +x "$AGENT_BIN"
}
