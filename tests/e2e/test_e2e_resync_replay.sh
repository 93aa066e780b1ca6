#!/usr/bin/env bash
# Broker, collector and agent as three processes: a resync of 20 minutes of
# a store's history replays exactly the journal rows whose business time is
# in [from, to) once into pos.sales.replay.v1, also when the agent is killed
# (kill -9) mid-replay and restarted: it goes on at the first replay batch
# not acknowledged. pos.sales.v1 never sees a replayed sale, and live sales
# taken during the replay still flow. The finished resync is not run again
# after a restart.
#
# The resync is put in the journal's commands table as the agent records one
# (state running) while the agent is stopped: what a command recorded just
# before a reboot looks like; the agent resumes it at start. (Head office's
# path, the admin API to the agent, is test_e2e_resync.sh.)
source "$(dirname "$0")/lib.sh"

make_pki
start_broker --partitions 4
write_collector_config
start_collector

write_tokens
# Replay batches are cut at most max_batch_sales (50) sales: many of them,
# so that the kill lands mid-replay; and paced (200 sales a second, about
# 10 s for the range): unpaced, the whole range was replayed (1,990 of
# 1,990) before the status checks below were done and the kill came.
write_agent_config uplink.max_batch_sales=50 uplink.replay_rate=200
start_agent

# 6,000 sales, business times spread over the hour before LOAD_TIME_BASE.
run_load --clients 4 --sales 1500 --batch 50 --prefix R
assert_eq "sales journaled as new" 6000 "$(load_field ok)"
push_until_sent 300
kafka_read pos.sales.v1 live_before
live_before="$KAFKA_RECORDS"
assert_eq "records in pos.sales.v1 before the resync" 6000 "$live_before"
stop_agent

FROM=$(((LOAD_TIME_BASE - 2400) * 1000))
TO=$(((LOAD_TIME_BASE - 1200) * 1000))
RESYNC=resync-20261126T031500Z-e2e001
expected="$(sql "SELECT count(*) FROM sales
  WHERE business_time_ms >= $FROM AND business_time_ms < $TO;")"
assert_gt "sales in [from, to) (a third of the hour)" 1000 "$expected"
now_ms="$(($(date +%s) * 1000))"
sqlite3 -batch -bail "$JOURNAL" "INSERT INTO commands VALUES('$RESYNC', 1, 2, $now_ms, 'e2e',
  $now_ms, $now_ms, $FROM, $TO, (SELECT max(seq) FROM sales), 0, $expected, 0, '', '',
  0, 0, 0, 0);" || fail "the resync is put in the journal's commands table"

# The agent resumes the resync at start; killed once some replay batches
# are acknowledged.
start_agent
deadline=$((SECONDS + 60))
while :; do
  acked="$(sql "SELECT replay_acked_batch_seq FROM commands WHERE command_id = '$RESYNC';")"
  ((acked >= 3)) && break
  ((SECONDS < deadline)) || fail "3 replay batches acknowledged within 60 s" ">= 3" "$acked"
  sleep 0.02
done
# /status.json says where it stands while it runs.
status_json
assert_eq "/status.json resync.resync_id" "$RESYNC" \
  "$(json_get "$STATUS_JSON" '$.resync.resync_id')"
assert_eq "/status.json resync.total_sales" "$expected" \
  "$(json_get "$STATUS_JSON" '$.resync.total_sales')"
assert_eq "/status.json commands[0].kind" resync "$(json_get "$STATUS_JSON" '$.commands[0].kind')"
kill_agent
done_at_kill="$(sql "SELECT done_sales FROM commands WHERE command_id = '$RESYNC';")"
log "killed with $done_at_kill of $expected sales replayed"
assert_gt "sales left to replay when killed (the kill is mid-replay)" "$done_at_kill" "$expected"

# Restarted: the replay goes on; live sales taken meanwhile flow too.
start_agent
run_load --clients 1 --sales 100 --batch 20 --prefix L
push_until_sent 120
deadline=$((SECONDS + 120))
while :; do
  state="$(sql "SELECT state FROM commands WHERE command_id = '$RESYNC';")"
  [[ "$state" != 2 ]] && break
  ((SECONDS < deadline)) || fail "the resync finishes within 120 s" "state 3 (done)" "$state"
  sleep 0.1
done
assert_eq "resync state (3 = done)" 3 "$state"
assert_eq "resync done_sales" "$expected" \
  "$(sql "SELECT done_sales FROM commands WHERE command_id = '$RESYNC';")"

status_json
assert_eq "/status.json resync.state" done "$(json_get "$STATUS_JSON" '$.resync.state')"
assert_eq "/status.json resync.replayed_sales" "$expected" \
  "$(json_get "$STATUS_JSON" '$.resync.replayed_sales')"
assert_match "/status.json resync.finished" '^20[0-9-]+T[0-9:.]+Z$' \
  "$(json_get "$STATUS_JSON" '$.resync.finished')"

# The status page shows the finished resync with its counts, in a browser.
CHROMIUM="$(command -v chromium || command -v chromium-browser || true)"
if [[ -n "$CHROMIUM" ]]; then
  timeout 90 "$CHROMIUM" --headless=new --no-sandbox --disable-gpu --no-first-run \
    --user-data-dir="$T/chromium" --window-size=1280,900 --virtual-time-budget=5000 \
    --dump-dom "$AGENT_URL/" >"$T/resync-page.html" 2>"$T/chromium.log" ||
    fail "chromium --dump-dom of the status page: $(tail -n 3 "$T/chromium.log")"
  head_text="$(sed -n 's/.*<p id="resync-head" class="big">\([^<]*\)<\/p>.*/\1/p' \
    "$T/resync-page.html")"
  assert_contains "status page: the resync's line" "Sales history resent: " "$head_text"
  assert_contains "status page: the resync's share" "(100%)" "$head_text"
  grep -q '<div id="resync-fill" style="width: 100%;">' "$T/resync-page.html" ||
    fail "status page: the resync's progress bar is full" 'width: 100%' \
      "$(grep -o '<div id="resync-fill"[^>]*>' "$T/resync-page.html")"
else
  log "chromium not installed: the status page's rendering is not checked"
fi

kafka_read pos.sales.replay.v1 replay
records_db replay
assert_eq "records in pos.sales.replay.v1" "$expected" "$(rsql replay 'SELECT count(*) FROM k;')"
assert_eq "distinct seqs in pos.sales.replay.v1" "$expected" \
  "$(rsql replay 'SELECT count(DISTINCT seq) FROM k;')"
assert_eq "replayed records outside [from, to)" 0 \
  "$(rsql replay "SELECT count(*) FROM k
     WHERE business_time_ms < $FROM OR business_time_ms >= $TO;")"
# Rows journaled after the resync started (the live sales above) are not
# part of it: the range ends at the newest row when it started (seq 6000).
assert_eq "journal sales in [from, to) up to seq 6000 missing from the replay" 0 \
  "$(rsql replay "SELECT count(*) FROM j.sales s WHERE s.business_time_ms >= $FROM AND
     s.business_time_ms < $TO AND s.seq <= 6000 AND s.seq NOT IN (SELECT seq FROM k);")"
assert_eq "replayed records journaled after the resync started" 0 \
  "$(rsql replay 'SELECT count(*) FROM k WHERE seq > 6000;')"
assert_eq "replayed records differing from their journal row (sale_id, total)" 0 \
  "$(rsql replay "SELECT count(*) FROM k JOIN j.sales s ON s.seq = k.seq
     WHERE s.sale_id IS NOT k.sale_id OR s.total_minor IS NOT k.total;")"
assert_eq "replayed records not keyed by the store" 0 \
  "$(rsql replay "SELECT count(*) FROM k WHERE key IS NOT '$STORE';")"
assert_eq "replayed records out of seq order" 0 \
  "$(rsql replay 'SELECT count(*) FROM (SELECT seq, lag(seq) OVER (ORDER BY offset) AS previous
     FROM k) WHERE previous IS NOT NULL AND seq <= previous;')"

kafka_read pos.sales.v1 live_after
assert_eq "records in pos.sales.v1: the 6,000 and the 100 live sales, no replayed one" 6100 \
  "$KAFKA_RECORDS"

# A restart does not run the finished resync again.
replay_records="$expected"
stop_agent
start_agent
sleep 2
kafka_read pos.sales.replay.v1 replay_again
assert_eq "records in pos.sales.replay.v1 after a restart" "$replay_records" "$KAFKA_RECORDS"
assert_eq "resync state after a restart" 3 \
  "$(sql "SELECT state FROM commands WHERE command_id = '$RESYNC';")"

# A second resync of the same range is a second complete replay, under its
# own resync_id and batch numbers.
stop_agent
RESYNC2=resync-20261126T041500Z-e2e002
now_ms="$(($(date +%s) * 1000))"
sqlite3 -batch -bail "$JOURNAL" "INSERT INTO commands VALUES('$RESYNC2', 1, 2, $now_ms, 'e2e',
  $now_ms, $now_ms, $FROM, $TO, 6000, 0, $expected, 0, '', '', 0, 0, 0, 0);" ||
  fail "the second resync is put in the journal's commands table"
start_agent
deadline=$((SECONDS + 120))
while [[ "$(sql "SELECT state FROM commands WHERE command_id = '$RESYNC2';")" == 2 ]]; do
  ((SECONDS < deadline)) || fail "the second resync finishes within 120 s"
  sleep 0.1
done
assert_eq "second resync state (3 = done)" 3 \
  "$(sql "SELECT state FROM commands WHERE command_id = '$RESYNC2';")"
kafka_read pos.sales.replay.v1 replay_twice
records_db replay_twice
assert_eq "records in pos.sales.replay.v1 after two resyncs" $((2 * expected)) \
  "$(rsql replay_twice 'SELECT count(*) FROM k;')"
assert_eq "seqs not replayed exactly twice" 0 \
  "$(rsql replay_twice 'SELECT count(*) FROM (SELECT seq FROM k GROUP BY seq HAVING count(*) != 2);')"
assert_eq "resync_id headers in pos.sales.replay.v1" 2 \
  "$(grep -o "resync_id=resync-[0-9A-Za-z-]*" "$T/replay_twice.meta" | sort -u | wc -l)"

stop_agent
stop_collector
