#!/usr/bin/env bash
# API CPU per acknowledgement (perf/bench_acknowledge.py): its own redis-server and one `broadcast serve`
# on free loopback ports, perf/linkage_setup.py with ALERTS city-wide alerts, then the sequential client.
# Usage: perf/run_bench_acknowledge.sh [alerts=3] [repo=.]  (repo: a checkout to measure, e.g. from git archive)
set -euo pipefail
cd "$(dirname "$0")/.."
ALERTS=${1:-3}; REPO=$(cd "${2:-.}" && pwd)
py=$PWD/.venv/bin/python
work=$(mktemp -d)
port=$($py -c 'from broadcast.redis_server import free_port; print(free_port())')
redis_port=$($py -c 'from broadcast.redis_server import free_port; print(free_port())')
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" --daemonize yes \
  --pidfile "$work/redis.pid" > /dev/null
export REDIS_URL="redis://127.0.0.1:$redis_port/0" BROADCAST_PORT=$port BROADCAST_DATA_DIR="$work/data" \
  BROADCAST_SIM_BASE_PORT=1 BROADCAST_MAX_SEND_ATTEMPTS=1
(cd "$REPO" && PYTHONPATH="$REPO" exec "$py" -m broadcast serve) > "$work/api.log" 2>&1 &
api=$!
cleanup() {
  kill "$api" 2>/dev/null || true; wait "$api" 2>/dev/null || true
  redis-cli -p "$redis_port" shutdown nosave > /dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/healthz" > /dev/null && break; sleep 0.2; done
(cd "$REPO" && PYTHONPATH="$REPO" "$py" perf/linkage_setup.py --url "http://127.0.0.1:$port" --alerts "$ALERTS" \
  --out "$work/setup.json" > /dev/null)
"$py" perf/bench_acknowledge.py --setup "$work/setup.json" --api-pid "$api" --url "http://127.0.0.1:$port"
