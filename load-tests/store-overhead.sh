#!/usr/bin/env bash
# Overhead of the shared Redis store against the memory store: the same replay (DSADS, gRPC) against
# `crossl-serve serve --store memory` and then `--store redis://…` (a local redis-server started here), one
# after the other in one run. Prints predictions/s, end-to-end latency percentiles and the server's CPU
# seconds for each; reports land in $OUT (default target/store-overhead).
#   load-tests/store-overhead.sh                       # 20 devices at 10x, 3 segments per activity
#   DEVICES=50 SPEED=10 SEGMENTS=2 load-tests/store-overhead.sh
# Needs: a release build (make release), the DSADS sample (make data), a redis-server
# (scripts/setup.sh dev; see scripts/redis-server-bin.sh).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
BIN=${CROSSL_SERVE_BIN:-target/release/crossl-serve}
DEVICES=${DEVICES:-20}
SPEED=${SPEED:-10}
SEGMENTS=${SEGMENTS:-3}
OUT=${OUT:-target/store-overhead}
REDIS_PORT=${REDIS_PORT:-16379}
export ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-$(scripts/ort-dylib.sh)}
redis_bin=$(scripts/redis-server-bin.sh)
mkdir -p "$OUT"
redis_dir=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$redis_dir"; }
trap cleanup EXIT

"$redis_bin" --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$redis_dir" \
  >"$OUT/redis.log" 2>&1 &
pids+=($!)

cpu_seconds() { # utime + stime of a process, in seconds
  awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15) / hz }' "/proc/$1/stat"
}

run() { # $1 = name, $2 = --store value
  local name=$1 store=$2
  "$BIN" serve --store "$store" --http-addr 127.0.0.1:18080 --grpc-addr 127.0.0.1:15051 \
    --metrics-addr 127.0.0.1:19090 >"$OUT/$name-server.log" 2>&1 &
  local pid=$!
  pids+=("$pid")
  for _ in $(seq 600); do
    curl -sf http://127.0.0.1:18080/readyz >/dev/null && break
    sleep 0.1
  done
  local cpu0; cpu0=$(cpu_seconds "$pid")
  "$BIN" replay --target http://127.0.0.1:15051 --devices "$DEVICES" --speed "$SPEED" \
    --segments "$SEGMENTS" --json "$OUT/$name.json" >"$OUT/$name.txt" 2>&1
  local cpu1; cpu1=$(cpu_seconds "$pid")
  curl -s http://127.0.0.1:19090/metrics | grep -E '^crossl_store_(errors|writes_dropped)_total' \
    >"$OUT/$name-store-metrics.txt" || true
  kill -TERM "$pid"; wait "$pid" || true
  python3 - "$name" "$OUT/$name.json" "$cpu0" "$cpu1" <<'PY'
import json, sys
name, path, cpu0, cpu1 = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
r = json.load(open(path))
ms = lambda v: "-" if v is None else f"{v * 1e3:.1f}"
e2e, client = r["server_end_to_end_seconds"], r["client_latency_seconds"]
print(f"{name:7s} predictions {r['predictions']:6d} in {r['wall_seconds']:.1f} s = "
      f"{r['predictions'] / r['wall_seconds']:.1f}/s | server e2e ms p50 {ms(e2e['p50'])} "
      f"p99 {ms(e2e['p99'])} | client ms p50 {ms(client['p50'])} p99 {ms(client['p99'])} | "
      f"server CPU {cpu1 - cpu0:.1f} s | chunk errors {r['chunk_errors']} | feed skipped {r['feed_skipped']}")
PY
}

run memory memory
run redis "redis://127.0.0.1:$REDIS_PORT"
grep -h . "$OUT"/redis-store-metrics.txt || true
