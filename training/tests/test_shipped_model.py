"""The bundled models/crossl-dsads/ against docs/model-contract.md and its own golden.json."""

import hashlib
import json
import re

import numpy as np
import onnx
import pytest

from conftest import REPO_DIR
from crossl import export

MODEL_DIR = REPO_DIR / "models" / "crossl-dsads"


@pytest.fixture(scope="module")
def manifest():
    return json.loads((MODEL_DIR / "model.json").read_text())


@pytest.fixture(scope="module")
def golden():
    return json.loads((MODEL_DIR / "golden.json").read_text())


def test_sha256_matches_manifest_and_golden(manifest, golden):
    digest = hashlib.sha256((MODEL_DIR / manifest["model_file"]).read_bytes()).hexdigest()
    assert manifest["model_sha256"] == digest
    assert golden["model_sha256"] == digest


def test_manifest_follows_the_contract(manifest):
    assert manifest["format_version"] == 1
    names = [m["name"] for m in manifest["modalities"]]
    assert len(names) == len(set(names)) == 15
    for m in manifest["modalities"]:
        assert re.fullmatch(r"[a-z0-9_]+", m["name"]) and m["input"] == f"x_{m['name']}"
        assert m["channels"] >= 1 and m["sample_rate_hz"] > 0 and m["window_samples"] >= 1
        assert abs(m["window_samples"] / m["sample_rate_hz"] - manifest["window_seconds"]) <= 1 / m["sample_rate_hz"]
    assert len(manifest["classes"]) == len(set(manifest["classes"])) == 19
    assert all(re.fullmatch(r"[a-z0-9_]+", c) for c in manifest["classes"])
    assert manifest["opset"] >= 17


def test_graph_matches_manifest(manifest):
    model = onnx.load(str(MODEL_DIR / manifest["model_file"]))
    inputs = {i.name: [d.dim_value or d.dim_param for d in i.type.tensor_type.shape.dim] for i in model.graph.input}
    expected = {m["input"]: [m["channels"], m["window_samples"]] for m in manifest["modalities"]}
    expected[manifest["inputs"]["present"]] = [len(manifest["modalities"])]
    assert set(inputs) == set(expected)
    for name, dims in expected.items():
        assert isinstance(inputs[name][0], str) and inputs[name][1:] == dims, name
    outputs = {o.name: [d.dim_value or d.dim_param for d in o.type.tensor_type.shape.dim] for o in model.graph.output}
    o = manifest["outputs"]
    assert outputs[o["logits"]][1:] == [len(manifest["classes"])]
    assert outputs[o["probabilities"]][1:] == [len(manifest["classes"])]
    assert outputs[o["embedding"]][1:] == [manifest["embedding_size"]]
    assert len(outputs) == 3


def test_golden_cases_cover_real_data_and_absent_modalities(manifest, golden):
    cases = golden["cases"]
    assert len(cases) >= 8
    assert len({c["source"].split("/")[2] for c in cases}) >= 3  # subjects
    assert len({c["true_label"] for c in cases}) >= 8
    names = [m["name"] for m in manifest["modalities"]]
    partial = 0
    for c in cases:
        assert c["present"] == [1 if n in c["modalities"] else 0 for n in names]
        for body in c["modalities"].values():
            assert np.asarray(body).shape == (125, 3)  # samples-major
        partial += sum(c["present"]) < len(names)
    assert partial >= 3


def test_onnxruntime_reproduces_golden_outputs(manifest, golden):
    session = export.ort_session(MODEL_DIR / manifest["model_file"])
    names = [m["name"] for m in manifest["modalities"]]
    for case in golden["cases"]:
        x, present = export.golden_inputs(case, names, 3, 125)
        got = export.ort_run(session, names, x, present)
        for k in ("logits", "probabilities", "embedding"):
            diff = np.abs(got[k][0] - np.asarray(case[k], dtype=np.float32)).max()
            assert diff <= golden["tolerance"], (case["name"], k, diff)
        assert manifest["classes"][int(got["logits"][0].argmax())] == case["label"]


def test_golden_cases_batched_together_give_the_same_outputs(manifest, golden):
    """The server batches windows from many devices: one batch must equal the rows run one by one."""
    session = export.ort_session(MODEL_DIR / manifest["model_file"])
    names = [m["name"] for m in manifest["modalities"]]
    pairs = [export.golden_inputs(c, names, 3, 125) for c in golden["cases"]]
    x = np.concatenate([p[0] for p in pairs])
    present = np.concatenate([p[1] for p in pairs])
    got = export.ort_run(session, names, x, present)
    for i, case in enumerate(golden["cases"]):
        diff = np.abs(got["logits"][i] - np.asarray(case["logits"], dtype=np.float32)).max()
        assert diff <= golden["tolerance"], (case["name"], diff)
