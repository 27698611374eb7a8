"""The client: gRPC for streaming and predictions (crossl.v1.Ingest / Predictions), REST for the model and
the label spans of personalisation."""

from __future__ import annotations

import json
import math
import os
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Callable, Union

import grpc
import numpy as np

from ._data import load_csv, prepare_arrays
from ._proto import crossl_v1_pb2 as pb
from ._proto import crossl_v1_pb2_grpc as pb_grpc

SECOND = 1_000_000_000

#: What `Client.stream` accepts: modality name → samples × channels array, or a CSV file.
Data = Union[Mapping[str, "np.ndarray[Any, Any]"], str, "os.PathLike[str]"]


class CrosslError(Exception):
    """An error answered by the server: `kind` is the stable error kind (`invalid_input`, `not_found`,
    `unauthenticated`, …), `message` the server's explanation."""

    def __init__(self, kind: str, message: str, status: int | None = None) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message
        #: HTTP status for REST calls, None for gRPC.
        self.status = status


class ChunkRejected(CrosslError):
    """A chunk (or hello) refused on an ingest stream (`ChunkError` of docs/protocol.md)."""

    def __init__(self, error: Any) -> None:
        super().__init__(error.kind, error.message)
        self.reason: str = error.reason
        self.device_id: str = error.device_id
        self.modality: str = error.modality
        self.index: int = error.index
        self.sequence: int = error.sequence


@dataclass(frozen=True)
class Timings:
    queue_seconds: float
    compute_seconds: float
    end_to_end_seconds: float
    batch_size: int


@dataclass(frozen=True)
class Prediction:
    """One window's prediction."""

    device_id: str
    window_end_unix_nanos: int
    label: str
    class_index: int
    #: In the model's class order (`Client.model()["classes"]`).
    probabilities: list[float]
    embedding: list[float] = field(repr=False)
    #: Modalities present in the window, in manifest order.
    present_modalities: list[str]
    timings: Timings | None = None
    #: Whether a personal head (from labelled spans) answered rather than the general model.
    personalized: bool = False

    @property
    def confidence(self) -> float:
        """The probability of the predicted class."""
        return self.probabilities[self.class_index] if self.probabilities else float("nan")

    @classmethod
    def from_proto(cls, p: Any) -> Prediction:
        timings = None
        if p.HasField("timings"):
            t = p.timings
            timings = Timings(t.queue_seconds, t.compute_seconds, t.end_to_end_seconds, t.batch_size)
        return cls(
            device_id=p.device_id,
            window_end_unix_nanos=p.window_end_unix_nanos,
            label=p.label,
            class_index=p.class_index,
            probabilities=list(p.probabilities),
            embedding=list(p.embedding),
            present_modalities=list(p.present_modalities),
            timings=timings,
            personalized=bool(getattr(p, "personalized", False)),
        )


class PredictionStream(Iterator[Prediction]):
    """Predictions as they arrive; `cancel()` (or leaving a `with` block) ends the call."""

    def __init__(self, call: Any, convert: Callable[[Any], Prediction | None]) -> None:
        self._call = call
        self._convert = convert

    def __iter__(self) -> PredictionStream:
        return self

    def __next__(self) -> Prediction:
        while True:
            try:
                message = next(self._call)
            except grpc.RpcError as e:
                if e.code() == grpc.StatusCode.CANCELLED:
                    raise StopIteration from None
                raise _grpc_error(e) from None
            prediction = self._convert(message)
            if prediction is not None:
                return prediction

    def cancel(self) -> None:
        self._call.cancel()

    def __enter__(self) -> PredictionStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()


def _grpc_error(e: grpc.RpcError) -> CrosslError:
    code = e.code()
    kind = code.name.lower() if code is not None else "unknown"
    return CrosslError(kind, e.details() or "")


class Client:
    """A crossl-serve client.

    `grpc_addr` is the gRPC listener (`host:port`, default port 50051), `http_addr` the HTTP listener
    (`host:port` or `http://host:port`, default port 8080); `api_key` is sent as
    `authorization: Bearer <key>` on every call when given.
    """

    def __init__(
        self,
        grpc_addr: str,
        http_addr: str,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
    ) -> None:
        self._channel = grpc.insecure_channel(grpc_addr)
        self._ingest = pb_grpc.IngestStub(self._channel)
        self._predictions = pb_grpc.PredictionsStub(self._channel)
        base = http_addr if "://" in http_addr else f"http://{http_addr}"
        self._http = base.rstrip("/")
        self._api_key = api_key
        self._timeout = timeout
        self._metadata: list[tuple[str, str]] = [("authorization", f"Bearer {api_key}")] if api_key else []
        self._manifest: dict[str, Any] | None = None
        self._lock = threading.Lock()

    # --- plumbing ----------------------------------------------------------------------------------

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, method: str, path: str, body: Any = None) -> Any:
        headers = {"accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["content-type"] = "application/json"
        if self._api_key:
            headers["authorization"] = f"Bearer {self._api_key}"
        request = urllib.request.Request(self._http + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:
                return json.load(response)
        except urllib.error.HTTPError as e:
            try:
                answer = json.load(e)
                kind, message = answer.get("kind", "http_error"), answer.get("error", str(e))
            except (json.JSONDecodeError, AttributeError):
                kind, message = "http_error", str(e)
            raise CrosslError(kind, message, status=e.code) from None

    @staticmethod
    def _device_path(device_id: str) -> str:
        return "/v1/devices/" + urllib.parse.quote(device_id, safe="")

    # --- model -------------------------------------------------------------------------------------

    def model(self) -> dict[str, Any]:
        """The served model's manifest (`GET /v1/model`): modalities with their channels and sample
        rates, classes, window length. Cached."""
        with self._lock:
            if self._manifest is None:
                self._manifest = self._request("GET", "/v1/model")["manifest"]
            return self._manifest

    # --- streaming ---------------------------------------------------------------------------------

    def stream(
        self,
        device_id: str,
        data: Data,
        sample_rate: float | None = None,
        chunk_seconds: float = 1.0,
        start_unix_nanos: int | None = None,
        *,
        speed: float = 1.0,
        on_chunk_error: Callable[[ChunkRejected], None] | None = None,
    ) -> Iterator[Prediction]:
        """Streams a recording as device `device_id` over one `Ingest/Stream` call and yields the
        device's predictions as they come back; ends once the server has answered every window of the
        data (after the last chunk the server delivers the windows still closing, then ends the stream).

        `data` is a mapping of modality name → array of samples × channels (a 1-D array for a
        one-channel modality), or the path of a CSV file (see `load_csv`); modalities left out are absent.
        `sample_rate` is the rate the data was recorded at (Hz); None = the model's rate per modality. It
        must equal the model's rate (resample first otherwise). Chunks hold `chunk_seconds` of each
        modality and are sent at `speed` × real time (0 = as fast as the server's rate limit allows;
        device timestamps run ahead of the server clock when `speed` > 1). `start_unix_nanos` is the
        first sample's time (default: the next whole second). A refused chunk raises `ChunkRejected`
        unless `on_chunk_error` is given, which is then called with it and the stream goes on.
        """
        manifest = self.model()
        arrays = load_csv(data, manifest) if isinstance(data, (str, os.PathLike)) else prepare_arrays(data, manifest)
        if chunk_seconds <= 0:
            raise ValueError("chunk_seconds must be positive")
        if speed < 0:
            raise ValueError("speed must be >= 0")
        specs = {m["name"]: m for m in manifest["modalities"]}
        rates: dict[str, float] = {}
        for name in arrays:
            model_rate = float(specs[name]["sample_rate_hz"])
            if sample_rate is not None and not math.isclose(sample_rate, model_rate, rel_tol=1e-6):
                raise ValueError(
                    f"{name}: data at {sample_rate} Hz, the model takes {model_rate} Hz; resample the data first"
                )
            rates[name] = model_rate
        start = start_unix_nanos if start_unix_nanos is not None else (time.time_ns() // SECOND + 1) * SECOND
        per_chunk = {name: max(1, round(rates[name] * chunk_seconds)) for name in arrays}
        steps = max((math.ceil(len(a) / per_chunk[n]) for n, a in arrays.items()), default=0)

        def requests() -> Iterator[Any]:
            yield pb.StreamRequest(hello=pb.Hello(device_id=device_id, modalities=list(arrays)))
            began = time.monotonic()
            sequence = 0
            for k in range(steps):
                if speed > 0:
                    wait = began + k * chunk_seconds / speed - time.monotonic()
                    if wait > 0:
                        time.sleep(wait)
                for name, array in arrays.items():
                    first = k * per_chunk[name]
                    piece = array[first : first + per_chunk[name]]
                    if len(piece) == 0:
                        continue
                    sequence += 1
                    yield pb.StreamRequest(
                        sequence=sequence,
                        chunk=pb.SensorChunk(
                            device_id=device_id,
                            modality=name,
                            start_unix_nanos=start + round(first * SECOND / rates[name]),
                            samples=piece.reshape(-1).tolist(),
                        ),
                    )

        call = self._ingest.Stream(requests(), metadata=self._metadata)

        def convert(response: Any) -> Prediction | None:
            kind = response.WhichOneof("kind")
            if kind == "prediction":
                return Prediction.from_proto(response.prediction)
            if kind == "chunk_error":
                error = ChunkRejected(response.chunk_error)
                if on_chunk_error is None:
                    call.cancel()
                    raise error
                on_chunk_error(error)
            return None

        return PredictionStream(call, convert)

    def watch(self, device_ids: Sequence[str] = ()) -> PredictionStream:
        """Live predictions of these devices (all devices when empty) over `Predictions/Watch`, until
        `cancel()` is called on the returned stream (or its `with` block ends)."""
        call = self._predictions.Watch(pb.WatchRequest(device_ids=list(device_ids)), metadata=self._metadata)
        return PredictionStream(call, Prediction.from_proto)

    def latest(self, device_id: str) -> Prediction | None:
        """The device's latest prediction (`Predictions/Latest`), None when it has none yet."""
        try:
            answer = self._predictions.Latest(
                pb.LatestRequest(device_id=device_id), metadata=self._metadata, timeout=self._timeout
            )
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise _grpc_error(e) from None
        return Prediction.from_proto(answer)

    # --- personalisation ---------------------------------------------------------------------------

    def label(self, device_id: str, label: str, start_unix_nanos: int, end_unix_nanos: int) -> dict[str, Any]:
        """Labels the span [start, end) of the device's timeline with one of the model's classes
        (`POST /v1/devices/{id}/labels`); the server's answer (the device's labels) is returned."""
        body = {"label": label, "start_unix_nanos": start_unix_nanos, "end_unix_nanos": end_unix_nanos}
        answer: dict[str, Any] = self._request("POST", self._device_path(device_id) + "/labels", body)
        return answer

    def labels(self, device_id: str) -> dict[str, Any]:
        """The device's labelled spans and personal head (`GET /v1/devices/{id}/labels`)."""
        answer: dict[str, Any] = self._request("GET", self._device_path(device_id) + "/labels")
        return answer

    def clear_labels(self, device_id: str) -> dict[str, Any]:
        """Forgets the device's labels and personal head (`DELETE /v1/devices/{id}/labels`)."""
        answer: dict[str, Any] = self._request("DELETE", self._device_path(device_id) + "/labels")
        return answer
