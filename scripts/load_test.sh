#!/usr/bin/env bash
# The load table of README "colwgpu serve": serves copies of INDEX (e.g. full
# SciFact built from precomputed vectors) with models/colbert-minilm on
# loopback ports and drives them with scripts/load_test.py (stdlib only):
#   1, 8, 64 clients, batching wait 2 ms and 0 ms, no writer / with a writer
#   (adds and deletes during the run); then RSS after 1,000 and 10,000
#   requests. Every phase stops at REQUESTS requests or SECONDS (RSS: 1,500 s).
# Usage: scripts/load_test.sh INDEX [DATA_DIR] [WORK_DIR] [REQUESTS] [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
INDEX="${1:?usage: scripts/load_test.sh INDEX [DATA_DIR] [WORK_DIR] [REQUESTS] [SECONDS]}"
DATA="${2:-../shared/data/scifact}"
WORK="${3:-/tmp/colwgpu-load}"
REQUESTS="${4:-2000}"
SECONDS_PER_PHASE="${5:-20}"
PORT="${PORT:-18480}"
BIN=target/release/colwgpu
PY="${PYTHON:-python3}"
[ -x "$BIN" ] || cargo build --release --locked --bin colwgpu
mkdir -p "$WORK"
for d in index index0; do
  rm -rf "${WORK:?}/$d" "$WORK/$d.lock"
  cp -r "$INDEX" "$WORK/$d"
done

# Two servers on copies of the index: batching wait 2 ms (PORT) and 0 ms
# (PORT+1); their phases alternate, so both see the same machine load.
SERVERS=()
stop_servers() {
  for pid in "${SERVERS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  SERVERS=()
}
trap stop_servers EXIT

healthy() { # port
  "$PY" -c '
import http.client, sys
c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=1)
c.request("GET", "/health")
sys.exit(0 if c.getresponse().status == 200 else 1)' "$1" 2>/dev/null
}

start_server() { # port, batch wait ms, index dir
  "$BIN" serve --index "scifact=$3" --model models/colbert-minilm --device cpu \
    --port "$1" --batch-wait-ms "$2" > "$WORK/serve-$1.log" 2>&1 &
  SERVERS+=("$!")
}

wait_healthy() { # port, pid
  for _ in $(seq 600); do
    healthy "$1" && return 0
    kill -0 "$2" 2>/dev/null || { cat "$WORK/serve-$1.log" >&2; exit 1; }
    sleep 0.5
  done
  echo "server on port $1 did not start" >&2
  exit 1
}

run() { # port, tag, extra args...
  local port="$1" tag="$2"
  shift 2
  echo "# $tag: $(uptime)" >&2
  "$PY" scripts/load_test.py --port "$port" --index scifact --queries "$DATA/queries.jsonl" \
    --requests "$REQUESTS" --seconds "$SECONDS_PER_PHASE" --tag "$tag" "$@"
}

start_server "$PORT" 2 "$WORK/index"
start_server $((PORT + 1)) 0 "$WORK/index0"
wait_healthy "$PORT" "${SERVERS[0]}"
wait_healthy $((PORT + 1)) "${SERVERS[1]}"
for c in 1 8 64; do
  run "$PORT" wait2 --clients "$c"
  run $((PORT + 1)) wait0 --clients "$c"
  run "$PORT" wait2-writer --clients "$c" --writer --corpus "$DATA/corpus.jsonl"
  run $((PORT + 1)) wait0-writer --clients "$c" --writer --corpus "$DATA/corpus.jsonl"
done
# Memory: RSS of the 2 ms server after 1,000 and 10,000 requests (64 clients).
run "$PORT" rss --clients 64 --rss-pid "${SERVERS[0]}" --rss-at 1000,10000 --seconds 1500
