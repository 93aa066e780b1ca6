#!/usr/bin/env bash
# scenario.sh NAME short|long: one row of the fault table (run.sh runs them
# all). Starts its own broker, collector and agent (tests/e2e/lib.sh), puts
# a POS load on the agent, strikes with the fault, then lets everything
# drain and prints one ROW line (lib.sh report): sales acknowledged to the
# POS, records in pos.sales.v1, lost, doubled.
#
#   POS_BUILD_DIR=build POS_SOURCE_DIR=. bash tests/fault/scenario.sh kill_storm short
#
# Scenarios: kill_storm, full_max_size, full_disk, wal_cut, power_loss,
# fsync_eio, network, broker_stop. POS_KEEP_TMP=1 keeps the directory.
NAME="${1:?usage: scenario.sh NAME short|long}"
MODE="${2:-short}"
TEST_NAME_OVERRIDE="fault-$NAME"
source "$(dirname "$0")/lib.sh"
TEST_NAME="$TEST_NAME_OVERRIDE"

long() { [[ "$MODE" == long ]]; }
rand_ms() { echo "$(($1 + RANDOM % ($2 - $1 + 1)))"; }   # rand_ms LOW HIGH
sleep_ms() { sleep "$(printf '%d.%03d' $(($1 / 1000)) $(($1 % 1000)))"; }

# setup [agent config...]: broker, collector (port pinned), agent (port
# pinned) pushing every 1-2 s in batches of 50.
setup() {
  make_pki
  start_broker --partitions 4
  write_collector_config
  start_collector
  pin_collector_port
  write_tokens
  AGENT_CONFIG_ARGS=(uplink.interval=1s uplink.jitter=1s uplink.max_batch_sales=50
    uplink.backoff_min=100ms uplink.backoff_max=2s "$@")
  write_agent_config "${AGENT_CONFIG_ARGS[@]}"
  start_agent
  stop_agent
  pin_agent_port
  start_agent
}

# ---- kill -9 storm ------------------------------------------------------------------------
# Agent, collector or both killed at random moments under a continuous POS
# load: at a random time, a few ms after the collector acknowledged a batch
# (mid-push), or while a restarted collector rebuilds its state.
scenario_kill_storm() {
  local kills=20 i victim moment acks_before agent_kills=0 collector_kills=0 recovering=0 after_ack=0
  long && kills=120
  setup
  start_load 0.2 2 10 5
  for ((i = 0; i < kills; )); do
    ensure_agent
    [[ -n "$COLLECTOR_PID" ]] && kill -0 "$COLLECTOR_PID" 2>/dev/null || spawn_collector
    moment=$((RANDOM % 4))  # 0-1 a random time, 2 just after an ack, 3 mid-recovery
    ((moment == 1)) && moment=0
    victim=$((RANDOM % 5))  # 0-1 agent, 2-3 collector, 4 both
    if ((moment == 0)); then
      sleep_ms "$(rand_ms 200 1500)"
    elif ((moment == 2)); then
      acks_before="$(collector_acks)"
      local deadline=$((SECONDS + 3))
      while (($(collector_acks) <= acks_before && SECONDS < deadline)); do sleep 0.01; done
      sleep_ms "$(rand_ms 0 9)"
      after_ack=$((after_ack + 1))
    else
      # Mid-recovery: a fresh collector, killed before or while it rebuilds.
      collector_healthy || recovering=$((recovering + 1))
      kill -KILL "$COLLECTOR_PID" 2>/dev/null || true
      wait "$COLLECTOR_PID" 2>/dev/null || true
      collector_kills=$((collector_kills + 1))
      i=$((i + 1))
      spawn_collector
      sleep_ms "$(rand_ms 0 400)"
      victim=2
    fi
    if ((victim <= 1 || victim == 4)); then
      kill -KILL "$AGENT_PID" 2>/dev/null || true
      wait "$AGENT_PID" 2>/dev/null || true
      AGENT_PID=""
      agent_kills=$((agent_kills + 1))
      i=$((i + 1))
    fi
    if ((victim >= 2)); then
      collector_healthy || recovering=$((recovering + 1))
      kill -KILL "$COLLECTOR_PID" 2>/dev/null || true
      wait "$COLLECTOR_PID" 2>/dev/null || true
      collector_kills=$((collector_kills + 1))
      i=$((i + 1))
      spawn_collector
    fi
    [[ -n "$AGENT_PID" ]] || start_agent
  done
  stop_load
  note "kills: $agent_kills agent + $collector_kills collector ($recovering while it was not yet healthy, $after_ack a few ms after an ack)"
  ensure_collector 120
  drain 180 || true
}

# ---- a full journal, a full disk ------------------------------------------------------------
# The collector is away while the journal fills to its limit (503s); then
# it comes back: the backlog must drain, and the journal take sales again.
full_journal() {
  setup "$@"
  stop_collector
  load_once F 1 100000 10 --max-failures 1
  [[ "$LOAD_ERR" == *" 503="* ]] || note "the journal did not fill (no 503): $(tail -n 1 <<<"$LOAD_ERR")"
  log "filled: $LOAD_OUT"
  ensure_collector 60
  drain "$(long && echo 180 || echo 60)" || true
  # Once the backlog is in Kafka its history is room: a journal that still
  # refuses sales has stopped the store, so the row fails (the reason rides
  # on FAULT_NOT_PLAYED, the one way a row fails with nothing lost).
  load_once G 1 200 10
  if [[ "$(load_field ok)" != 200 ]]; then
    local why
    why="$(grep -m1 -o 'HTTP [0-9]*: .*' <<<"$LOAD_ERR" | cut -c1-160)"
    FAULT_NOT_PLAYED="the journal did not take sales again after draining (200 new sales: $LOAD_OUT; $why)"
  fi
  drain 60 || true
}

scenario_full_max_size() {
  full_journal journal.max_size=256K
}

scenario_full_disk() {
  SMALL_MOUNT="$T/small"
  mkdir -p "$SMALL_MOUNT"
  if ! mount -t tmpfs -o size=1m,mode=0700 tmpfs "$SMALL_MOUNT" 2>"$T/mount.err"; then
    SMALL_MOUNT=""
    printf 'ROW\tfull_disk\t-\t-\t-\t-\t-\t-\tSKIP\tcannot mount a tmpfs here: %s\n' "$(cat "$T/mount.err")"
    exit 0
  fi
  JOURNAL="$SMALL_MOUNT/journal.db"
  full_journal journal.max_size=0
}

# ---- a WAL cut mid-frame ------------------------------------------------------------------
# Everything sent and acknowledged by the collector, then the agent killed
# and its -wal cut at a byte that is not a frame boundary, then more sales.
# The collector already holds what the cut removed: nothing may be lost,
# and no seq may be handed out twice.
scenario_wal_cut() {
  local cuts=1 c size frames cut max_before
  long && cuts=3
  setup uplink.interval=1h
  for ((c = 1; c <= cuts; c++)); do
    load_once "A$c" 2 300 10
    drain 60 || true
    max_before="$(journal_max_seq)"
    kill_agent
    wal_frames "$JOURNAL-wal"
    size="$(stat -c %s "$JOURNAL-wal" 2>/dev/null || echo 0)"
    frames="$WAL_VALID_FRAMES"
    if ((frames < 4)); then
      note "cut $c: the WAL held only $frames valid frames (just checkpointed)"
      start_agent
      continue
    fi
    # Mid-frame, half-way through the frames of the WAL's current generation.
    cut=$((32 + (frames / 2) * WAL_FRAME_SIZE + WAL_FRAME_SIZE / 2 + 1))
    truncate -s "$cut" "$JOURNAL-wal"
    log "cut $c: -wal cut from $size to $cut bytes ($frames valid frames of $WAL_FRAME_SIZE)"
    if ! try_start_agent; then
      break
    fi
    note "cut $c: -wal $size -> $cut bytes ($frames valid frames); max seq $max_before -> $(journal_max_seq)"
    load_once "B$c" 2 100 10
  done
  [[ -n "$AGENT_PID" ]] && drain 60 || true
}

# ---- power loss ------------------------------------------------------------------------------
# The agent runs over the fault shim; a power cut kills it and drops every
# write to the journal files not yet synced (pos-fault-powercut), every
# other cut keeping a random in-order prefix with a torn last sector.
scenario_power_loss() {
  local cuts=4 c out dropped=0 n
  long && cuts=30
  agent_under_shim "$JOURNAL" "$T/undo"
  setup
  start_load 0.3 2 10 5
  for ((c = 1; c <= cuts; c++)); do
    sleep_ms "$(rand_ms 500 2500)"
    kill_agent
    if ((c % 2)); then
      out="$("$POWERCUT_BIN" "$T/undo")" || fail "pos-fault-powercut: $out"
    else
      out="$("$POWERCUT_BIN" "$T/undo" --keep-random "$RANDOM")" || fail "pos-fault-powercut: $out"
    fi
    for n in $(sed -n 's/.* dropped=\([0-9]*\).*/\1/p' <<<"$out"); do dropped=$((dropped + n)); done
    rm -f "$JOURNAL-shm"
    [[ "$(sql 'PRAGMA integrity_check;')" == ok ]] || note "cut $c: integrity_check: $(sql 'PRAGMA integrity_check;' | tr '\n' ' ' | cut -c1-200)"
    try_start_agent || break
  done
  stop_load
  note "$cuts power cuts dropped $dropped unsynced writes"
  [[ -n "$AGENT_PID" ]] || try_start_agent || true
  [[ -n "$AGENT_PID" ]] && drain 120 || true
}

# ---- fsync returning EIO ------------------------------------------------------------------------
# While $T/eio exists every fsync/fdatasync of the journal fails with EIO;
# then the power goes (the unsynced writes dropped) and the agent restarts
# on a good disk. A sale acknowledged while syncs failed would be lost here.
scenario_fsync_eio() {
  local rounds=2 r before during
  long && rounds=8
  agent_under_shim "$JOURNAL" "$T/undo" "$T/eio"
  setup
  start_load 0.3 2 10 5
  for ((r = 1; r <= rounds; r++)); do
    sleep_ms "$(rand_ms 1000 3000)"
    before="$(acked_count)"
    touch "$T/eio"
    sleep 3
    during=$(($(acked_count) - before))
    [[ -n "$AGENT_PID" ]] && ! kill -0 "$AGENT_PID" 2>/dev/null && note "round $r: the agent exited on EIO"
    note "round $r: $(grep -c 'event=write_failed' "$AGENT_LOG" || true) journal write_failed (EIO) in the agent's log, $during sales acknowledged in the 3 s (answers in flight when EIO began included)"
    [[ -n "$AGENT_PID" ]] && kill -KILL "$AGENT_PID" 2>/dev/null
    wait "$AGENT_PID" 2>/dev/null || true
    AGENT_PID=""
    "$POWERCUT_BIN" "$T/undo" >/dev/null || fail "pos-fault-powercut failed"
    rm -f "$T/eio" "$JOURNAL-shm"
    try_start_agent || break
  done
  stop_load
  [[ -n "$AGENT_PID" ]] && drain 120 || true
}

# ---- network faults --------------------------------------------------------------------------------
# pos-fault-proxy between agent and collector: delay, resets mid-request and
# mid-answer, a blackout.
# proxy_mode MODE...: the proxy's new mode, renamed into place whole.
proxy_mode() {
  echo "$*" >"$T/proxy.mode.new"
  mv -f "$T/proxy.mode.new" "$T/proxy.mode"
}

scenario_network() {
  local control="$T/proxy.mode"
  proxy_mode pass
  make_pki
  start_broker --partitions 4
  write_collector_config
  start_collector
  pin_collector_port
  # The file exists before the proxy starts: the loop below reads it at once,
  # and sed on a file the background shell has not opened yet exits 2 (set -e).
  : >"$T/proxy.out"
  "$PROXY_BIN" --target "$COLLECTOR_PORT" --control "$control" --seed "$FAULT_SEED" \
    >"$T/proxy.out" 2>"$T/proxy.log" &
  PROXY_PID=$!
  local deadline=$((SECONDS + 10)) proxy_port=""
  while [[ -z "$proxy_port" ]]; do
    proxy_port="$(sed -n 's/^port=//p' "$T/proxy.out")"
    ((SECONDS < deadline)) || fail "pos-fault-proxy prints its port"
    sleep 0.05
  done
  write_tokens
  AGENT_CONFIG_ARGS=(uplink.interval=1s uplink.jitter=1s uplink.max_batch_sales=50
    uplink.backoff_min=100ms uplink.backoff_max=2s uplink.request_timeout=20s
    uplink.connect_timeout=5s uplink.url="https://127.0.0.1:$proxy_port")
  write_agent_config "${AGENT_CONFIG_ARGS[@]}"
  start_agent
  start_load 0.3 2 10 5
  local delay=6 resets=12 blackout=10
  long && { delay=30; resets=60; blackout=60; }
  sleep 2
  proxy_mode delay 400; sleep "$delay"
  proxy_mode reset 6000; sleep "$resets"
  proxy_mode blackout; sleep "$blackout"
  proxy_mode pass; sleep 2
  stop_load
  local resets_done
  resets_done="$(grep -c 'event=reset' "$T/proxy.log" || true)"
  note "proxy: $resets_done connections reset mid-stream, ${delay}s delayed 400 ms, ${blackout}s blackout"
  ((resets_done > 0)) || FAULT_NOT_PLAYED="the proxy reset no connection"
  drain 120 || true
}

# ---- the broker stopped -------------------------------------------------------------------------------
# SIGSTOP on pos-broker under load (produce requests hang), then SIGCONT.
# (A broker restart is not played: pos-broker keeps its log in memory, so a
# restarted one is an empty cluster, not the same broker back.)
scenario_broker_stop() {
  local stops=1 s pause=10
  long && { stops=3; pause=60; }
  setup
  start_load 0.3 2 10 5
  for ((s = 1; s <= stops; s++)); do
    sleep 3
    pause_broker
    sleep "$pause"
    resume_broker
  done
  sleep 2
  stop_load
  note "broker stopped $stops x ${pause}s"
  drain 120 || true
}

declare -F "scenario_$NAME" >/dev/null || fail "no scenario $NAME"
log "scenario $NAME ($MODE), seed $FAULT_SEED, in $T"
"scenario_$NAME"
[[ -n "$COLLECTOR_PID" ]] && kill -0 "$COLLECTOR_PID" 2>/dev/null || ensure_collector 60
report "$NAME"
# A failing row keeps the scenario's directory (logs, journal, Kafka dumps).
[[ "$verdict" == PASS ]] || exit 3
