"""Training loops: VICReg pre-training with latent masking, and classifier training (probe / fine-tune)."""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from .model import CroSSL, latent_masks, vicreg_loss


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def seed_everything(seed: int) -> None:
    np.random.seed(seed)
    torch.manual_seed(seed)


def random_state() -> dict:
    """The global numpy and torch random state, in types `torch.load(weights_only=True)` accepts."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"numpy": [name, keys.tolist(), pos, has_gauss, cached], "torch": torch.get_rng_state()}


def set_random_state(state: dict) -> None:
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])


def pretraining_key(cfg: PretrainConfig, model: CroSSL, hop: int, subjects: list[str], seed: int) -> dict:
    """Everything that shapes a pre-training: a checkpoint is reused only when all of it is the same (else it
    is silently stale)."""
    return {"pretrain": asdict(cfg), "model": model.config, "hop": hop, "subjects": subjects, "seed": seed}


def finished_pretraining(ckpt: Path, key: dict, epochs: int) -> dict | None:
    """What `pretrain` saved at `ckpt` when it was made with `key` and ran all `epochs`; else None."""
    saved = torch.load(ckpt) if ckpt.exists() else {}
    return saved if saved.get("key") == key and len(saved.get("history", [])) == epochs else None


@dataclass
class PretrainConfig:
    epochs: int = 10
    batch_size: int = 256
    lr: float = 1e-3
    coverage: float = 0.9
    l2: float = 1e-4
    invariance: float = 10.0
    variance: float = 10.0
    covariance: float = 100.0
    augment: Augment | None = None


@dataclass
class ClassifierConfig:
    """End-to-end training runs `epochs` over the labelled set, but at least `min_steps` optimiser steps (so
    1 % labels still get enough updates) and at most `max_passes` sample passes (so 100 % stays affordable
    on a CPU). A frozen probe only trains the head on cached embeddings: it always gets `probe_steps`."""

    epochs: int = 10
    min_steps: int = 500
    max_passes: int = 100_000
    batch_size: int = 64
    small_batch_size: int = 32
    probe_steps: int = 1500
    lr: float = 1e-3
    l2: float = 1e-4
    modality_dropout: bool = True
    p_all_present: float = 0.3
    dropout_pattern: str = "mixed"
    # Sensor types masked in every training window (after dropout): how the no-magnetometer expert is trained.
    absent_sensors: tuple[str, ...] = ()
    # Fraction of training windows absent_sensors applies to (1.0: every window, the expert; below: one
    # network that sees those sensors missing more often than modality dropout alone makes them).
    p_absent_windows: float = 1.0
    # End-to-end training from a pre-trained model: learning rate of the encoders and aggregator relative to
    # lr (the freshly initialised head always trains at lr). 1.0 trains everything alike, as from scratch.
    pretrained_lr_scale: float = 1.0
    augment: Augment | None = None

    def batch(self, n: int) -> int:
        return min(n, self.small_batch_size if n < 1000 else self.batch_size)

    def steps(self, n: int, frozen: bool) -> int:
        if frozen:
            return self.probe_steps
        bs = self.batch(n)
        return max(self.min_steps, min(self.max_passes // bs, self.epochs * math.ceil(n / bs)))


@dataclass
class Augment:
    """Input augmentation for the shapes of between-subject shift in body-worn data: each unit sits on the body
    at a slightly different orientation (one random rotation per window and unit, applied alike to that unit's
    acc, gyro and mag axes -- they share a housing) and with a different gain (one random scale per window and
    modality). Without it, a model trained on five subjects leaned on their magnetometer readings and lost
    ~0.1 macro-F1 on the sixth (docs/training.md). x is RAW units [B, units * sensors * 3, T]."""

    max_rotation_deg: float = 30.0
    scale_sd: float = 0.1
    n_units: int = 5
    n_sensors: int = 3

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        b, _, t = x.shape
        u, s = self.n_units, self.n_sensors
        if self.max_rotation_deg > 0:
            r = random_rotations(b * u, self.max_rotation_deg, generator).view(b, u, 3, 3).to(x.device)
            x = torch.einsum("buij,busjt->busit", r, x.view(b, u, s, 3, t)).reshape(b, -1, t)
        if self.scale_sd > 0:
            gain = 1 + self.scale_sd * torch.randn(b, u * s, 1, 1, generator=generator)
            x = (x.view(b, u * s, 3, t) * gain.to(x.device)).view(b, -1, t)
        return x


def random_rotations(n: int, max_deg: float, generator: torch.Generator) -> torch.Tensor:
    """n rotation matrices [n, 3, 3] about uniformly random axes by angles uniform in [-max_deg, max_deg]
    (Rodrigues' formula)."""
    axis = F.normalize(torch.randn(n, 3, generator=generator), dim=1)
    angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(max_deg)
    k = torch.zeros(n, 3, 3)
    k[:, 0, 1], k[:, 0, 2], k[:, 1, 2] = -axis[:, 2], axis[:, 1], -axis[:, 0]
    k = k - k.transpose(1, 2)
    sin, cos = angle.sin()[:, None, None], angle.cos()[:, None, None]
    return torch.eye(3) + sin * k + (1 - cos) * (k @ k)


@dataclass
class ModalityGroups:
    """Which unit and which sensor type each modality belongs to (indices), for structured dropout."""

    unit_of: list[int]
    sensor_of: list[int]
    sensor_names: list[str] = field(default_factory=list)
    _tensors: dict = field(default_factory=dict, repr=False)

    def without_sensors(self, keep: torch.Tensor, sensors: tuple[str, ...]) -> torch.Tensor:
        """keep with every modality of the named sensor types masked; a window left with nothing gets every
        other modality (so training never sees an empty window nor one of the named sensors)."""
        gone = torch.tensor([self.sensor_names[s] in sensors for s in self.sensor_of])
        out = keep * (~gone).float()
        out[out.sum(dim=1) == 0] = (~gone).float()
        return out

    def dropout_masks(
        self, batch: int, p_all_present: float, generator: torch.Generator, pattern: str = "mixed"
    ) -> torch.Tensor:
        """Per sample: all present with probability p_all_present, else the shapes of missing data a
        deployment meets (a device off, a sensor type disabled). Never empty.

        pattern "product" (models up to 2.0.0): a random non-empty subset of units times a random non-empty
        subset of sensor types (each kept w.p. 0.5). pattern "mixed" (the default since 2.1.0): the dropped
        samples are split in three equal parts -- units only (every sensor type of the kept units), sensor
        types only (every unit), and the product. With "product" alone a window with all five units but no
        magnetometers is rare (1 in 32 unit draws keeps all five), and that is exactly what a deployment
        without magnetometers sends."""
        unit_of = torch.tensor(self.unit_of)
        sensor_of = torch.tensor(self.sensor_of)
        units = _nonempty_bernoulli(batch, int(unit_of.max()) + 1, 0.5, generator)
        sensors = _nonempty_bernoulli(batch, int(sensor_of.max()) + 1, 0.5, generator)
        if pattern == "mixed":
            part = torch.randint(3, (batch,), generator=generator)
            units[part == 1] = 1.0  # sensor types only
            sensors[part == 0] = 1.0  # units only
        elif pattern != "product":
            raise ValueError(f"unknown dropout pattern {pattern!r} (product or mixed)")
        keep = units[:, unit_of] * sensors[:, sensor_of]
        all_present = torch.rand(batch, generator=generator) < p_all_present
        keep[all_present] = 1.0
        return keep


def _nonempty_bernoulli(batch: int, n: int, p: float, generator: torch.Generator) -> torch.Tensor:
    keep = (torch.rand(batch, n, generator=generator) < p).float()
    empty = keep.sum(dim=1) == 0
    keep[empty, torch.randint(n, (int(empty.sum()),), generator=generator)] = 1.0
    return keep


def pretrain(
    model: CroSSL,
    windows: np.ndarray,
    cfg: PretrainConfig,
    seed: int,
    checkpoint: Path | None = None,
    desc: str = "pretrain",
    checkpoint_key: dict | None = None,
) -> list[dict]:
    """VICReg between two latent-masked views of the same windows. Both views share one encoder pass:
    masking happens in latent space, which is what makes CroSSL cheap."""
    dev = device()
    model.to(dev).train()
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam([p for n, p in model.named_parameters() if not n.startswith("head.")], lr=cfg.lr)
    steps_per_epoch = max(1, len(windows) // cfg.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs * steps_per_epoch)
    history = []
    m = model.config["n_modalities"]
    for epoch in range(cfg.epochs):
        t0 = time.perf_counter()
        order = torch.randperm(len(windows), generator=gen)
        sums = {"loss": 0.0, "invariance": 0.0, "variance": 0.0, "covariance": 0.0}
        bar = tqdm(range(steps_per_epoch), desc=f"{desc} {epoch + 1}/{cfg.epochs}", leave=False, mininterval=5)
        for step in bar:
            idx = order[step * cfg.batch_size : (step + 1) * cfg.batch_size].numpy()
            x = torch.from_numpy(windows[np.sort(idx)])
            if cfg.augment is not None:
                x = cfg.augment(x, gen)
            e = model.encode(x.to(dev))
            k1 = latent_masks(len(x), m, cfg.coverage, gen).to(dev)
            k2 = latent_masks(len(x), m, cfg.coverage, gen).to(dev)
            loss, parts = vicreg_loss(
                model.embed(e, k1), model.embed(e, k2), cfg.invariance, cfg.variance, cfg.covariance
            )
            total = loss + cfg.l2 * model.conv_l2()
            opt.zero_grad(set_to_none=True)
            total.backward()
            opt.step()
            sched.step()
            sums["loss"] += loss.item()
            for k, v in parts.items():
                sums[k] += v
            bar.set_postfix(loss=f"{loss.item():.3f}")
        row = {k: v / steps_per_epoch for k, v in sums.items()}
        row.update(epoch=epoch + 1, seconds=time.perf_counter() - t0)
        history.append(row)
        print(f"[{desc}] epoch {epoch + 1}/{cfg.epochs} " + " ".join(f"{k}={v:.4f}" for k, v in row.items() if k != "epoch"), flush=True)
        if checkpoint is not None:
            checkpoint.parent.mkdir(parents=True, exist_ok=True)
            # The random state after the epoch too: a run that reuses a finished pre-training restores it, and
            # then trains exactly what a run that pre-trained would.
            saved = {"state": model.state_dict(), "config": model.config, "history": history, "key": checkpoint_key,
                     "rng": random_state()}  # fmt: skip
            torch.save(saved, checkpoint)
    model.cpu()
    return history


@torch.no_grad()
def encode_all(model: CroSSL, x: np.ndarray, batch_size: int = 512) -> torch.Tensor:
    """Per-modality embeddings [N, M, D] in eval mode (frozen encoder)."""
    dev = device()
    model.to(dev).eval()
    out = [model.encode(torch.from_numpy(x[i : i + batch_size]).to(dev)).cpu() for i in range(0, len(x), batch_size)]
    model.cpu()
    return torch.cat(out)


@torch.no_grad()
def logits_from_embeddings(model: CroSSL, e: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    model.eval()
    return model.head(model.embed(e, keep.expand(len(e), -1)))


def with_absent_sensors(keep: torch.Tensor, groups: ModalityGroups, cfg: ClassifierConfig, gen: torch.Generator) -> torch.Tensor:
    """cfg.absent_sensors removed from every window (p_absent_windows 1.0, drawing nothing from gen, so the
    expert's training is unchanged) or from each window with probability p_absent_windows."""
    if not cfg.absent_sensors:
        return keep
    if cfg.p_absent_windows >= 1.0:
        return groups.without_sensors(keep, cfg.absent_sensors)
    rows = torch.rand(len(keep), generator=gen) < cfg.p_absent_windows
    keep = keep.clone()
    keep[rows] = groups.without_sensors(keep[rows], cfg.absent_sensors)
    return keep


def train_classifier(
    model: CroSSL,
    x: np.ndarray,
    y: np.ndarray,
    cfg: ClassifierConfig,
    groups: ModalityGroups,
    seed: int,
    frozen: bool,
    desc: str,
) -> dict:
    """frozen=True: linear-ish probe -- only the head trains, on precomputed frozen encoder outputs.
    frozen=False: everything trains end to end (fine-tune, or supervised when the model is fresh)."""
    dev = device()
    gen = torch.Generator().manual_seed(seed)
    m = model.config["n_modalities"]
    y_t = torch.from_numpy(y)
    if frozen:
        for p in model.parameters():
            p.requires_grad_(False)
        for p in model.head.parameters():
            p.requires_grad_(True)
        e_all = encode_all(model, x)
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.pretrained_lr_scale != 1.0 and not frozen:
        head = {id(p) for p in model.head.parameters()}
        body = [p for p in params if id(p) not in head]
        opt = torch.optim.Adam(
            [{"params": body, "lr": cfg.lr * cfg.pretrained_lr_scale}, {"params": list(model.head.parameters())}], lr=cfg.lr
        )
    else:
        opt = torch.optim.Adam(params, lr=cfg.lr)
    steps = cfg.steps(len(x), frozen)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    model.to(dev)
    t0 = time.perf_counter()
    order = torch.randperm(len(x), generator=gen)
    pos = 0
    bs = cfg.batch(len(x))
    for _ in tqdm(range(steps), desc=desc, leave=False, mininterval=5):
        if pos + bs > len(order):
            order, pos = torch.randperm(len(x), generator=gen), 0
        idx = np.sort(order[pos : pos + bs].numpy())
        pos += bs
        b = len(idx)
        keep = groups.dropout_masks(b, cfg.p_all_present, gen, cfg.dropout_pattern) if cfg.modality_dropout else torch.ones(b, m)
        keep = with_absent_sensors(keep, groups, cfg, gen)
        keep = keep.to(dev)
        if frozen:
            model.eval()  # frozen parts stay in eval mode; only the head's dropout is active
            model.head.train()
            logits = model.head(model.embed(e_all[idx].to(dev), keep))
            loss = F.cross_entropy(logits, y_t[idx].to(dev))
        else:
            model.train()
            xb = torch.from_numpy(x[idx])
            if cfg.augment is not None:
                xb = cfg.augment(xb, gen)
            logits, _ = model(xb.to(dev), keep)
            loss = F.cross_entropy(logits, y_t[idx].to(dev)) + cfg.l2 * model.conv_l2()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    for p in model.parameters():
        p.requires_grad_(True)
    model.cpu().eval()
    return {"steps": steps, "seconds": time.perf_counter() - t0, "final_loss": loss.item()}


def fresh_copy(model: CroSSL) -> CroSSL:
    return copy.deepcopy(model)
