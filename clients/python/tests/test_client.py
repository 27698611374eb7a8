"""crossl_client against a running server: streaming numpy arrays and CSV files (golden windows come back
with their golden label and probabilities), watch, latest, and refused data."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from crossl_client import ChunkRejected, Client, CrosslError, Prediction, load_csv

REPO = Path(__file__).resolve().parents[3]
SECOND = 1_000_000_000


@pytest.fixture(scope="module")
def golden() -> dict:
    return json.loads((REPO / "models" / "crossl-dsads" / "golden.json").read_text())


@pytest.fixture(scope="module")
def client(server):
    with Client(server.grpc, server.http) as c:
        yield c


def case(golden: dict, name_part: str) -> dict:
    return next(c for c in golden["cases"] if name_part in c["name"])


def recording(golden_case: dict) -> dict[str, np.ndarray]:
    """The golden window (5 s) followed by one more second (its first second again), so the window that
    ends 5 s after the start closes on data alone."""
    out = {}
    for name, rows in golden_case["modalities"].items():
        array = np.asarray(rows, dtype=np.float32)
        out[name] = np.concatenate([array, array[:25]])
    return out


def next_second() -> int:
    return (time.time_ns() // SECOND + 1) * SECOND


def window(predictions: list[Prediction], end: int) -> Prediction:
    matching = [p for p in predictions if p.window_end_unix_nanos == end]
    assert matching, f"no prediction for the window ending at {end}: {[p.window_end_unix_nanos for p in predictions]}"
    return matching[0]


def check_golden(prediction: Prediction, golden: dict, golden_case: dict, manifest: dict) -> None:
    assert prediction.label == golden_case["label"], golden_case["name"]
    np.testing.assert_allclose(prediction.probabilities, golden_case["probabilities"], atol=max(golden["tolerance"], 1e-5))
    assert prediction.confidence == max(prediction.probabilities)
    present = [m["name"] for m, p in zip(manifest["modalities"], golden_case["present"]) if p == 1.0]
    assert prediction.present_modalities == present


def test_stream_numpy_arrays_gives_the_golden_prediction(client, golden):
    full = case(golden, "a05_p2")
    start = next_second()
    predictions = list(client.stream("py-numpy", recording(full), start_unix_nanos=start, speed=0))
    assert predictions, "no prediction came back"
    assert all(p.device_id == "py-numpy" for p in predictions)
    check_golden(window(predictions, start + 5 * SECOND), golden, full, client.model())


def test_stream_csv_without_and_with_header(client, golden, tmp_path):
    manifest = client.model()
    # Headerless: every channel of every modality in manifest order (the raw DSADS layout).
    full = case(golden, "a12_p3")
    arrays = recording(full)
    table = np.concatenate([arrays[m["name"]] for m in manifest["modalities"]], axis=1)
    assert table.shape == (150, 45)
    headerless = tmp_path / "full.csv"
    np.savetxt(headerless, table, delimiter=",", fmt="%.9g")
    start = next_second()
    predictions = list(client.stream("py-csv-full", headerless, sample_rate=25.0, start_unix_nanos=start, speed=0))
    check_golden(window(predictions, start + 5 * SECOND), golden, full, manifest)

    # With a header: only the columns it names (here the torso only; the rest is absent).
    torso = case(golden, "torso_only")
    arrays = recording(torso)
    names = [n for n in (m["name"] for m in manifest["modalities"]) if n in arrays]
    header = [f"{n}_{c}" for n in names for c in ("x", "y", "z")]
    with_header = tmp_path / "torso.csv"
    np.savetxt(
        with_header, np.concatenate([arrays[n] for n in names], axis=1), delimiter=",", fmt="%.9g",
        header=",".join(header), comments="",
    )
    assert set(load_csv(with_header, manifest)) == set(names)
    start = next_second()
    predictions = list(client.stream("py-csv-torso", str(with_header), start_unix_nanos=start, speed=0))
    check_golden(window(predictions, start + 5 * SECOND), golden, torso, manifest)


def test_watch_and_latest(client, golden):
    full = case(golden, "a01_p1")
    seen: list[Prediction] = []
    watching = client.watch(["py-watched"])
    started = threading.Event()

    def collect() -> None:
        started.set()
        for p in watching:
            seen.append(p)

    reader = threading.Thread(target=collect, daemon=True)
    reader.start()
    started.wait(10)
    # Watch subscribes when its call starts; give the call a moment to reach the server before data flows
    # by streaming an unrelated device first (its predictions must not show up in this watch).
    list(client.stream("py-unwatched", recording(full), speed=0))
    start = next_second()
    streamed = list(client.stream("py-watched", recording(full), start_unix_nanos=start, speed=0))
    end = start + 5 * SECOND
    deadline = time.monotonic() + 60
    while not any(p.window_end_unix_nanos == end for p in seen) and time.monotonic() < deadline:
        time.sleep(0.05)
    watching.cancel()
    reader.join(10)
    assert {p.device_id for p in seen} == {"py-watched"}
    assert window(seen, end).probabilities == window(streamed, end).probabilities

    latest = client.latest("py-watched")
    assert latest is not None
    assert latest.window_end_unix_nanos == max(p.window_end_unix_nanos for p in streamed)
    assert client.latest("py-nobody") is None


def test_refused_data(client, golden):
    full = case(golden, "a01_p1")
    with pytest.raises(ValueError, match="unknown modalities"):
        client.stream("py-bad", {"tail_acc": np.zeros((25, 3))})
    with pytest.raises(ValueError, match="expected"):
        client.stream("py-bad", {"torso_acc": np.zeros((25, 2))})
    with pytest.raises(ValueError, match="resample"):
        client.stream("py-bad", recording(full), sample_rate=50.0)
    # Two days in the past: beyond the server's clock-skew bound, every chunk is refused.
    old = next_second() - 2 * 86_400 * SECOND
    with pytest.raises(ChunkRejected) as refused:
        list(client.stream("py-old", recording(full), start_unix_nanos=old, speed=0))
    assert refused.value.kind == "invalid_input"
    assert refused.value.device_id == "py-old"
    errors: list[ChunkRejected] = []
    predictions = list(
        client.stream("py-old-2", recording(full), start_unix_nanos=old, speed=0, on_chunk_error=errors.append)
    )
    assert predictions == []
    assert len(errors) == 15 * 6
    assert {e.reason for e in errors} == {refused.value.reason}


def test_api_key_goes_with_every_call(keyed_server, golden):
    from conftest import READER, WRITER

    full = case(golden, "a01_p1")
    with Client(keyed_server.grpc, keyed_server.http) as anonymous:
        with pytest.raises(CrosslError) as refused:
            anonymous.model()
        assert (refused.value.kind, refused.value.status) == ("unauthenticated", 401)
        with pytest.raises(CrosslError) as refused:
            anonymous.latest("py-keyed")
        assert refused.value.kind == "unauthenticated"
    with Client(keyed_server.grpc, keyed_server.http, api_key=READER) as reader:
        assert reader.model()["name"] == "crossl-dsads"
        with pytest.raises(CrosslError) as refused:
            list(reader.stream("py-keyed", recording(full), speed=0))
        assert refused.value.kind == "permission_denied"
    with Client(keyed_server.grpc, keyed_server.http, api_key=WRITER) as writer:
        start = next_second()
        predictions = list(writer.stream("py-keyed", recording(full), start_unix_nanos=start, speed=0))
        assert window(predictions, start + 5 * SECOND).label == full["label"]
        latest = writer.latest("py-keyed")
        assert latest is not None and latest.device_id == "py-keyed"


def test_label_a_span_personalises_the_device_and_clearing_restores_the_model(client, golden):
    full = case(golden, "a05_p2")
    general = full["label"]
    personal = "rowing" if general != "rowing" else "cycling_horizontal"
    start = next_second()
    first = list(client.stream("py-labelled", recording(full), start_unix_nanos=start, speed=0))
    assert window(first, start + 5 * SECOND).label == general

    answer = client.label("py-labelled", personal, start, start + 6 * SECOND)
    assert personal in json.dumps(answer)
    assert personal in json.dumps(client.labels("py-labelled"))

    # The same data again, later: the personal head answers, with the label the span was given.
    again = next_second()
    second = list(client.stream("py-labelled", recording(full), start_unix_nanos=again, speed=0))
    p = window(second, again + 5 * SECOND)
    assert p.personalized and p.label == personal, p

    client.clear_labels("py-labelled")
    with pytest.raises(CrosslError):
        client.label("py-labelled", "not_a_class", again, again + 6 * SECOND)
    third_start = next_second()
    third = list(client.stream("py-labelled", recording(full), start_unix_nanos=third_start, speed=0))
    p = window(third, third_start + 5 * SECOND)
    assert not p.personalized and p.label == general, p
