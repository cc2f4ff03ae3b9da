#!/usr/bin/env bash
# Brings up Redis and the API on free loopback ports, creates a forecaster and an officer,
# runs perf/locustfile.py headless (USERS, SPAWN, DURATION), writes perf/results/locust-*
# and stops everything. Usage: perf/run_locust.sh [users=30] [duration=60s]
set -euo pipefail
cd "$(dirname "$0")/.."
ops/setup dev perf
USERS=${1:-30}; DURATION=${2:-60s}
work=$(mktemp -d)
port=$(.venv/bin/python -c 'from broadcast.redis_server import free_port; print(free_port())')
redis_port=$(.venv/bin/python -c 'from broadcast.redis_server import free_port; print(free_port())')
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" --daemonize yes > /dev/null
export REDIS_URL="redis://127.0.0.1:$redis_port/0" BROADCAST_PORT=$port BROADCAST_DATA_DIR="$work/data"
.venv/bin/broadcast serve > "$work/api.log" 2>&1 &
api=$!
trap 'kill $api 2>/dev/null; redis-cli -p $redis_port shutdown nosave >/dev/null 2>&1; rm -rf "$work"' EXIT
for _ in $(seq 1 50); do curl -sf "http://127.0.0.1:$port/healthz" > /dev/null && break; sleep 0.2; done
export FORECASTER_TOKEN=$(.venv/bin/broadcast user add load-forecaster --role forecaster)
export OFFICER_TOKEN=$(.venv/bin/broadcast user add load-officer --role officer)
mkdir -p perf/results
.venv/bin/locust -f perf/locustfile.py --headless -u "$USERS" -r 10 -t "$DURATION" \
  --host "http://127.0.0.1:$port" --csv "perf/results/locust-u$USERS" --only-summary 2>&1 | tail -25
