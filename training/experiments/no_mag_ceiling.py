"""Is "no magnetometers" weak on some subjects because of the dropout recipe or because acc + gyro carry
less information there? On one LOSO fold, from its saved pre-training checkpoint, fine-tune (100 % labels)
  - shipped: the shipped recipe (modality dropout, mixed), scored with the magnetometers masked,
  - specialist: the same model trained with the magnetometers always masked,
  - magoff: the shipped recipe plus the magnetometers dropped from a random half of the windows,
  - magoff_all: the shipped recipe with the magnetometers always dropped (a no-mag specialist that still
    sees units missing; what a model switched in when no magnetometer is present would score),
and print the no-mag macro-F1s, the per-class F1 of each and the largest confusions without magnetometers
(and, for the variants that train with dropout, the quality-bar scenarios).
If the specialist is no better, the recipe is not what limits the no-mag score on that subject.

    python training/experiments/no_mag_ceiling.py --fold p4 \\
        --checkpoint training/runs/loso-mixed/loso/checkpoints/pretrain_p4.pt
"""

from dataclasses import replace
from pathlib import Path

import _fold
import numpy as np
import torch
from sklearn.metrics import confusion_matrix, f1_score

from crossl import data
from crossl.evaluate import modality_groups, scenarios, score
from crossl.release import load_checkpoint
from crossl.train import Augment, ClassifierConfig, encode_all, fresh_copy, logits_from_embeddings, seed_everything, train_classifier


class MagOff:
    """The shipped dropout, then the magnetometers masked in a random `share` of the windows."""

    def __init__(self, groups, share: float):
        self.groups, self.share = groups, share

    def dropout_masks(self, batch: int, p_all_present: float, generator: torch.Generator, pattern: str = "mixed") -> torch.Tensor:
        keep = self.groups.dropout_masks(batch, p_all_present, generator, pattern)
        off = torch.rand(batch, generator=generator) < self.share
        keep[off] = self.groups.without_sensors(keep[off], ("mag",))
        return keep


ap = _fold.parser(__doc__, "p4")
ap.add_argument("--checkpoint", type=Path, required=True)
ap.add_argument("--variants", default="shipped,specialist,magoff", help="comma-separated subset")
a = ap.parse_args()
torch.set_num_threads(1)

x_tr, y_tr, x_te, y_te = _fold.load(a.data, a.fold)
pretrained, _ = load_checkpoint(a.checkpoint)
fold_seed = _fold.seed(a.fold)
no_mag = scenarios()["no_mag"]
cfg = ClassifierConfig(augment=Augment())  # the evaluate/release defaults
labels = np.arange(len(data.CLASSES))
variants = {
    "shipped": (cfg, modality_groups()),
    # no modality dropout: every window is all ones, then the magnetometers masked = the no_mag scenario
    "specialist": (replace(cfg, modality_dropout=False, absent_sensors=("mag",)), modality_groups()),
    "magoff": (cfg, MagOff(modality_groups(), 0.5)),
    "magoff_all": (cfg, MagOff(modality_groups(), 1.0)),
}
per_class = {}
for name in a.variants.split(","):
    c, groups = variants[name]
    seed_everything(fold_seed + 7)
    model = fresh_copy(pretrained)
    train_classifier(model, x_tr, y_tr, c, groups, fold_seed + 11, False, f"{a.fold} {name}")
    e = encode_all(model, x_te)
    pred = logits_from_embeddings(model, e, torch.from_numpy(no_mag)[None]).argmax(-1).numpy()
    per_class[name] = f1_score(y_te, pred, average=None, labels=labels)
    print(f"[{a.fold}] {name:12s} no-mag macro-F1 {per_class[name].mean():.3f}", flush=True)
    if name not in ("specialist",):
        s, _ = score(model, e, y_te)
        f1 = {k: v["macro_f1"] for k, v in s.items()}
        one_missing = [v for k, v in f1.items() if k.count("+") == 3]
        pairs = [v for k, v in f1.items() if k.count("+") == 1]
        print(f"   all 15 {f1['all']:.3f} | worst unit missing {min(one_missing):.3f} | no mag {f1['no_mag']:.3f}"
              f" | no gyro {f1['no_gyro']:.3f} | acc only {f1['acc_only']:.3f} | mean 10 pairs {np.mean(pairs):.3f}")
    cm = confusion_matrix(y_te, pred, labels=labels)
    np.fill_diagonal(cm, 0)
    top = np.dstack(np.unravel_index(np.argsort(-cm, axis=None)[:6], cm.shape))[0]
    print("   largest confusions (true -> predicted, of 60): "
          + "; ".join(f"{data.CLASSES[i]} -> {data.CLASSES[j]} {cm[i, j]}" for i, j in top if cm[i, j] > 0))
print(f"\nper-class F1 without magnetometers, fold {a.fold}")
names = list(per_class)
print(f"{'class':30s} " + " | ".join(f"{n[:20]:>20s}" for n in names))
for k, cls in enumerate(data.CLASSES):
    print(f"{cls:30s} " + " | ".join(f"{per_class[n][k]:20.3f}" for n in names))
