#!/usr/bin/env bash
# Linkage load test: brings up Redis and the API on free loopback ports, runs perf/linkage_setup.py
# (users and officers bound to every unit of the demo gazetteer, ALERTS city-wide red warnings issued,
# a task for every unit of each), then perf/locustfile_linkage.py headless: every unit acknowledges
# every alert at ACK_RATE/s while supervisors poll the tree and follow the stream. It stops by itself
# when the last acknowledgement is in (or after MAX_DURATION) and stops everything it started.
# Results: perf/results/linkage-<tag>.json and .md (+ locust's _stats.csv).
#
# Usage: perf/run_locust_linkage.sh [alerts=60] [ack_rate=1000] [tag=a<alerts>-r<rate>]
# Environment: ACK_USERS (50), POLLERS (5), FOLLOWERS (10), MAX_DURATION (300s), API_PROCS (1), WORKERS (0:
# RQ workers to start; with none, the setup opens the tasks the dissemination job would have opened),
# KEEP=1 (keep the temporary directory with the processes' logs).
set -euo pipefail
cd "$(dirname "$0")/.."
ops/setup dev perf
ALERTS=${1:-60}; ACK_RATE=${2:-1000}; TAG=${3:-a$ALERTS-r$ACK_RATE}
ACK_USERS=${ACK_USERS:-50}; POLLERS=${POLLERS:-5}; FOLLOWERS=${FOLLOWERS:-10}; WORKERS=${WORKERS:-0}
API_PROCS=${API_PROCS:-1}
work=$(mktemp -d)
port=$(.venv/bin/python -c 'from broadcast.redis_server import free_port; print(free_port())')
redis_port=$(.venv/bin/python -c 'from broadcast.redis_server import free_port; print(free_port())')
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" --daemonize yes \
  --pidfile "$work/redis.pid" > /dev/null
# Channels fail at once (no simulators run: nothing leaves the machine), with one attempt.
export REDIS_URL="redis://127.0.0.1:$redis_port/0" BROADCAST_PORT=$port BROADCAST_DATA_DIR="$work/data" \
  BROADCAST_SIM_BASE_PORT=1 BROADCAST_MAX_SEND_ATTEMPTS=1
pids=()
# CPU seconds of a process and of its children it has waited for (RQ work horses)
cpu_seconds() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.1f", ($14 + $15 + $16 + $17) / hz}' "/proc/$1/stat"; }
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  redis-cli -p "$redis_port" shutdown nosave > /dev/null 2>&1 || true
  if [ -n "${KEEP:-}" ]; then echo "logs kept in $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
# API_PROCS > 1: that many API processes on as many ports; locust spreads its users over them
# (what a load balancer in front of several processes would do).
api_pids=(); urls=()
for i in $(seq "$API_PROCS"); do
  api_port=$port
  [ "$i" = 1 ] || api_port=$(.venv/bin/python -c 'from broadcast.redis_server import free_port; print(free_port())')
  BROADCAST_PORT=$api_port .venv/bin/broadcast serve > "$work/api-$i.log" 2>&1 &
  api_pids+=($!); pids+=($!); urls+=("http://127.0.0.1:$api_port")
done
worker_pids=()
for i in $(seq "$WORKERS"); do
  .venv/bin/broadcast worker > "$work/worker-$i.log" 2>&1 &
  worker_pids+=($!); pids+=($!)
done
cpu_of() {  # total CPU seconds of the given processes
  local total=0
  for pid in "$@"; do total=$(awk -v t="$total" -v c="$(cpu_seconds "$pid")" 'BEGIN {print t + c}'); done
  echo "$total"
}
for url in "${urls[@]}"; do
  for _ in $(seq 1 100); do curl -sf "$url/healthz" > /dev/null && break; sleep 0.2; done
done
echo "setup: $ALERTS alerts x every unit of the demo gazetteer"
.venv/bin/python perf/linkage_setup.py --url "http://127.0.0.1:$port" --alerts "$ALERTS" --out "$work/setup.json"
mkdir -p perf/results
users=$((ACK_USERS + POLLERS + FOLLOWERS))
redis_pid=$(cat "$work/redis.pid")
api_cpu_before=$(cpu_of "${api_pids[@]}"); redis_cpu_before=$(cpu_seconds "$redis_pid")
worker_cpu_before=$(cpu_of "${worker_pids[@]}")
load_before=$(cut -d' ' -f1 /proc/loadavg)
API_URLS=$(IFS=,; echo "${urls[*]}") LINKAGE_SETUP="$work/setup.json" ACK_RATE=$ACK_RATE ACK_USERS=$ACK_USERS \
POLLERS=$POLLERS FOLLOWERS=$FOLLOWERS RESULTS_PREFIX="perf/results/linkage-$TAG" \
  .venv/bin/locust -f perf/locustfile_linkage.py --headless -u "$users" -r "$users" -t "${MAX_DURATION:-300s}" \
  --host "http://127.0.0.1:$port" --csv "perf/results/linkage-$TAG" --only-summary --loglevel WARNING 2>&1 \
  | grep -v MonkeyPatchWarning | tail -40 || echo "locust exited with an error (see above)"
used() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.1f", a - b}'; }
echo "CPU seconds during the locust run: API ($API_PROCS process(es)) $(used "$(cpu_of "${api_pids[@]}")" \
  "$api_cpu_before"), redis-server $(used "$(cpu_seconds "$redis_pid")" "$redis_cpu_before"), $WORKERS RQ worker(s)" \
  "$(used "$(cpu_of "${worker_pids[@]}")" "$worker_cpu_before"); load average $load_before before," \
  "$(cut -d' ' -f1 /proc/loadavg) after (2 cores)" | tee -a "perf/results/linkage-$TAG.md"
