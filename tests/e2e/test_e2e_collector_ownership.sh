#!/usr/bin/env bash
# The partitions of pos.sales.v1 shared out between collector instances by
# Kafka's group protocol (issue 15, item 1): each instance joins the group
# [fleet] group on pos.ownership.v1 (as many partitions as pos.sales.v1) and
# logs what it is assigned. With three instances the six partitions are
# split between them, each partition to exactly one; an instance killed
# (-9) loses its partitions to the others once it misses its session
# timeout; a fourth one that joins gets a share; one stopped cleanly hands
# its partitions over at once. Nothing is configured by hand as instances
# come and go. (What the ingest does with it: test_e2e_collector_fleet.sh.)
source "$(dirname "$0")/lib.sh"

make_pki
start_broker --partitions 6
# wait_split SECONDS NAME...: until each partition 0-5 is owned by exactly one
# of NAME... and each of them owns one or more.
wait_split() {
  local deadline=$((SECONDS + $1)) n all sorted state
  shift
  while :; do
    all="" state=""
    for n in "$@"; do
      all+="$(fleet_owned "$n"),"
      state+="$n=[$(fleet_owned "$n")] "
    done
    sorted="$(tr ',' '\n' <<<"$all" | { grep -v '^$' || true; } | sort -n | tr '\n' ' ')"
    if [[ "$sorted" == "0 1 2 3 4 5 " ]]; then
      for n in "$@"; do [[ -n "$(fleet_owned "$n")" ]] || break; done
      if [[ -n "$(fleet_owned "$n")" ]]; then
        log "partitions: $state"
        return 0
      fi
    fi
    ((SECONDS < deadline)) || fail "partitions 0-5 split between $* within the time" \
      "each once, each member some" "$state"
    sleep 0.2
  done
}

fleet_start fleet-a
fleet_start fleet-b
fleet_start fleet-c
wait_split 90 fleet-a fleet-b fleet-c

# The metrics say the same.
port="$(sed -n 's/.*event=operator_listening .*port=\([0-9]*\).*/\1/p' "$T/fleet-a.log" | head -n 1)"
metric="$(curl -sS --max-time 10 "http://127.0.0.1:$port/metrics" |
  sed -n 's/^pos_collector_owned_partitions \([0-9]*\)$/\1/p')"
assert_eq "fleet-a: pos_collector_owned_partitions" "$(tr ',' '\n' <<<"$(fleet_owned fleet-a)" | grep -c .)" "$metric"

# Killed: its partitions go to the others after its session timeout (4 s).
fleet_kill fleet-b
wait_split 90 fleet-a fleet-c

# A fourth joins and gets a share.
fleet_start fleet-d
wait_split 90 fleet-a fleet-c fleet-d

# Stopped cleanly: it leaves the group and its partitions move at once.
fleet_stop fleet-c
grep -q 'mod=ownership event=left' "$T/fleet-c.log" ||
  fail "fleet-c leaves the group when stopped" "event=left" "$(tail -n 3 "$T/fleet-c.log")"
wait_split 30 fleet-a fleet-d
log "passed"
