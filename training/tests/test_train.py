"""train_classifier: how the fine-tuning learning rate is split between the pre-trained body and the head."""

import numpy as np
import pytest
import torch

from crossl.evaluate import modality_groups
from crossl.model import CroSSL
from crossl.train import ClassifierConfig, train_classifier

M, C, T = 15, 3, 125


def _tiny_task():
    torch.manual_seed(0)
    model = CroSSL(M, C, 19, mean=torch.zeros(M * C), std=torch.ones(M * C), widths=(4, 6, 8))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, M * C, T)).astype(np.float32)
    y = rng.integers(0, 19, 40)
    return model, x, y


def _moved(before: dict, model: CroSSL) -> dict[str, bool]:
    return {k: not torch.equal(v, before[k]) for k, v in model.state_dict().items() if v.is_floating_point()}


@pytest.mark.parametrize("scale", [0.0, 1.0])
def test_pretrained_lr_scale_applies_to_the_body_only(scale):
    model, x, y = _tiny_task()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = ClassifierConfig(min_steps=5, epochs=1, pretrained_lr_scale=scale)
    info = train_classifier(model, x, y, cfg, modality_groups(), 0, False, "test")
    assert info["steps"] == 5
    moved = _moved(before, model)
    head = [k for k in moved if k.startswith("head.")]
    body = [k for k in moved if k.startswith(("encoders.", "aggregator."))]
    assert head and body
    assert all(moved[k] for k in head)  # the head always trains at lr
    assert all(moved[k] == (scale > 0) for k in body)
    assert not any(moved[k] for k in ("mean", "std"))  # normalisation constants are data, not weights
