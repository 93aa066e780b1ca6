#!/usr/bin/env bash
# Runs the whole system on this machine: the collector with its embedded
# Kafka, a store agent pushing to it over mutual TLS every few seconds, and
# a pizza store's POS terminal selling into the agent through the chain's
# recipes, with its back office booking the morning delivery, waste and a
# stock count. The sales and the stock's movements are shown as they arrive
# in Kafka, decoded, and the store's on-hand every 15 s. Ctrl-C stops it all.
#
#   bash scripts/demo.sh            (DEMO_SECONDS=N stops by itself after N seconds)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

bash scripts/deps.sh
cmake -S . -B build >/dev/null
cmake --build build -j"$(nproc)" >/dev/null
bin=$root/build

work=$(mktemp -d /tmp/pos-demo.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  echo
  echo "demo stopped; logs and the journal are in $work"
}
trap cleanup EXIT
trap 'exit 0' INT TERM

# wait_for FILE PATTERN: until a log line matches (10 s at most).
wait_for() {
  for _ in $(seq 100); do
    grep -q "$2" "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "demo: $1 never said '$2':" >&2
  tail -n 20 "$1" >&2
  exit 1
}

echo "== test certificates (made now, never committed): $work/pki"
bash tests/tools/pki.sh init "$work/pki"

echo "== collector with embedded Kafka"
cat >"$work/collector.conf" <<CONF
[collector]
instance_id = demo-collector
[server]
listen_host = 127.0.0.1
port = 0
cert = $work/pki/server.crt
key = $work/pki/server.key
ca = $work/pki/ca.crt
crl = $work/pki/crl.pem
[kafka]
brokers =
CONF
"$bin/collector/pos-collector" --config "$work/collector.conf" 2>"$work/collector.log" &
pids+=($!)
wait_for "$work/collector.log" 'event=ready'
collector_port=$(sed -n 's/.*event=listening.* port=\([0-9]*\).*/\1/p' "$work/collector.log" | head -n 1)
bootstrap=$(grep -o 'bootstrap=[^ ]*' "$work/collector.log" | head -n 1 | cut -d= -f2)
echo "   https://127.0.0.1:$collector_port (mutual TLS), Kafka at $bootstrap"

echo "== store agent S001/D1"
token=$(openssl rand -hex 16)
printf '# terminal_id token\nT1 %s\n' "$token" >"$work/terminals"
# The manager's password is kept hashed (pos-agent --hash-password); the
# demo shows it once so that "Push now" on the page can be tried.
manager_password=$(openssl rand -hex 12)
printf '%s\n' "$manager_password" | "$bin/agent/pos-agent" --hash-password >"$work/manager_password"
chmod 600 "$work/terminals" "$work/manager_password"
cat >"$work/agent.conf" <<CONF
[agent]
store_id = S001
device_id = D1
[journal]
path = $work/journal/journal.db
[api]
listen_host = 127.0.0.1
port = 0
terminal_tokens = $work/terminals
manager_password_file = $work/manager_password
[uplink]
url = https://127.0.0.1:$collector_port
cert = $work/pki/device-S001-D1.crt
key = $work/pki/device-S001-D1.key
ca = $work/pki/ca.crt
interval = 5s
jitter = 1s
heartbeat_interval = 10s
[inventory]
recipes = $root/firmware-config/recipes.csv
refunds_restock = true
low_stock = cheese-mozzarella=10000000,dough-ball-l=20000
CONF
"$bin/agent/pos-agent" --config "$work/agent.conf" 2>"$work/agent.log" &
pids+=($!)
wait_for "$work/agent.log" 'event=ready'
agent_port=$(sed -n 's/.*mod=agent event=listening.* port=\([0-9]*\).*/\1/p' "$work/agent.log" | head -n 1)
echo "   the store manager's page: http://127.0.0.1:$agent_port/  (open it in a browser;"
echo "   \"Push now\" takes the manager's password: $manager_password)"
echo "   for machines: http://127.0.0.1:$agent_port/status.json"

echo "== POS terminal T1 selling through a day compressed into 5 minutes"
"$bin/tests/tools/pos-sim" --url "http://127.0.0.1:$agent_port" --token "$token" --terminal T1 \
  --day-seconds 300 --quiet --manager-password "$manager_password" &
pids+=($!)

echo "== sales arriving in Kafka (pos.sales.v1), decoded:"
kcat -b "$bootstrap" -C -t pos.sales.v1 -o beginning -u -f '%R%s' 2>"$work/kcat.log" |
  "$bin/tests/tools/pos-decode" --type sale &
pids+=($!)

echo "== stock moving in Kafka (pos.inventory-deltas.v1), decoded:"
kcat -b "$bootstrap" -C -t pos.inventory-deltas.v1 -o beginning -u -f '%R%s' 2>"$work/kcat-deltas.log" |
  "$bin/tests/tools/pos-decode" --type delta | sed 's/^/   stock: /' &
pids+=($!)

echo "== head office: posctl with the admin certificate (urn:pos:admin:...)"
cat >"$work/posctl.conf" <<CONF
[posctl]
url = https://127.0.0.1:$collector_port
cert = $work/pki/admin.crt
key = $work/pki/admin.key
ca = $work/pki/ca.crt
CONF
posctl=("$bin/collector/posctl" --config "$work/posctl.conf")
echo "   ${posctl[*]} stores             (the fleet: last contact, backlog, versions, clock, certificate)"
echo "   ${posctl[*]} resync --store S001 --from $(date -u -d '-2 days' +%F) --wait"
echo "   a minute from now the demo runs that resync; replayed sales go to pos.sales.replay.v1"
kcat -b "$bootstrap" -C -t pos.sales.replay.v1 -o beginning -u -f '%R%s' 2>"$work/kcat-replay.log" |
  "$bin/tests/tools/pos-decode" --type sale | sed 's/^/   replayed: /' &
pids+=($!)

# on_hand: the store's stock on /status.json, one line (sqlite3 reads the JSON).
on_hand() {
  curl -s "http://127.0.0.1:$agent_port/status.json" >"$work/status.json" || return 0
  sqlite3 -batch :memory: "SELECT group_concat(json_extract(value, '\$.material_id') || '=' ||
      printf('%.3f', json_extract(value, '\$.on_hand_milli') / 1000.0) || ' ' ||
      json_extract(value, '\$.unit') || CASE WHEN json_extract(value, '\$.low_stock') THEN ' (LOW)'
      ELSE '' END, ', ') FROM json_each(readfile('$work/status.json'), '\$.stock.materials')
      WHERE json_extract(value, '\$.on_hand_milli') != 0;"
}

end=$((SECONDS + ${DEMO_SECONDS:-1000000000}))
resync_at=$((SECONDS + 60))
while ((SECONDS < end)); do
  sleep 15
  echo "-- agent: $(curl -s "http://127.0.0.1:$agent_port/status.json" | head -c 600)..."
  echo "-- on hand: $(on_hand)"
  if ((resync_at && SECONDS >= resync_at)); then
    resync_at=0
    echo "-- head office: ${posctl[*]} stores"
    "${posctl[@]}" stores | sed 's/^/   /' || true
    echo "-- head office: ${posctl[*]} resync --store S001 --from $(date -u -d '-2 days' +%F) --wait"
    "${posctl[@]}" resync --store S001 --from "$(date -u -d '-2 days' +%F)" --wait --timeout 5m |
      sed 's/^/   /' || echo "   (posctl exit status ${PIPESTATUS[0]})"
  fi
done
