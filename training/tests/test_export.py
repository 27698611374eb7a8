import numpy as np
import onnx
import pytest
import torch

from crossl import data, export
from crossl.model import CroSSL

M, C, T = 15, 3, 125


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    model = CroSSL(M, C, 19, mean=torch.randn(M * C), std=torch.rand(M * C) + 0.5, widths=(4, 6, 8)).eval()
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    export.export_onnx(model, data.MODALITIES, path, T)
    return model, path


def test_graph_has_the_contract_inputs_and_outputs(exported):
    _, path = exported
    g = onnx.load(str(path)).graph
    assert [i.name for i in g.input] == [f"x_{m}" for m in data.MODALITIES] + ["present"]
    assert [o.name for o in g.output] == ["logits", "probabilities", "embedding"]
    dims = [d.dim_param or d.dim_value for d in g.input[0].type.tensor_type.shape.dim]
    assert dims[1:] == [3, 125] and isinstance(dims[0], str)
    assert onnx.load(str(path)).opset_import[0].version >= 17


@pytest.mark.parametrize("batch", [1, 6])
def test_ort_matches_torch(exported, batch):
    model, path = exported
    rng = np.random.default_rng(batch)
    x = (rng.standard_normal((batch, M * C, T)) * 5).astype(np.float32)
    present = (rng.random((batch, M)) < 0.6).astype(np.float32)
    present[:, 0] = 1
    assert export.max_abs_diff(model, path, data.MODALITIES, x, present) <= 1e-4


def test_ort_ignores_absent_inputs_even_nan(exported):
    _, path = exported
    session = export.ort_session(path)
    x = np.random.default_rng(0).standard_normal((2, M * C, T)).astype(np.float32)
    present = np.ones((2, M), np.float32)
    present[:, 4] = 0
    ref = export.ort_run(session, data.MODALITIES, x, present)
    x[:, 12:15] = np.nan
    got = export.ort_run(session, data.MODALITIES, x, present)
    for k in export.OUTPUT_NAMES:
        np.testing.assert_array_equal(ref[k], got[k])
    np.testing.assert_allclose(got["probabilities"].sum(axis=1), 1.0, atol=1e-5)
