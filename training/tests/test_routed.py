"""RoutedCroSSL: the no-magnetometer expert answers exactly when no magnetometer is present; presence
semantics survive the routing and the ONNX export; the checkpoint config rebuilds the same model."""

import numpy as np
import pytest
import torch

from crossl import data, export
from crossl.evaluate import modality_groups
from crossl.model import CroSSL, RoutedCroSSL, build_from_config

M, C, T = 15, 3, 125
MAG = data.modalities_of_sensor("mag")


def routed() -> RoutedCroSSL:
    torch.manual_seed(0)
    general = CroSSL(M, C, 19, mean=torch.randn(M * C), std=torch.rand(M * C) + 0.5, widths=(4, 6, 8)).eval()
    expert = CroSSL(M, C, 19, mean=torch.randn(M * C), std=torch.rand(M * C) + 0.5, widths=(4, 6, 8)).eval()
    return RoutedCroSSL(general, expert, MAG).eval()


def test_mag_indices_are_the_magnetometers():
    assert [data.MODALITIES[i] for i in MAG] == [f"{u}_mag" for u in data.UNITS]


@torch.no_grad()
def test_expert_answers_only_when_every_magnetometer_is_absent():
    model = routed()
    x = torch.randn(3, M * C, T)
    present = torch.ones(3, M)
    present[1, MAG] = 0  # no magnetometer -> expert
    present[2, MAG[1:]] = 0  # one magnetometer left -> general
    logits, z = model(x, present)
    g_logits, g_z = model.general(x, present)
    e_logits, e_z = model.expert(x, present)
    for row, ref_logits, ref_z in ((0, g_logits, g_z), (1, e_logits, e_z), (2, g_logits, g_z)):
        torch.testing.assert_close(logits[row], ref_logits[row], rtol=0, atol=0)
        torch.testing.assert_close(z[row], ref_z[row], rtol=0, atol=0)
    assert not torch.equal(g_logits[1], e_logits[1])  # the two really are different models


@torch.no_grad()
def test_absent_inputs_cannot_reach_the_outputs_of_either_route():
    model = routed()
    x = torch.randn(2, M * C, T)
    present = torch.ones(2, M)
    present[0, MAG] = 0
    present[:, 0] = 0
    ref = model(x, present)
    x[:, 0:3] = float("nan")
    x[0, [c for i in MAG for c in range(i * C, (i + 1) * C)]] = float("inf")
    got = model(x, present)
    for a, b in zip(ref, got, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_checkpoint_config_rebuilds_the_same_model():
    model = routed()
    clone = build_from_config(model.config)
    assert isinstance(clone, RoutedCroSSL)
    clone.load_state_dict(model.state_dict())
    x, present = torch.randn(2, M * C, T), torch.ones(2, M)
    present[0, MAG] = 0
    with torch.no_grad():
        torch.testing.assert_close(clone.eval()(x, present)[0], model(x, present)[0], rtol=0, atol=0)
    assert isinstance(build_from_config(model.general.config), CroSSL)


def test_onnx_export_routes_like_torch_and_ignores_absent_nan(tmp_path):
    model = routed()
    path = tmp_path / "model.onnx"
    export.export_onnx(model, data.MODALITIES, path, T)
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((4, M * C, T)) * 5).astype(np.float32)
    present = np.ones((4, M), np.float32)
    present[1, MAG] = 0
    present[2, MAG[:2]] = 0
    present[3, :] = 0
    present[3, 0] = 1  # torso acc only: no magnetometer -> expert
    assert export.max_abs_diff(model, path, data.MODALITIES, x, present) <= 1e-4
    session = export.ort_session(path)
    ref = export.ort_run(session, data.MODALITIES, x, present)
    x[1, [c for i in MAG for c in range(i * C, (i + 1) * C)]] = np.nan
    got = export.ort_run(session, data.MODALITIES, x, present)
    for k in export.OUTPUT_NAMES:
        np.testing.assert_array_equal(ref[k], got[k])


@pytest.mark.parametrize("pattern", ["product", "mixed"])
def test_without_sensors_never_keeps_a_magnetometer_nor_empties_a_window(pattern):
    groups = modality_groups()
    keep = groups.dropout_masks(4000, 0.3, torch.Generator().manual_seed(0), pattern)
    out = groups.without_sensors(keep, ("mag",))
    assert out[:, MAG].sum() == 0
    assert (out.sum(dim=1) > 0).all()
    others = [i for i in range(M) if i not in MAG]
    had_only_mag = keep[:, others].sum(dim=1) == 0
    assert had_only_mag.any()  # the mixed/product draws do produce magnetometer-only windows ...
    assert (out[had_only_mag][:, others] == 1).all()  # ... which get every other modality instead
    torch.testing.assert_close(out[~had_only_mag][:, others], keep[~had_only_mag][:, others])
