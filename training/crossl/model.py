"""CroSSL: per-modality encoders -> latent (presence) mask -> aggregator -> global embedding (-> head).

Deldari et al., "CroSSL: Cross-modal Self-Supervised Learning for Time-series through Latent Masking",
WSDM 2024. The M per-modality CNN encoders are run as one grouped Conv1d stack (groups = M): each group only
sees its own modality's channels, so this is the same function as M separate encoders, just one kernel launch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

OFFICIAL_WIDTHS = (24, 48, 96)
SMALL_WIDTHS = (8, 16, 32)
KERNELS = (24, 16, 8)


class GroupedLayerNorm(nn.Module):
    """LayerNorm over each modality's channels at every time step (Keras LayerNormalization on [T, C])."""

    def __init__(self, n_groups: int, channels: int, eps: float = 1e-3):
        super().__init__()
        self.n_groups, self.channels, self.eps = n_groups, channels, eps
        self.weight = nn.Parameter(torch.ones(n_groups, channels, 1))
        self.bias = nn.Parameter(torch.zeros(n_groups, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, G*C, T]
        # F.layer_norm over the last axis is one fused kernel; ~2x faster on CPU than spelling it out.
        h = x.unflatten(1, (self.n_groups, self.channels)).transpose(2, 3)  # [B, G, T, C]
        h = F.layer_norm(h, (self.channels,), eps=self.eps)
        h = torch.addcmul(self.bias.transpose(1, 2), h, self.weight.transpose(1, 2))
        return h.transpose(2, 3).flatten(1, 2)


class ModalityEncoders(nn.Module):
    """M independent encoders: [Conv1d 'same' -> LayerNorm -> PReLU -> Dropout] x 3 -> global average pool.

    Dropout drops whole feature channels for a window (Dropout1d) rather than single values: on CPU the
    per-element random mask cost about a third of a training step; documented as a deviation."""

    def __init__(
        self,
        n_modalities: int,
        channels: int,
        widths: tuple[int, ...] = OFFICIAL_WIDTHS,
        kernels: tuple[int, ...] = KERNELS,
        dropout: float = 0.1,
    ):
        super().__init__()
        self.n_modalities = n_modalities
        layers: list[nn.Module] = []
        c_in = channels
        for width, kernel in zip(widths, kernels, strict=True):
            m = n_modalities
            layers += [
                nn.Conv1d(m * c_in, m * width, kernel, padding="same", groups=m),
                GroupedLayerNorm(m, width),
                nn.PReLU(m * width),
                nn.Dropout1d(dropout),
            ]
            c_in = width
        self.layers = nn.Sequential(*layers)
        self.out_features = c_in

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, M*C, T] -> [B, M, D]
        return self.layers(x).unflatten(1, (self.n_modalities, self.out_features)).mean(dim=-1)

    def conv_weights(self) -> list[torch.Tensor]:
        return [m.weight for m in self.layers if isinstance(m, nn.Conv1d)]


class Aggregator(nn.Module):
    """Flatten(M x D) -> 64 ReLU -> 32 ReLU -> 32 -> LayerNorm: the global embedding."""

    def __init__(self, n_modalities: int, features: int, hidden: tuple[int, int] = (64, 32), embedding_size: int = 32):
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(n_modalities * features, hidden[0]),
            nn.ReLU(),
            nn.Linear(hidden[0], hidden[1]),
            nn.ReLU(),
            nn.Linear(hidden[1], embedding_size),
            nn.LayerNorm(embedding_size),
        )

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        return self.net(e)


def mask_embeddings(e: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Zero whole modality embeddings where keep[b, m] is 0. `where`, not multiply, so NaN/inf cannot leak."""
    return torch.where(keep[:, :, None] > 0.5, e, 0.0)


class CroSSL(nn.Module):
    """Takes RAW sensor units [B, M*C, T] (centring mask and normalisation constants are buffers) and a
    presence mask [B, M]."""

    def __init__(
        self,
        n_modalities: int,
        channels: int,
        n_classes: int,
        mean: torch.Tensor | None = None,
        std: torch.Tensor | None = None,
        widths: tuple[int, ...] = SMALL_WIDTHS,
        kernels: tuple[int, ...] = KERNELS,
        dropout: float = 0.1,
        embedding_size: int = 32,
        head_hidden: int = 64,
        centre: torch.Tensor | None = None,
    ):
        super().__init__()
        self.config = dict(
            n_modalities=n_modalities,
            channels=channels,
            n_classes=n_classes,
            widths=tuple(widths),
            kernels=tuple(kernels),
            dropout=dropout,
            embedding_size=embedding_size,
            head_hidden=head_hidden,
        )
        mc = n_modalities * channels
        self.register_buffer("mean", torch.zeros(1, mc, 1) if mean is None else mean.reshape(1, mc, 1).float())
        self.register_buffer("std", torch.ones(1, mc, 1) if std is None else std.reshape(1, mc, 1).float())
        # 1 = remove this channel's per-window mean first (data.centred_channels says which and why).
        self.register_buffer("centre", torch.zeros(1, mc, 1) if centre is None else centre.reshape(1, mc, 1).float())
        self.encoders = ModalityEncoders(n_modalities, channels, widths, kernels, dropout)
        self.aggregator = Aggregator(n_modalities, self.encoders.out_features, embedding_size=embedding_size)
        if head_hidden > 0:
            self.head = nn.Sequential(
                nn.Linear(embedding_size, head_hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(head_hidden, n_classes)
            )
        else:
            self.head = nn.Linear(embedding_size, n_classes)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Raw [B, M*C, T] -> per-modality embeddings [B, M, D] (not yet masked)."""
        x = x - self.centre * x.mean(dim=-1, keepdim=True)
        return self.encoders((x - self.mean) / self.std)

    def embed(self, e: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Per-modality embeddings + presence/latent mask -> global embedding [B, embedding_size]."""
        return self.aggregator(mask_embeddings(e, keep))

    def forward(self, x: torch.Tensor, present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.embed(self.encode(x), present)
        return self.head(z), z

    def conv_l2(self) -> torch.Tensor:
        """Keras-style kernel_regularizer l2: sum of squared conv kernels (scaled by the caller)."""
        return sum(w.pow(2).sum() for w in self.encoders.conv_weights())


class RoutedCroSSL(nn.Module):
    """Two fine-tuned CroSSL models (from one pre-training, or the expert's from its own): `general`
    (trained with modality dropout) answers whenever any of the `route` modalities is present; `expert`
    (trained with those modalities always absent) answers when all of them are absent. Both respect the presence mask, so an absent
    modality's input still cannot reach the outputs. Why: one small model trained on every dropout shape
    scored far below a dedicated model without magnetometers on some subjects (docs/training.md)."""

    def __init__(self, general: CroSSL, expert: CroSSL, route: list[int]):
        super().__init__()
        self.general, self.expert = general, expert
        self.config = {**general.config, "expert_when_absent": list(route)}
        self.register_buffer("route", torch.zeros(general.config["n_modalities"]))
        self.route[route] = 1.0

    def forward(self, x: torch.Tensor, present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        use_expert = ((present > 0.5).float() * self.route).sum(dim=1, keepdim=True) == 0
        g_logits, g_z = self.general(x, present)
        e_logits, e_z = self.expert(x, present)
        return torch.where(use_expert, e_logits, g_logits), torch.where(use_expert, e_z, g_z)


def build_from_config(config: dict) -> nn.Module:
    """An untrained model of a checkpoint's config (weights and normalisation buffers come from its state)."""
    cfg = dict(config)
    route = cfg.pop("expert_when_absent", None)
    if route is None:
        return CroSSL(**cfg)
    return RoutedCroSSL(CroSSL(**cfg), CroSSL(**cfg), route)


def latent_masks(batch: int, n_modalities: int, coverage: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Keep each modality's embedding with probability `coverage`, per sample; always keep at least one."""
    keep = (torch.rand(batch, n_modalities, generator=generator) < coverage).float()
    empty = keep.sum(dim=1) == 0
    if empty.any():
        pick = torch.randint(n_modalities, (int(empty.sum()),), generator=generator)
        keep[empty, pick] = 1.0
    return keep


def vicreg_loss(
    z1: torch.Tensor,
    z2: torch.Tensor,
    invariance: float = 10.0,
    variance: float = 10.0,
    covariance: float = 100.0,
    eps: float = 1e-4,
) -> tuple[torch.Tensor, dict[str, float]]:
    """VICReg (Bardes et al., 2022): invariance (MSE) + variance hinge at std 1 + off-diagonal covariance."""
    n, d = z1.shape
    inv = F.mse_loss(z1, z2)
    z1, z2 = z1 - z1.mean(dim=0), z2 - z2.mean(dim=0)
    std1, std2 = torch.sqrt(z1.var(dim=0) + eps), torch.sqrt(z2.var(dim=0) + eps)
    var = (F.relu(1 - std1).mean() + F.relu(1 - std2).mean()) / 2
    cov1, cov2 = (z1.T @ z1) / (n - 1), (z2.T @ z2) / (n - 1)
    off = ~torch.eye(d, dtype=torch.bool, device=z1.device)
    cov = cov1[off].pow(2).sum() / d + cov2[off].pow(2).sum() / d
    loss = invariance * inv + variance * var + covariance * cov
    return loss, {"invariance": inv.item(), "variance": var.item(), "covariance": cov.item()}
