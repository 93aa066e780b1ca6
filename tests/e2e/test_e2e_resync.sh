#!/usr/bin/env bash
# Issue 10, item 6: head office resyncs a store's history while the store
# keeps selling. The journal holds three days of sales (the middle day is
# RESYNC_SALES sales, 20,000 by default); head office asks, over the admin
# API, for a replay of exactly that day. During the replay the tills go on
# posting live sales, the agent is killed -9 and so is the collector. In the
# end:
#   - pos.sales.replay.v1 holds exactly the requested range once, every
#     record naming the resync, each sale equal to its journal row;
#   - pos.sales.v1 holds every journaled sale exactly once and no replayed
#     one (what it held before the resync is unchanged);
#   - a second resync of the same range is a second complete replay;
#   - an agent restarted after both finished replays nothing again.
source "$(dirname "$0")/lib.sh"

SALES="${RESYNC_SALES:-20000}"
# Under an emulator (qemu-user) every process is ten times slower: the same
# checks on fewer sales.
[[ -z "${POS_EMULATOR:-}" ]] || SALES="${RESYNC_SALES:-4000}"
CLIENTS=4
PER_CLIENT=$((SALES / CLIENTS))
SALES=$((PER_CLIENT * CLIENTS))

make_pki
start_broker --partitions 2
# More than the test broker keeps of a partition (5 MB) goes through both
# topics: they are read as they are written.
kafka_tail_start pos.sales.v1 live
kafka_tail_start pos.sales.replay.v1 replay
write_collector_config
start_collector
pin_collector_port
write_tokens
# replay_rate paces the replay (5,000 sales a second): the Kafka tails below
# keep up on a busy machine, and the second resync checks the pace.
RATE=5000
AGENT_ARGS=(uplink.interval=1s uplink.jitter=0s uplink.heartbeat_interval=1s
  uplink.max_batch_sales=1000 uplink.replay_rate=$RATE)
write_agent_config "${AGENT_ARGS[@]}"
start_agent
# The tills keep the agent's address across its restarts.
write_agent_config "${AGENT_ARGS[@]}" api.port="$AGENT_PORT"

# admin_api METHOD PATH [JSON]: the admin API with the admin certificate;
# sets HTTP_STATUS and ADMIN_BODY.
ADMIN_BODY=""
admin_api() {
  local method="$1" path="$2" data=()
  [[ $# -lt 3 ]] || data=(-H 'Content-Type: application/json' --data-binary "$3")
  HTTP_STATUS="$(curl -sS -X "$method" -o "$T/admin.body" -w '%{http_code}' --max-time 20 \
    --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" "${data[@]}" \
    "$COLLECTOR_URL$path" 2>"$T/admin.err")" || HTTP_STATUS="${HTTP_STATUS:-000}"
  ADMIN_BODY="$(cat "$T/admin.body" 2>/dev/null || true)"
}

# wait_all_sent TIMEOUT: until the agent says no sale is unsent.
wait_all_sent() {
  local deadline=$((SECONDS + $1)) unsent=""
  while :; do
    unsent="$(agent_unsent)"
    [[ "$unsent" == 0 ]] && return 0
    ((SECONDS < deadline)) || fail "the agent sends every live sale within $1 s (sales_unsent)" 0 "$unsent"
    sleep 0.5
  done
}

# replayed_so_far: the agent's resync.replayed_sales (0 when unknown).
replayed_so_far() {
  status_json
  local n
  n="$(json_get "$STATUS_JSON" '$.resync.replayed_sales' 2>/dev/null || true)"
  [[ "$n" =~ ^[0-9]+$ ]] && echo "$n" || echo 0
}

# wait_replayed N TIMEOUT: until the agent has replayed more than N sales.
wait_replayed() {
  local deadline=$((SECONDS + $2)) n=0
  while :; do
    n="$(replayed_so_far)"
    ((n > $1)) && return 0
    ((SECONDS < deadline)) || fail "the agent replays more than $1 sales within $2 s" ">$1" "$n"
    sleep 0.2
  done
}

# wait_command ID TIMEOUT: until the command is finished; its state in CMD_STATE.
CMD_STATE=""
wait_command() {
  local deadline=$((SECONDS + $2))
  while :; do
    admin_api GET "/v1/admin/commands/$1"
    if [[ "$HTTP_STATUS" == 200 ]]; then
      CMD_STATE="$(json_get "$ADMIN_BODY" '$.command.state')"
      case "$CMD_STATE" in done | incomplete | failed | cancelled) return 0 ;; esac
    fi
    ((SECONDS < deadline)) || fail "resync $1 finishes within $2 s" "done" "$HTTP_STATUS $ADMIN_BODY"
    sleep 0.5
  done
}

# replay_records_of NAME ID: records of $T/NAME.meta whose resync_id header is ID.
replay_records_of() {
  grep -c "resync_id=$2\\b" "$T/$1.meta" || true
}

# --- three days of history: the resync asks for the middle one ----------------------------------
HOUR=$(($(date +%s) / 3600 * 3600))
BASE_A=$((HOUR - 3 * 86400)) BASE_B=$((HOUR - 2 * 86400)) BASE_C=$((HOUR - 86400))
FROM_MS=$(((BASE_B - 3600) * 1000)) TO_MS=$((BASE_B * 1000))
FROM="$(date -u -d "@$((BASE_B - 3600))" +%Y-%m-%dT%H:%M:%SZ)"
TO="$(date -u -d "@$BASE_B" +%Y-%m-%dT%H:%M:%SZ)"
run_load --prefix A --clients 2 --sales 500 --batch 100 --time-base "$BASE_A"
# In four parts, the tail of pos.sales.v1 caught up after each: the collector
# produces a 1,000-sale batch in about 15 ms, and the whole history (about
# 6 MB) is more than the test broker keeps of a partition.
for part in 1 2 3 4; do
  n=$((PER_CLIENT / 4))
  ((part < 4)) || n=$((PER_CLIENT - 3 * (PER_CLIENT / 4)))
  run_load --prefix "B$part" --clients "$CLIENTS" --sales "$n" --batch 100 --time-base "$BASE_B"
  wait_all_sent 300
  kafka_tail_wait pos.sales.v1 live
done
run_load --prefix C --clients 2 --sales 500 --batch 100 --time-base "$BASE_C"
assert_eq "sales journaled in the resync's range" "$SALES" \
  "$(sql "SELECT count(*) FROM sales WHERE business_time_ms >= $FROM_MS AND business_time_ms < $TO_MS;")"
wait_all_sent 300
JOURNALED_BEFORE="$(journal_count)"
# The store's records are all in one partition: where it ends now.
read -r LIVE_PARTITION LIVE_BEFORE_END < <(timeout 60 kcat -b "$KAFKA_BOOT" -C -t pos.sales.v1 \
  -o -1 -e -q -f '%p %o\n')

# --- the resync, with live sales flowing and both programs killed -9 halfway -------------------
"$LOAD_BIN" --url "$AGENT_URL" --token "$TOKEN_T1" --terminal T1 --prefix L --clients 2 \
  --sales 400 --pace-ms 20 --allow-failures >"$T/live.out" 2>"$T/live.err" &
LIVE_PID=$!
on_cleanup 'kill "$LIVE_PID" 2>/dev/null || true'
admin_api POST /v1/admin/resync "{\"store_id\": \"$STORE\", \"from\": \"$FROM\", \"to\": \"$TO\"}"
assert_eq "POST /v1/admin/resync: status ($ADMIN_BODY)" 201 "$HTTP_STATUS"
RESYNC1="$(json_get "$ADMIN_BODY" '$.command.command_id')"
assert_match "the resync's command id" '^resync-' "$RESYNC1"
log "resync $RESYNC1: $FROM to $TO"

wait_replayed $((SALES / 5)) 300
log "agent killed -9 after $(replayed_so_far) sales replayed"
kill_agent
start_agent
wait_replayed $((SALES / 2)) 300
log "collector killed -9 with $(replayed_so_far) sales replayed"
kill_collector
start_collector
wait_command "$RESYNC1" 600
assert_eq "resync $RESYNC1: final state" done "$CMD_STATE"
assert_eq "resync $RESYNC1: sales replayed" "$SALES" "$(json_get "$ADMIN_BODY" '$.command.replayed_sales')"
wait "$LIVE_PID" || fail "the live load during the resync (pos-load exit status)" 0 "$?"
log "live sales during the resync: $(cat "$T/live.out")"
wait_all_sent 300

# --- the second resync of the same range, then a restart ---------------------------------------
admin_api POST /v1/admin/resync "{\"store_id\": \"$STORE\", \"from\": \"$FROM\", \"to\": \"$TO\"}"
assert_eq "the second resync: status ($ADMIN_BODY)" 201 "$HTTP_STATUS"
RESYNC2="$(json_get "$ADMIN_BODY" '$.command.command_id')"
[[ "$RESYNC2" != "$RESYNC1" ]] || fail "two resyncs have two ids" "different" "$RESYNC2"
started_ms=$(date +%s%3N)
wait_command "$RESYNC2" 600
assert_eq "resync $RESYNC2: final state" done "$CMD_STATE"
took_ms=$(($(date +%s%3N) - started_ms))
# Paced at RATE sales a second, it cannot have been much faster (a busy
# machine only makes it slower).
assert_gt "resync $RESYNC2 at $RATE sales/s: ms taken (at least 80% of $SALES/$RATE s)" \
  $((SALES * 800 / RATE - 1)) "$took_ms"
log "resync $RESYNC2: $SALES sales replayed in $took_ms ms at replay_rate $RATE"
stop_agent
start_agent
sleep 3 # three heartbeats: time enough for a wrongly rerun resync to start
wait_all_sent 120

# --- what Kafka holds ---------------------------------------------------------------------------
kafka_tail_stop pos.sales.replay.v1 replay
records_db replay
rsql replay 'CREATE INDEX k_sale_id ON k(sale_id);'
assert_eq "pos.sales.replay.v1: two complete replays" $((2 * SALES)) "$KAFKA_RECORDS"
assert_eq "records of $RESYNC1" "$SALES" "$(replay_records_of replay "$RESYNC1")"
assert_eq "records of $RESYNC2" "$SALES" "$(replay_records_of replay "$RESYNC2")"
assert_eq "distinct (resync, sale_id) pairs" $((2 * SALES)) \
  "$(paste <(sed 's/.*resync_id=\([^,\t]*\).*/\1/' "$T/replay.meta") <(cut -f11 "$T/replay.tsv") |
     sort -u | wc -l)"
assert_eq "replayed sales outside $FROM..$TO" 0 \
  "$(rsql replay "SELECT count(*) FROM k WHERE business_time_ms < $FROM_MS OR business_time_ms >= $TO_MS;")"
assert_eq "replayed records whose batch is not a replay" 0 \
  "$(rsql replay "SELECT count(*) FROM k WHERE h_kind IS NOT 'replay';")"
assert_eq "sales of the range not replayed (each resync)" 0 \
  "$(rsql replay "SELECT count(*) FROM j.sales s WHERE s.business_time_ms >= $FROM_MS AND s.business_time_ms < $TO_MS AND (SELECT count(*) FROM k WHERE k.sale_id = s.sale_id) != 2;")"
assert_eq "replayed records that differ from their journal row" 0 \
  "$(rsql replay "SELECT count(*) FROM k JOIN ($JOURNAL_CANONICAL) s ON s.sale_id = k.sale_id WHERE k.seq != s.seq OR k.total != s.total OR k.lines IS NOT s.lines OR k.payments IS NOT s.payments OR k.business_time_ms != s.business_time_ms OR k.received_ms != s.received_ms;")"

kafka_tail_stop pos.sales.v1 live
records_db live
rsql live 'CREATE INDEX k_sale_id ON k(sale_id);'
check_sales_match_journal live "$(journal_count)"
assert_eq "pos.sales.v1 records of a replay batch" 0 "$(rsql live "SELECT count(*) FROM k WHERE h_kind IS NOT 'live';")"
assert_eq "pos.sales.v1 up to where it ended before the resync: the sales journaled before it" \
  "$JOURNALED_BEFORE" "$(rsql live "SELECT count(*) FROM k WHERE partition = $LIVE_PARTITION AND offset <= $LIVE_BEFORE_END;")"
log "ok: $SALES sales replayed twice, exactly once each, beside $(journal_count) live sales"
