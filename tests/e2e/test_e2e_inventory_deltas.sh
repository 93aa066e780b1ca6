#!/usr/bin/env bash
# Issue 8, item 4: inventory deltas reach pos.inventory-deltas.v1 exactly once, positioned by
# the journal rows they cover, not by batch number. pos-batch sends hand-made batches with
# deltas (20 rows and 3 deltas each, every delta over the batch's rows) to broker + collector:
#   - batches re-cut over rows already in (the same rows, part of them, more of them) under new
#     batch numbers produce no delta again;
#   - a batch whose rows straddle the position has its deltas dead-lettered with the reason
#     (counting them would count rows twice, dropping them would lose the rest);
#   - a collector killed (SIGKILL, test hook) half-way through a batch's deltas, restarted,
#     completes the batch on the resend with the deltas that are missing, and only those;
#   - a collector killed (SIGKILL) right after a batch rebuilds the position from its last
#     checkpoint and the log's headers (recovery_done says how many delta records it read):
#     the resend and a re-cut produce nothing.
# Then every delta is in the topic once, its headers name the rows its value covers, and the
# sum per material is what the batches sent.
source "$(dirname "$0")/lib.sh"

make_pki
start_broker --partitions 4
write_collector_config
start_collector

J=8e1f0c2ad4b3e6a79081726354ab1008
DEV=device-S001-D1
DELTAS=3

# send BATCH_SEQ FIRST_SEQ SALES [STATUS]: a batch of rows FIRST_SEQ.. with $DELTAS deltas.
send() {
  local status="${4:-200}"
  send_batch "$DEV" --journal "$J" --prefix INV --batch-seq "$1" --first-seq "$2" --sales "$3" \
    --deltas "$DELTAS"
  log "batch $1 (rows $2..$(($2 + $3 - 1))): $BATCH_OUT"
  assert_eq "batch $1 (rows $2..$(($2 + $3 - 1))): status" "$status" "$(batch_field status)"
}

# deltas_db NAME TOPIC: TOPIC's records decoded as pos.v1.InventoryDelta into $T/NAME.db
# (table d). Headers and values come from kcat and protoc, not from our code.
deltas_db() {
  local name="$1" topic="$2"
  kafka_read "$topic" "$name" DeltaRecords
  awk '
    function header(h, name,    n, parts, i, k, last, v) {
      n = split(h, parts, ",")
      last = ""
      delete hv
      for (i = 1; i <= n; i++) {
        k = parts[i]; sub(/=.*/, "", k)
        if (index(parts[i], "=") && k ~ /^[a-z_]+$/) { last = k; v = parts[i]; sub(/^[^=]*=/, "", v); hv[k] = v }
        else if (last != "") hv[last] = hv[last] "," parts[i]
      }
      return (name in hv) ? hv[name] : ""
    }
    function num(v) { return v == "" ? 0 : v }
    BEGIN { OFS = "\t" }
    FNR == NR { meta[++m] = $0; next }
    /^record \{$/ { n++; delete f; next }
    /^\}$/ {
      split(meta[n], fields, "\t")
      h = fields[4]
      print fields[1], fields[2], fields[3], header(h, "journal_id"), num(header(h, "batch_seq")),
        header(h, "kind"), num(header(h, "delta_index")), num(header(h, "first_seq")),
        num(header(h, "last_seq")), header(h, "position"), header(h, "field"), header(h, "reason"),
        f["material_id"], num(f["quantity_milli"]), f["store_id"], num(f["first_seq"]),
        num(f["last_seq"])
      next
    }
    {
      text = $0; sub(/^ +/, "", text)
      k = text; sub(/:.*/, "", k)
      v = text; sub(/^[^:]*: /, "", v)
      if (v ~ /^".*"$/) v = substr(v, 2, length(v) - 2)
      f[k] = v
    }
  ' "$T/$name.meta" "$T/$name.txt" >"$T/$name.tsv"
  assert_eq "$topic: decoded records = records read" "$KAFKA_RECORDS" "$(wc -l <"$T/$name.tsv")"
  rm -f "$T/$name.db"
  sqlite3 -batch -bail "$T/$name.db" "CREATE TABLE d(partition INTEGER, offset INTEGER, key TEXT,
      h_journal_id TEXT, h_batch_seq INTEGER, h_kind TEXT, h_delta_index INTEGER,
      h_first_seq INTEGER, h_last_seq INTEGER, h_position TEXT, h_field TEXT, h_reason TEXT,
      material_id TEXT, quantity_milli INTEGER, store_id TEXT, first_seq INTEGER,
      last_seq INTEGER);" ".mode tabs" ".import '$T/$name.tsv' d" ||
    fail "load $T/$name.tsv into SQLite"
}
dsql() { sqlite3 -batch -bail "$T/$1.db" "$2"; }

inventory_count() { # deltas of journal J in the inventory topic (re-read)
  deltas_db inv pos.inventory-deltas.v1
  dsql inv "SELECT count(*) FROM d WHERE h_journal_id = '$J';"
}

# --- five batches: rows 1..100 ----------------------------------------------------------------
for b in 1 2 3 4 5; do
  send "$b" $(((b - 1) * 20 + 1)) 20
done
assert_eq "deltas after batches 1-5 (rows 1..100)" 15 "$(inventory_count)"

# --- re-cut batches over rows already in, under new batch numbers --------------------------------
# Before issue 8 the position was (batch_seq, delta index): each of these produced its 3
# deltas again, counting rows 1..100's consumption twice.
send 6 1 20    # rows 1..20 again
send 7 41 60   # rows 41..100: three batches' rows in one
send 8 95 6    # rows 95..100: part of batch 5's rows
assert_eq "deltas after re-cut batches 6-8 over rows 1..100" 15 "$(inventory_count)"

# --- rows straddling the position: dead-lettered, not counted, not dropped --------------------------
send 9 91 20   # rows 91..110: 91..100 are in
assert_eq "deltas after batch 9 (rows 91..110 straddle row 100)" 15 "$(inventory_count)"
deltas_db dlq pos.dlq.v1
assert_eq "dead-lettered deltas of batch 9: count, field, position, rows" \
  "3|inventory_deltas.first_seq|none|91|110" \
  "$(dsql dlq "SELECT count(*), h_field, h_position, min(h_first_seq), max(h_last_seq) FROM d
               WHERE h_journal_id = '$J' AND h_batch_seq = 9;")"
reason="$(dsql dlq "SELECT h_reason FROM d WHERE h_batch_seq = 9 LIMIT 1;")"
assert_match "dead letter's reason names the rows and the position" 'rows 91..110.*up to row 100' "$reason"
log "straddling deltas dead-lettered: $reason"
send 10 111 20
assert_eq "deltas after batch 10 (rows 111..130)" 18 "$(inventory_count)"

# --- a collector killed half-way through batch 11's deltas ------------------------------------------
stop_collector
export POS_TEST_KILL_AFTER_DELTA_RECORDS=2
start_collector
unset POS_TEST_KILL_AFTER_DELTA_RECORDS
send_batch "$DEV" --journal "$J" --prefix INV --batch-seq 11 --first-seq 131 --sales 20 --deltas "$DELTAS"
log "batch 11 to a collector that dies after 2 deltas: $BATCH_OUT"
deadline=$((SECONDS + 30))
while kill -0 "$COLLECTOR_PID" 2>/dev/null; do
  ((SECONDS < deadline)) || fail "the collector kills itself after batch 11's second delta" "dead" "running"
  sleep 0.1
done
wait "$COLLECTOR_PID" 2>/dev/null || true
COLLECTOR_PID=""
grep -q 'event=test_hook_kill.*batch_seq=11 delta_index=2' "$COLLECTOR_LOG" ||
  fail "the collector logs event=test_hook_kill for batch 11's delta 2" "test_hook_kill" "$(tail -n 3 "$COLLECTOR_LOG")"
assert_eq "batch 11's deltas in the log after the kill" "1 2" \
  "$(inventory_count >/dev/null; dsql inv "SELECT group_concat(h_delta_index, ' ') FROM
      (SELECT h_delta_index FROM d WHERE h_batch_seq = 11 ORDER BY h_delta_index);")"
start_collector
send 11 131 20   # the agent resends the batch as it was sealed
assert_eq "deltas after batch 11 was resent" 21 "$(inventory_count)"
assert_eq "batch 11's deltas: each index once" "1 2 3" \
  "$(dsql inv "SELECT group_concat(h_delta_index, ' ') FROM
      (SELECT h_delta_index FROM d WHERE h_last_seq = 150 ORDER BY h_delta_index);")"
send 12 131 20 # and a re-cut of the same rows after the restart
assert_eq "deltas after a re-cut of batch 11's rows" 21 "$(inventory_count)"

# --- a collector killed right after a batch: its checkpoint plus the log's headers -----------------
send 13 151 20
kill_collector
start_collector
send 13 151 20 # its acknowledgement was lost with the collector
send 14 141 40 # rows 141..180: straddles row 170 -> dead-lettered
send 15 151 20 # rows 151..170 again
send 16 171 20
assert_eq "deltas after batches 13-16" 27 "$(inventory_count)"
deltas_db dlq pos.dlq.v1
assert_eq "dead-lettered deltas of batch 14" 3 "$(dsql dlq "SELECT count(*) FROM d WHERE h_batch_seq = 14;")"

# --- the whole topic -------------------------------------------------------------------------------
inventory_count >/dev/null
assert_eq "deltas in the topic twice (same journal, material and rows)" 0 \
  "$(dsql inv "SELECT count(*) FROM (SELECT 1 FROM d GROUP BY h_journal_id, material_id, first_seq,
      last_seq HAVING count(*) > 1);")"
assert_eq "deltas whose headers name other rows than their value, or another store" 0 \
  "$(dsql inv "SELECT count(*) FROM d WHERE h_first_seq != first_seq OR h_last_seq != last_seq
      OR key != 'S001' OR store_id != 'S001' OR h_kind != 'live';")"
assert_eq "row ranges covered, each with its 3 materials" \
  "1-20 21-40 41-60 61-80 81-100 111-130 131-150 151-170 171-190" \
  "$(dsql inv "SELECT group_concat(r, ' ') FROM (SELECT first_seq || '-' || last_seq AS r FROM d
      GROUP BY first_seq, last_seq HAVING count(DISTINCT material_id) = 3 AND count(*) = 3
      ORDER BY first_seq);")"
# 9 batches of 20 rows each; MAT-k consumes k * 1000 milli-units per row (pos-batch --deltas).
assert_eq "consumption per material" "MAT-1:-180000 MAT-2:-360000 MAT-3:-540000" \
  "$(dsql inv "SELECT group_concat(m, ' ') FROM (SELECT material_id || ':' || sum(quantity_milli)
      AS m FROM d GROUP BY material_id ORDER BY material_id);")"
assert_eq "all in one partition, rows in order" "1|0" \
  "$(dsql inv "SELECT count(DISTINCT partition), (SELECT count(*) FROM (SELECT last_seq,
      lag(last_seq) OVER (ORDER BY offset) AS p FROM d) WHERE p IS NOT NULL AND last_seq < p)
      FROM d;")"
kafka_read pos.sales.v1 sales
records_db sales
assert_eq "sales: records, distinct seqs, highest" "190|190|190" \
  "$(rsql sales "SELECT count(*), count(DISTINCT seq), max(seq) FROM k WHERE h_journal_id = '$J';")"
stop_collector
