"""Why is the frozen CroSSL probe weak? Re-train only the probe head of one LOSO fold from its saved
pre-training checkpoint, with and without modality dropout, and score it like `evaluate` does.

    python training/experiments/probe_dropout.py --fold p1 \\
        --checkpoint training/runs/loso/checkpoints/pretrain_p1.pt
"""

from dataclasses import replace
from pathlib import Path

import _fold
import torch

from crossl import data
from crossl.evaluate import modality_groups, score
from crossl.release import load_checkpoint
from crossl.train import ClassifierConfig, encode_all, fresh_copy, seed_everything, train_classifier

ap = _fold.parser(__doc__, "p1")
ap.add_argument("--checkpoint", type=Path, required=True)
a = ap.parse_args()
torch.set_num_threads(1)

x_tr, y_tr, x_te, y_te = _fold.load(a.data, a.fold)
pretrained, _ = load_checkpoint(a.checkpoint)
fold_seed = _fold.seed(a.fold)
variants = {
    "dropout (as evaluate)": ClassifierConfig(),
    "no modality dropout": ClassifierConfig(modality_dropout=False),
    "dropout, all present w.p. 0.7": ClassifierConfig(p_all_present=0.7),
}
for name, cfg in variants.items():
    row = []
    for frac in (0.01, 0.05, 0.1, 1.0):
        idx = data.stratified_subset(y_tr, frac, fold_seed + int(round(frac * 1000)))
        seed_everything(fold_seed + 7)
        model = fresh_copy(pretrained)
        train_classifier(model, x_tr[idx], y_tr[idx], replace(cfg), modality_groups(), fold_seed + 11, True, name)
        s, _ = score(model, encode_all(model, x_te), y_te)
        row.append(f"{frac * 100:g}%: all {s['all']['macro_f1']:.3f} no_mag {s['no_mag']['macro_f1']:.3f}")
    print(f"{name:32s} | " + " | ".join(row), flush=True)
