# The two commands a newcomer needs (see README.md):
#   make run    set up ONNX Runtime in .venv, build, and serve the bundled model on :8080 / :50051 / :9090
#   make test   set up everything (Rust + Python), unpack the DSADS sample, run every test
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PY ?= .venv/bin/python
MODEL ?= models/crossl-dsads
# The DSADS archive (a copy of the UCI release) and where the project's own script unpacks it.
DSADS_ARCHIVE ?= ../shared/data/dsads/dsads_p1-p6.tar.xz
DSADS_DIR ?= $(HOME)/.cache/crossl/dsads
export CROSSL_DSADS_DIR := $(DSADS_DIR)

.PHONY: help run build release setup-runtime setup-dev data test test-rust test-python test-interop test-client \
        openapi lint bench demo load-test bench-capacity bench-gpu soak soak-ci

help:
	@echo "make run     - serve the bundled model (HTTP :8080, gRPC :50051, metrics :9090)"
	@echo "make test    - run every test (Rust, Python training, Helm chart, gRPC/OIP interop, Python client)"
	@echo "make demo    - stream DSADS subject p1 to a running server and print online accuracy"
	@echo "make bench   - criterion benchmarks (see docs/benchmarks.md)"
	@echo "make load-test - k6 against a running server (make run in another terminal)"
	@echo "make bench-capacity - per-core capacity table: server on CPU 0, crossl-loadgen on CPU 1"
	@echo "make bench-gpu - GPU table (needs an NVIDIA GPU; EP=cpu smoke-tests the script)"
	@echo "make soak    - 10-minute soak of the release build (RSS, devices joining/leaving, a misbehaving client)"
	@echo "make lint    - cargo fmt --check + clippy -D warnings"

setup-runtime:
	scripts/setup.sh runtime

setup-dev:
	scripts/setup.sh dev

release:
	cargo build --release --locked

build:
	cargo build --locked --all-targets

run: setup-runtime release
	ORT_DYLIB_PATH="$$(scripts/ort-dylib.sh)" target/release/crossl-serve serve --model $(MODEL)

# Unpacking needs only the runtime venv (numpy comes with onnxruntime), never torch: `make demo` stays light.
data: setup-runtime
	@if [ -f "$(DSADS_DIR)/data/a19/p6/s60.txt" ]; then echo "DSADS already unpacked in $(DSADS_DIR)"; \
	else PYTHONPATH=training $(PY) -m crossl unpack --archive "$(DSADS_ARCHIVE)" --out "$(DSADS_DIR)"; fi

test: setup-dev data build test-rust test-python test-interop test-client soak-ci
	@echo "all test suites passed"

# REDIS_SERVER_BIN: the real redis-server the shared-store tests (tests/redis_*.rs) start; never skipped.
# The `cuda` build is type-checked too (the CUDA provider's code is behind that feature; no GPU needed).
test-rust:
	ORT_DYLIB_PATH="$$(scripts/ort-dylib.sh)" REDIS_SERVER_BIN="$$(scripts/redis-server-bin.sh)" \
	  cargo test --locked --all-targets
	cargo check --locked --features cuda --bin crossl-serve

test-python:
	CROSSL_SERVE_BIN=target/debug/crossl-serve $(PY) -m pytest -q training/tests deploy/tests load-tests/tests

test-interop:
	ORT_DYLIB_PATH="$$(scripts/ort-dylib.sh)" CROSSL_SERVE_BIN=target/debug/crossl-serve $(PY) -m pytest -q tests/interop

# The Python client (clients/python, installed into .venv by `scripts/setup.sh dev`): its type check (mypy
# --strict, settings in its pyproject.toml) and its tests against a real server.
test-client:
	cd clients/python && ../../$(PY) -m mypy
	ORT_DYLIB_PATH="$$(scripts/ort-dylib.sh)" CROSSL_SERVE_BIN=target/debug/crossl-serve $(PY) -m pytest -q clients/python/tests

openapi:
	ORT_DYLIB_PATH="$$(scripts/ort-dylib.sh)" UPDATE_OPENAPI=1 cargo test --locked --test openapi

lint:
	cargo fmt --all -- --check
	cargo clippy --locked --all-targets -- -D warnings

bench: setup-runtime
	ORT_DYLIB_PATH="$$(scripts/ort-dylib.sh)" cargo bench --locked --bench window_assembly --bench predict_throughput

demo: release data
	target/release/crossl-serve replay --data "$(DSADS_DIR)" --subjects p1 --devices 4 --speed 10

load-test:
	scripts/setup.sh bench
	.venv/bin/k6 run -e VUS=16 -e DURATION=20s load-tests/predict.js
	.venv/bin/k6 run -e DEVICES=50 -e SECONDS=30 -e CHUNK_MS=1000 load-tests/stream_grpc.js

# Per-core capacity (load-tests/README.md): the release server pinned to CPU 0, crossl-loadgen pinned to
# CPU 1, devices ramped in steps; the table goes to target/bench-capacity.md (JSON next to it), followed by
# the ratios to a bare ONNX Runtime session timed on CPU 0 with the server's batch and threads, right before
# and right after the load (load-tests/capacity_ratio.py). Own ports, so
# it does not collide with a `make run` on the defaults. BENCH_ARGS adds loadgen flags (e.g. --transport ws).
BENCH_STEPS ?= 100,500,1000,2000,5000
BENCH_STEP_SECONDS ?= 30
BENCH_HTTP ?= 127.0.0.1:18080
BENCH_GRPC ?= 127.0.0.1:15051
BENCH_METRICS ?= 127.0.0.1:19090
BENCH_SERVE_ARGS ?=
BENCH_ARGS ?=
bench-capacity: setup-runtime release
	@ort="$$(scripts/ort-dylib.sh)"; \
	ORT_DYLIB_PATH="$$ort" taskset -c 0 target/release/crossl-serve serve --model $(MODEL) \
	  --http-addr $(BENCH_HTTP) --grpc-addr $(BENCH_GRPC) --metrics-addr $(BENCH_METRICS) $(BENCH_SERVE_ARGS) \
	  > target/bench-capacity-server.log 2>&1 & pid=$$!; \
	trap 'kill $$pid 2>/dev/null || true; wait $$pid 2>/dev/null || true' EXIT; \
	for _ in $$(seq 1 240); do curl -sf http://$(BENCH_HTTP)/readyz >/dev/null && break; \
	  kill -0 $$pid 2>/dev/null || { cat target/bench-capacity-server.log; exit 1; }; sleep 0.5; done; \
	curl -sf http://$(BENCH_HTTP)/readyz >/dev/null || { echo "server not ready"; exit 1; }; \
	load_target=http://$(BENCH_GRPC); case " $(BENCH_ARGS) " in *" --transport ws"*) load_target=http://$(BENCH_HTTP);; esac; \
	bare="taskset -c 0 $(PY) load-tests/capacity_ratio.py bare --server http://$(BENCH_HTTP) --model-dir $(MODEL)"; \
	$$bare > target/bench-capacity-bare-before.jsonl || exit 1; \
	taskset -c 1 target/release/crossl-loadgen --model $(MODEL) --target $$load_target \
	  --steps $(BENCH_STEPS) --step-seconds $(BENCH_STEP_SECONDS) \
	  --metrics-url http://$(BENCH_METRICS)/metrics --server-pid $$pid \
	  --markdown target/bench-capacity.md --json target/bench-capacity.json $(BENCH_ARGS) || exit 1; \
	$$bare > target/bench-capacity-bare-after.jsonl || exit 1; \
	$(PY) load-tests/capacity_ratio.py report --run target/bench-capacity.json \
	  --bare target/bench-capacity-bare-before.jsonl target/bench-capacity-bare-after.jsonl \
	  --markdown target/bench-capacity.md; \
	echo "table and ratios written to target/bench-capacity.md"

# GPU table (issue 18), on a machine with an NVIDIA GPU: ONNX Runtime's CUDA build into .venv-gpu, the
# service built with `--features cuda`, refusal and reporting checks, bare CUDA session vs the service at
# several batch sizes; target/bench-gpu.md. Settings (env): load-tests/gpu_capacity.sh's header.
bench-gpu:
	load-tests/gpu_capacity.sh

# Soak (load-tests/soak.py, docs/benchmarks.md "Soak"): fails when the server's RSS grows by more than 10 %
# after warm-up. The CI version runs 60 s against the debug build (stable after ~20 s of load).
SOAK_BIN ?= target/debug/crossl-serve
soak-ci: setup-dev build
	ORT_DYLIB_PATH="$$(scripts/ort-dylib.sh)" $(PY) load-tests/soak.py --duration 60 --warmup 20 --devices 8 \
		--max-growth 0.10 --bin $(SOAK_BIN)

soak: setup-dev release
	ORT_DYLIB_PATH="$$(scripts/ort-dylib.sh)" $(PY) load-tests/soak.py --duration 600 --warmup 60 --devices 16 \
		--max-growth 0.10 --bin target/release/crossl-serve
