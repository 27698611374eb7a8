#!/usr/bin/env bash
# Issue 18's GPU table in one command, on a Linux machine with an NVIDIA GPU (driver >= 580: ONNX Runtime
# 1.31.1's CUDA build is for CUDA 13). `make bench-gpu` runs it; the table lands in target/bench-gpu.md.
#
#   1. ONNX Runtime's CUDA build into .venv-gpu: pip `onnxruntime-gpu[cuda,cudnn]==1.31.1` (it brings the
#      CUDA 13 and cuDNN 9 wheels the provider needs; see deploy/Dockerfile.cuda for which library loads
#      which). Offline: GPU_WHEELS=<folder of those wheels> installs from there.
#   2. The release binaries, crossl-serve with `--features cuda`.
#   3. Checks: `--execution-provider cuda` is a start-up error where CUDA cannot be used (no device visible);
#      with the GPU, /readyz, /v1/model and `crossl_build_info` all say `cuda`.
#   4. Bare ONNX Runtime with the CUDA provider at each BARE_BATCHES size (host arrays in and out, as the
#      service does), and the CPU reference: one core, the CPU default batch (4), one thread.
#   5. The service with the CUDA provider at each SERVICE_BATCHES `--max-batch-size`, crossl-loadgen ramping
#      STEPS devices (gRPC, 15 modalities in 200 ms chunks); server on SERVER_CPUS, generator on LOADGEN_CPUS.
#
# EP=cpu runs the same sequence on the CPU provider and the CPU runtime (.venv): a smoke test of this script
# where there is no GPU (its figures are not the GPU table).
set -euo pipefail
cd "$(dirname "$0")/.."
EP=${EP:-cuda}
BARE_BATCHES=${BARE_BATCHES:-32 64 128 256 512 1024}
SERVICE_BATCHES=${SERVICE_BATCHES:-32 256 1024}
STEPS=${STEPS:-1000,5000,10000,20000}
STEP_SECONDS=${STEP_SECONDS:-20}
cores=$(nproc)
SERVER_CPUS=${SERVER_CPUS:-0-$((cores / 2 - 1))}
LOADGEN_CPUS=${LOADGEN_CPUS:-$((cores / 2))-$((cores - 1))}
MODEL=${MODEL:-models/crossl-dsads}
HTTP=127.0.0.1:18180 GRPC=127.0.0.1:15151 METRICS=127.0.0.1:19190
out=target/bench-gpu.md
cpus_in() { # number of CPUs in a taskset list like 0-3,8
  local n=0 part
  for part in ${1//,/ }; do
    if [[ $part == *-* ]]; then n=$((n + ${part#*-} - ${part%-*} + 1)); else n=$((n + 1)); fi
  done
  echo $n
}
mkdir -p target
ulimit -n 1048576 2>/dev/null || ulimit -n "$(ulimit -Hn)"

# 1. runtime
scripts/setup.sh runtime >&2
if [ "$EP" = cuda ]; then
  if [ ! -x .venv-gpu/bin/python ]; then python3 -m venv .venv-gpu; fi
  if ! .venv-gpu/bin/python -c 'import onnxruntime' 2>/dev/null; then
    if [ -n "${GPU_WHEELS:-}" ]; then
      .venv-gpu/bin/pip install --quiet --no-index --find-links "$GPU_WHEELS" "onnxruntime-gpu[cuda,cudnn]==1.31.1" numpy
    else
      .venv-gpu/bin/pip install --quiet "onnxruntime-gpu[cuda,cudnn]==1.31.1" numpy
    fi
  fi
  site=$(.venv-gpu/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  export ORT_DYLIB_PATH=$(ls "$site"/onnxruntime/capi/libonnxruntime.so.* | head -n 1)
  export LD_LIBRARY_PATH=$site/nvidia/cu13/lib:$site/nvidia/cudnn/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  py=.venv-gpu/bin/python
  features=(--features cuda)
else
  export ORT_DYLIB_PATH=$(scripts/ort-dylib.sh)
  py=.venv/bin/python
  features=()
fi

# 2. binaries
cargo build --release --locked --bin crossl-serve "${features[@]}" >&2
cargo build --release --locked -p crossl-loadgen --bin crossl-loadgen >&2
serve=target/release/crossl-serve

{
  echo "# GPU capacity ($EP), $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  echo "Machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')); \
$( (nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "no nvidia-smi") | head -n 1). \
Server on CPUs $SERVER_CPUS, crossl-loadgen on CPUs $LOADGEN_CPUS. ONNX Runtime: $ORT_DYLIB_PATH."
  echo
} > "$out"

# 3a. `cuda` where CUDA cannot be used must stop the server with a message, not fall back.
set +e
CUDA_VISIBLE_DEVICES=-1 timeout 120 "$serve" serve --model "$MODEL" --execution-provider cuda \
  --http-addr "$HTTP" --grpc-addr "$GRPC" --metrics-addr "$METRICS" > target/bench-gpu-refused.log 2>&1
rc=$?
set -e
if [ "$rc" = 0 ] || [ "$rc" = 124 ] || ! grep -qi cuda target/bench-gpu-refused.log; then
  echo "FAIL: --execution-provider cuda with no visible GPU did not stop with a CUDA error (exit $rc):" >&2
  tail -n 20 target/bench-gpu-refused.log >&2
  exit 1
fi
echo "* \`--execution-provider cuda\` with \`CUDA_VISIBLE_DEVICES=-1\`: exit $rc, \
\"$(grep -i -m1 cuda target/bench-gpu-refused.log | sed 's/\x1b\[[0-9;]*m//g' | cut -c1-300)\"" >> "$out"

# 4. bare ONNX Runtime
echo >> "$out"
echo "| bare ONNX Runtime | batch | ms per batch (median) | windows/s |" >> "$out"
echo "|---|---|---|---|" >> "$out"
bare_row() { # provider batch [taskset cpus]
  local pin=()
  [ -n "${3:-}" ] && pin=(taskset -c "$3")
  "${pin[@]}" "$py" load-tests/ort_model_speed.py "$MODEL/model.onnx" --provider "$1" --batch "$2" --json \
    | "$py" -c 'import json, sys; r = json.loads(sys.stdin.readline()); print("| {} | {} | {:.2f} | {:,.0f} |".format(sys.argv[1], r["batch"], r["ms_per_batch"], r["windows_per_s"]))' "$1${3:+, CPU $3}"
}
bare_row cpu 4 "${SERVER_CPUS%%[-,]*}" >> "$out"
for b in $BARE_BATCHES; do bare_row "$EP" "$b" >> "$out"; done

# 5. the service under load, one server per batch size
for b in $SERVICE_BATCHES; do
  taskset -c "$SERVER_CPUS" "$serve" serve --model "$MODEL" --execution-provider "$EP" --max-batch-size "$b" \
    --queue-capacity $((b * 8)) --http-addr "$HTTP" --grpc-addr "$GRPC" --metrics-addr "$METRICS" \
    > "target/bench-gpu-server-$b.log" 2>&1 &
  pid=$!
  trap 'kill $pid 2>/dev/null || true' EXIT
  for _ in $(seq 1 240); do
    curl -sf "http://$HTTP/readyz" >/dev/null && break
    kill -0 $pid 2>/dev/null || { tail -n 30 "target/bench-gpu-server-$b.log" >&2; exit 1; }
    sleep 0.5
  done
  # 3b. what the service says it runs on
  ready=$(curl -sf "http://$HTTP/readyz")
  model_ep=$(curl -sf "http://$HTTP/v1/model" | "$py" -c 'import json,sys; print(json.load(sys.stdin)["runtime"]["execution_provider"])')
  build_info=$(curl -sf "http://$METRICS/metrics" | grep '^crossl_build_info')
  for said in "$ready" "execution_provider\":\"$model_ep\"" "$build_info"; do
    case "$said" in *"$EP"*) ;; *) echo "FAIL: the service does not report $EP: $said" >&2; exit 1 ;; esac
  done
  {
    echo
    echo "### Service, \`--execution-provider $EP --max-batch-size $b --queue-capacity $((b * 8))\`"
    echo
    echo "\`/readyz\`: \`$ready\`; \`$build_info\`"
    echo
  } >> "$out"
  taskset -c "$LOADGEN_CPUS" target/release/crossl-loadgen --model "$MODEL" --target "http://$GRPC" \
    --threads "$(cpus_in "$LOADGEN_CPUS")" --steps "$STEPS" --step-seconds "$STEP_SECONDS" \
    --metrics-url "http://$METRICS/metrics" --server-pid $pid --markdown "target/bench-gpu-$b.md" \
    --json "target/bench-gpu-$b.json" >&2
  cat "target/bench-gpu-$b.md" >> "$out"
  kill $pid
  wait $pid 2>/dev/null || true
  trap - EXIT
done
echo "GPU capacity table written to $out" >&2
cat "$out"
