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

.PHONY: help run build release setup-runtime setup-dev data test test-rust test-python test-interop \
        openapi lint bench demo load-test

help:
	@echo "make run     - serve the bundled model (HTTP :8080, gRPC :50051, metrics :9090)"
	@echo "make test    - run every test (Rust, Python training, Helm chart, gRPC interop)"
	@echo "make demo    - stream DSADS subject p1 to a running server and print online accuracy"
	@echo "make bench   - criterion benchmarks (see docs/benchmarks.md)"
	@echo "make load-test - k6 against a running server (make run in another terminal)"
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

data: setup-dev
	@if [ -f "$(DSADS_DIR)/data/a19/p6/s60.txt" ]; then echo "DSADS already unpacked in $(DSADS_DIR)"; \
	else $(PY) -m crossl unpack --archive "$(DSADS_ARCHIVE)" --out "$(DSADS_DIR)"; fi

test: setup-dev data build test-rust test-python test-interop
	@echo "all test suites passed"

# REDIS_SERVER_BIN: the real redis-server the shared-store tests (tests/redis_*.rs) start; never skipped.
test-rust:
	ORT_DYLIB_PATH="$$(scripts/ort-dylib.sh)" REDIS_SERVER_BIN="$$(scripts/redis-server-bin.sh)" \
	  cargo test --locked --all-targets

test-python:
	CROSSL_SERVE_BIN=target/debug/crossl-serve $(PY) -m pytest -q training/tests deploy/tests

test-interop:
	ORT_DYLIB_PATH="$$(scripts/ort-dylib.sh)" CROSSL_SERVE_BIN=target/debug/crossl-serve $(PY) -m pytest -q tests/interop

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
