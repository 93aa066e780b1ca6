# shellcheck shell=bash
# lib.sh - helpers of the fault harness (tests/fault/scenario.sh): broker,
# collector and agent as real processes (tests/e2e/lib.sh), a POS load that
# runs while faults strike, and the count every row of the table comes from:
# what the POS was told was saved (pos-load --acked) against what
# pos.sales.v1 holds (kcat, decoded with protoc).
#
# Environment, besides tests/e2e/lib.sh's:
#   FAULT_PKI   a PKI made once by run.sh (tests/tools/pki.sh), copied in
#               rather than made again by every scenario
#   FAULT_SEED  seed of $RANDOM (kill moments, victims), printed in the row

# shellcheck source=../e2e/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../e2e/lib.sh"

SHIM_LIB="$POS_BUILD_DIR/tests/fault/libpos-fault-shim.so"
POWERCUT_BIN="$POS_BUILD_DIR/tests/fault/pos-fault-powercut"
PROXY_BIN="$POS_BUILD_DIR/tests/fault/pos-fault-proxy"
for bin in "$POWERCUT_BIN" "$PROXY_BIN" "$SHIM_LIB"; do
  [[ -e "$bin" ]] || fail "$bin is not built (cmake --build $POS_BUILD_DIR)"
done
emulated POWERCUT_BIN PROXY_BIN
REAL_AGENT_BIN="$AGENT_BIN"
FAULT_SEED="${FAULT_SEED:-$(( $(date +%s) % 100000 ))}"
RANDOM="$FAULT_SEED"
ACKED_DIR="$T/acked"
mkdir -p "$ACKED_DIR"
LOAD_PID=""
AGENT_CONFIG_ARGS=()
NOTES=()
note() { NOTES+=("$*"); log "note: $*"; }

_fault_cleanup() {
  if [[ -n "$LOAD_PID" ]]; then
    touch "$T/stop-load"
    kill "$LOAD_PID" 2>/dev/null
    wait "$LOAD_PID" 2>/dev/null
  fi
  [[ -n "${PROXY_PID:-}" ]] && kill "$PROXY_PID" 2>/dev/null
  [[ -n "${SMALL_MOUNT:-}" ]] && { umount "$SMALL_MOUNT" 2>/dev/null || umount -l "$SMALL_MOUNT"; }
  true
}
on_cleanup _fault_cleanup

# start_broker: as tests/e2e/lib.sh's, with broker.out made first (its loop
# reads the file before the background job may have created it).
eval "e2e_start_broker() $(declare -f start_broker | tail -n +2)"
start_broker() {
  : >"$T/broker.out"
  e2e_start_broker "$@"
}

# make_pki: the run's shared PKI when run.sh made one, else tests/e2e's.
if [[ -n "${FAULT_PKI:-}" && -s "$FAULT_PKI/ca.crt" ]]; then
  make_pki() { cp -r "$FAULT_PKI" "$PKI"; }
fi

# ---- processes -------------------------------------------------------------------------

# agent_under_shim TRACK UNDO_DIR [EIO_FILE]: later starts of the agent run it
# with the fault shim (tests/fault/fault_shim.c) tracking the journal files.
agent_under_shim() {
  mkdir -p "$2"
  AGENT_BIN="$T/agent-under-shim.sh"
  {
    echo '#!/usr/bin/env bash'
    printf 'export POS_FAULT_TRACK=%q POS_FAULT_UNDO_DIR=%q POS_FAULT_EIO_FILE=%q\n' \
      "$1" "$2" "${3:-}"
    # Slow flash: a cut often lands between a commit's writes and its sync.
    echo 'export POS_FAULT_SYNC_DELAY_US="${POS_FAULT_SYNC_DELAY_US:-20000}"'
    # An ASan build wants its runtime first; the shim only interposes libc.
    echo 'export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0"'
    printf 'LD_PRELOAD=%q exec %q "$@"\n' "$SHIM_LIB" "$REAL_AGENT_BIN"
  } >"$AGENT_BIN"
  chmod +x "$AGENT_BIN"
}

# pin_agent_port: the agent restarts on the port it has now (pos-load keeps its URL).
pin_agent_port() {
  write_agent_config "${AGENT_CONFIG_ARGS[@]}" api.port="$AGENT_PORT"
}

# spawn_collector: starts pos-collector without waiting for it (a kill may
# then land while it rebuilds its state). Sets COLLECTOR_PID and COLLECTOR_LOG.
spawn_collector() {
  COLLECTOR_STARTS=$((COLLECTOR_STARTS + 1))
  COLLECTOR_LOG="$T/collector.$COLLECTOR_STARTS.log"
  "$COLLECTOR_BIN" --config "$COLLECTOR_CONFIG" 2>"$COLLECTOR_LOG" \
    >"$T/collector.$COLLECTOR_STARTS.out" &
  COLLECTOR_PID=$!
}

# collector_healthy: 0 when /healthz answers 200 (state rebuilt).
collector_healthy() {
  collector_curl /healthz >/dev/null
  [[ "$HTTP_STATUS" == 200 ]]
}

# ensure_collector TIMEOUT: a collector runs and is healthy within TIMEOUT s,
# respawned if it died on its own (noted).
ensure_collector() {
  local deadline=$((SECONDS + $1))
  while :; do
    if [[ -z "$COLLECTOR_PID" ]] || ! kill -0 "$COLLECTOR_PID" 2>/dev/null; then
      if [[ -n "$COLLECTOR_PID" ]]; then
        wait "$COLLECTOR_PID" 2>/dev/null || true
        note "collector exited on its own: $(tail -n 1 "$COLLECTOR_LOG" | cut -c1-160)"
      fi
      spawn_collector
    fi
    collector_healthy && return 0
    ((SECONDS < deadline)) || fail "collector healthy within $1 s" 200 "$HTTP_STATUS"
    sleep 0.2
  done
}

# ensure_agent: an agent runs (restarted if it died on its own, noted).
ensure_agent() {
  if [[ -n "$AGENT_PID" ]] && ! kill -0 "$AGENT_PID" 2>/dev/null; then
    local rc=0
    wait "$AGENT_PID" 2>/dev/null || rc=$?
    note "agent exited on its own (status $rc): $(tail -n 1 "$AGENT_LOG" | cut -c1-160)"
    AGENT_PID=""
  fi
  [[ -n "$AGENT_PID" ]] || start_agent
}

# ---- the POS load ------------------------------------------------------------------------

# start_load PAUSE [CLIENTS SALES BATCH]: in the background, rounds of
# pos-load (CLIENTS terminals x SALES sales in arrays of BATCH, a new prefix
# each round) with PAUSE seconds between rounds, until stop_load. Every
# acknowledged sale is in $ACKED_DIR. Failures (agent down, 503) are
# expected and not retried: a sale that got no 2xx was never promised.
start_load() {
  local pause="$1" clients="${2:-2}" sales="${3:-10}" batch="${4:-5}"
  rm -f "$T/stop-load"
  (
    round=0
    while [[ ! -f "$T/stop-load" ]]; do
      round=$((round + 1))
      "$LOAD_BIN" --url "$AGENT_URL" --token "$TOKEN_ANY" --terminal T1 \
        --time-base "$LOAD_TIME_BASE" --clients "$clients" --sales "$sales" --batch "$batch" \
        --prefix "L$round" --acked "$ACKED_DIR/L$round" --allow-failures --timeout 10 \
        >>"$T/load.out" 2>>"$T/load.err" || true
      sleep "$pause"
    done
  ) &
  LOAD_PID=$!
}

# stop_load: ends the background load after its current round.
stop_load() {
  [[ -n "$LOAD_PID" ]] || return 0
  touch "$T/stop-load"
  wait "$LOAD_PID" 2>/dev/null || true
  LOAD_PID=""
}

# load_once PREFIX CLIENTS SALES BATCH [pos-load args...]: one pos-load run,
# acknowledged sales in $ACKED_DIR/PREFIX; failures allowed. Output in
# LOAD_OUT, its failure breakdown in LOAD_ERR.
load_once() {
  local prefix="$1" clients="$2" sales="$3" batch="$4"
  shift 4
  LOAD_OUT="$("$LOAD_BIN" --url "$AGENT_URL" --token "$TOKEN_ANY" --terminal T1 \
    --time-base "$LOAD_TIME_BASE" --clients "$clients" --sales "$sales" --batch "$batch" \
    --prefix "$prefix" --acked "$ACKED_DIR/$prefix" --allow-failures --timeout 10 "$@" \
    2>"$T/load.once.err")" || true
  LOAD_ERR="$(cat "$T/load.once.err")"
  cat "$T/load.once.err" >>"$T/load.err"
}

# try_start_agent: start_agent that returns 1 (agent gone, AGENT_PID empty,
# the reason noted) instead of failing when the agent will not start.
try_start_agent() {
  AGENT_STARTS=$((AGENT_STARTS + 1))
  AGENT_LOG="$T/agent.$AGENT_STARTS.log"
  "$AGENT_BIN" --config "$CONFIG" 2>"$AGENT_LOG" >"$T/agent.$AGENT_STARTS.out" &
  AGENT_PID=$!
  local deadline=$((SECONDS + 15)) rc=0
  while ! grep -q 'event=ready' "$AGENT_LOG"; do
    if ! kill -0 "$AGENT_PID" 2>/dev/null || ((SECONDS >= deadline)); then
      kill -KILL "$AGENT_PID" 2>/dev/null || true
      wait "$AGENT_PID" 2>/dev/null || rc=$?
      AGENT_PID=""
      note "agent did not start (status $rc): $(grep -m1 -E 'level=(error|fatal)' "$AGENT_LOG" | cut -c1-240)"
      return 1
    fi
    sleep 0.05
  done
}

# acked_count: sales acknowledged to the POS so far (distinct sale_ids).
acked_count() {
  cat "$ACKED_DIR"/* 2>/dev/null | awk '{ print $1 }' | sort -u | wc -l
}

# drain TIMEOUT: pushes (SIGUSR1 every 2 s) until the agent has nothing
# unsent; returns 1 (and notes it) if that does not happen within TIMEOUT s.
drain() {
  local deadline=$((SECONDS + $1)) next_push=0 unsent=""
  while :; do
    ensure_agent
    if ((SECONDS >= next_push)); then
      kill -USR1 "$AGENT_PID" 2>/dev/null || true
      next_push=$((SECONDS + 2))
    fi
    sleep 0.3
    unsent="$(agent_unsent 2>/dev/null || echo '?')"
    [[ "$unsent" == 0 ]] && return 0
    if ((SECONDS >= deadline)); then
      status_json
      note "agent still has $unsent sales unsent after ${1}s of pushing (uplink_state $(json_get "$STATUS_JSON" '$.uplink_state'), last error: $(json_get "$STATUS_JSON" '$.last_uplink_error' | cut -c1-200))"
      return 1
    fi
  done
}

# ---- the count -----------------------------------------------------------------------------

# report NAME: reads pos.sales.v1 back, counts, prints the row
#   ROW <tab> name acked records by_key by_sale lost duplicated verdict notes
# on stdout (run.sh makes the table of them).
report() {
  local name="$1" db
  kafka_read pos.sales.v1 final
  records_db final
  db="$T/final.db"
  cat "$ACKED_DIR"/* 2>/dev/null >"$T/acked.all" || true
  sqlite3 -batch -bail "$db" "CREATE TABLE acked(sale_id TEXT, seq INTEGER);" \
    ".mode list" ".separator ' '" ".import '$T/acked.all' acked" ||
    fail "load $T/acked.all into SQLite"
  local acked records by_key by_sale lost dup_key dup_sale dup moved low
  acked="$(sqlite3 "$db" 'SELECT count(DISTINCT sale_id) FROM acked;')"
  records="$(sqlite3 "$db" 'SELECT count(*) FROM k;')"
  by_key="$(sqlite3 "$db" "SELECT count(*) FROM (SELECT DISTINCT key, lower(h_journal_id), seq FROM k);")"
  by_sale="$(sqlite3 "$db" 'SELECT count(DISTINCT sale_id) FROM k;')"
  lost="$(sqlite3 "$db" 'SELECT count(*) FROM (SELECT DISTINCT sale_id FROM acked) a WHERE NOT EXISTS (SELECT 1 FROM k WHERE k.sale_id = a.sale_id);')"
  dup_key=$((records - by_key))
  dup_sale=$((records - by_sale))
  dup=$((dup_key > dup_sale ? dup_key : dup_sale))
  # A sale in Kafka under another seq than the one the POS was given, or
  # acknowledged twice with two seqs: the journal reused or lost a seq.
  moved="$(sqlite3 "$db" 'SELECT count(*) FROM (SELECT DISTINCT sale_id, seq FROM acked) a WHERE EXISTS (SELECT 1 FROM k WHERE k.sale_id = a.sale_id) AND NOT EXISTS (SELECT 1 FROM k WHERE k.sale_id = a.sale_id AND k.seq = a.seq);')"
  [[ "$moved" == 0 ]] || note "$moved acknowledged sales are in Kafka under another seq than the POS was given"
  local journals
  journals="$(sqlite3 "$db" 'SELECT count(DISTINCT h_journal_id) FROM k;')"
  [[ "$journals" -le 1 ]] || note "$journals journal_ids in Kafka"
  low="$(sqlite3 "$db" 'SELECT coalesce(min(offset), 0) FROM k;')"
  [[ "$low" == 0 ]] || note "the broker dropped the oldest records (lowest offset $low): counts are not exact"
  local dlq
  kafka_read pos.dlq.v1 dlq
  dlq="$KAFKA_RECORDS"
  [[ "$dlq" == 0 ]] || note "$dlq records in pos.dlq.v1"
  if ((lost > 0)); then
    sqlite3 "$db" "SELECT a.sale_id || ' seq ' || a.seq FROM acked a WHERE NOT EXISTS (SELECT 1 FROM k WHERE k.sale_id = a.sale_id) ORDER BY a.seq LIMIT 3;" |
      tr '\n' ',' >"$T/lost.sample"
    note "lost e.g. $(cat "$T/lost.sample")"
  fi
  if ((dup > 0)); then
    sqlite3 "$db" "SELECT sale_id || ' x' || count(*) FROM k GROUP BY sale_id HAVING count(*) > 1 LIMIT 3;" |
      tr '\n' ',' >"$T/dup.sample"
    note "doubled e.g. $(cat "$T/dup.sample")"
  fi
  verdict=PASS
  ((lost == 0 && dup == 0 && acked > 0)) || verdict=FAIL
  # A row whose fault never struck proves nothing.
  [[ -z "${FAULT_NOT_PLAYED:-}" ]] || { note "$FAULT_NOT_PLAYED"; verdict=FAIL; }
  ((acked > 0)) || note "no sale was acknowledged: the scenario proved nothing"
  local IFS=';'
  printf 'ROW\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\tseed=%s; %s\n' "$name" "$acked" "$records" \
    "$by_key" "$by_sale" "$lost" "$dup" "$verdict" "$FAULT_SEED" "${NOTES[*]}"
}
