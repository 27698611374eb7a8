#!/usr/bin/env python3
"""Soak test: a real `crossl-serve serve` under devices that join and leave plus one misbehaving client,
with the server's resident memory sampled from /proc/<pid>/status (VmRSS).

It starts the binary (CROSSL_SERVE_BIN, default target/release/crossl-serve) on free 127.0.0.1 ports with
the bundled model, then for --duration seconds runs --devices devices in real time (half over gRPC
Ingest.Stream, half over the WebSocket binary frame), each streaming every modality for a random session
and then leaving (some come back under the same id, some under a new one), a dashboard on the WebSocket
prediction feed, and one misbehaving client (garbage frames, NaN samples, unknown modalities, oversized
messages, far-past timestamps, bad JSON bodies, reconnect storms). All traffic goes to 127.0.0.1 and every
loop stops at the deadline by itself.

It prints RSS at start (ready, before load), after --warmup seconds and at the end (still under load),
the predictions received and the rejections by reason from /metrics, and exits non-zero when RSS grew by
more than --max-growth after warm-up, when the server died, or when no prediction came back.

    ORT_DYLIB_PATH="$(scripts/ort-dylib.sh)" .venv/bin/python load-tests/soak.py --duration 600
    make soak-ci      # the 60-second version against the debug build (part of `make test`)

Needs grpcio, grpcio-tools and websockets (requirements/dev.txt).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SECOND = 1_000_000_000
# Server flags of the soak unless given after `--`: per-device buffers that are bounded by design (a device's
# prediction history, an idle device's window state) fill within the warm-up, so that growth after it is a
# leak, not a cache filling up. The prediction retention keeps its 1-h default: ids that rotate still grow
# the store for an hour (issue 16 point 7), and the soak shows it.
SOAK_SERVER_FLAGS = {"--history-len": "32", "--device-idle-timeout-s": "60"}


# --- server ------------------------------------------------------------------------------------------


class Server:
    """The service under test, on free ports; its log is kept for the failure report."""

    def __init__(self, binary: Path, model: Path, extra: list[str]):
        env = dict(os.environ, CROSSL_LOG_JSON="true", RUST_LOG=os.environ.get("RUST_LOG", "warn,crossl_serve=info"))
        if "ORT_DYLIB_PATH" not in env:
            env["ORT_DYLIB_PATH"] = subprocess.check_output([str(REPO / "scripts" / "ort-dylib.sh")], text=True).strip()
        cmd = [str(binary), "serve", "--model", str(model), "--http-addr", "127.0.0.1:0",
               "--grpc-addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0", *extra]
        self.process = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True)
        self.log: list[str] = []
        self.addrs: dict[str, str] = {}
        found = threading.Event()

        def pump():
            assert self.process.stdout is not None
            for line in self.process.stdout:
                if len(self.log) < 5000:
                    self.log.append(line)
                try:
                    fields = json.loads(line).get("fields", {})
                except json.JSONDecodeError:
                    continue
                if "grpc_addr" in fields and "http_addr" in fields:
                    self.addrs.update(fields)
                    found.set()

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + 120
        while not found.wait(0.2):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.fail("the server did not report its listeners")
        self.http, self.grpc, self.metrics = self.addrs["http_addr"], self.addrs["grpc_addr"], self.addrs["metrics_addr"]
        while True:
            try:
                with urllib.request.urlopen(f"http://{self.http}/readyz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.fail("the server did not become ready")
            time.sleep(0.2)

    def fail(self, why: str):
        self.stop()
        sys.stderr.write("".join(self.log[-80:]))
        sys.exit(f"soak: {why}")

    def alive(self) -> bool:
        return self.process.poll() is None

    def rss_kib(self) -> int:
        with open(f"/proc/{self.process.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise RuntimeError("no VmRSS line")

    def get(self, url: str, timeout: float = 10) -> str:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.read().decode()

    def model(self) -> dict:
        return json.loads(self.get(f"http://{self.http}/v1/model"))

    def metrics_text(self) -> str:
        return self.get(f"http://{self.metrics}/metrics")

    def stop(self) -> int | None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        return self.process.returncode


def metric_sums(text: str, name: str, by: str) -> Counter:
    """Sum of a metric family's samples grouped by one label (Prometheus text format)."""
    out: Counter = Counter()
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        head, _, value = line.rpartition(" ")
        key = ""
        if "{" in head:
            for pair in head[head.index("{") + 1 : head.rindex("}")].split(","):
                k, _, v = pair.partition("=")
                if k == by:
                    key = v.strip('"')
        out[key] += float(value)
    return out


# --- clients -----------------------------------------------------------------------------------------


def compile_stubs():
    """Python gRPC stubs from proto/ (into a temp dir, flat module name as in tests/interop)."""
    from grpc_tools import protoc

    src, out = Path(tempfile.mkdtemp(prefix="soak-proto-")), Path(tempfile.mkdtemp(prefix="soak-stubs-"))
    shutil.copy(REPO / "proto" / "crossl" / "v1" / "crossl.proto", src / "crossl_v1.proto")
    include = Path(protoc.__file__).parent / "_proto"
    code = protoc.main(["grpc_tools.protoc", f"-I{src}", f"-I{include}", f"--python_out={out}",
                        f"--grpc_python_out={out}", str(src / "crossl_v1.proto")])
    if code != 0:
        sys.exit("soak: protoc failed")
    sys.path.insert(0, str(out))
    import crossl_v1_pb2
    import crossl_v1_pb2_grpc

    return crossl_v1_pb2, crossl_v1_pb2_grpc


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.counts: Counter = Counter()

    def add(self, key: str, n: int = 1):
        with self.lock:
            self.counts[key] += n


def synthetic(rows: int, channels: int, first: int, phase: float) -> list[float]:
    return [(9.0 if c == 0 else 0.5) + math.sin((first + i) * 0.25 + c + phase)
            for i in range(rows) for c in range(channels)]


def now_ns() -> int:
    return time.time_ns()


class Soak:
    def __init__(self, server: Server, args, pb, pb_grpc):
        self.server, self.args, self.pb, self.pb_grpc = server, args, pb, pb_grpc
        self.deadline = time.monotonic() + args.duration
        self.stats = Stats()
        model = server.model()
        self.modalities = [(m["name"], m["channels"], int(round(m["sample_rate_hz"])))
                           for m in model["manifest"]["modalities"]]

    def keeps_id(self, slot: int) -> bool:
        """Even slots come back under their own id; odd ones under a new id each session (unless --fixed-ids)."""
        return self.args.fixed_ids or slot % 2 == 0

    def running(self) -> bool:
        return time.monotonic() < self.deadline and self.server.alive()

    def sleep_until(self, t: float):
        while self.running():
            left = t - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, 0.5))

    # A device's session: stream every modality in real time, one chunk per modality per second.
    def seconds_of_chunks(self):
        """Yields (k, [(index, name, channels, start_ns, samples)]) once per wall-clock second."""
        t0 = (now_ns() // SECOND + 1) * SECOND
        start = time.monotonic() + (t0 - now_ns()) / 1e9
        session = random.uniform(*self.args.session_s)
        k = 0
        while self.running() and k < session:
            self.sleep_until(start + k + 1)  # the chunk's last sample has been "taken"
            if not self.running():
                return
            chunks = [(i, name, ch, t0 + k * SECOND, synthetic(rate, ch, k * rate, i * 0.5))
                      for i, (name, ch, rate) in enumerate(self.modalities)]
            yield k, chunks
            k += 1

    def grpc_device(self, slot: int):
        import grpc

        channel = grpc.insecure_channel(self.server.grpc)
        stub = self.pb_grpc.IngestStub(channel)
        session = 0
        while self.running():
            device = f"soak-g{slot}" if self.keeps_id(slot) else f"soak-g{slot}-s{session}"
            session += 1

            def requests():
                yield self.pb.StreamRequest(sequence=0, hello=self.pb.Hello(device_id=device))
                seq = 1
                for _, chunks in self.seconds_of_chunks():
                    for _, name, _, start, samples in chunks:
                        yield self.pb.StreamRequest(sequence=seq, chunk=self.pb.SensorChunk(
                            device_id=device, modality=name, start_unix_nanos=start, samples=samples))
                        seq += 1
                    self.stats.add("chunks_sent", len(chunks))

            try:
                for response in stub.Stream(requests(), timeout=self.args.session_s[1] + 60):
                    kind = response.WhichOneof("kind")
                    if kind == "prediction":
                        self.stats.add("predictions_grpc")
                    elif kind == "chunk_error":
                        self.stats.add(f"good_client_error:{response.chunk_error.reason}")
            except grpc.RpcError as e:
                if self.running():
                    self.stats.add(f"good_client_stream_ended:{e.code().name}")
            self.stats.add("sessions")
            self.sleep_until(time.monotonic() + random.uniform(*self.args.pause_s))
        channel.close()

    def ws_device(self, slot: int):
        from websockets.sync.client import connect

        session = 0
        while self.running():
            device = f"soak-w{slot}" if self.keeps_id(slot) else f"soak-w{slot}-s{session}"
            session += 1
            try:
                with connect(f"ws://{self.server.http}/v1/ws/devices/{device}", open_timeout=30,
                             close_timeout=5, max_size=None) as ws:
                    welcome = json.loads(ws.recv(timeout=30))
                    assert welcome["type"] == "welcome", welcome

                    def read():
                        try:
                            for message in ws:
                                frame = json.loads(message)
                                if frame["type"] == "prediction":
                                    self.stats.add("predictions_ws")
                                elif frame["type"] == "error":
                                    self.stats.add(f"good_client_error:{frame.get('reason')}")
                        except Exception:  # noqa: BLE001 - the socket closing ends the reader
                            pass

                    reader = threading.Thread(target=read, daemon=True)
                    reader.start()
                    for _, chunks in self.seconds_of_chunks():
                        for index, _, ch, start, samples in chunks:
                            ws.send(struct.pack("<BBHIq", 0xC5, 1, index, len(samples) // ch, start)
                                    + struct.pack(f"<{len(samples)}f", *samples))
                        self.stats.add("chunks_sent", len(chunks))
                    time.sleep(2)  # the last windows close and come back
                ws_done = True
                reader.join(timeout=10)
            except Exception as e:  # noqa: BLE001
                ws_done = False
                if self.running():
                    self.stats.add(f"good_client_socket_failed:{type(e).__name__}")
            if ws_done:
                self.stats.add("sessions")
            self.sleep_until(time.monotonic() + random.uniform(*self.args.pause_s))

    def dashboard(self):
        from websockets.sync.client import connect

        while self.running():
            try:
                with connect(f"ws://{self.server.http}/v1/ws/predictions", open_timeout=30, max_size=None) as ws:
                    while self.running():
                        try:
                            frame = json.loads(ws.recv(timeout=1))
                        except TimeoutError:
                            continue
                        if frame["type"] == "prediction":
                            self.stats.add("predictions_feed")
            except Exception:  # noqa: BLE001 - reconnect
                time.sleep(1)

    # The misbehaving client: one bad thing after another, every `--bad-interval` seconds.
    def misbehave(self):
        import grpc
        from websockets.sync.client import connect

        channel = grpc.insecure_channel(self.server.grpc, options=[("grpc.max_send_message_length", 64 << 20)])
        stub = self.pb_grpc.IngestStub(channel)
        pb = self.pb
        name0, ch0, rate0 = self.modalities[0]
        ws_limit = self.server_limits["ws_max_frame_bytes"]
        grpc_limit = self.server_limits["grpc_max_message_bytes"]

        def grpc_once(requests: list, label: str):
            """One stream per misbehaviour; it hangs up once the refusal came back (no waiting for the linger)."""
            call = stub.Stream(iter(requests), timeout=30)
            try:
                for response in call:
                    if response.WhichOneof("kind") == "chunk_error":
                        self.stats.add(f"bad_client_refused:{response.chunk_error.reason}")
                        break
            except grpc.RpcError as e:
                self.stats.add(f"bad_client_stream_status:{e.code().name}")
            call.cancel()
            self.stats.add(f"bad_client_sent:{label}")

        def chunk(device: str, modality: str, start: int, samples: list) -> object:
            return pb.StreamRequest(sequence=7, chunk=pb.SensorChunk(
                device_id=device, modality=modality, start_unix_nanos=start, samples=samples))

        def ws_once(frames: list, label: str):
            try:
                with connect(f"ws://{self.server.http}/v1/ws/devices/soak-bad", open_timeout=30,
                             close_timeout=5, max_size=None) as ws:
                    ws.recv(timeout=30)  # welcome
                    for f in frames:
                        ws.send(f)
                    ws.send(json.dumps({"type": "soak-sentinel", "sequence": 99}))
                    while True:
                        frame = json.loads(ws.recv(timeout=30))
                        if frame["type"] == "error":
                            if frame.get("sequence") == 99:
                                break
                            self.stats.add(f"bad_client_refused:{frame.get('reason')}")
            except Exception as e:  # noqa: BLE001 - oversized frames end with 1009
                self.stats.add(f"bad_client_socket_ended:{type(e).__name__}")
            self.stats.add(f"bad_client_sent:{label}")

        def header(index: int, count: int, start: int) -> bytes:
            return struct.pack("<BBHIq", 0xC5, 1, index, count, start)

        def good_rows(n: int) -> list:
            return synthetic(n, ch0, 0, 0.0)

        actions = [
            ("grpc_nan", lambda t: grpc_once([chunk("soak-bad", name0, t, [float("nan")] * (ch0 * 5))], "grpc_nan")),
            ("grpc_inf", lambda t: grpc_once([chunk("soak-bad", name0, t, [float("inf")] * ch0)], "grpc_inf")),
            ("grpc_unknown_modality", lambda t: grpc_once([chunk("soak-bad", "tail_acc", t, good_rows(5))], "grpc_unknown_modality")),
            ("grpc_far_past", lambda t: grpc_once([chunk("soak-bad", name0, t - 30 * 86400 * SECOND, good_rows(5))], "grpc_far_past")),
            ("grpc_zero_time", lambda t: grpc_once([chunk("soak-bad", name0, 0, good_rows(5))], "grpc_zero_time")),
            ("grpc_bad_device", lambda t: grpc_once([chunk("bad device/..", name0, t, good_rows(5))], "grpc_bad_device")),
            ("grpc_empty", lambda t: grpc_once([pb.StreamRequest(sequence=3)], "grpc_empty")),
            ("grpc_ragged", lambda t: grpc_once([chunk("soak-bad", name0, t, good_rows(5)[:-1])], "grpc_ragged")),
            ("grpc_oversized", lambda t: grpc_once(
                [chunk("soak-bad", name0, t, [1.0] * (grpc_limit // 4 + 1024))], "grpc_oversized")),
            ("ws_garbage_binary", lambda t: ws_once([os.urandom(random.randint(0, 64)) for _ in range(5)], "ws_garbage_binary")),
            ("ws_garbage_text", lambda t: ws_once(["{not json", "[]", '{"type": 5}', "\u0000"], "ws_garbage_text")),
            ("ws_nan", lambda t: ws_once([header(0, 2, t) + struct.pack(f"<{2 * ch0}f", *([float("nan")] * 2 * ch0))], "ws_nan")),
            ("ws_unknown_index", lambda t: ws_once([header(999, 1, t) + struct.pack(f"<{ch0}f", *([1.0] * ch0))], "ws_unknown_index")),
            ("ws_far_past", lambda t: ws_once([header(0, 5, t - 365 * 86400 * SECOND) + struct.pack(f"<{5 * ch0}f", *good_rows(5))], "ws_far_past")),
            ("ws_oversized", lambda t: ws_once([b"\xc5" * (ws_limit + 1)], "ws_oversized")),
            ("http_bad_bodies", lambda t: self.bad_http()),
            ("reconnect_storm", lambda t: self.reconnect_storm(stub)),
        ]
        i = 0
        while self.running():
            label, action = actions[i % len(actions)] if i < len(actions) else random.choice(actions)
            i += 1
            try:
                action(now_ns() // SECOND * SECOND)
            except Exception as e:  # noqa: BLE001 - the soak reports, it does not stop
                self.stats.add(f"bad_client_unexpected:{label}:{type(e).__name__}")
            self.sleep_until(time.monotonic() + self.args.bad_interval)
        channel.close()

    def bad_http(self):
        bodies = [b"", b"{", b"[]", b'{"modalities": {}}', b'{"modalities": {"torso_acc": [[1, 2]]}}',
                  b'{"inputs": [{"name": "x", "shape": [9223372036854775807], "datatype": "FP32", "data": []}]}',
                  json.dumps({"modalities": {"torso_acc": [[1e39, 0, 0]] * 125}}).encode()]
        model = self.server.model()["manifest"]["name"]
        for body in bodies:
            for path in ("/v1/predict", "/v1/embed", f"/v2/models/{model}/infer"):
                request = urllib.request.Request(f"http://{self.server.http}{path}", data=body,
                                                 headers={"content-type": "application/json"}, method="POST")
                try:
                    with urllib.request.urlopen(request, timeout=30) as r:
                        self.stats.add(f"bad_http_status:{r.status}")
                except urllib.error.HTTPError as e:
                    self.stats.add(f"bad_http_status:{e.code}")
                    json.loads(e.read())  # every refusal is JSON
        self.stats.add("bad_client_sent:http_bad_bodies")

    def reconnect_storm(self, stub):
        """Opens and drops 20 WebSocket device sockets and 20 gRPC streams as fast as it can."""
        from websockets.sync.client import connect

        for n in range(20):
            try:
                with connect(f"ws://{self.server.http}/v1/ws/devices/soak-storm-{n % 5}", open_timeout=30) as ws:
                    ws.recv(timeout=30)
            except Exception:  # noqa: BLE001
                self.stats.add("storm_ws_failed")
            # A stream that says hello and hangs up at once.
            call = stub.Stream(iter([self.pb.StreamRequest(hello=self.pb.Hello(device_id=f"soak-storm-{n}"))]),
                               timeout=30)
            call.cancel()
        self.stats.add("bad_client_sent:reconnect_storm")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=600, help="seconds of load (default 600)")
    p.add_argument("--warmup", type=float, default=60, help="seconds before the baseline RSS sample (default 60)")
    p.add_argument("--devices", type=int, default=16, help="concurrent devices, half gRPC, half WebSocket (default 16)")
    p.add_argument("--max-growth", type=float, default=0.10, help="fail when RSS grows more than this after warm-up")
    p.add_argument("--session-s", type=float, nargs=2, default=(15, 45), metavar=("MIN", "MAX"),
                   help="seconds a device stays before leaving (default 15 45)")
    p.add_argument("--pause-s", type=float, nargs=2, default=(1, 5), metavar=("MIN", "MAX"),
                   help="seconds a device stays away before rejoining (default 1 5)")
    p.add_argument("--fixed-ids", action="store_true",
                   help="every device rejoins under its own id (default: half take a new id each session)")
    p.add_argument("--bad-interval", type=float, default=0.5, help="seconds between misbehaviours (default 0.5)")
    p.add_argument("--model", default=str(REPO / "models" / "crossl-dsads"))
    p.add_argument("--bin", default=os.environ.get("CROSSL_SERVE_BIN", str(REPO / "target" / "release" / "crossl-serve")),
                   help="server binary (default $CROSSL_SERVE_BIN or target/release/crossl-serve)")
    p.add_argument("--seed", type=int, default=16)
    p.add_argument("server_args", nargs="*", help="extra `serve` flags, after --")
    args = p.parse_args()
    if args.warmup >= args.duration:
        p.error("--warmup must be shorter than --duration")
    random.seed(args.seed)
    # The misbehaving client's oversized frames end its sockets abruptly (1009); the client library would log
    # each as an "unexpected internal error". They are counted in the summary instead.
    logging.getLogger("websockets").setLevel(logging.CRITICAL)
    binary = Path(args.bin)
    if not binary.is_absolute():
        binary = REPO / binary
    if not binary.is_file():
        sys.exit(f"soak: no server binary at {binary} (cargo build --release, or set CROSSL_SERVE_BIN / --bin)")

    pb, pb_grpc = compile_stubs()
    given = {a.split("=", 1)[0] for a in args.server_args if a.startswith("--")}
    server_args = [part for flag, value in SOAK_SERVER_FLAGS.items() if flag not in given for part in (flag, value)]
    server_args += args.server_args
    server = Server(binary, Path(args.model), server_args)
    soak = Soak(server, args, pb, pb_grpc)
    model = server.model()
    soak.server_limits = {"ws_max_frame_bytes": 1 << 20, "grpc_max_message_bytes": 4 << 20}
    for key in soak.server_limits:
        for flag in args.server_args:
            if flag.startswith(f"--{key.replace('_', '-')}="):
                soak.server_limits[key] = int(flag.split("=", 1)[1])
    rss = {"start": server.rss_kib()}
    print(f"soak: {binary.name} pid {server.process.pid} ({' '.join(server_args)}), model "
          f"{model['manifest']['name']}, {args.devices} devices, {args.duration:.0f} s (warm-up {args.warmup:.0f} s); "
          f"RSS at start {rss['start'] / 1024:.1f} MiB", flush=True)

    t_start = time.monotonic()
    threads = []
    for slot in range(args.devices):
        target = soak.grpc_device if slot % 2 == 0 else soak.ws_device
        threads.append(threading.Thread(target=target, args=(slot // 2,), daemon=True))
    threads.append(threading.Thread(target=soak.dashboard, daemon=True))
    threads.append(threading.Thread(target=soak.misbehave, daemon=True))
    for i, t in enumerate(threads):
        t.start()
        if i < args.devices:
            time.sleep(min(0.5, args.warmup / max(args.devices, 1) / 2))  # devices join over time

    samples = []  # (seconds, KiB)
    next_sample = t_start
    while soak.running():
        if time.monotonic() >= next_sample:
            samples.append((time.monotonic() - t_start, server.rss_kib()))
            next_sample += 5
            if "warmup" not in rss and time.monotonic() - t_start >= args.warmup:
                rss["warmup"] = samples[-1][1]
        time.sleep(0.2)
    died = not server.alive()
    if not died:
        rss["end"] = server.rss_kib()
        metrics = server.metrics_text()
    join_until = time.monotonic() + 30  # devices stop at the deadline; streams end after the server's linger
    for t in threads:
        t.join(timeout=max(0.1, join_until - time.monotonic()))
    code = server.stop()

    c = soak.stats.counts
    print(f"soak: ran {time.monotonic() - t_start:.0f} s; server exit code {code}")
    if died:
        print("soak: FAILED: the server died during the run", file=sys.stderr)
        sys.stderr.write("".join(server.log[-80:]))
        return 1
    growth = (rss["end"] - rss["warmup"]) / rss["warmup"]
    print(f"RSS start {rss['start'] / 1024:.1f} MiB | after warm-up ({args.warmup:.0f} s) {rss['warmup'] / 1024:.1f} MiB | "
          f"end {rss['end'] / 1024:.1f} MiB | growth after warm-up {growth * 100:+.1f} % (limit {args.max_growth * 100:.0f} %)"
          f" | peak {max(s[1] for s in samples) / 1024:.1f} MiB")
    print("RSS every 5 s (MiB): " + " ".join(f"{s[1] / 1024:.0f}" for s in samples))
    print(f"sessions {c['sessions']}, chunks sent by good devices {c['chunks_sent']}, predictions received: "
          f"gRPC {c['predictions_grpc']}, WebSocket {c['predictions_ws']}, dashboard feed {c['predictions_feed']}")
    print("server: predictions {:.0f}, windows shed {:.0f}, devices evicted {:.0f}".format(
        sum(metric_sums(metrics, "crossl_predictions_total", "").values()),
        sum(metric_sums(metrics, "crossl_windows_shed_total", "").values()),
        sum(metric_sums(metrics, "crossl_devices_evicted_total", "").values())))
    for family in ("crossl_chunks_rejected_total", "crossl_predict_rejected_total"):
        by_reason = metric_sums(metrics, family, "reason")
        print(f"{family} by reason: " + (", ".join(f"{k} {v:.0f}" for k, v in sorted(by_reason.items())) or "none"))
    client = {k: v for k, v in sorted(c.items()) if k.startswith(("bad_", "good_client", "storm"))}
    print("client view: " + ", ".join(f"{k} {v}" for k, v in client.items()))

    failures = []
    if growth > args.max_growth:
        failures.append(f"RSS grew {growth * 100:.1f} % after warm-up (limit {args.max_growth * 100:.0f} %)")
    if c["predictions_grpc"] + c["predictions_ws"] == 0:
        failures.append("no prediction came back to any device")
    if code not in (0, None):
        failures.append(f"the server exited with {code} on SIGTERM")
    for f in failures:
        print(f"soak: FAILED: {f}", file=sys.stderr)
    if not failures:
        print("soak: passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
