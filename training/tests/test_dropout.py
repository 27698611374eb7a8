"""Modality dropout for classifier training: the missing-data shapes it draws."""

import pytest
import torch

from crossl import data
from crossl.evaluate import modality_groups

N = 20_000


def _masks(pattern: str) -> torch.Tensor:
    return modality_groups().dropout_masks(N, 0.3, torch.Generator().manual_seed(0), pattern)


def _shapes(keep: torch.Tensor) -> dict[str, float]:
    """Fractions of samples with: every modality; all five units but a whole sensor type off; all three
    sensor types but a whole unit off."""
    groups = modality_groups()
    units, sensors = torch.tensor(groups.unit_of), torch.tensor(groups.sensor_of)
    unit_any = torch.stack([keep[:, units == u].amax(1) for u in range(len(data.UNITS))], 1)
    sensor_any = torch.stack([keep[:, sensors == s].amax(1) for s in range(len(data.SENSORS))], 1)
    full = keep.amin(1) == 1
    return {
        "all": full.float().mean().item(),
        "sensor_type_off": ((unit_any.amin(1) == 1) & (sensor_any.amin(1) == 0)).float().mean().item(),
        "unit_off": ((sensor_any.amin(1) == 1) & (unit_any.amin(1) == 0)).float().mean().item(),
    }


@pytest.mark.parametrize("pattern", ["product", "mixed"])
def test_masks_are_never_empty_and_whole_units_times_whole_sensor_types(pattern):
    keep = _masks(pattern)
    assert keep.shape == (N, len(data.MODALITIES))
    assert set(keep.unique().tolist()) <= {0.0, 1.0}
    assert (keep.sum(1) > 0).all()
    # A kept modality's unit and sensor type are each kept: the mask is an outer product per sample.
    groups = modality_groups()
    grid = torch.zeros(N, len(data.UNITS), len(data.SENSORS))
    grid[:, groups.unit_of, groups.sensor_of] = keep
    outer = grid.amax(2, keepdim=True) * grid.amax(1, keepdim=True)
    torch.testing.assert_close(grid, outer)


def test_mixed_draws_all_units_without_a_sensor_type_far_more_often():
    """A deployment without magnetometers sends all five units, acc + gyro: the product pattern almost never
    draws that shape (all five units kept is 1 in 32), the mixed one makes it a fair share of the batches."""
    product, mixed = _shapes(_masks("product")), _shapes(_masks("mixed"))
    # Expected shares: units each kept w.p. 1/2 (all five: 1/32), sensor types likewise (all three: 1/8).
    assert product["all"] == pytest.approx(0.3 + 0.7 / 32 / 8, abs=0.01)
    assert product["sensor_type_off"] == pytest.approx(0.7 / 32 * 7 / 8, abs=0.01)
    assert mixed["sensor_type_off"] == pytest.approx(0.7 * (1 / 3 + 1 / 3 / 32) * 7 / 8, abs=0.01)
    assert mixed["unit_off"] == pytest.approx(0.7 * (1 / 3 + 1 / 3 / 8) * 31 / 32, abs=0.01)
    assert mixed["all"] == pytest.approx(0.3 + 0.7 / 3 * (1 / 32 + 1 / 8 + 1 / 256), abs=0.01)


def test_unknown_pattern_is_an_error():
    with pytest.raises(ValueError, match="dropout pattern"):
        modality_groups().dropout_masks(4, 0.3, torch.Generator().manual_seed(0), "sideways")


def test_absent_sensors_in_every_window_or_in_a_fraction_of_them():
    from crossl.train import ClassifierConfig, with_absent_sensors

    groups = modality_groups()
    mag = torch.tensor(data.modalities_of_sensor("mag"))
    keep = torch.ones(4000, len(data.MODALITIES))
    gen = torch.Generator().manual_seed(0)
    state = gen.get_state()
    every = with_absent_sensors(keep, groups, ClassifierConfig(absent_sensors=("mag",)), gen)
    assert every[:, mag].sum() == 0 and torch.equal(gen.get_state(), state), "the expert's draws are unchanged"
    some = with_absent_sensors(keep, groups, ClassifierConfig(absent_sensors=("mag",), p_absent_windows=0.25), gen)
    without = some[:, mag].sum(dim=1) == 0
    assert 0.2 < without.float().mean() < 0.3
    assert torch.equal(some[~without], keep[~without]) and some[without].sum(dim=1).eq(10).all()
    assert torch.equal(keep, torch.ones_like(keep)), "the input mask is not modified"
    assert torch.equal(with_absent_sensors(keep, groups, ClassifierConfig(), gen), keep)
