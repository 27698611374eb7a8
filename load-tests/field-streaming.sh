#!/usr/bin/env bash
# Field conditions against the release build (docs/windowing.md): real-time WebSocket devices whose clocks
# are −60 s, −2 s, 0 and +2 s off this machine's, all at once on one server; gRPC devices that go
# offline for 60 s and then upload their backlog; 20 streaming devices while 8 clients flood maximal OIP
# requests. Prints each replay report and a summary table.
#   load-tests/field-streaming.sh            (needs `make release` and `make data`; ~4 min)
# Traffic goes to 127.0.0.1 only; every replay ends by itself.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bin=${CROSSL_SERVE_BIN:-target/release/crossl-serve}
data=${CROSSL_DSADS_DIR:-$HOME/.cache/crossl/dsads}
out=${OUT:-target/field-streaming}
http=${HTTP_PORT:-18080} grpc=${GRPC_PORT:-50151} metrics=${METRICS_PORT:-19090}
mkdir -p "$out"
ORT_DYLIB_PATH="$(scripts/ort-dylib.sh)" "$bin" serve --model models/crossl-dsads \
  --http-addr 127.0.0.1:$http --grpc-addr 127.0.0.1:$grpc --metrics-addr 127.0.0.1:$metrics \
  > "$out/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 1 120); do
  curl -fs "127.0.0.1:$http/readyz" > /dev/null 2>&1 && break
  sleep 0.5
done
curl -fs "127.0.0.1:$http/readyz" > /dev/null

replay() { "$bin" replay --data "$data" --subjects p1,p2 --speed 1 --chunk-samples 5 "$@"; }

# 1. Clock offsets: 2 devices per offset, 4 activities × 2 segments (40 s) each, all concurrently.
pids=()
for offset in -60000 -2000 0 2000; do
  replay --transport ws --target "http://127.0.0.1:$http" --devices 2 --device-prefix "clock$offset" \
    --activities a01,a09,a12,a17 --segments 2 --clock-offset-ms "$offset" \
    --json "$out/clock$offset.json" > "$out/clock$offset.txt" 2>&1 &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
# 2. Backlog: 10 s live, 60 s offline (chunks held), then the backlog at once and 10 s live again.
replay --transport grpc --target "http://127.0.0.1:$grpc" --devices 2 --device-prefix backlog \
  --activities a01,a12 --segments 8 --outage-at-s 10 --outage-s 60 --clock-offset-ms -2000 \
  --json "$out/backlog.json" > "$out/backlog.txt" 2>&1

# 3. Flood: 8 clients sending maximal OIP requests while 20 devices stream in real time over gRPC.
shed_before=$(curl -fs "127.0.0.1:$metrics/metrics" | awk '/^crossl_windows_shed_total/ {s += $2} END {print s + 0}')
replay --transport grpc --target "http://127.0.0.1:$grpc" --devices 20 --device-prefix flooded \
  --activities a01,a12,a17 --segments 2 --json "$out/flood-stream.json" > "$out/flood-stream.txt" 2>&1 &
streaming=$!
sleep 2
python3 load-tests/flood.py --target "http://127.0.0.1:$http" --clients 8 --seconds 25 > "$out/flood.txt" 2>&1
wait "$streaming"
curl -fs "127.0.0.1:$metrics/metrics" > "$out/metrics-after.txt"
shed_after=$(awk '/^crossl_windows_shed_total/ {s += $2} END {print s + 0}' "$out/metrics-after.txt")

for f in "$out"/clock*.txt "$out"/backlog.txt "$out"/flood-stream.txt "$out"/flood.txt; do echo "== $f"; cat "$f"; done
echo "streaming windows shed during the flood: $((shed_after - shed_before))"
grep -E '^crossl_requests_shed_total' "$out/metrics-after.txt" || true
python3 - "$out" <<'PY'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
print("\n| run | devices | predictions per device | windows inside (received / expected) | chunk errors | accuracy | macro-F1 | client latency p50 / p99 ms |")
print("|---|---|---|---|---|---|---|---|")
for name in ["clock-60000", "clock-2000", "clock0", "clock2000", "backlog", "flood-stream"]:
    r = json.loads((out / f"{name}.json").read_text())
    lat = r["client_latency_seconds"]
    fmt = lambda v: "-" if v is None else f"{v * 1e3:.0f}"
    print(f"| {name} | {r['devices']} | {r['predictions'] / r['devices']:.1f} | {r['windows_inside_received']} / {r['windows_inside_expected']} "
          f"| {sum(r['chunk_errors'].values())} | {r['accuracy']:.3f} | {r['macro_f1']:.3f} | {fmt(lat['p50'])} / {fmt(lat['p99'])} |")
PY
