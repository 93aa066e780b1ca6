#!/usr/bin/env bash
# Issue 7 item 9: a full device must still send its whole backlog, make room
# as it goes, and take sales again. Broker, collector and agent as three
# processes; the agent's journal is filled until the POS gets 503 while the
# uplink is held back, then the uplink drains it:
#   - every sale the POS was answered 201 for is in pos.sales.v1 exactly once
#     (with the seq it was answered), none lost, none doubled;
#   - the agent takes sales again once room is made, and sends them too.
# Phase 1: journal.max_size = 256K. Phase 2 (when this user may mount): the
# journal on a 1 MiB tmpfs with no max_size, the file system 100% full.
# Phase 3: the same with nothing else on the tmpfs and batches of 50.
# Phase 4: the uplink's seal finds the disk full first: no sale takes the
# reserve it gives back.
source "$(dirname "$0")/lib.sh"

make_pki
start_broker --partitions 1
write_collector_config
start_collector
write_tokens

# fill PREFIX: arrays of 10 until the first 503; FILL_ACKED lists "sale_id seq".
fill() {
  FILL_ACKED="$T/acked.$1"
  : >"$FILL_ACKED"
  local rc=0
  LOAD_OUT="$("$LOAD_BIN" --url "$AGENT_URL" --token "$TOKEN_T1" --terminal T1 \
    --time-base "$LOAD_TIME_BASE" --clients 1 --sales 50000 --batch 10 --prefix "$1" \
    --acked "$FILL_ACKED" --allow-failures --max-failures 1 2>"$T/load.err")" || rc=$?
  assert_eq "pos-load exit status while filling ($(cat "$T/load.err"))" 0 "$rc"
  log "filling $1: $LOAD_OUT"
  grep -q ' 503=' "$T/load.err" || fail "the journal filled up with a 503" "503=1" "$(cat "$T/load.err")"
  assert_gt "sales acknowledged before the journal was full" 100 "$(wc -l <"$FILL_ACKED")"
}

# wait_start_push: the uplink's first push, within uplink.jitter of the
# start, is over. A fill racing it lets that push's seal find the disk
# full and give the disk reserve back, which phase 2 must find unused.
wait_start_push() {
  local deadline=$((SECONDS + 30))
  until grep -q 'event=push why=start' "$AGENT_LOG"; do
    ((SECONDS < deadline)) || fail "the uplink's first push within 30 s" "event=push why=start" \
      "$(grep -c 'mod=uplink' "$AGENT_LOG") uplink lines"
    sleep 0.1
  done
  while status_json && [[ "$(json_get "$STATUS_JSON" '$.uplink_state')" != idle ]]; do
    ((SECONDS < deadline)) || fail "the uplink idle after its first push" idle \
      "$(json_get "$STATUS_JSON" '$.uplink_state')"
    sleep 0.1
  done
}

# sale_after_room PREFIX: a new sale is taken (201) within 30 s of the
# backlog being sent; appended to $T/acked.all.
sale_after_room() {
  local deadline=$((SECONDS + 30))
  while :; do
    post_sales "$TOKEN_T1" "$(sale_json sale_id="\"$1-after\"")"
    [[ "$HTTP_STATUS" == 201 ]] && break
    ((SECONDS < deadline)) || fail "a sale within 30 s of the backlog being sent (body: $HTTP_BODY)" 201 "$HTTP_STATUS"
    sleep 0.5
  done
  echo "$1-after $(json_get "$HTTP_BODY" '$.seq')" >>"$T/acked.all"
}

# check_kafka WHAT: every line of $T/acked.all is one record of
# pos.sales.v1 with that sale_id and seq, and there is no other record.
check_kafka() {
  local what="$1"
  kafka_read pos.sales.v1 "sales.$what"
  records_db "sales.$what"
  sqlite3 -batch -bail "$T/sales.$what.db" "CREATE TABLE acked(sale_id TEXT, seq INTEGER);" \
    ".mode list" ".separator ' '" ".import '$T/acked.all' acked"
  local acked
  acked="$(rsql "sales.$what" 'SELECT count(*) FROM acked;')"
  assert_eq "$what: records in pos.sales.v1 = sales acknowledged to the POS" "$acked" \
    "$(rsql "sales.$what" 'SELECT count(*) FROM k;')"
  assert_eq "$what: acknowledged sales missing from Kafka (lost)" 0 \
    "$(rsql "sales.$what" 'SELECT count(*) FROM acked a WHERE NOT EXISTS
       (SELECT 1 FROM k WHERE k.sale_id = a.sale_id AND k.seq = a.seq);')"
  assert_eq "$what: sale_ids in Kafka more than once (doubled)" 0 \
    "$(rsql "sales.$what" 'SELECT count(*) FROM (SELECT sale_id FROM k GROUP BY sale_id HAVING count(*) > 1);')"
}

: >"$T/acked.all"

# --- phase 1: journal.max_size ----------------------------------------------------
mkdir -p "$T/limited"
JOURNAL="$T/limited/journal.db"
write_agent_config journal.max_size=256K uplink.max_batch_sales=2000
start_agent
fill M
cat "$FILL_ACKED" >>"$T/acked.all"
status_json
# Full, unless the agent's push at start got some sales acknowledged while
# it filled (a slow machine): then the 503 made it delete those and it has
# room again, which it logs.
if ! grep -q 'mod=journal event=room_again' "$AGENT_LOG"; then
  assert_eq "status.json journal_full while full" 1 "$(json_get "$STATUS_JSON" '$.journal_full')"
fi
push_until_sent 120
sale_after_room M
push_until_sent 60
check_kafka max_size
stop_agent
assert_eq "integrity_check after draining a full journal" ok "$(sql 'PRAGMA integrity_check;')"

# --- phase 2: a 100% full file system -------------------------------------------------
SMALL="$T/small"
mkdir -p "$SMALL"
if ! mount -t tmpfs -o size=1m,mode=0700 tmpfs "$SMALL" 2>"$T/mount.err"; then
  log "phase 2 skipped: cannot mount a tmpfs here ($(cat "$T/mount.err"))"
  stop_collector
  exit 0
fi
on_cleanup "umount '$SMALL' 2>/dev/null || umount -l '$SMALL'"
JOURNAL="$SMALL/journal.db"
write_agent_config journal.max_size=0 uplink.max_batch_sales=2000
start_agent
wait_start_push
# Whatever else lives on the device takes most of it; the sales take the
# rest, until the file system is 100% full.
avail_kb="$(df -k --output=avail "$SMALL" | tail -n 1 | tr -d ' ')"
dd if=/dev/zero of="$SMALL/ballast" bs=1k count=$((avail_kb > 450 ? avail_kb - 450 : 0)) 2>/dev/null
fill F
cat "$FILL_ACKED" >>"$T/acked.all"
log "file system after filling: $(df -k --output=avail "$SMALL" | tail -n 1) KiB free"
# A restart on the full disk (a power cycle, an upgrade): the disk reserve
# made by the run before is still there to give back (it was not when a
# restart found no room to make it anew: the file stayed, unused).
[[ -f "$JOURNAL-reserve" ]] || fail "the disk reserve exists before the restart" "a file" "none"
stop_agent
start_agent
push_until_sent 120
grep -q 'event=disk_reserve_used' "$AGENT_LOG" ||
  fail "the restarted agent gave the disk reserve back on the full disk" \
    "event=disk_reserve_used in $AGENT_LOG" "$(grep -c . "$AGENT_LOG") lines, none"
# Room is made inside the database (acknowledged sales pruned), not on
# the disk: sales are taken again with the ballast still there.
sale_after_room F
push_until_sent 60
rm -f "$SMALL/ballast"
# Journal ids differ between the phases: one journal per database.
check_kafka full_disk
stop_agent

# --- phase 3: the journal alone fills a 1 MiB file system, small batches --------------------
# The fault harness's full_disk row: with SQLite's default checkpoint
# interval (1000 pages) every sale lived in a WAL that filled the disk, the
# database file stayed at 9 KiB, no checkpoint could grow it, and from the
# 8th batch on no acknowledgement fitted: 810 sales stuck for good.
BARE="$T/bare"
mkdir -p "$BARE"
mount -t tmpfs -o size=1m,mode=0700 tmpfs "$BARE" || fail "mount a second 1 MiB tmpfs" 0 1
on_cleanup "umount '$BARE' 2>/dev/null || umount -l '$BARE'"
JOURNAL="$BARE/journal.db"
write_agent_config journal.max_size=0 uplink.max_batch_sales=50
start_agent
fill W
cat "$FILL_ACKED" >>"$T/acked.all"
log "file system after filling: $(df -k --output=avail "$BARE" | tail -n 1) KiB free," \
  "$(ls -s "$BARE" | tr '\n' ' ')"
push_until_sent 60
sale_after_room W
push_until_sent 60
check_kafka wal_full_disk
stop_agent

# --- phase 4: the uplink finds the disk full before the POS does ----------------------
# A seal that finds the disk full gives the disk reserve back. Sales posted
# after that took the room it freed (in CI, a POS still filling while the
# start push sealed): the disk full again with no reserve left, no checkpoint
# could copy the WAL into the database file, and 1,697 acknowledged sales
# stayed on the device for good. New sales must wait until the reserve is
# made again.
RACE="$T/race"
mkdir -p "$RACE"
mount -t tmpfs -o size=1m,mode=0700 tmpfs "$RACE" || fail "mount a third 1 MiB tmpfs" 0 1
on_cleanup "umount '$RACE' 2>/dev/null || umount -l '$RACE'"
JOURNAL="$RACE/journal.db"
write_agent_config journal.max_size=0 uplink.max_batch_sales=50
start_agent
wait_start_push
"$LOAD_BIN" --url "$AGENT_URL" --token "$TOKEN_T1" --terminal T1 --time-base "$LOAD_TIME_BASE" \
  --clients 1 --sales 100 --batch 1 --prefix R --acked "$T/acked.R" >/dev/null 2>"$T/load.err" ||
  fail "100 sales taken before the disk fills ($(cat "$T/load.err"))" 0 1
cat "$T/acked.R" >>"$T/acked.all"
[[ -f "$JOURNAL-reserve" ]] || fail "the disk reserve exists while the disk has room" "a file" "none"
# Something else on the device takes the last byte; the POS has not noticed.
dd if=/dev/zero of="$RACE/ballast" bs=4k 2>/dev/null || true
log "file system full: $(df -k --output=avail "$RACE" | tail -n 1) KiB free, $(ls -s "$RACE" | tr '\n' ' ')"
kill -USR1 "$AGENT_PID"
deadline=$((SECONDS + 30))
until grep -q 'event=disk_reserve_used' "$AGENT_LOG"; do
  ((SECONDS < deadline)) || fail "the push's seal found the disk full and gave the reserve back" \
    "event=disk_reserve_used" "$(grep -c 'batch_sealed' "$AGENT_LOG") batches sealed, no reserve used"
  sleep 0.1
done
post_sales "$TOKEN_T1" "$(sale_json sale_id='"R-into-reserve"')"
assert_eq "a sale posted once the reserve was given back is refused (body: $HTTP_BODY)" 503 "$HTTP_STATUS"
status_json
assert_eq "status.json journal_full while the reserve is out" 1 "$(json_get "$STATUS_JSON" '$.journal_full')"
push_until_sent 60
rm -f "$RACE/ballast"
sale_after_room R
[[ -f "$JOURNAL-reserve" ]] || fail "the disk reserve made again once the disk had room" "a file" "none"
push_until_sent 60
check_kafka reserve_given_back
stop_agent
stop_collector
