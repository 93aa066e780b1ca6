# lib.sh - helpers for the integration tests: the real pos-agent on a
# loopback port, driven with curl and pos-load, its journal read back with
# the sqlite3 CLI. Sourced by each tests/integration/test_*.sh.
#
# Environment (set by ctest, see tests/CMakeLists.txt pos_script_test):
#   POS_BUILD_DIR   the build tree (agent/pos-agent, tests/tools/pos-load)
#   POS_SOURCE_DIR  the source tree
# Optional:
#   POS_KEEP_TMP=1  keep the test's temporary directory for a post-mortem
#   POS_EMULATOR    runs the built binaries of a cross build, e.g.
#                   "/usr/bin/qemu-aarch64" (ctest sets it from
#                   CMAKE_CROSSCOMPILING_EMULATOR; empty for a native build):
#                   see emulated() below.
#
# Every helper fails the test (exit 1) with what it expected and what it got.

set -euo pipefail
export LC_ALL=C
# A command that stops the test through set -e, not through a helper's
# message (a silent `cat`, `grep`, `[[ ]]`), is named when the test exits:
# its file, line, text and status (set -E: inside functions too). Not a
# subshell that ended in `exit` (fail in a pipeline or $(...): it said why).
FAILED_AT=""
set -E
trap '_err_status=$?; [[ "$BASH_COMMAND" == exit\ * ]] || FAILED_AT="${BASH_SOURCE[0]##*/}:$LINENO: $BASH_COMMAND (exit $_err_status)"' ERR

: "${POS_BUILD_DIR:?POS_BUILD_DIR must name the build directory}"
: "${POS_SOURCE_DIR:?POS_SOURCE_DIR must name the source directory}"

AGENT_BIN="$POS_BUILD_DIR/agent/pos-agent"
LOAD_BIN="$POS_BUILD_DIR/tests/tools/pos-load"
TEST_NAME="$(basename "$0" .sh)"

for tool in curl sqlite3; do
  command -v "$tool" >/dev/null || { echo "$TEST_NAME: $tool is required" >&2; exit 1; }
done
[[ -x "$AGENT_BIN" ]] || { echo "$TEST_NAME: $AGENT_BIN not built" >&2; exit 1; }

T="$(mktemp -d "${TMPDIR:-/tmp}/pos-it-$TEST_NAME.XXXXXX")"

# emulated VAR...: for a cross build (POS_EMULATOR set), points each
# variable that names a built binary at a wrapper in $T that runs it
# through the emulator, so tests run "$AGENT_BIN" ... as usual (signals go
# to the emulator, which hands them to the program). Does nothing natively.
emulated() {
  [[ -n "${POS_EMULATOR:-}" ]] || return 0
  mkdir -p "$T/emulated"
  local var wrapper
  for var in "$@"; do
    wrapper="$T/emulated/$(basename "${!var}")"
    printf '#!/usr/bin/env bash\nexec %s %q "$@"\n' "$POS_EMULATOR" "${!var}" >"$wrapper"
    chmod +x "$wrapper"
    printf -v "$var" '%s' "$wrapper"
  done
}
emulated AGENT_BIN LOAD_BIN
AGENT_PID=""
AGENT_PORT=""
AGENT_URL=""
AGENT_LOG=""
AGENT_STARTS=0
CONFIG="$T/agent.conf"
JOURNAL="$T/journal.db"
TOKENS="$T/terminals"
# A fixed time base for pos-load, so a rerun resends identical sales.
LOAD_TIME_BASE="$(date +%s)"
CLEANUP_HOOKS=()

log() { echo "[$TEST_NAME] $*" >&2; }

# on_cleanup CMD...: run CMD (one string, eval'd) when the test exits.
on_cleanup() { CLEANUP_HOOKS+=("$1"); }

_cleanup() {
  local rc=$?
  set +e
  if [[ -n "$AGENT_PID" ]] && kill -0 "$AGENT_PID" 2>/dev/null; then
    kill -KILL "$AGENT_PID" 2>/dev/null
    wait "$AGENT_PID" 2>/dev/null
  fi
  local i
  for ((i = ${#CLEANUP_HOOKS[@]} - 1; i >= 0; i--)); do
    eval "${CLEANUP_HOOKS[$i]}"
  done
  if [[ $rc -eq 77 ]]; then
    log "SKIPPED"
  elif [[ $rc -ne 0 ]]; then
    [[ -z "$FAILED_AT" ]] || log "stopped by a failing command, $FAILED_AT"
    log "FAILED (exit $rc); temporary directory: $T"
    local f
    for f in "$T"/agent.*.log; do
      [[ -f "$f" ]] || continue
      echo "---- last lines of $f" >&2
      tail -n 30 "$f" >&2
    done
  else
    log "PASSED"
  fi
  if [[ ($rc -eq 0 || $rc -eq 77) && "${POS_KEEP_TMP:-0}" != 1 ]]; then
    rm -rf "$T"
  fi
  exit $rc
}
trap _cleanup EXIT

# skip WHY: the test cannot run here; exits 77, which ctest reports as
# skipped (the test's SKIP_RETURN_CODE), never as passed.
skip() {
  log "SKIP: $*"
  exit 77
}

# fail WHAT [EXPECTED ACTUAL]: stop the test.
fail() {
  FAILED_AT="" # the message says it all
  if [[ $# -ge 3 ]]; then
    printf '[%s] FAIL: %s\n  expected: %s\n  actual:   %s\n' "$TEST_NAME" "$1" "$2" "$3" >&2
  else
    printf '[%s] FAIL: %s\n' "$TEST_NAME" "$1" >&2
  fi
  exit 1
}

# assert_eq WHAT EXPECTED ACTUAL
assert_eq() {
  [[ "$2" == "$3" ]] || fail "$1" "$2" "$3"
}

# assert_match WHAT REGEX ACTUAL  (bash extended regex)
assert_match() {
  [[ "$3" =~ $2 ]] || fail "$1" "text matching /$2/" "$3"
}

# assert_contains WHAT NEEDLE HAYSTACK
assert_contains() {
  [[ "$3" == *"$2"* ]] || fail "$1" "text containing '$2'" "$3"
}

# assert_gt WHAT LIMIT ACTUAL: ACTUAL > LIMIT (integers)
assert_gt() {
  [[ "$3" =~ ^-?[0-9]+$ && "$3" -gt "$2" ]] || fail "$1" "an integer > $2" "$3"
}

# ---- configuration ------------------------------------------------------

# Default terminal tokens: T1 and T2 each bound to their terminal, and one
# token that may post for any terminal.
TOKEN_T1="t1-9c2a4f0d8e7b6a51c3d2e1f0a9b8c7d6"
TOKEN_T2="t2-81be07a6c5d4e3f2a1b0c9d8e7f6a5b4"
TOKEN_ANY="any-5d3e11f0e9d8c7b6a5f4e3d2c1b0a9f8"

write_tokens() {
  cat >"$TOKENS" <<EOF
# terminal  token
T1 $TOKEN_T1
T2 $TOKEN_T2

* $TOKEN_ANY
EOF
}

# write_config [FILE] [section.key=value ...]: the test configuration, each
# argument replacing a key's value (or adding the key to its section).
write_config() {
  local file="$CONFIG"
  if [[ $# -gt 0 && "$1" != *=* ]]; then
    file="$1"
    shift
  fi
  local -A values=(
    [agent.store_id]=S001 [agent.device_id]=D1 [agent.log_level]=info
    [journal.path]="$JOURNAL" [journal.max_size]=0 [journal.group_commit_max]=1024
    [api.listen_host]=127.0.0.1 [api.port]=0 [api.terminal_tokens]="$TOKENS"
    [api.max_body]=4M [api.max_sales_per_request]=1000 [metrics.port]=0
  )
  local order=(agent.store_id agent.device_id agent.log_level
    journal.path journal.max_size journal.group_commit_max
    api.listen_host api.port api.terminal_tokens api.max_body api.max_sales_per_request
    metrics.port)
  local arg key
  for arg in "$@"; do
    key="${arg%%=*}"
    [[ -v "values[$key]" ]] || order+=("$key")
    values[$key]="${arg#*=}"
  done
  local section previous=""
  {
    for key in "${order[@]}"; do
      section="${key%%.*}"
      if [[ "$section" != "$previous" ]]; then
        [[ -n "$previous" ]] && echo
        echo "[$section]"
        previous="$section"
      fi
      echo "${key#*.} = ${values[$key]}"
    done
  } >"$file.new"
  # Keys added for a section already written above are moved into it.
  awk '
    /^\[/ { section = $0; if (!(section in seen)) { seen[section] = 1; order[++n] = section } next }
    /^$/ { next }
    { body[section] = body[section] $0 "\n" }
    END { for (i = 1; i <= n; i++) { if (i > 1) print ""; print order[i]; printf "%s", body[order[i]] } }
  ' "$file.new" >"$file"
  rm -f "$file.new"
}

# ---- the agent -----------------------------------------------------------

# start_agent [CONFIG]: starts pos-agent in the background, waits (10 s at
# most) for event=listening and event=ready, and sets AGENT_PID, AGENT_PORT,
# AGENT_URL and AGENT_LOG.
start_agent() {
  local config="${1:-$CONFIG}"
  [[ -z "$AGENT_PID" ]] || fail "start_agent: an agent is already running (pid $AGENT_PID)"
  AGENT_STARTS=$((AGENT_STARTS + 1))
  AGENT_LOG="$T/agent.$AGENT_STARTS.log"
  "$AGENT_BIN" --config "$config" 2>"$AGENT_LOG" >"$T/agent.$AGENT_STARTS.out" &
  AGENT_PID=$!
  local deadline=$((SECONDS + 10)) line
  while :; do
    if ! kill -0 "$AGENT_PID" 2>/dev/null; then
      local rc=0
      wait "$AGENT_PID" || rc=$?
      AGENT_PID=""
      fail "pos-agent exited (status $rc) before it was ready"
    fi
    line="$(grep -m1 -E 'event=listening( .*)? port=[0-9]+' "$AGENT_LOG" || true)"
    if [[ -n "$line" ]] && grep -q 'event=ready' "$AGENT_LOG"; then
      break
    fi
    ((SECONDS < deadline)) || fail "pos-agent did not log event=listening and event=ready within 10 s"
    sleep 0.05
  done
  AGENT_PORT="$(sed -n 's/.*[[:space:]]port=\([0-9][0-9]*\).*/\1/p' <<<" $line")"
  [[ "$AGENT_PORT" =~ ^[0-9]+$ && "$AGENT_PORT" -gt 0 ]] ||
    fail "event=listening line names a port" "port=<N>" "$line"
  AGENT_URL="http://127.0.0.1:$AGENT_PORT"
}

# stop_agent: SIGTERM, and the agent must exit 0 within 10 s.
stop_agent() {
  [[ -n "$AGENT_PID" ]] || fail "stop_agent: no agent running"
  kill -TERM "$AGENT_PID"
  local deadline=$((SECONDS + 10))
  while kill -0 "$AGENT_PID" 2>/dev/null; do
    if ((SECONDS >= deadline)); then
      kill -KILL "$AGENT_PID" 2>/dev/null || true
      fail "pos-agent exits within 10 s of SIGTERM" "exit" "still running after 10 s"
    fi
    sleep 0.05
  done
  local rc=0
  wait "$AGENT_PID" || rc=$?
  AGENT_PID=""
  assert_eq "pos-agent exit status after SIGTERM" 0 "$rc"
}

# kill_agent: SIGKILL, as a power cut would.
kill_agent() {
  [[ -n "$AGENT_PID" ]] || fail "kill_agent: no agent running"
  kill -KILL "$AGENT_PID"
  wait "$AGENT_PID" 2>/dev/null || true
  AGENT_PID=""
}

# ---- HTTP ------------------------------------------------------------------

# http METHOD PATH [curl args...]: sets HTTP_STATUS, HTTP_BODY and
# HTTP_HEADERS (raw header block). Never fails on the status itself.
HTTP_STATUS=""
HTTP_BODY=""
HTTP_HEADERS=""
http() {
  local method="$1" path="$2"
  shift 2
  local rc=0
  HTTP_STATUS="$(curl -sS -X "$method" -o "$T/http.body" -D "$T/http.headers" \
    -w '%{http_code}' --max-time 30 -H 'Expect:' "$@" "$AGENT_URL$path" 2>"$T/http.err")" || rc=$?
  HTTP_BODY="$(cat "$T/http.body" 2>/dev/null || true)"
  HTTP_HEADERS="$(cat "$T/http.headers" 2>/dev/null || true)"
  # A server may answer (413) and close before the whole body was sent:
  # curl then reports a send error but still has the status.
  if [[ $rc -ne 0 && ( -z "$HTTP_STATUS" || "$HTTP_STATUS" == 000 ) ]]; then
    fail "$method $path: curl failed (exit $rc): $(cat "$T/http.err")"
  fi
}

# post_sales TOKEN BODY [curl args...]: POST /v1/sales with BODY (exact bytes).
# TOKEN "" sends no Authorization header.
post_sales() {
  local token="$1" body="$2"
  shift 2
  printf '%s' "$body" >"$T/request.json"
  local auth=()
  [[ -n "$token" ]] && auth=(-H "Authorization: Bearer $token")
  http POST /v1/sales -H 'Content-Type: application/json' "${auth[@]}" \
    --data-binary "@$T/request.json" "$@"
}

# header NAME: the value of response header NAME (case-insensitive), or "".
header() {
  printf '%s\n' "$HTTP_HEADERS" | tr -d '\r' |
    awk -v name="$(printf '%s' "$1" | tr 'A-Z' 'a-z')" -F': *' \
      'tolower($1) == name { sub(/^[^:]*: */, ""); print; exit }'
}

# ---- JSON and the journal ----------------------------------------------------

_sql_quote() { printf "'%s'" "${1//\'/\'\'}"; }

# json_valid TEXT: 1 if TEXT is well-formed JSON, else 0.
json_valid() {
  sqlite3 -batch :memory: "SELECT json_valid($(_sql_quote "$1"));"
}

# json_get JSON PATH: the value at PATH (SQLite json_extract: strings bare,
# true/false as 1/0, null and absent as ""). Fails if JSON is not valid.
json_get() {
  [[ "$(json_valid "$1")" == 1 ]] || fail "response is JSON" "valid JSON" "$1"
  sqlite3 -batch :memory: "SELECT json_extract($(_sql_quote "$1"), $(_sql_quote "$2"));"
}

# json_type JSON PATH: integer, real, text, true, false, null, object, array, or "" if absent.
json_type() {
  [[ "$(json_valid "$1")" == 1 ]] || fail "response is JSON" "valid JSON" "$1"
  sqlite3 -batch :memory: "SELECT json_type($(_sql_quote "$1"), $(_sql_quote "$2"));"
}

# json_keys JSON [PATH]: the object's keys, sorted, comma-separated.
json_keys() {
  [[ "$(json_valid "$1")" == 1 ]] || fail "response is JSON" "valid JSON" "$1"
  sqlite3 -batch :memory: "SELECT group_concat(key, ',') FROM (SELECT key FROM json_each($(_sql_quote "$1"), $(_sql_quote "${2:-\$}")) ORDER BY key);"
}

# sql QUERY: run QUERY on the journal (read-only use; the agent may be running).
sql() {
  sqlite3 -batch -bail "$JOURNAL" ".timeout 5000" "$1"
}

# journal_count: rows in sales.
journal_count() { sql "SELECT count(*) FROM sales;"; }

# journal_max_seq: highest seq in sales (0 if none).
journal_max_seq() { sql "SELECT coalesce(max(seq), 0) FROM sales;"; }

# wal_frames FILE: WAL_FRAME_SIZE and WAL_VALID_FRAMES, the frames at the
# start of FILE whose salt is the header's (the current log; frames after
# them are left over from an earlier one: the journal keeps its WAL's size
# across checkpoints and clean stops, so the file's end is not the log's).
wal_frames() {
  WAL_FRAME_SIZE=0
  WAL_VALID_FRAMES=0
  [[ -s "$1" ]] || return 0
  local page
  page=$((16#$(od -An -v -tx1 -j8 -N4 "$1" | tr -d ' \n')))
  WAL_FRAME_SIZE=$((page + 24))
  WAL_VALID_FRAMES="$(od -An -v -tx1 -w"$WAL_FRAME_SIZE" -j32 "$1" | awk -v salt="$(od -An -v -tx1 -j16 -N8 "$1" | tr -d '\n')" '
    # Reads to the end (an early exit would SIGPIPE od under pipefail).
    done { next }
    { gsub(/^ +/, ""); n = split($0, b, " "); if (n < 24) { done = 1; next }
      s = ""; for (i = 9; i <= 16; i++) s = s " " b[i]
      if (s != salt) { done = 1; next }
      count++ }
    END { print count + 0 }')"
}

# wal_log_end FILE: the byte where FILE's current log ends (0 when FILE is
# missing or empty): where a cut must fall to remove the last commits.
wal_log_end() {
  wal_frames "$1"
  if ((WAL_FRAME_SIZE == 0)); then
    echo 0
  else
    echo $((32 + WAL_VALID_FRAMES * WAL_FRAME_SIZE))
  fi
}

# expect_status WHAT STATUS: the last response had STATUS.
expect_status() {
  [[ "$HTTP_STATUS" == "$2" ]] || fail "$1: HTTP status (body: $HTTP_BODY)" "$2" "$HTTP_STATUS"
}

# expect_error WHAT STATUS FIELD: the last response is STATUS with a JSON body
# {"error": "<non-empty>", "field": FIELD}. FIELD "" means the field is
# absent or empty (an error about the whole body).
expect_error() {
  local what="$1" status="$2" field="$3"
  expect_status "$what" "$status"
  local error actual_field
  error="$(json_get "$HTTP_BODY" '$.error')"
  [[ -n "$error" ]] || fail "$what: body has a non-empty \"error\"" '{"error":"...",...}' "$HTTP_BODY"
  actual_field="$(json_get "$HTTP_BODY" '$.field')"
  [[ "$actual_field" == "$field" ]] || fail "$what: \"field\" of $HTTP_BODY" "$field" "$actual_field"
}

# status_json: GET /status.json into STATUS_JSON (must be 200 and JSON).
STATUS_JSON=""
status_json() {
  http GET /status.json
  expect_status "GET /status.json" 200
  STATUS_JSON="$HTTP_BODY"
  [[ "$(json_valid "$STATUS_JSON")" == 1 ]] || fail "/status.json is JSON" "valid JSON" "$STATUS_JSON"
}

# ---- sales -------------------------------------------------------------------

# sale_json [key=RAWJSON ...]: a valid sale (compact JSON) for terminal T1,
# with each top-level key replaced by RAWJSON (raw JSON text), added if new,
# or removed if RAWJSON is "-". 2 x 12.50 - 1.00 + 2.30 = 26.30.
sale_json() {
  local -A fields=(
    [sale_id]='"T1-000123"' [kind]='"sale"' [terminal_id]='"T1"' [cashier_id]='"E042"'
    [channel]='"pos"' [business_time]='"2026-11-21T18:42:05+01:00"' [currency]='"EUR"'
    [lines]='[{"sku":"PIZZA-MARG-L","qty":2,"unit_price":"12.50","discount":"1.00","promo_id":"TPR-42","tax":"2.30"}]'
    [payments]='[{"method":"card","amount":"26.30"}]' [total]='"26.30"'
  )
  local order=(sale_id kind terminal_id cashier_id channel business_time currency lines payments total)
  local arg key
  for arg in "$@"; do
    key="${arg%%=*}"
    [[ -v "fields[$key]" ]] || order+=("$key")
    fields[$key]="${arg#*=}"
  done
  local out="" sep=""
  for key in "${order[@]}"; do
    [[ "${fields[$key]}" == "-" ]] && continue
    out+="$sep\"$key\":${fields[$key]}"
    sep=","
  done
  printf '{%s}' "$out"
}

# run_load ARGS...: pos-load against the running agent with the T1 token
# (override with --token/--terminal after), output in LOAD_OUT.
LOAD_OUT=""
run_load() {
  [[ -x "$LOAD_BIN" ]] || fail "$LOAD_BIN not built"
  local rc=0
  LOAD_OUT="$("$LOAD_BIN" --url "$AGENT_URL" --token "$TOKEN_T1" --terminal T1 \
    --time-base "$LOAD_TIME_BASE" "$@" 2>"$T/load.err")" || rc=$?
  if [[ $rc -ne 0 ]]; then
    cat "$T/load.err" >&2
    fail "pos-load $* exit status ($LOAD_OUT)" 0 "$rc"
  fi
}

# load_field NAME: a field of pos-load's summary line in LOAD_OUT.
load_field() {
  sed -n "s/.*\\b$1=\\([0-9.]*\\).*/\\1/p" <<<"$LOAD_OUT"
}

# check_acked FILE WHAT: every "sale_id seq" line of FILE is a journal row
# with that seq (the acknowledged sales survived), and FILE has no sale_id
# acknowledged with two different seqs.
check_acked() {
  local file="$1" what="$2"
  local db="$T/acked.$RANDOM.db"
  sqlite3 -batch -bail "$db" \
    "CREATE TABLE acked(sale_id TEXT, seq INTEGER);" \
    ".mode list" ".separator ' '" ".import '$file' acked"
  local acked distinct missing conflicting
  acked="$(sqlite3 -batch "$db" "SELECT count(*) FROM acked;")"
  distinct="$(sqlite3 -batch "$db" "SELECT count(DISTINCT sale_id) FROM acked;")"
  conflicting="$(sqlite3 -batch "$db" "SELECT count(*) FROM (SELECT sale_id FROM acked GROUP BY sale_id HAVING count(DISTINCT seq) > 1);")"
  assert_eq "$what: sale_ids acknowledged with two different seqs" 0 "$conflicting"
  missing="$(sqlite3 -batch "$db" "ATTACH $(_sql_quote "$JOURNAL") AS j;" \
    "SELECT count(*) FROM (SELECT DISTINCT sale_id, seq FROM acked) a WHERE NOT EXISTS (SELECT 1 FROM j.sales s WHERE s.sale_id = a.sale_id AND s.seq = a.seq);")"
  if [[ "$missing" != 0 ]]; then
    sqlite3 -batch "$db" "ATTACH $(_sql_quote "$JOURNAL") AS j;" \
      "SELECT 'acked ' || a.sale_id || ' seq ' || a.seq || ', journal seq ' || coalesce((SELECT seq FROM j.sales s WHERE s.sale_id = a.sale_id), 'none') FROM acked a WHERE NOT EXISTS (SELECT 1 FROM j.sales s WHERE s.sale_id = a.sale_id AND s.seq = a.seq) LIMIT 5;" >&2
    fail "$what: acknowledged (sale_id, seq) pairs found in the journal" "$distinct of $distinct" "$((distinct - missing)) of $distinct"
  fi
  ACKED_COUNT="$distinct"
  rm -f "$db"
}
