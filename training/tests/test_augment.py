import torch

from crossl.train import Augment, random_rotations

B, UNITS, SENSORS, T = 6, 5, 3, 125


def test_random_rotations_are_rotations_within_the_angle():
    r = random_rotations(500, 30.0, torch.Generator().manual_seed(0))
    torch.testing.assert_close(r @ r.transpose(1, 2), torch.eye(3).expand(500, 3, 3), atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.linalg.det(r), torch.ones(500), atol=1e-5, rtol=0)
    angle = torch.rad2deg(torch.arccos(((r.diagonal(dim1=1, dim2=2).sum(-1) - 1) / 2).clamp(-1, 1)))
    assert angle.max() <= 30.0 + 1e-3 and angle.max() > 20.0


def test_rotation_is_one_per_unit_shared_by_its_sensors():
    """Rotation only: vector lengths are kept, and the angle between a unit's acc and mag vectors (same
    housing, same rotation) is kept too -- while a different unit gets a different rotation."""
    x = torch.randn(B, UNITS * SENSORS * 3, T)
    y = Augment(max_rotation_deg=30.0, scale_sd=0.0)(x, torch.Generator().manual_seed(1))
    xv, yv = x.view(B, UNITS, SENSORS, 3, T), y.view(B, UNITS, SENSORS, 3, T)
    torch.testing.assert_close(yv.norm(dim=3), xv.norm(dim=3), atol=1e-4, rtol=0)
    dot = lambda v: (v[:, :, 0] * v[:, :, 2]).sum(dim=2)  # acc . mag per unit and time  # noqa: E731
    torch.testing.assert_close(dot(yv), dot(xv), atol=1e-4, rtol=0)
    assert not torch.allclose(y, x)


def test_scale_is_one_gain_per_modality_and_off_means_identity():
    x = torch.rand(B, UNITS * SENSORS * 3, T) + 0.5
    y = Augment(max_rotation_deg=0.0, scale_sd=0.1)(x, torch.Generator().manual_seed(2))
    ratio = (y / x).view(B, UNITS * SENSORS, 3 * T)
    torch.testing.assert_close(ratio, ratio[:, :, :1].expand_as(ratio), atol=1e-5, rtol=0)
    assert ratio.std() > 0.01
    assert torch.equal(Augment(0.0, 0.0)(x, torch.Generator()), x)
