# shellcheck shell=bash
# lib.sh - helpers for the end-to-end tests: broker (pos-broker), collector
# (pos-collector) and agent (pos-agent) as three real processes talking
# mutual TLS over loopback, the Kafka log read back with kcat and decoded
# with protoc itself. Sourced by each tests/e2e/test_*.sh; builds on
# tests/integration/lib.sh (the agent, HTTP, JSON and journal helpers).
#
# Environment (set by ctest, see tests/CMakeLists.txt pos_script_test):
#   POS_BUILD_DIR   the build tree
#   POS_SOURCE_DIR  the source tree
# Optional:
#   POS_KEEP_TMP=1  keep the test's temporary directory (logs, journal, dumps)
#
# Every helper fails the test (exit 1) with what it expected and what it got,
# and every wait is bounded.

# shellcheck source=../integration/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../integration/lib.sh"

COLLECTOR_BIN="$POS_BUILD_DIR/collector/pos-collector"
BROKER_BIN="$POS_BUILD_DIR/tests/tools/pos-broker"
BATCH_BIN="$POS_BUILD_DIR/tests/tools/pos-batch"
FRAMES_BIN="$POS_BUILD_DIR/tests/e2e/pos-e2e-frames"
RECORDS_PROTO="$POS_SOURCE_DIR/tests/e2e/records.proto"

for tool in kcat protoc openssl timeout; do
  command -v "$tool" >/dev/null || fail "$tool is required (apt-get install kcat protobuf-compiler openssl coreutils)"
done
for bin in "$COLLECTOR_BIN" "$BROKER_BIN" "$BATCH_BIN" "$FRAMES_BIN" "$LOAD_BIN"; do
  [[ -x "$bin" ]] || fail "$bin is not built (cmake --build $POS_BUILD_DIR)"
done
emulated COLLECTOR_BIN BROKER_BIN BATCH_BIN FRAMES_BIN

PKI="$T/pki"
BROKER_PID=""
BROKER_BOOT=""
COLLECTOR_PID=""
COLLECTOR_PORT=""
COLLECTOR_URL=""
COLLECTOR_LOG=""
COLLECTOR_STARTS=0
COLLECTOR_CONFIG="$T/collector.conf"
# Where kcat reads: the broker, or the collector's embedded Kafka.
KAFKA_BOOT=""
STORE=S001
DEVICE=D1

# On failure: the last lines of every collector and broker log too (the
# integration lib prints the agent's). `rc` is _cleanup's exit status.
_e2e_cleanup() {
  local status="${1:-0}" f
  if [[ -n "$COLLECTOR_PID" ]] && kill -0 "$COLLECTOR_PID" 2>/dev/null; then
    kill -KILL "$COLLECTOR_PID" 2>/dev/null
    wait "$COLLECTOR_PID" 2>/dev/null
  fi
  if [[ -n "$BROKER_PID" ]] && kill -0 "$BROKER_PID" 2>/dev/null; then
    kill -CONT "$BROKER_PID" 2>/dev/null
    kill -TERM "$BROKER_PID" 2>/dev/null
    local i
    for ((i = 0; i < 50; i++)); do
      kill -0 "$BROKER_PID" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$BROKER_PID" 2>/dev/null
    wait "$BROKER_PID" 2>/dev/null
  fi
  if [[ "$status" != 0 ]]; then
    for f in "$T"/collector.*.log "$T"/broker.log; do
      [[ -s "$f" ]] || continue
      echo "---- last lines of $f" >&2
      tail -n 30 "$f" >&2
    done
  fi
}
on_cleanup '_e2e_cleanup "$rc"'

# ---- PKI -----------------------------------------------------------------------

# make_pki [STORE DEVICE]...: the test PKI in $PKI (tests/tools/pki.sh init),
# plus a device certificate for each extra STORE DEVICE pair.
make_pki() {
  bash "$POS_SOURCE_DIR/tests/tools/pki.sh" init "$PKI" >"$T/pki.log" 2>&1 ||
    fail "pki.sh init $PKI: $(cat "$T/pki.log")"
  while [[ $# -ge 2 ]]; do
    bash "$POS_SOURCE_DIR/tests/tools/pki.sh" device "$PKI" "$1" "$2" >>"$T/pki.log" 2>&1 ||
      fail "pki.sh device $PKI $1 $2: $(cat "$T/pki.log")"
    shift 2
  done
  local f
  for f in ca.crt server.crt server.key device-S001-D1.crt device-S001-D1.key admin.crt \
    expired.crt foreign.crt revoked.crt crl.pem; do
    [[ -s "$PKI/$f" ]] || fail "pki.sh init made $PKI/$f"
  done
}

# ---- ini files ---------------------------------------------------------------------

# write_ini FILE section.key=value...: an INI file, sections and keys in order
# of first appearance; a later value for the same key replaces the earlier
# one, and the value "-" leaves the key out.
write_ini() {
  local file="$1"
  shift
  local -A values=() seen=()
  local order=() sections=() arg key section
  for arg in "$@"; do
    key="${arg%%=*}"
    if [[ ! -v "values[$key]" ]]; then
      order+=("$key")
    fi
    values[$key]="${arg#*=}"
  done
  for key in "${order[@]}"; do
    section="${key%%.*}"
    if [[ ! -v "seen[$section]" ]]; then
      seen[$section]=1
      sections+=("$section")
    fi
  done
  {
    for section in "${sections[@]}"; do
      echo "[$section]"
      for key in "${order[@]}"; do
        if [[ "${key%%.*}" == "$section" && "${values[$key]}" != "-" ]]; then
          echo "${key#*.} = ${values[$key]}"
        fi
      done
      echo
    done
  } >"$file"
}

# ---- the broker -------------------------------------------------------------------

# start_broker [pos-broker args...]: starts pos-broker, waits (15 s) for its
# "bootstrap=" line; sets BROKER_PID, BROKER_BOOT and KAFKA_BOOT.
start_broker() {
  [[ -z "$BROKER_PID" ]] || fail "start_broker: a broker is already running (pid $BROKER_PID)"
  # Made here: the background job may not have opened it yet when it is first read.
  : >"$T/broker.out"
  "$BROKER_BIN" "$@" >"$T/broker.out" 2>"$T/broker.log" &
  BROKER_PID=$!
  local deadline=$((SECONDS + 15))
  while :; do
    BROKER_BOOT="$(sed -n 's/^bootstrap=\([^[:space:]]*\).*/\1/p' "$T/broker.out" | head -n 1)"
    [[ -n "$BROKER_BOOT" ]] && break
    if ! kill -0 "$BROKER_PID" 2>/dev/null; then
      BROKER_PID=""
      fail "pos-broker exited before printing bootstrap=: $(cat "$T/broker.log")"
    fi
    ((SECONDS < deadline)) || fail "pos-broker prints bootstrap= within 15 s" "bootstrap=HOST:PORT" "$(cat "$T/broker.out")"
    sleep 0.05
  done
  KAFKA_BOOT="$BROKER_BOOT"
  log "broker up: $BROKER_BOOT (pid $BROKER_PID)"
}

# pause_broker / resume_broker: SIGSTOP / SIGCONT (the mock keeps its data).
pause_broker() { kill -STOP "$BROKER_PID"; }
resume_broker() { kill -CONT "$BROKER_PID"; }

# ---- the collector ------------------------------------------------------------------

# write_collector_config [FILE] [section.key=value ...]: the test collector
# configuration (mutual TLS with the test PKI and its CRL, the test broker,
# port 0, alone: in no collectors' group, fleet.group=pos-collectors puts it
# in one), each argument replacing a key or adding one.
write_collector_config() {
  local file="$COLLECTOR_CONFIG"
  if [[ $# -gt 0 && "$1" != *=* ]]; then
    file="$1"
    shift
  fi
  write_ini "$file" \
    collector.instance_id=e2e-collector collector.log_level=info \
    server.listen_host=127.0.0.1 server.port=0 \
    server.cert="$PKI/server.crt" server.key="$PKI/server.key" server.ca="$PKI/ca.crt" \
    server.crl="$PKI/crl.pem" \
    kafka.brokers="$BROKER_BOOT" kafka.topic_prefix=pos. kafka.checkpoint_interval=1s \
    kafka.produce_timeout=5s operator.port=0 fleet.group= \
    "$@"
}

# collector_curl PATH [curl args...]: curl to the collector with the S001 D1
# device certificate; prints the body, sets HTTP_STATUS.
collector_curl() {
  local path="$1"
  shift
  HTTP_STATUS="$(curl -sS -o "$T/collector.body" -w '%{http_code}' --max-time 10 \
    --cacert "$PKI/ca.crt" --cert "$PKI/device-S001-D1.crt" --key "$PKI/device-S001-D1.key" \
    "$@" "$COLLECTOR_URL$path" 2>"$T/collector.curl.err")" || HTTP_STATUS="${HTTP_STATUS:-000}"
  cat "$T/collector.body" 2>/dev/null || true
}

# start_collector [CONFIG]: starts pos-collector, waits (15 s) for
# event=listening (its port) and event=ready, then (60 s) for GET /healthz
# to answer 200 (exactly-once state rebuilt). Sets COLLECTOR_PID,
# COLLECTOR_PORT, COLLECTOR_URL, COLLECTOR_LOG, and KAFKA_BOOT when the
# collector runs its embedded Kafka.
start_collector() {
  local config="${1:-$COLLECTOR_CONFIG}"
  [[ -z "$COLLECTOR_PID" ]] || fail "start_collector: a collector is already running (pid $COLLECTOR_PID)"
  COLLECTOR_STARTS=$((COLLECTOR_STARTS + 1))
  COLLECTOR_LOG="$T/collector.$COLLECTOR_STARTS.log"
  "$COLLECTOR_BIN" --config "$config" 2>"$COLLECTOR_LOG" >"$T/collector.$COLLECTOR_STARTS.out" &
  COLLECTOR_PID=$!
  local deadline=$((SECONDS + 15)) line=""
  while :; do
    if ! kill -0 "$COLLECTOR_PID" 2>/dev/null; then
      local rc=0
      wait "$COLLECTOR_PID" || rc=$?
      COLLECTOR_PID=""
      fail "pos-collector exited (status $rc) before it was ready: $(tail -n 5 "$COLLECTOR_LOG")"
    fi
    line="$(grep -m1 -E 'mod=collector event=listening .*[[:space:]]port=[0-9]+' "$COLLECTOR_LOG" || true)"
    if [[ -n "$line" ]] && grep -q 'mod=collector event=ready' "$COLLECTOR_LOG"; then
      break
    fi
    ((SECONDS < deadline)) || fail "pos-collector logs event=listening and event=ready within 15 s" "both" "$(tail -n 5 "$COLLECTOR_LOG")"
    sleep 0.05
  done
  COLLECTOR_PORT="$(sed -n 's/.*[[:space:]]port=\([0-9][0-9]*\).*/\1/p' <<<"$line")"
  [[ "$COLLECTOR_PORT" =~ ^[0-9]+$ && "$COLLECTOR_PORT" -gt 0 ]] ||
    fail "collector's event=listening names a port" "port=<N>" "$line"
  COLLECTOR_URL="https://127.0.0.1:$COLLECTOR_PORT"
  if [[ -z "$BROKER_BOOT" ]]; then
    # Embedded Kafka: the collector logs where it is.
    KAFKA_BOOT="$(sed -n 's/.*[[:space:]]kafka=\([0-9.]*:[0-9][0-9]*\).*/\1/p' <<<"$line")"
    [[ -n "$KAFKA_BOOT" ]] || fail "collector logs its embedded Kafka's bootstrap address" "kafka=HOST:PORT" "$line"
  fi
  deadline=$((SECONDS + 60))
  while :; do
    collector_curl /healthz >/dev/null
    [[ "$HTTP_STATUS" == 200 ]] && break
    kill -0 "$COLLECTOR_PID" 2>/dev/null || fail "pos-collector died while rebuilding its state: $(tail -n 5 "$COLLECTOR_LOG")"
    ((SECONDS < deadline)) || fail "collector /healthz answers 200 within 60 s (state rebuilt)" 200 "$HTTP_STATUS $(cat "$T/collector.curl.err")"
    sleep 0.2
  done
  log "collector up: $COLLECTOR_URL (pid $COLLECTOR_PID, start $COLLECTOR_STARTS)"
}

# pin_collector_port: rewrites the collector's config to listen on the port
# it has now, so that a restart comes back where the agent looks for it.
pin_collector_port() {
  # The [server] section's port only: [operator] keeps its own.
  sed -i "/^\[server\]/,/^\[/ s/^port = .*/port = $COLLECTOR_PORT/" "$COLLECTOR_CONFIG"
  grep -q "^port = $COLLECTOR_PORT\$" "$COLLECTOR_CONFIG" ||
    fail "pin_collector_port: [server] port in $COLLECTOR_CONFIG" "port = $COLLECTOR_PORT" "$(cat "$COLLECTOR_CONFIG")"
}

# stop_collector: SIGTERM; it must exit 0 within 20 s.
stop_collector() {
  [[ -n "$COLLECTOR_PID" ]] || fail "stop_collector: no collector running"
  kill -TERM "$COLLECTOR_PID"
  local deadline=$((SECONDS + 20)) rc=0
  while kill -0 "$COLLECTOR_PID" 2>/dev/null; do
    if ((SECONDS >= deadline)); then
      kill -KILL "$COLLECTOR_PID" 2>/dev/null || true
      fail "pos-collector exits within 20 s of SIGTERM" "exit" "still running"
    fi
    sleep 0.05
  done
  wait "$COLLECTOR_PID" || rc=$?
  COLLECTOR_PID=""
  assert_eq "pos-collector exit status after SIGTERM" 0 "$rc"
}

# kill_collector: SIGKILL.
kill_collector() {
  [[ -n "$COLLECTOR_PID" ]] || fail "kill_collector: no collector running"
  kill -KILL "$COLLECTOR_PID"
  wait "$COLLECTOR_PID" 2>/dev/null || true
  COLLECTOR_PID=""
}

# collector_acks: batch_acked events in the current collector's log.
collector_acks() {
  grep -c 'event=batch_acked' "$COLLECTOR_LOG" || true
}

# wait_collector_acks N TIMEOUT: until the current collector logged N batch_acked.
wait_collector_acks() {
  local want="$1" deadline=$((SECONDS + $2))
  while (($(collector_acks) < want)); do
    ((SECONDS < deadline)) || fail "collector acknowledges $want batches within $2 s" ">= $want" "$(collector_acks)"
    sleep 0.01
  done
}

# ---- the agent ------------------------------------------------------------------------

# write_agent_config [section.key=value ...]: the integration test agent
# configuration plus an uplink to the running collector with the S001 D1
# device certificate; pushes only when asked (interval 1h) unless overridden.
write_agent_config() {
  write_config \
    uplink.url="$COLLECTOR_URL" uplink.cert="$PKI/device-$STORE-$DEVICE.crt" \
    uplink.key="$PKI/device-$STORE-$DEVICE.key" uplink.ca="$PKI/ca.crt" \
    uplink.interval=1h uplink.jitter=1s uplink.heartbeat_interval=0 \
    uplink.max_batch_sales=500 uplink.backoff_min=100ms uplink.backoff_max=1s \
    uplink.request_timeout=30s \
    "$@"
}

# agent_unsent: sales_unsent from the agent's /status.json.
agent_unsent() {
  status_json
  json_get "$STATUS_JSON" '$.sales_unsent'
}

# push_until_sent TIMEOUT: SIGUSR1 the agent (again every 2 s) until its
# status says no sale is unsent; fails after TIMEOUT seconds.
push_until_sent() {
  local timeout="$1" deadline=$((SECONDS + $1)) unsent="" next_push=0
  while :; do
    if ((SECONDS >= next_push)); then
      kill -USR1 "$AGENT_PID"
      next_push=$((SECONDS + 2))
    fi
    sleep 0.2
    unsent="$(agent_unsent)"
    [[ "$unsent" == 0 ]] && break
    ((SECONDS < deadline)) || fail "the agent sends every sale within $timeout s (sales_unsent)" 0 "$unsent"
  done
  log "agent: every sale acknowledged by the collector"
}

# ---- reading Kafka back ---------------------------------------------------------------

# kafka_read TOPIC NAME [SaleRecords|HeartbeatRecords]: reads TOPIC from its
# start to its end with kcat, splits it with pos-e2e-frames and decodes the
# values with protoc. Leaves $T/NAME.meta (partition, offset, key, headers),
# $T/NAME.txt (protoc text) and $T/NAME.tsv (one line per record, see
# _records_tsv), and sets KAFKA_RECORDS to the record count.
KAFKA_RECORDS=0
kafka_read() {
  local topic="$1" name="$2" type="${3:-SaleRecords}" rc=0
  timeout 60 kcat -b "$KAFKA_BOOT" -C -t "$topic" -e -q -f '%p\t%o\t%k\t%h\t%R%s' \
    >"$T/$name.kcat" 2>"$T/$name.kcat.err" || rc=$?
  [[ $rc -eq 0 ]] || fail "kcat reads $topic from $KAFKA_BOOT (exit $rc): $(head -c 500 "$T/$name.kcat.err")"
  _kafka_decode "$topic" "$name" "$type"
}

# _kafka_decode TOPIC NAME TYPE: $T/NAME.kcat split and decoded (kafka_read).
_kafka_decode() {
  local topic="$1" name="$2" type="$3" out
  out="$("$FRAMES_BIN" "$T/$name.meta" "$T/$name.stream" <"$T/$name.kcat")" ||
    fail "pos-e2e-frames splits kcat's output of $topic"
  KAFKA_RECORDS="${out#records=}"
  protoc --decode="pos.e2e.$type" -I "$POS_SOURCE_DIR/proto" -I "$(dirname "$RECORDS_PROTO")" \
    "$RECORDS_PROTO" <"$T/$name.stream" >"$T/$name.txt" 2>"$T/$name.protoc.err" ||
    fail "protoc --decode=pos.e2e.$type decodes every value of $topic: $(head -c 500 "$T/$name.protoc.err")"
  if [[ "$type" == SaleRecords ]]; then
    _records_tsv "$T/$name.meta" "$T/$name.txt" >"$T/$name.tsv"
    assert_eq "$topic: decoded records = records read" "$KAFKA_RECORDS" "$(wc -l <"$T/$name.tsv")"
  fi
}

# kafka_tail_start TOPIC NAME: reads TOPIC from its start in the background,
# as it is written, into $T/NAME.kcat. The test broker keeps only the newest
# 5 MB of a partition (ARCHITECTURE.md, Embedded default and scale): a test
# that writes more than that to one partition reads while it writes.
declare -A KAFKA_TAILS=()
kafka_tail_start() {
  local topic="$1" name="$2"
  kcat -b "$KAFKA_BOOT" -C -t "$topic" -o beginning -u -q -f '%p\t%o\t%k\t%h\t%R%s' \
    >"$T/$name.kcat" 2>"$T/$name.kcat.err" &
  KAFKA_TAILS[$name]=$!
  on_cleanup "kill ${KAFKA_TAILS[$name]} 2>/dev/null || true"
}

# kafka_tail_wait TOPIC NAME: until the tail has read up to the end TOPIC
# has now (60 s at most), the tail left running. A test that produces more
# than the broker keeps of a partition, faster than a busy machine's kcat
# reads, lets the tail catch up in between: the broker trims what the tail
# has not read yet, and kcat then starts again at the end.
kafka_tail_wait() {
  local topic="$1" name="$2" ends deadline=$((SECONDS + 60)) p o
  ends="$(timeout 60 kcat -b "$KAFKA_BOOT" -C -t "$topic" -o -1 -e -q -f '%p %o\n')" ||
    fail "kcat reads the last record of each partition of $topic"
  while :; do
    kill -0 "${KAFKA_TAILS[$name]}" 2>/dev/null ||
      fail "the tail of $topic runs: $(head -c 500 "$T/$name.kcat.err")"
    cp "$T/$name.kcat" "$T/$name.snap"
    if "$FRAMES_BIN" "$T/$name.snapmeta" /dev/null <"$T/$name.snap" >/dev/null 2>&1; then
      local caught_up=1
      while read -r p o; do
        [[ -n "$p" ]] || continue
        awk -F'\t' -v p="$p" -v o="$o" '$1 == p && $2 == o { found = 1 } END { exit !found }' \
          "$T/$name.snapmeta" || caught_up=0
      done <<<"$ends"
      ((caught_up)) && break
    fi
    ((SECONDS < deadline)) || fail "the tail of $topic reads up to its end within 60 s" "$ends" \
      "$(tail -n 2 "$T/$name.snapmeta" 2>/dev/null)"
    sleep 0.3
  done
}

# kafka_tail_stop TOPIC NAME [SaleRecords|HeartbeatRecords]: once the tail
# has read up to the end TOPIC has now (60 s at most), stops it and decodes
# what it read, as kafka_read does.
kafka_tail_stop() {
  local topic="$1" name="$2" type="${3:-SaleRecords}"
  kafka_tail_wait "$topic" "$name"
  kill "${KAFKA_TAILS[$name]}" 2>/dev/null || true
  wait "${KAFKA_TAILS[$name]}" 2>/dev/null || true
  mv "$T/$name.snap" "$T/$name.kcat"
  _kafka_decode "$topic" "$name" "$type"
}

# The columns of a NAME.tsv line (a Kafka record of a pos.v1.Sale value).
RECORD_COLUMNS="partition INTEGER, offset INTEGER, key TEXT, h_journal_id TEXT, h_seq INTEGER,
  h_batch_seq INTEGER, h_kind TEXT, h_device_id TEXT, h_reason TEXT, h_field TEXT,
  sale_id TEXT, kind TEXT, original_sale_id TEXT, terminal_id TEXT, cashier_id TEXT,
  channel TEXT, delivery_partner TEXT, business_time_ms INTEGER, utc_offset_min INTEGER,
  currency TEXT, currency_exponent INTEGER, lines TEXT, payments TEXT, total INTEGER,
  store_id TEXT, seq INTEGER, received_ms INTEGER"

# _records_tsv META TEXT: joins kcat's metadata with protoc's decoding, one
# tab-separated line per record in RECORD_COLUMNS order. Proto3 leaves out
# zero values, so absent numbers are 0 and absent strings empty; enum names
# become the journal's words (SALE_KIND_SALE -> sale, CHANNEL_POS -> pos);
# lines are "sku:qty:unit_price:discount:promo_id:tax" joined by "|",
# payments "method:amount" joined by "|".
_records_tsv() {
  awk '
    function num(v) { return v == "" ? 0 : v }
    function header(h, name,    n, parts, i, k, last) {
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
    function emit(    m, fields, hdr, kind, channel) {
      split(meta[n], fields, "\t")
      hdr = fields[4]
      kind = f["kind"]; sub(/^SALE_KIND_/, "", kind); kind = kind == "" ? "unspecified" : tolower(kind)
      channel = f["channel"]; sub(/^CHANNEL_/, "", channel); channel = channel == "" ? "unspecified" : tolower(channel)
      print fields[1], fields[2], fields[3], header(hdr, "journal_id"), header(hdr, "seq"),
        header(hdr, "batch_seq"), header(hdr, "kind"), header(hdr, "device_id"),
        header(hdr, "reason"), header(hdr, "field"),
        f["sale_id"], kind, f["original_sale_id"], f["terminal_id"], f["cashier_id"], channel,
        f["delivery_partner"], num(f["business_time_ms"]), num(f["utc_offset_minutes"]),
        f["currency"], num(f["currency_exponent"]), lines, payments, num(f["total"]),
        f["store_id"], num(f["seq"]), num(f["received_ms"])
    }
    BEGIN { OFS = "\t" }
    FNR == NR { meta[++m] = $0; next }
    /^record \{$/ { n++; delete f; lines = ""; payments = ""; ctx = "top"; next }
    /^  lines \{$/ { ctx = "line"; delete l; next }
    /^  payments \{$/ { ctx = "payment"; delete p; next }
    /^  carried_from \{$/ { ctx = "origin"; next }
    /^  \}$/ {
      if (ctx == "line")
        lines = lines (lines == "" ? "" : "|") l["sku"] ":" num(l["quantity"]) ":" num(l["unit_price"]) ":" num(l["discount"]) ":" l["promo_id"] ":" num(l["tax"])
      else if (ctx == "payment")
        payments = payments (payments == "" ? "" : "|") p["method"] ":" num(p["amount"])
      ctx = "top"; next
    }
    /^\}$/ { emit(); next }
    {
      text = $0; sub(/^ +/, "", text)
      k = text; sub(/:.*/, "", k)
      v = text; sub(/^[^:]*: /, "", v)
      if (v ~ /^".*"$/) v = substr(v, 2, length(v) - 2)
      if (ctx == "top") f[k] = v; else if (ctx == "line") l[k] = v; else if (ctx == "payment") p[k] = v
    }
  ' "$1" "$2"
}

# records_db NAME: loads $T/NAME.tsv into the SQLite database $T/NAME.db as
# table k (query it with rsql).
records_db() {
  local name="$1" db="$T/$1.db"
  rm -f "$db"
  sqlite3 -batch -bail "$db" "CREATE TABLE k($RECORD_COLUMNS);" ".mode tabs" ".import '$T/$name.tsv' k" ||
    fail "load $T/$name.tsv into SQLite"
}

# rsql NAME QUERY: QUERY on NAME's records (table k) with the journal as j.
rsql() {
  if [[ -f "$JOURNAL" ]]; then
    sqlite3 -batch -bail "$T/$1.db" ".timeout 5000" "ATTACH $(_sql_quote "$JOURNAL") AS j;" "$2"
  else
    sqlite3 -batch -bail "$T/$1.db" "$2"
  fi
}

# The journal's sales in the columns the records are compared on (lines
# and payments in the records' notation).
JOURNAL_CANONICAL="SELECT s.seq AS seq, s.sale_id AS sale_id, s.kind AS kind,
    coalesce(s.original_sale_id, '') AS original_sale_id, s.terminal_id AS terminal_id,
    coalesce(s.cashier_id, '') AS cashier_id, s.channel AS channel,
    coalesce(s.delivery_partner, '') AS delivery_partner, s.business_time_ms AS business_time_ms,
    s.utc_offset_min AS utc_offset_min, s.currency AS currency,
    s.currency_exponent AS currency_exponent,
    (SELECT group_concat(x, '|') FROM (SELECT json_extract(value, '\$.sku') || ':' ||
        json_extract(value, '\$.qty') || ':' || json_extract(value, '\$.unit_price') || ':' ||
        json_extract(value, '\$.discount') || ':' || coalesce(json_extract(value, '\$.promo_id'), '') ||
        ':' || json_extract(value, '\$.tax') AS x FROM json_each(s.lines) ORDER BY key)) AS lines,
    (SELECT group_concat(x, '|') FROM (SELECT json_extract(value, '\$.method') || ':' ||
        json_extract(value, '\$.amount') AS x FROM json_each(s.payments) ORDER BY key)) AS payments,
    s.total_minor AS total, s.received_ms AS received_ms,
    (SELECT b.batch_seq FROM j.batches b WHERE s.seq BETWEEN b.first_seq AND b.last_seq) AS batch_seq
  FROM j.sales s"

# check_sales_match_journal NAME EXPECTED: NAME's records (kafka_read of
# pos.sales.v1, then records_db) are exactly the journal's EXPECTED sales:
# one record per sale_id, keyed by the store, all in one partition in seq
# order, headers naming journal, seq, batch and device, and every field
# equal to the journal's row.
check_sales_match_journal() {
  local name="$1" expected="$2" journal_id
  journal_id="$(sql "SELECT value FROM meta WHERE key = 'journal_id';")"
  assert_eq "journal rows" "$expected" "$(journal_count)"
  assert_eq "records in pos.sales.v1" "$expected" "$(rsql "$name" 'SELECT count(*) FROM k;')"
  assert_eq "distinct sale_ids in pos.sales.v1" "$expected" "$(rsql "$name" 'SELECT count(DISTINCT sale_id) FROM k;')"
  assert_eq "distinct seqs in pos.sales.v1" "$expected" "$(rsql "$name" 'SELECT count(DISTINCT seq) FROM k;')"
  assert_eq "records not keyed by the store $STORE" 0 "$(rsql "$name" "SELECT count(*) FROM k WHERE key IS NOT '$STORE';")"
  assert_eq "records whose store_id is not $STORE" 0 "$(rsql "$name" "SELECT count(*) FROM k WHERE store_id IS NOT '$STORE';")"
  assert_eq "partitions holding the store's records" 1 "$(rsql "$name" 'SELECT count(DISTINCT partition) FROM k;')"
  assert_eq "records out of seq order within the partition" 0 \
    "$(rsql "$name" 'SELECT count(*) FROM (SELECT seq, lag(seq) OVER (ORDER BY offset) AS previous FROM k) WHERE previous IS NOT NULL AND seq <= previous;')"
  assert_eq "records whose journal_id header is not the journal's ($journal_id)" 0 \
    "$(rsql "$name" "SELECT count(*) FROM k WHERE lower(h_journal_id) IS NOT '$journal_id';")"
  assert_eq "records whose seq header differs from the sale's seq" 0 \
    "$(rsql "$name" 'SELECT count(*) FROM k WHERE h_seq IS NOT seq;')"
  assert_eq "records whose kind header is not live" 0 "$(rsql "$name" "SELECT count(*) FROM k WHERE h_kind IS NOT 'live';")"
  assert_eq "records whose device_id header is not $DEVICE" 0 "$(rsql "$name" "SELECT count(*) FROM k WHERE h_device_id IS NOT '$DEVICE';")"
  local mismatched
  mismatched="$(rsql "$name" "SELECT count(*) FROM ($JOURNAL_CANONICAL) s WHERE NOT EXISTS (
      SELECT 1 FROM k WHERE k.sale_id = s.sale_id AND k.seq = s.seq AND k.kind = s.kind
        AND k.original_sale_id = s.original_sale_id AND k.terminal_id = s.terminal_id
        AND k.cashier_id = s.cashier_id AND k.channel = s.channel
        AND k.delivery_partner = s.delivery_partner AND k.business_time_ms = s.business_time_ms
        AND k.utc_offset_min = s.utc_offset_min AND k.currency = s.currency
        AND k.currency_exponent = s.currency_exponent AND k.lines = s.lines
        AND k.payments = s.payments AND k.total = s.total AND k.received_ms = s.received_ms
        AND k.h_batch_seq = s.batch_seq);")"
  if [[ "$mismatched" != 0 ]]; then
    echo "---- first journal rows without an equal record (journal | record):" >&2
    rsql "$name" "SELECT 'journal: ' || s.seq || ' ' || s.sale_id || ' ' || s.kind || ' ' || s.original_sale_id || ' ' ||
        s.terminal_id || ' ' || s.cashier_id || ' ' || s.channel || ' ' || s.delivery_partner || ' ' ||
        s.business_time_ms || ' ' || s.utc_offset_min || ' ' || s.currency || ' ' || s.currency_exponent || ' ' ||
        s.lines || ' ' || s.payments || ' ' || s.total || ' ' || s.received_ms || ' batch ' || s.batch_seq || char(10) ||
        'record:  ' || coalesce((SELECT k.seq || ' ' || k.sale_id || ' ' || k.kind || ' ' || k.original_sale_id || ' ' ||
        k.terminal_id || ' ' || k.cashier_id || ' ' || k.channel || ' ' || k.delivery_partner || ' ' ||
        k.business_time_ms || ' ' || k.utc_offset_min || ' ' || k.currency || ' ' || k.currency_exponent || ' ' ||
        k.lines || ' ' || k.payments || ' ' || k.total || ' ' || k.received_ms || ' batch ' || k.h_batch_seq
        FROM k WHERE k.sale_id = s.sale_id LIMIT 1), '(none)')
      FROM ($JOURNAL_CANONICAL) s WHERE NOT EXISTS (
      SELECT 1 FROM k WHERE k.sale_id = s.sale_id AND k.seq = s.seq AND k.kind = s.kind
        AND k.original_sale_id = s.original_sale_id AND k.terminal_id = s.terminal_id
        AND k.cashier_id = s.cashier_id AND k.channel = s.channel
        AND k.delivery_partner = s.delivery_partner AND k.business_time_ms = s.business_time_ms
        AND k.utc_offset_min = s.utc_offset_min AND k.currency = s.currency
        AND k.currency_exponent = s.currency_exponent AND k.lines = s.lines
        AND k.payments = s.payments AND k.total = s.total AND k.received_ms = s.received_ms
        AND k.h_batch_seq = s.batch_seq) LIMIT 3;" >&2
    fail "journal sales equal, field for field, to a record of pos.sales.v1" "0 different" "$mismatched of $expected different"
  fi
  log "pos.sales.v1 holds the journal's $expected sales exactly once, field for field"
}

# check_batches_contiguous: the journal's sealed batches are 1..N, each
# acknowledged, and every stored body is one zstd frame.
check_batches_contiguous() {
  local count max
  count="$(sql 'SELECT count(*) FROM batches;')"
  max="$(sql 'SELECT coalesce(max(batch_seq), 0) FROM batches;')"
  assert_gt "batches sealed" 0 "$count"
  assert_eq "batch_seq contiguous from 1 (count = max)" "$max" "$count"
  assert_eq "lowest batch_seq" 1 "$(sql 'SELECT min(batch_seq) FROM batches;')"
  assert_eq "batches not acknowledged" 0 "$(sql 'SELECT count(*) FROM batches WHERE acked_ms IS NULL;')"
  assert_eq "batch bodies that are not zstd frames (magic 28b52ffd)" 0 \
    "$(sql "SELECT count(*) FROM batches WHERE hex(substr(body, 1, 4)) <> '28B52FFD';")"
  assert_eq "batches whose seq range does not follow the previous batch's" 0 \
    "$(sql 'SELECT count(*) FROM (SELECT first_seq, lag(last_seq) OVER (ORDER BY batch_seq) AS previous FROM batches) WHERE previous IS NOT NULL AND first_seq <> previous + 1;')"
  assert_eq "sales in no batch or in more than one" 0 \
    "$(sql 'SELECT count(*) FROM sales s WHERE (SELECT count(*) FROM batches b WHERE s.seq BETWEEN b.first_seq AND b.last_seq) <> 1;')"
  BATCH_COUNT="$count"
}

# ---- pos-batch --------------------------------------------------------------------------

# send_batch CERT_NAME [pos-batch args...]: one pos-batch run against the
# collector with $PKI/CERT_NAME.{crt,key} (CERT_NAME "" = no client
# certificate). Sets BATCH_OUT (its output) and BATCH_RC (its exit status).
BATCH_OUT=""
BATCH_RC=0
send_batch() {
  local cert="$1"
  shift
  local auth=()
  [[ -n "$cert" ]] && auth=(--cert "$PKI/$cert.crt" --key "$PKI/$cert.key")
  BATCH_RC=0
  BATCH_OUT="$("$BATCH_BIN" --url "$COLLECTOR_URL" --cacert "$PKI/ca.crt" "${auth[@]}" \
    --timeout 30 "$@" 2>"$T/batch.err")" || BATCH_RC=$?
  if [[ $BATCH_RC -ne 0 && $BATCH_RC -ne 3 ]]; then
    fail "pos-batch $* (exit $BATCH_RC): $(cat "$T/batch.err") $BATCH_OUT"
  fi
}

# batch_field NAME [TEXT]: a key=value field of pos-batch's (last) output line.
batch_field() {
  local text="${2:-$BATCH_OUT}"
  text="$(tail -n 1 <<<"$text")"
  if [[ "$1" == message || "$1" == error ]]; then
    sed -n "s/.* $1=\"\\(.*\\)\"\$/\\1/p" <<<"$text"
  else
    sed -n "s/^\\(.* \\)\\{0,1\\}$1=\\([^ ]*\\).*/\\2/p" <<<"$text"
  fi
}

# ---- collector instances in one group (the fleet) --------------------------------------

# fleet_start NAME: a collector with instance_id NAME in the group pos-collectors (session
# timeout $FLEET_SESSION_TIMEOUT, 4 s unless set), logging to $T/NAME.log; its pid in
# FLEET_PIDS[NAME]. Killed at cleanup.
declare -A FLEET_PIDS=()
fleet_start() {
  write_collector_config "$T/$1.conf" collector.instance_id="$1" fleet.group=pos-collectors \
    fleet.session_timeout="${FLEET_SESSION_TIMEOUT:-4s}"
  "$COLLECTOR_BIN" --config "$T/$1.conf" 2>"$T/$1.log" >/dev/null &
  FLEET_PIDS[$1]=$!
  if [[ -z "${_FLEET_CLEANUP:-}" ]]; then
    _FLEET_CLEANUP=1
    on_cleanup '_fleet_kill_all'
  fi
}
_fleet_kill_all() {
  local n
  for n in "${!FLEET_PIDS[@]}"; do kill -KILL "${FLEET_PIDS[$n]}" 2>/dev/null || true; done
}

# fleet_kill NAME: kill -9, the way a crash would.
fleet_kill() {
  kill -KILL "${FLEET_PIDS[$1]}"
  wait "${FLEET_PIDS[$1]}" 2>/dev/null || true
  unset "FLEET_PIDS[$1]"
}

# fleet_stop NAME: SIGTERM; it must exit 0.
fleet_stop() {
  local rc=0
  kill -TERM "${FLEET_PIDS[$1]}"
  wait "${FLEET_PIDS[$1]}" || rc=$?
  unset "FLEET_PIDS[$1]"
  assert_eq "$1: exit status after SIGTERM" 0 "$rc"
}

# fleet_wait_ready SECONDS NAME...: until each NAME answers /healthz 200 (its partitions
# assigned and taken over); its batch URL in FLEET_URLS[NAME].
declare -A FLEET_URLS=()
fleet_wait_ready() {
  local deadline=$((SECONDS + $1)) n port code
  shift
  for n in "$@"; do
    while :; do
      port="$(sed -n 's/.*mod=collector event=operator_listening .*port=\([0-9]*\).*/\1/p' "$T/$n.log" | head -n 1)"
      if [[ -n "$port" ]]; then
        code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://127.0.0.1:$port/healthz" || true)"
        [[ "$code" == 200 ]] && break
      fi
      kill -0 "${FLEET_PIDS[$n]}" 2>/dev/null || fail "$n runs" "running" "exited: $(tail -n 5 "$T/$n.log")"
      ((SECONDS < deadline)) || fail "$n ready (healthz 200) within the time" 200 \
        "${code:-no port} $(grep -E 'event=(fleet_|partitions_)' "$T/$n.log" | tail -n 3)"
      sleep 0.2
    done
    FLEET_URLS[$n]="https://127.0.0.1:$(sed -n 's/.*mod=collector event=listening .*port=\([0-9]*\).*/\1/p' "$T/$n.log" | head -n 1)"
  done
}

# fleet_owned NAME: the partitions NAME owns after its latest change ("" for none).
fleet_owned() {
  local line
  line="$(grep -E 'mod=ownership event=partitions_(assigned|revoked)' "$T/$1.log" | tail -n 1 || true)"
  line="$(sed -n 's/.* owned=\([^ ]*\) .*/\1/p' <<<"$line")"
  [[ "$line" == "-" ]] && line=""
  printf '%s' "$line"
}

# ---- compaction, checkpoints ----------------------------------------------------------

# compact_broker: SIGUSR1 to pos-broker, which moves to a new mock cluster
# holding what a compacting broker keeps (newest record per key of the
# compacted topics, tombstoned keys gone; data topics at their offsets) and
# prints its new bootstrap= line (30 s). Updates BROKER_BOOT, KAFKA_BOOT and
# the collector config's brokers. Sets COMPACT_DROPPED (records dropped).
COMPACT_DROPPED=0
compact_broker() {
  local before after deadline=$((SECONDS + 30)) line
  before="$(grep -c '^compacted ' "$T/broker.out" || true)"
  kill -USR1 "$BROKER_PID"
  while :; do
    after="$(grep -c '^compacted ' "$T/broker.out" || true)"
    ((after > before)) && break
    grep -q '^compaction_failed' "$T/broker.out" &&
      fail "pos-broker compacts on SIGUSR1" "compacted" "$(tail -n 3 "$T/broker.log")"
    ((SECONDS < deadline)) || fail "pos-broker compacts within 30 s of SIGUSR1" "compacted" "$(tail -n 3 "$T/broker.out")"
    sleep 0.05
  done
  BROKER_BOOT="$(sed -n 's/^bootstrap=\([^[:space:]]*\).*/\1/p' "$T/broker.out" | tail -n 1)"
  KAFKA_BOOT="$BROKER_BOOT"
  line="$(grep '^compacted ' "$T/broker.out" | tail -n 1)"
  COMPACT_DROPPED="$(sed -n 's/.* dropped=\([0-9]*\).*/\1/p' <<<"$line")"
  [[ -f "$COLLECTOR_CONFIG" ]] && sed -i "s|^brokers = .*|brokers = $BROKER_BOOT|" "$COLLECTOR_CONFIG"
  log "broker compacted ($line), now at $BROKER_BOOT"
}

# collector_checkpoints [LOG]: the generations of the complete checkpoints a
# collector logged (event=checkpoint), one per line.
collector_checkpoints() {
  sed -n 's/.*mod=ingest event=checkpoint .*generation=\([0-9]*\).*/\1/p' "${1:-$COLLECTOR_LOG}"
}

# wait_collector_checkpoints N TIMEOUT: until the current collector logged N
# complete checkpoints.
wait_collector_checkpoints() {
  local want="$1" deadline=$((SECONDS + $2))
  while (($(collector_checkpoints | wc -l) < want)); do
    ((SECONDS < deadline)) || fail "collector writes $want checkpoints within $2 s" ">= $want" "$(collector_checkpoints | wc -l)"
    sleep 0.1
  done
}

# recovery_field NAME [LOG]: NAME=value of the last recovery_done event.
recovery_field() {
  grep 'event=recovery_done' "${2:-$COLLECTOR_LOG}" | tail -n 1 | sed -n "s/.*[[:space:]]$1=\\([^[:space:]]*\\).*/\\1/p"
}

# ASAN_FAKETIME_OPTIONS: what an ASan build needs in ASAN_OPTIONS to run under
# libfaketime. verify_asan_link_order=0: clang links the ASan runtime into the
# binary, and libfaketime is preloaded before it. allocator_release_to_os_
# interval_ms=-1: by default ASan's allocator reads CLOCK_MONOTONIC (through
# libfaketime's clock_gettime) while it holds a size class's lock, to pace
# returning memory to the kernel; libfaketime's first call initialises itself
# with dlsym, which allocates, and its calls under FAKETIME_NO_CACHE=1 read the
# timestamp file with fopen/fclose, which allocate too: the process deadlocks,
# at start-up or later, depending on the machine's timing (seen in CI, and in a
# 20-line program of two threads allocating and reading the clock; libfaketime
# 0.9.10's own issue 365 and pull request 391 describe it).
ASAN_FAKETIME_OPTIONS=verify_asan_link_order=0:allocator_release_to_os_interval_ms=-1

# agent_under_faketime: from here on, start_agent runs the agent under
# libfaketime (Debian's faketime) with its wall clock read from $CLOCK_FILE
# (written by the test: "@1970-01-01 00:00:00", "+0", ...), the monotonic
# clocks real, and adjtimex() saying "not synchronised" (a device no NTP
# reached). Skips (77) under an emulator. Defines poke_writer.
agent_under_faketime() {
  [[ -z "${POS_EMULATOR:-}" ]] ||
    skip "libfaketime is preloaded into a native agent only (not through $POS_EMULATOR)"
  FAKETIME_LIB="$(ls /usr/lib/*/faketime/libfaketimeMT.so.1 2>/dev/null | head -n1 || true)"
  [[ -n "$FAKETIME_LIB" ]] ||
    fail "libfaketime is required (apt-get install faketime; scripts/deps.sh)"

  # The kernel must not call a clock libfaketime moved synchronised (the
  # agent trusts a synchronised clock over the collector's): a shim says
  # STA_UNSYNC, as on a device no NTP reached.
  UNSYNC_SHIM="$POS_BUILD_DIR/tests/tools/libpos-clock-unsync-shim.so"
  [[ -f "$UNSYNC_SHIM" ]] || fail "$UNSYNC_SHIM is not built (cmake --build $POS_BUILD_DIR)"
  CLOCK_FILE="$T/clock"
  REAL_AGENT_BIN="$AGENT_BIN"
  AGENT_BIN="$T/pos-agent-faketime"
  cat >"$AGENT_BIN" <<EOF
#!/usr/bin/env bash
export LD_PRELOAD=$FAKETIME_LIB:$UNSYNC_SHIM FAKETIME_TIMESTAMP_FILE=$CLOCK_FILE FAKETIME_NO_CACHE=1
export FAKETIME_DONT_FAKE_MONOTONIC=1
# A sanitized build: its runtime need not come first in a preloaded process,
# and its allocator must not read the clock (ASAN_FAKETIME_OPTIONS, lib.sh).
export ASAN_OPTIONS="\${ASAN_OPTIONS:+\$ASAN_OPTIONS:}$ASAN_FAKETIME_OPTIONS"
exec $REAL_AGENT_BIN "\$@"
EOF
  chmod +x "$AGENT_BIN"

  # libfaketime (0.9.10) intercepts pthread_cond_timedwait and, on a
  # condition variable on CLOCK_MONOTONIC, never returns from it (seen with a
  # ten-line program): the journal writer's timed wait, which also paces its
  # look at the clock, then sleeps until something wakes it. Without
  # libfaketime the wait returns on time. While the test waits for the agent
  # to notice its clock, a push (SIGUSR1) gives the writer work, so it wakes
  # and looks; rows held for the clock are never sealed by it.
  poke_writer() { kill -USR1 "$AGENT_PID" 2>/dev/null || true; }
}
