"""The same server fixture as tests/interop (a real `crossl-serve serve` process on free ports, the bundled
model, aligned windows, rate limit ×1000), loaded from there so both suites start the server one way.

Run from the repository root:
    ORT_DYLIB_PATH="$(scripts/ort-dylib.sh)" CROSSL_SERVE_BIN=target/debug/crossl-serve \
        .venv/bin/python -m pytest -q clients/python/tests
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]

_spec = importlib.util.spec_from_file_location("crossl_interop_fixtures", REPO / "tests" / "interop" / "conftest.py")
assert _spec is not None and _spec.loader is not None
_fixtures = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = _fixtures  # dataclasses look their module up there
_spec.loader.exec_module(_fixtures)

server = _fixtures.server

#: API keys of `keyed_server`.
READER, WRITER = "client-reader", "client-writer"


@pytest.fixture(scope="session")
def keyed_server():
    """The same server with auth on: READER may read, WRITER may ingest and read."""
    with _fixtures.running_server("--api-key", f"{READER}:read", "--api-key", f"{WRITER}:ingest,read") as srv:
        yield srv
