import torch

from crossl.model import vicreg_loss


def test_invariance_is_zero_for_identical_views():
    z = torch.randn(64, 32)
    _, parts = vicreg_loss(z, z.clone())
    assert parts["invariance"] == 0.0


def test_invariance_grows_with_distance():
    z = torch.randn(64, 32)
    _, near = vicreg_loss(z, z + 0.1)
    _, far = vicreg_loss(z, z + 1.0)
    assert 0 < near["invariance"] < far["invariance"]


def test_variance_term_penalises_collapse():
    collapsed = torch.ones(64, 32) + 1e-3 * torch.randn(64, 32)
    _, parts = vicreg_loss(collapsed, collapsed)
    assert parts["variance"] > 0.9
    spread = torch.randn(4096, 32) * 3
    _, parts = vicreg_loss(spread, spread)
    assert parts["variance"] == 0.0


def test_covariance_term_penalises_correlated_features():
    torch.manual_seed(0)
    independent = torch.randn(4096, 8)
    correlated = independent[:, :1].repeat(1, 8)
    _, ind = vicreg_loss(independent, independent)
    _, cor = vicreg_loss(correlated, correlated)
    assert ind["covariance"] < 0.05 < cor["covariance"]


def test_weights_combine_the_terms():
    torch.manual_seed(0)
    z1, z2 = torch.randn(32, 16), torch.randn(32, 16)
    loss, p = vicreg_loss(z1, z2, invariance=2.0, variance=3.0, covariance=5.0)
    expected = 2.0 * p["invariance"] + 3.0 * p["variance"] + 5.0 * p["covariance"]
    assert abs(loss.item() - expected) < 1e-4


def test_gradients_flow():
    z1 = torch.randn(32, 16, requires_grad=True)
    z2 = torch.randn(32, 16, requires_grad=True)
    loss, _ = vicreg_loss(z1, z2)
    loss.backward()
    assert torch.isfinite(z1.grad).all() and z1.grad.abs().sum() > 0
