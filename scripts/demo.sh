#!/usr/bin/env bash
# Runs the system on this machine: builds, starts a pos-agent with a fresh
# journal, and has simulated POS terminals sell into it while the status
# is printed every few seconds. Ctrl-C stops it all.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/deps.sh
cmake -S . -B build >/dev/null
cmake --build build -j"$(nproc)" >/dev/null

work=$(mktemp -d /tmp/pos-demo.XXXXXX)
agent_pid=""
cleanup() {
  [ -n "$agent_pid" ] && kill "$agent_pid" 2>/dev/null && wait "$agent_pid" 2>/dev/null
  echo "demo stopped; journal kept in $work/journal.db"
}
trap cleanup EXIT
trap 'exit 0' INT TERM

token=$(openssl rand -hex 16)
printf '# terminal_id token\nT1 %s\n' "$token" >"$work/terminals"
chmod 600 "$work/terminals"
cat >"$work/agent.conf" <<CONF
[agent]
store_id = S0042
device_id = HUB1
[journal]
path = $work/journal.db
[api]
listen_host = 127.0.0.1
port = 8080
terminal_tokens = $work/terminals
CONF

./build/agent/pos-agent --config "$work/agent.conf" 2>"$work/agent.log" &
agent_pid=$!
for _ in $(seq 50); do
  grep -q 'event=ready' "$work/agent.log" 2>/dev/null && break
  sleep 0.1
done
grep -q 'event=ready' "$work/agent.log" || { cat "$work/agent.log"; exit 1; }
echo "pos-agent is up: http://127.0.0.1:8080/status.json  (log: $work/agent.log)"

round=0
while kill -0 "$agent_pid" 2>/dev/null; do
  round=$((round + 1))
  ./build/tests/tools/pos-load --url http://127.0.0.1:8080 --token "$token" --terminal T1 \
    --clients 2 --sales 5 --prefix "demo-r$round" >/dev/null
  echo "status: $(curl -s http://127.0.0.1:8080/status.json)"
  sqlite3 -readonly "$work/journal.db" \
    "SELECT 'last sale: seq ' || seq || ' ' || sale_id || ' ' || currency || ' ' ||
            printf('%.2f', total_minor / 100.0) || ' ' || json_extract(lines, '\$[0].sku')
       FROM sales ORDER BY seq DESC LIMIT 1"
  sleep 3
done
