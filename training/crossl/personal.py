"""The per-device personal head of crossl-serve (src/store/personal.rs), reimplemented in numpy for
offline evaluation: nearest class mean on L2-normalised embeddings, a softmax over −‖e − μ_c‖² / T for the
labelled classes plus one "unlabelled" option scoring −D / T whose mass goes to the never-labelled classes
in the general model's proportions; with `combine="product"` (`--personal-combine product`) that
distribution is multiplied by the general model's and renormalised. Defaults are the service's (`--personal-temperature`,
`--personal-reject-distance`).
"""

from __future__ import annotations

import numpy as np

TEMPERATURE = 0.05
REJECT_DISTANCE = 0.25


def normalised(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float64)
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return np.where(norm > 0, x / np.where(norm > 0, norm, 1.0), 0.0)


def fit(embeddings: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(classes ascending, unit-length class means [len(classes), dim]) from labelled window embeddings."""
    e = normalised(embeddings)
    labels = np.asarray(labels)
    classes = np.unique(labels)
    means = normalised(np.stack([e[labels == c].sum(0) for c in classes]))
    return classes, means


def probabilities(
    classes: np.ndarray,
    means: np.ndarray,
    general: np.ndarray,
    embeddings: np.ndarray,
    temperature: float = TEMPERATURE,
    reject_distance: float = REJECT_DISTANCE,
    combine: str = "replace",
) -> np.ndarray:
    """Personal distribution [N, n_classes] for windows with general probabilities [N, n_classes]."""
    general = np.clip(np.asarray(general, dtype=np.float64), 0.0, None)
    e = normalised(embeddings)
    n, k = general.shape
    d2 = ((e[:, None, :] - means[None, :, :]) ** 2).sum(-1)  # [N, L]
    scores = -d2 / temperature
    unlabelled = np.setdiff1d(np.arange(k), classes)
    mass = general[:, unlabelled].sum(1) if len(unlabelled) else np.zeros(n)
    with_other = mass > 0
    other = np.where(with_other, -reject_distance / temperature, -np.inf)
    all_scores = np.concatenate([scores, other[:, None]], axis=1)
    all_scores -= all_scores.max(1, keepdims=True)
    q = np.exp(all_scores)
    q /= q.sum(1, keepdims=True)
    out = np.zeros((n, k))
    out[:, classes] = q[:, : len(classes)]
    if len(unlabelled):
        share = np.where(with_other[:, None], general[:, unlabelled] / np.where(with_other, mass, 1.0)[:, None], 0.0)
        out[:, unlabelled] = q[:, -1:] * share
    if combine == "replace":
        return out
    if combine != "product":
        raise ValueError(f"combine must be replace or product, got {combine!r}")
    # the head alone where the product vanishes
    product = out * general
    total = product.sum(1, keepdims=True)
    return np.where(total > 0, product / np.where(total > 0, total, 1.0), out)
