"""Independent clients against a running crossl-serve: grpcurl through server reflection, and Python grpcio
with stubs generated from proto/ at test time. Nothing here shares code with the Rust server."""

from __future__ import annotations

import json
import math
import queue
import subprocess
import threading
import time
import urllib.request

import grpc

SECOND = 1_000_000_000


def model(server) -> dict:
    with urllib.request.urlopen(f"http://{server.http}/v1/model", timeout=5) as r:
        return json.load(r)["manifest"]


def next_second() -> int:
    return (time.time_ns() // SECOND + 1) * SECOND


def seconds_of_chunks(manifest: dict, device: str, t0: int, seconds: int):
    """Per second, one chunk per modality: (modality, start_unix_nanos, flat row-major samples)."""
    for k in range(seconds):
        for m, spec in enumerate(manifest["modalities"]):
            rows = round(spec["sample_rate_hz"])
            samples = []
            for i in range(k * rows, (k + 1) * rows):
                for c in range(spec["channels"]):
                    samples.append((9.0 if c == 0 else 0.5) + math.sin(i * 0.25 + c + m * 0.5))
            yield device, spec["name"], t0 + k * SECOND, samples


def test_grpcurl_lists_and_describes_services_via_reflection(server, grpcurl):
    listed = subprocess.run([grpcurl, "-plaintext", server.grpc, "list"], capture_output=True, text=True, timeout=30)
    assert listed.returncode == 0, listed.stderr
    services = listed.stdout.split()
    for wanted in ("crossl.v1.Ingest", "crossl.v1.Predictions", "grpc.health.v1.Health"):
        assert wanted in services, listed.stdout
    described = subprocess.run(
        [grpcurl, "-plaintext", server.grpc, "describe", "crossl.v1.Ingest"], capture_output=True, text=True, timeout=30
    )
    assert described.returncode == 0, described.stderr
    assert "rpc Stream ( stream .crossl.v1.StreamRequest ) returns ( stream .crossl.v1.StreamResponse )" in described.stdout


def test_grpcurl_health_and_errors(server, grpcurl):
    health = subprocess.run(
        [grpcurl, "-plaintext", "-d", '{"service": "crossl.v1.Ingest"}', server.grpc, "grpc.health.v1.Health/Check"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert health.returncode == 0, health.stderr
    assert json.loads(health.stdout)["status"] == "SERVING"
    missing = subprocess.run(
        [grpcurl, "-plaintext", "-d", '{"device_id": "nobody"}', server.grpc, "crossl.v1.Predictions/Latest"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert missing.returncode != 0
    assert "NotFound" in missing.stderr, missing.stderr


def test_grpcurl_streams_a_device_and_gets_predictions_and_chunk_errors(server, grpcurl):
    manifest = model(server)
    t0 = next_second()
    seconds = math.ceil(manifest["window_seconds"]) + 1
    requests = [{"hello": {"device_id": "curl-dev", "modalities": [m["name"] for m in manifest["modalities"]]}}]
    requests.append(
        {"sequence": 7, "chunk": {"device_id": "curl-dev", "modality": "no_such_sensor", "start_unix_nanos": str(t0), "samples": [1, 2, 3]}}
    )
    for device, modality, start, samples in seconds_of_chunks(manifest, "curl-dev", t0, seconds):
        requests.append({"chunk": {"device_id": device, "modality": modality, "start_unix_nanos": str(start), "samples": samples}})
    # grpcurl sends every request, half-closes, and prints responses until the server ends the stream
    # (it lingers a moment after the client finishes, then ends with OK).
    result = subprocess.run(
        [grpcurl, "-plaintext", "-d", "@", server.grpc, "crossl.v1.Ingest/Stream"],
        input="\n".join(json.dumps(r) for r in requests),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    decoder = json.JSONDecoder()
    text, responses = result.stdout.strip(), []
    while text:
        obj, end = decoder.raw_decode(text)
        responses.append(obj)
        text = text[end:].strip()
    errors = [r["chunkError"] for r in responses if "chunkError" in r]
    assert len(errors) == 1, responses
    assert errors[0]["reason"] == "unknown_modality" and errors[0]["sequence"] == "7", errors
    predictions = [r["prediction"] for r in responses if "prediction" in r]
    last_end = t0 + seconds * SECOND
    assert any(int(p["windowEndUnixNanos"]) == last_end for p in predictions), predictions
    for p in predictions:
        assert p["deviceId"] == "curl-dev"
        assert p["label"] in manifest["classes"]


def test_python_grpcio_streams_watches_and_predicts(server, stubs):
    pb, pb_grpc = stubs
    manifest = model(server)
    channel = grpc.insecure_channel(server.grpc)
    ingest = pb_grpc.IngestStub(channel)
    predictions = pb_grpc.PredictionsStub(channel)

    # A dashboard watching the device, from another thread.
    watched: queue.Queue = queue.Queue()
    watch_call = predictions.Watch(pb.WatchRequest(device_ids=["py-dev"]))

    def watch():
        try:
            for p in watch_call:
                watched.put(p)
        except grpc.RpcError:
            pass

    threading.Thread(target=watch, daemon=True).start()
    time.sleep(0.3)

    t0 = next_second()
    seconds = math.ceil(manifest["window_seconds"]) + 1
    last_end = t0 + seconds * SECOND

    def requests():
        yield pb.StreamRequest(hello=pb.Hello(device_id="py-dev", metadata={"client": "grpcio"}))
        for device, modality, start, samples in seconds_of_chunks(manifest, "py-dev", t0, seconds):
            yield pb.StreamRequest(chunk=pb.SensorChunk(device_id=device, modality=modality, start_unix_nanos=start, samples=samples))
        bad = pb.SensorChunk(device_id="py-dev", modality=manifest["modalities"][0]["name"], start_unix_nanos=t0, samples=[1.0, 2.0])
        yield pb.StreamRequest(sequence=42, chunk=bad)

    got_last, errors = False, []
    for response in ingest.Stream(requests(), timeout=60):
        kind = response.WhichOneof("kind")
        if kind == "prediction":
            assert response.prediction.device_id == "py-dev"
            assert len(response.prediction.probabilities) == len(manifest["classes"])
            got_last |= response.prediction.window_end_unix_nanos == last_end
        elif kind == "chunk_error":
            errors.append(response.chunk_error)
    assert got_last
    assert [(e.sequence, e.reason) for e in errors] == [(42, "channel_multiple")]

    seen = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and last_end not in seen:
        try:
            seen.append(watched.get(timeout=1).window_end_unix_nanos)
        except queue.Empty:
            pass
    watch_call.cancel()
    assert last_end in seen

    latest = predictions.Latest(pb.LatestRequest(device_id="py-dev"))
    assert latest.window_end_unix_nanos == last_end

    window = {
        m["name"]: pb.ModalityWindow(samples=[0.5] * (m["channels"] * m["window_samples"])) for m in manifest["modalities"][:3]
    }
    out = ingest.Predict(pb.PredictRequest(modalities=window))
    assert out.label in manifest["classes"]
    assert len(out.logits) == len(manifest["classes"])
    assert list(out.present_modalities) == [m["name"] for m in manifest["modalities"][:3]]
    try:
        ingest.Predict(pb.PredictRequest(modalities={"nope": pb.ModalityWindow(samples=[1.0])}))
        raise AssertionError("an unknown modality must be refused")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e
