"""The Open Inference Protocol checked with the reference client, tritonclient (HTTP and gRPC), against a
running crossl-serve: health, server and model metadata, and inference on golden windows
(models/crossl-dsads/golden.json), whose label and probabilities must come back. Nothing here shares code
with the Rust server."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

MODEL_DIR = Path(__file__).resolve().parents[2] / "models" / "crossl-dsads"


@pytest.fixture(scope="module")
def manifest() -> dict:
    return json.loads((MODEL_DIR / "model.json").read_text())


@pytest.fixture(scope="module")
def golden() -> dict:
    return json.loads((MODEL_DIR / "golden.json").read_text())


def fullest_case(golden: dict) -> dict:
    return max(golden["cases"], key=lambda c: len(c["modalities"]))


def sparse_case(golden: dict) -> dict:
    return min(golden["cases"], key=lambda c: len(c["modalities"]))


def window_tensors(manifest: dict, cases: list[dict]) -> dict[str, np.ndarray]:
    """One batch of golden windows as the model's inputs: `x_<modality>` [batch, channels, samples]
    (golden rows are [samples, channels], so transposed) and `present` [batch, n_modalities] with its
    columns in the manifest's modality order."""
    out: dict[str, np.ndarray] = {}
    for spec in manifest["modalities"]:
        rows = []
        for case in cases:
            samples = case["modalities"].get(spec["name"])
            if samples is None:
                rows.append(np.zeros((spec["channels"], spec["window_samples"]), dtype=np.float32))
            else:
                rows.append(np.asarray(samples, dtype=np.float32).T)
        out[spec["input"]] = np.stack(rows)
    out[manifest["inputs"]["present"]] = np.asarray([c["present"] for c in cases], dtype=np.float32)
    return out


def check_against_golden(manifest: dict, golden: dict, cases: list[dict], probabilities: np.ndarray) -> None:
    assert probabilities.shape == (len(cases), len(manifest["classes"]))
    for row, case in zip(probabilities, cases):
        np.testing.assert_allclose(row, case["probabilities"], atol=max(golden["tolerance"], 1e-6))
        assert manifest["classes"][int(np.argmax(row))] == case["label"], case["name"]


# --- HTTP ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def http(server):
    client = httpclient.InferenceServerClient(url=server.http)
    yield client
    client.close()


def http_inputs(tensors: dict[str, np.ndarray]) -> list[httpclient.InferInput]:
    inputs = []
    for name, array in tensors.items():
        tensor = httpclient.InferInput(name, list(array.shape), "FP32")
        # JSON tensors: the binary tensor data extension is not supported (docs/protocol.md).
        tensor.set_data_from_numpy(array, binary_data=False)
        inputs.append(tensor)
    return inputs


def test_http_health_and_metadata(http, manifest):
    assert http.is_server_live()
    assert http.is_server_ready()
    assert http.is_model_ready(manifest["name"])
    assert http.is_model_ready(manifest["name"], model_version=manifest["version"])
    assert not http.is_model_ready(manifest["name"], model_version="0.0.0-nope")
    server = http.get_server_metadata()
    assert server["name"] == "crossl-serve"
    assert server["version"]
    for version in ("", manifest["version"]):
        model = http.get_model_metadata(manifest["name"], model_version=version)
        assert model["name"] == manifest["name"]
        assert model["versions"] == [manifest["version"]]
        names = [i["name"] for i in model["inputs"]]
        assert names == [m["input"] for m in manifest["modalities"]] + [manifest["inputs"]["present"]]
        assert model["inputs"][0]["shape"] == [-1, 3, 125]
        assert [o["name"] for o in model["outputs"]] == ["logits", "probabilities", "embedding"]
    with pytest.raises(InferenceServerException) as missing:
        http.get_model_metadata(manifest["name"], model_version="0.0.0-nope")
    assert "0.0.0-nope" in str(missing.value)


def test_http_infer_matches_golden(http, manifest, golden):
    cases = [fullest_case(golden), sparse_case(golden)]
    result = http.infer(
        manifest["name"],
        http_inputs(window_tensors(manifest, cases)),
        outputs=[
            httpclient.InferRequestedOutput(name, binary_data=False)
            for name in ("logits", "probabilities", "embedding")
        ],
        request_id="tc-http-1",
    )
    response = result.get_response()
    assert response["id"] == "tc-http-1"
    assert response["model_version"] == manifest["version"]
    check_against_golden(manifest, golden, cases, result.as_numpy("probabilities"))
    np.testing.assert_allclose(
        result.as_numpy("logits"), [c["logits"] for c in cases], atol=max(golden["tolerance"], 1e-6)
    )
    assert result.as_numpy("embedding").shape == (2, manifest["embedding_size"])


def test_http_infer_selects_outputs_and_versions(http, manifest, golden):
    case = fullest_case(golden)
    result = http.infer(
        manifest["name"],
        http_inputs(window_tensors(manifest, [case])),
        model_version=manifest["version"],
        outputs=[httpclient.InferRequestedOutput("probabilities", binary_data=False)],
    )
    assert [o["name"] for o in result.get_response()["outputs"]] == ["probabilities"]
    assert result.as_numpy("logits") is None
    check_against_golden(manifest, golden, [case], result.as_numpy("probabilities"))
    with pytest.raises(InferenceServerException) as unknown:
        http.infer(
            manifest["name"],
            http_inputs(window_tensors(manifest, [case])),
            outputs=[httpclient.InferRequestedOutput("softmax", binary_data=False)],
        )
    assert "softmax" in str(unknown.value)
    with pytest.raises(InferenceServerException) as wrong_version:
        http.infer(manifest["name"], http_inputs(window_tensors(manifest, [case])), model_version="0.0.0-nope")
    assert "0.0.0-nope" in str(wrong_version.value)


# --- gRPC ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def grpc_client(server):
    client = grpcclient.InferenceServerClient(url=server.grpc)
    yield client
    client.close()


def grpc_inputs(tensors: dict[str, np.ndarray]) -> list[grpcclient.InferInput]:
    inputs = []
    for name, array in tensors.items():
        tensor = grpcclient.InferInput(name, list(array.shape), "FP32")
        tensor.set_data_from_numpy(array)  # sent as raw_input_contents
        inputs.append(tensor)
    return inputs


def test_grpc_health_and_metadata(grpc_client, manifest):
    assert grpc_client.is_server_live()
    assert grpc_client.is_server_ready()
    assert grpc_client.is_model_ready(manifest["name"])
    assert grpc_client.is_model_ready(manifest["name"], model_version=manifest["version"])
    server = grpc_client.get_server_metadata(as_json=True)
    assert server["name"] == "crossl-serve"
    for version in ("", manifest["version"]):
        model = grpc_client.get_model_metadata(manifest["name"], model_version=version, as_json=True)
        assert model["versions"] == [manifest["version"]]
        names = [i["name"] for i in model["inputs"]]
        assert names == [m["input"] for m in manifest["modalities"]] + [manifest["inputs"]["present"]]
        assert [int(d) for d in model["inputs"][0]["shape"]] == [-1, 3, 125]
    with pytest.raises(InferenceServerException) as missing:
        grpc_client.get_model_metadata(manifest["name"], model_version="0.0.0-nope")
    assert "NOT_FOUND" in str(missing.value.status()), missing.value
    # Methods of Triton's superset are UNIMPLEMENTED with a message.
    with pytest.raises(InferenceServerException) as config:
        grpc_client.get_model_config(manifest["name"])
    assert "UNIMPLEMENTED" in str(config.value.status())
    assert "ModelInfer" in config.value.message()


def test_grpc_infer_matches_golden(grpc_client, manifest, golden):
    cases = [fullest_case(golden), sparse_case(golden)]
    result = grpc_client.infer(manifest["name"], grpc_inputs(window_tensors(manifest, cases)), request_id="tc-grpc-1")
    response = result.get_response()
    assert response.id == "tc-grpc-1"
    assert [o.name for o in response.outputs] == ["logits", "probabilities", "embedding"]
    # Raw inputs in, raw outputs back (as Triton does).
    assert len(response.raw_output_contents) == 3
    check_against_golden(manifest, golden, cases, result.as_numpy("probabilities"))
    np.testing.assert_allclose(
        result.as_numpy("embedding"), [c["embedding"] for c in cases], atol=max(golden["tolerance"], 1e-6)
    )


def test_grpc_infer_selects_outputs(grpc_client, manifest, golden):
    case = fullest_case(golden)
    result = grpc_client.infer(
        manifest["name"],
        grpc_inputs(window_tensors(manifest, [case])),
        model_version=manifest["version"],
        outputs=[grpcclient.InferRequestedOutput("probabilities")],
    )
    assert [o.name for o in result.get_response().outputs] == ["probabilities"]
    assert result.as_numpy("logits") is None
    check_against_golden(manifest, golden, [case], result.as_numpy("probabilities"))
    with pytest.raises(InferenceServerException) as unknown:
        grpc_client.infer(
            manifest["name"],
            grpc_inputs(window_tensors(manifest, [case])),
            outputs=[grpcclient.InferRequestedOutput("softmax")],
        )
    assert "INVALID_ARGUMENT" in str(unknown.value.status())
    assert "softmax" in unknown.value.message()
