import pytest
import torch

from crossl.model import CroSSL, ModalityEncoders, latent_masks

M, C, T, K = 15, 3, 125, 19


def tiny(**kw) -> CroSSL:
    torch.manual_seed(0)
    return CroSSL(M, C, K, widths=(4, 6, 8), **kw).eval()


def test_shapes():
    model = tiny()
    x = torch.randn(5, M * C, T)
    logits, z = model(x, torch.ones(5, M))
    assert logits.shape == (5, K)
    assert z.shape == (5, 32)
    assert model.encode(x).shape == (5, M, 8)


def test_embedding_is_layer_normalised():
    z = tiny()(torch.randn(7, M * C, T), torch.ones(7, M))[1]
    torch.testing.assert_close(z.mean(dim=1), torch.zeros(7), atol=1e-5, rtol=0)


def test_grouped_encoders_keep_modalities_independent():
    """The grouped conv stack must behave as M separate encoders: changing one modality's input
    changes that modality's embedding only."""
    enc = ModalityEncoders(M, C, (4, 6, 8)).eval()
    x = torch.randn(3, M * C, T)
    e = enc(x)
    x2 = x.clone()
    x2[:, 6:9] += torch.randn(3, 3, T)  # modality 2
    e2 = enc(x2)
    changed = (e2 - e).abs().amax(dim=(0, 2)) > 1e-6
    assert changed.tolist() == [m == 2 for m in range(M)]


@pytest.mark.parametrize("absent", [0, 7, 14])
def test_absent_modality_does_not_influence_outputs(absent):
    model = tiny()
    x = torch.randn(4, M * C, T)
    present = torch.ones(4, M)
    present[:, absent] = 0
    ref_logits, ref_z = model(x, present)
    for fill in (torch.randn(4, C, T) * 100, torch.full((4, C, T), float("nan")), torch.full((4, C, T), float("inf"))):
        x2 = x.clone()
        x2[:, absent * C : (absent + 1) * C] = fill
        logits, z = model(x2, present)
        assert torch.isfinite(logits).all()
        assert torch.equal(logits, ref_logits) and torch.equal(z, ref_z)


def test_present_modality_does_influence_outputs():
    model = tiny()
    x = torch.randn(2, M * C, T)
    present = torch.ones(2, M)
    x2 = x.clone()
    x2[:, 0:3] += 5
    assert not torch.allclose(model(x, present)[0], model(x2, present)[0])


def test_mask_is_per_row():
    model = tiny()
    x = torch.randn(2, M * C, T)
    present = torch.ones(2, M)
    present[1, 3] = 0
    x2 = x.clone()
    x2[:, 9:12] = float("nan")
    logits, _ = model(x2, present)
    assert torch.isnan(logits[0]).any() and torch.isfinite(logits[1]).all()


def test_normalisation_constants_are_inside_the_model():
    torch.manual_seed(0)
    mean, std = torch.randn(M * C) * 10, torch.rand(M * C) + 0.5
    model = CroSSL(M, C, K, mean=mean, std=std, widths=(4, 6, 8)).eval()
    plain = CroSSL(M, C, K, widths=(4, 6, 8)).eval()
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if k not in ("mean", "std")}, strict=False)
    x = torch.randn(2, M * C, T)
    raw = x * std[None, :, None] + mean[None, :, None]
    torch.testing.assert_close(model(raw, torch.ones(2, M))[0], plain(x, torch.ones(2, M))[0], atol=1e-4, rtol=1e-4)


def test_latent_masks_keep_at_least_one_and_follow_coverage():
    gen = torch.Generator().manual_seed(0)
    keep = latent_masks(20000, M, 0.05, gen)
    assert (keep.sum(dim=1) >= 1).all()
    keep = latent_masks(20000, M, 0.7, gen)
    assert abs(keep.mean().item() - 0.7) < 0.01


def test_centred_channels_ignore_a_constant_offset():
    """Channels marked for centring (the magnetometers in the shipped model) lose their per-window mean
    inside the model: adding a constant to them changes nothing; other channels are not centred."""
    from crossl import data

    centre = torch.from_numpy(data.centred_channels())
    assert int(centre.sum()) == 15 and data.MODALITIES[2] == "torso_mag" and centre[6:9].tolist() == [1, 1, 1]
    model = tiny(centre=centre)
    x = torch.randn(3, M * C, T)
    ref = model(x, torch.ones(3, M))[0]
    shifted = x + 5.0 * centre[None, :, None]
    torch.testing.assert_close(model(shifted, torch.ones(3, M))[0], ref, atol=1e-4, rtol=0)
    acc_shifted = x.clone()
    acc_shifted[:, 0:3] += 5.0  # torso_acc: gravity's direction matters, so it is not centred
    assert not torch.allclose(model(acc_shifted, torch.ones(3, M))[0], ref, atol=1e-4)
