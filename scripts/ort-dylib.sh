#!/usr/bin/env bash
# Prints the path of the ONNX Runtime shared library that the service loads at run time.
# ORT_DYLIB_PATH wins; otherwise the library from the project's venv (installed by scripts/setup.sh).
set -euo pipefail
if [ -n "${ORT_DYLIB_PATH:-}" ]; then echo "$ORT_DYLIB_PATH"; exit 0; fi
root=$(cd "$(dirname "$0")/.." && pwd)
lib=$(ls "$root"/.venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.* 2>/dev/null | head -n 1 || true)
if [ -z "$lib" ]; then
  echo "ONNX Runtime library not found: run scripts/setup.sh runtime (or set ORT_DYLIB_PATH)" >&2
  exit 1
fi
echo "$lib"
