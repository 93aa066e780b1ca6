#!/usr/bin/env bash
# Collector instances that share the stores (issue 15, items 1 and 3): each
# writes only the stores of the partitions of pos.sales.v1 the group assigns
# it and answers the others 503 naming the partition; when instances come and
# go, a partition moves only once its old owner's records have landed (or,
# after a kill -9, once its last produce requests cannot land any more), and
# the new owner rebuilds the partition's state from every instance's
# checkpoints and the log before it takes a batch. Played here as a load
# balancer would: each batch goes to the instances in turn until one takes it.
#
# 16 stores, 6 partitions, instances a, b, c; d joins; a stops cleanly; b
# killed (-9) with its batches acknowledged: their resends to the new owner
# produce nothing; a starts again. Every sale is in Kafka exactly once, and every batch was
# taken by the one instance that owned its store's partition then. A
# partition handed over (a join, a clean stop) is taken at once: its
# previous owner's lease no longer names it, so nothing of it can land
# later; only after the kill does the new owner wait out b's last requests,
# and only once: when a starts again and b's former partitions move on, the
# leases of those that waited say so, and nobody waits for b again.
source "$(dirname "$0")/lib.sh"

STORES=16
args=()
for ((s = 2; s <= STORES; s++)); do args+=("$(printf 'S%03d' "$s")" D1); done
make_pki "${args[@]}"
start_broker --partitions 6
REFUSED=0
TAKEN_BY=""
# lb_send STORE BATCH_SEQ NAME...: batch BATCH_SEQ (5 sales) of STORE's journal to the
# instances NAME... in turn, rounds 0.3 s apart, until one answers 200 (60 s). Sets TAKEN_BY.
lb_send() {
  local store="$1" bseq="$2" deadline=$((SECONDS + 60)) n status journal
  shift 2
  journal="$(printf '%s' "$store" | sha256sum | cut -c1-32)"
  TAKEN_BY=""
  while :; do
    for n in "$@"; do
      COLLECTOR_URL="${FLEET_URLS[$n]}"
      send_batch "device-$store-D1" --store "$store" --device D1 --journal "$journal" \
        --batch-seq "$bseq" --first-seq $(((bseq - 1) * 5 + 1)) --sales 5 --prefix "$store"
      status="$(batch_field status)"
      if [[ "$status" == 200 ]]; then
        TAKEN_BY="$n"
        LAST_DUPLICATE="$(batch_field duplicate)"
        return 0
      fi
      [[ "$status" == 503 ]] || fail "$store batch $bseq to $n: 200 or 503" "200|503" "$BATCH_OUT"
      REFUSED=$((REFUSED + 1))
    done
    ((SECONDS < deadline)) || fail "$store batch $bseq taken by one of $* within 60 s" 200 \
      "$(batch_field message)"
    sleep 0.3
  done
}

# send_round BATCH_SEQ NAME...: batch BATCH_SEQ of every store; each must be taken by the
# instance owning the store's partition (the 503s of the others name it).
declare -A TAKER
send_round() {
  local bseq="$1" s store
  shift
  for ((s = 1; s <= STORES; s++)); do
    store="$(printf 'S%03d' "$s")"
    lb_send "$store" "$bseq" "$@"
    TAKER[$store]="$TAKEN_BY"
    assert_eq "$store batch $bseq: taken once, not a duplicate" 0 "$LAST_DUPLICATE"
  done
  log "round $bseq: taken by $(for st in "${!TAKER[@]}"; do printf '%s=%s ' "$st" "${TAKER[$st]}"; done)"
}

fleet_start fleet-a
fleet_start fleet-b
fleet_start fleet-c
fleet_wait_ready 120 fleet-a fleet-b fleet-c
log "owned: a=[$(fleet_owned fleet-a)] b=[$(fleet_owned fleet-b)] c=[$(fleet_owned fleet-c)]"

# Round 1: each store's batch is taken by one instance, and refused by the others
# with the partition named.
send_round 1 fleet-a fleet-b fleet-c
grep -h 'event=batch_unavailable' "$T"/fleet-*.log | grep -c "not this collector instance's store" >/dev/null ||
  fail "a batch for another instance's partition is refused naming it" \
    "reason=not this collector instance's store ..." "$(grep -h 'batch_unavailable' "$T"/fleet-*.log | head -n 3)"
for ((s = 1; s <= STORES; s++)); do
  store="$(printf 'S%03d' "$s")"
  p="$({ grep -h "event=batch_unavailable store=$store .*partition [0-9]* of pos.sales.v1" \
    "$T"/fleet-*.log || true; } | head -n 1 | sed -n 's/.*partition \([0-9]*\) of pos.sales.v1.*/\1/p')"
  [[ -z "$p" ]] && continue # taken at the first try: no refusal to read the partition from
  [[ ",$(fleet_owned "${TAKER[$store]}")," == *",$p,"* ]] ||
    fail "$store (partition $p) taken by its owner" "owner of $p" "${TAKER[$store]} owns $(fleet_owned "${TAKER[$store]}")"
done

# gains_since NAME LINE: NAME's takeovers after line LINE of its log, each "waited_ms=N".
gains_since() {
  tail -n +"$(($2 + 1))" "$T/$1.log" | { grep 'event=fleet_taken_over' || true; } |
    sed -n 's/.* \(waited_ms=[0-9]*\).*/\1/p' | tr '\n' ' '
}
lines() { wc -l <"$T/$1.log"; }
# assert_no_wait WHAT NAME LINE...: NAME's takeovers after LINE (pairs) waited for nothing.
assert_no_wait() {
  local what="$1" n from gains=""
  shift
  while (($# >= 2)); do
    n="$1" from="$2"
    shift 2
    gains+="$(gains_since "$n" "$from")"
    tail -n +"$((from + 1))" "$T/$n.log" >"$T/since.log"
    if grep -q 'event=waiting_out_previous_owner' "$T/since.log"; then
      fail "$what: $n takes partitions handed over without waiting out their previous owner" \
        "no waiting_out_previous_owner" "$(grep -m 1 'waiting_out_previous_owner' "$T/since.log")"
    fi
  done
  [[ -n "$gains" ]] || fail "$what: some partitions move" "event=fleet_taken_over" "none"
  [[ "$gains" =~ ^(waited_ms=0 )+$ ]] || fail "$what: takeovers waited for nothing" "waited_ms=0 ..." "$gains"
  log "$what: partitions taken over at once ($gains)"
}

# d joins and gets a share, handed over by a, b and c: taken at once.
from_a="$(lines fleet-a)" from_b="$(lines fleet-b)" from_c="$(lines fleet-c)"
fleet_start fleet-d
sleep 2
fleet_wait_ready 120 fleet-a fleet-b fleet-c fleet-d
assert_no_wait "d joins" fleet-d 0 fleet-a "$from_a" fleet-b "$from_b" fleet-c "$from_c"
send_round 2 fleet-a fleet-b fleet-c fleet-d

# a stops cleanly: its partitions move once its records have landed, taken at once.
from_b="$(lines fleet-b)" from_c="$(lines fleet-c)" from_d="$(lines fleet-d)"
fleet_stop fleet-a
sleep 2
fleet_wait_ready 120 fleet-b fleet-c fleet-d
assert_no_wait "a stops cleanly" fleet-b "$from_b" fleet-c "$from_c" fleet-d "$from_d"
send_round 3 fleet-b fleet-c fleet-d
declare -A ROUND3_TAKER
for st in "${!TAKER[@]}"; do ROUND3_TAKER[$st]="${TAKER[$st]}"; done

# b killed: its batches were acknowledged. Its partitions go to c and d after its session
# timeout, once its last produce requests cannot land any more; a resend of a batch b took
# (its answer lost, say) produces nothing at the new owner.
from_c="$(lines fleet-c)" from_d="$(lines fleet-d)"
fleet_kill fleet-b
# since_kill: c's and d's log lines since the kill (in a file: grep -q would cut a pipe short).
since_kill() {
  { tail -n +"$((from_c + 1))" "$T/fleet-c.log"; tail -n +"$((from_d + 1))" "$T/fleet-d.log"; } \
    >"$T/since_kill.log"
  cat "$T/since_kill.log"
}
deadline=$((SECONDS + 90))
until since_kill >/dev/null && grep -q 'event=fleet_taken_over' "$T/since_kill.log"; do
  ((SECONDS < deadline)) || fail "b's partitions taken over within 90 s of its kill" \
    "event=fleet_taken_over" "$(since_kill | grep -E 'event=(fleet_|partitions_)' | tail -n 3)"
  sleep 0.5
done
fleet_wait_ready 120 fleet-c fleet-d
since_kill >/dev/null
grep -q 'event=waiting_out_previous_owner' "$T/since_kill.log" ||
  fail "b killed: its partitions' new owner waits out b's last produce requests" \
    "event=waiting_out_previous_owner" "$(gains_since fleet-c "$from_c") $(gains_since fleet-d "$from_d")"
resent=0
for st in "${!ROUND3_TAKER[@]}"; do
  [[ "${ROUND3_TAKER[$st]}" == fleet-b ]] || continue
  lb_send "$st" 3 fleet-c fleet-d
  # A duplicate by b's checkpoint, or by the log (every sale already there: none produced).
  grep -q "event=batch_acked store=$st .*batch_seq=3 produced=0 " "$T/$TAKEN_BY.log" ||
    fail "$st batch 3 (taken by b before its kill) resent to $TAKEN_BY: nothing produced again" \
      "produced=0" "$(grep "event=batch_acked store=$st " "$T/$TAKEN_BY.log" | tail -n 1)"
  resent=$((resent + 1))
done
((resent > 0)) || log "b took no store's batch in round 3 (nothing to resend)"
send_round 4 fleet-c fleet-d

# a starts again: the round robin moves at least one of b's former partitions (b held two,
# the same instance gets both back, c and d had one each). b's newest lease still names them,
# but c and d waited out b's requests for them and their leases say so: taken at once.
from_c="$(lines fleet-c)" from_d="$(lines fleet-d)"
mv "$T/fleet-a.log" "$T/fleet-a.first-run.log" # fleet_start starts the log afresh
fleet_start fleet-a
sleep 2
fleet_wait_ready 120 fleet-a fleet-c fleet-d
assert_no_wait "a starts again after b's kill" fleet-a 0 fleet-c "$from_c" fleet-d "$from_d"
{ cat "$T/fleet-a.log"; tail -n +"$((from_c + 1))" "$T/fleet-c.log"
  tail -n +"$((from_d + 1))" "$T/fleet-d.log"; } >"$T/since_start.log"
grep -q 'event=previous_owner_waited_out instance=fleet-b ' "$T/since_start.log" ||
  fail "a starts again: b's former partitions move without waiting for b again" \
    "event=previous_owner_waited_out instance=fleet-b" \
    "$(grep -h 'event=fleet_taken_over' "$T/since_start.log")"
send_round 5 fleet-a fleet-c fleet-d

grep -h 'event=fleet_released' "$T"/fleet-*.log | grep -c . >/dev/null ||
  fail "a rebalance lets partitions go only once released" "event=fleet_released" ""
grep -h 'event=fleet_taken_over' "$T"/fleet-*.log | grep -c . >/dev/null ||
  fail "a gained partition is taken over after its state is rebuilt" "event=fleet_taken_over" ""

kafka_read pos.sales.v1 sales
records_db sales
assert_eq "records in pos.sales.v1: $STORES stores x 5 batches x 5 sales" $((STORES * 25)) "$KAFKA_RECORDS"
assert_eq "each sale once" $((STORES * 25)) "$(rsql sales 'SELECT count(DISTINCT sale_id) FROM k;')"
assert_eq "each store's records in one partition" "$STORES" \
  "$(rsql sales 'SELECT count(*) FROM (SELECT key FROM k GROUP BY key HAVING count(DISTINCT partition) = 1);')"
log "503s answered while instances came and went (the load balancer's retries): $REFUSED"
log "passed"
