#!/usr/bin/env bash
# resync_bench.sh - what a head-office resync costs a selling store (issue 10,
# item 7). The real broker, collector and agent over mutual TLS; the
# journal holds BENCH_HISTORY sales of yesterday, all sent. Then, in turn,
# BENCH_ROUNDS times each, alternating so that a busy machine hurts both:
#
#   live      tills post sales at a store's pace for BENCH_SECONDS;
#   replay    the same, while the whole history is replayed (a resync
#             issued over the admin API at the start of the run).
#
# Printed per run: the POS API's p99 (a sale's 201, as pos-load measures
# it), the live batches' acknowledgement p99 (POST /v1/batches to its 200,
# from the agent's pos_agent_batch_ack_seconds histogram, which only live batches feed: the
# bucket bound that 99% of the run's batches fall under), and for the
# replay runs the replay throughput: sales from the journal to
# pos.sales.replay.v1 per second (resync issued to its command done). Asserts
# nothing about timing.
#
#   bash tests/bench/resync_bench.sh BUILD_DIR     (or: cmake --build BUILD_DIR -t bench-resync)
#
# Environment:
#   BENCH_HISTORY   200000  sales in the journal to replay (enough to last most of a run)
#   BENCH_CLIENTS   4       tills posting live sales
#   BENCH_PACE_MS   50      pause between one till's sales
#   BENCH_SECONDS   10      length of each run (a replay run lasts until the resync is done)
#   BENCH_ROUNDS    2       live/replay pairs
set -euo pipefail
export LC_ALL=C

BUILD_DIR="$(cd "${1:?usage: resync_bench.sh BUILD_DIR}" && pwd)"
export POS_BUILD_DIR="$BUILD_DIR"
export POS_SOURCE_DIR="${POS_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}"
HISTORY="${BENCH_HISTORY:-200000}"
CLIENTS="${BENCH_CLIENTS:-4}"
PACE_MS="${BENCH_PACE_MS:-50}"
RUN_SECONDS="${BENCH_SECONDS:-10}"
ROUNDS="${BENCH_ROUNDS:-2}"

# The end-to-end tests' helpers: broker, collector, agent, PKI, cleanup.
# shellcheck source=../e2e/lib.sh
source "$POS_SOURCE_DIR/tests/e2e/lib.sh"
TEST_NAME=resync_bench

make_pki
start_broker --partitions 2
write_collector_config
start_collector
write_tokens
write_agent_config uplink.interval=1s uplink.jitter=0s uplink.heartbeat_interval=1s \
  uplink.max_batch_sales=1000 metrics.port=0
start_agent
METRICS_PORT="$(sed -n 's/.*event=metrics_listening.* port=\([0-9]*\).*/\1/p' "$AGENT_LOG" | head -n1)"
[[ -n "$METRICS_PORT" ]] || fail "the agent logs its metrics port (event=metrics_listening)"

# admin_post PATH JSON / admin_get PATH: the admin API; the answer in ADMIN_BODY.
ADMIN_BODY=""
admin_call() {
  ADMIN_BODY="$(curl -sS --max-time 20 --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" \
    --key "$PKI/admin.key" "$@")" || fail "the admin API answers: $*"
}

# ack_buckets: the live batch-ack histogram's cumulative buckets, "le count" per line.
ack_buckets() {
  curl -sS "http://127.0.0.1:$METRICS_PORT/metrics" |
    sed -n 's/^pos_agent_batch_ack_seconds_bucket{\(.*,\)\{0,1\}kind="live"\(,.*\)\{0,1\}le="\([^"]*\)".*} \([0-9]*\)$/\3 \4/p;
            s/^pos_agent_batch_ack_seconds_bucket{le="\([^"]*\)"} \([0-9]*\)$/\1 \2/p'
}

# p99_between BEFORE AFTER: the smallest bucket bound under which 99% of the
# batches acknowledged between two ack_buckets snapshots fall, in ms.
p99_between() {
  join <(sort "$1") <(sort "$2") | awk '
    { le[NR] = $1; n[NR] = $3 - $2 }
    END {
      total = 0
      for (i = 1; i <= NR; i++) if (le[i] == "+Inf") total = n[i]
      if (total == 0) { print "-"; exit }
      best = "+Inf"
      for (i = 1; i <= NR; i++)
        if (le[i] != "+Inf" && n[i] >= 0.99 * total && (best == "+Inf" || le[i] + 0 < best + 0)) best = le[i]
      print best == "+Inf" ? ">max" : best * 1000
    }'
}

HOUR=$(($(date +%s) / 3600 * 3600))
echo "resync benchmark: $(nproc) CPUs; loading $HISTORY sales of yesterday into the journal"
per_client=$((HISTORY / 4))
run_load --prefix H --clients 4 --sales "$per_client" --batch 100 --time-base $((HOUR - 86400))
HISTORY=$((per_client * 4))
FROM="$(date -u -d "@$((HOUR - 2 * 86400))" +%Y-%m-%dT%H:%M:%SZ)"
TO="$(date -u -d "@$((HOUR - 3600))" +%Y-%m-%dT%H:%M:%SZ)"
deadline=$((SECONDS + 600))
until [[ "$(agent_unsent)" == 0 ]]; do
  ((SECONDS < deadline)) || fail "the history is sent within 600 s"
  sleep 0.5
done

# run NAME: one run; sets RUN_POS_P99, RUN_ACK_P99, RUN_REPLAY_RATE, RUN_REPLAY_S.
RUN=0
run() {
  local name="$1" load_pid out id="" started finished state
  RUN=$((RUN + 1))
  ack_buckets >"$T/ack.before"
  "$LOAD_BIN" --url "$AGENT_URL" --token "$TOKEN_T1" --terminal T1 --clients "$CLIENTS" \
    --sales 1000000 --pace-ms "$PACE_MS" --duration "$RUN_SECONDS" --prefix "r$RUN$name" \
    >"$T/load.out" 2>"$T/load.err" &
  load_pid=$!
  RUN_REPLAY_RATE="-" RUN_REPLAY_S="-"
  if [[ "$name" == replay ]]; then
    started="$(date +%s.%N)"
    admin_call -H 'Content-Type: application/json' \
      --data-binary "{\"store_id\": \"$STORE\", \"from\": \"$FROM\", \"to\": \"$TO\"}" \
      "$COLLECTOR_URL/v1/admin/resync"
    id="$(json_get "$ADMIN_BODY" '$.command.command_id')"
    [[ "$id" == resync-* ]] || fail "POST /v1/admin/resync answers a command" "resync-..." "$ADMIN_BODY"
    while :; do
      admin_call "$COLLECTOR_URL/v1/admin/commands/$id"
      state="$(json_get "$ADMIN_BODY" '$.command.state')"
      [[ "$state" == pending || "$state" == running ]] || break
      sleep 0.2
    done
    finished="$(date +%s.%N)"
    [[ "$state" == done ]] || fail "resync $id ends done" done "$ADMIN_BODY"
    RUN_REPLAY_RATE="$(awk -v n="$HISTORY" -v a="$started" -v b="$finished" 'BEGIN { printf "%.0f", n / (b - a) }')"
    RUN_REPLAY_S="$(awk -v a="$started" -v b="$finished" 'BEGIN { printf "%.1f", b - a }')"
  fi
  wait "$load_pid" || { cat "$T/load.err" >&2; fail "pos-load during the $name run"; }
  out="$(cat "$T/load.out")"
  # Every live sale of the run acknowledged by the collector.
  deadline=$((SECONDS + 120))
  until [[ "$(agent_unsent)" == 0 ]]; do
    ((SECONDS < deadline)) || fail "the live sales are sent within 120 s"
    sleep 0.2
  done
  ack_buckets >"$T/ack.after"
  RUN_POS_P99="$(sed -n 's/.* p99_ms=\([0-9.]*\).*/\1/p' <<<"$out")"
  RUN_ACK_P99="$(p99_between "$T/ack.before" "$T/ack.after")"
}

printf '%-6s %-8s %12s %16s %20s %10s\n' round run pos_p99_ms live_ack_p99_ms replay_sales_per_s replay_s
for round in $(seq 1 "$ROUNDS"); do
  for name in live replay; do
    run "$name"
    printf '%-6d %-8s %12s %16s %20s %10s\n' "$round" "$name" "$RUN_POS_P99" "$RUN_ACK_P99" \
      "$RUN_REPLAY_RATE" "$RUN_REPLAY_S"
  done
done
echo
echo "live_ack_p99_ms is a histogram bucket bound (the agent's buckets), not an exact percentile;"
echo "the tills post for ${RUN_SECONDS} s in each run; in a replay run the resync starts with them"
echo "and replay_s says how much of the run it overlapped (a replay run lasts until it is done)."
