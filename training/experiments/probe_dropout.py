"""Why is the frozen CroSSL probe weak? Re-train only the probe head of one LOSO fold from its saved
pre-training checkpoint, with and without modality dropout, and score it like `evaluate` does.

    python training/experiments/probe_dropout.py --fold p1 \\
        --checkpoint training/runs/loso/checkpoints/pretrain_p1.pt
"""

import argparse
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from crossl import data
from crossl.evaluate import modality_groups, score
from crossl.model import CroSSL
from crossl.train import ClassifierConfig, encode_all, fresh_copy, seed_everything, train_classifier

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("--data", type=Path, default=data.DEFAULT_DATA_DIR)
ap.add_argument("--fold", default="p1")
ap.add_argument("--checkpoint", type=Path, required=True)
a = ap.parse_args()
torch.set_num_threads(1)

subjects = ["p1", "p2", "p3", "p4", "p5", "p6"]
ds = data.DSADS.load(a.data, subjects, Path("~/.cache/crossl/arrays").expanduser())
x_tr, y_tr = ds.segments([s for s in subjects if s != a.fold])
x_te, y_te = ds.segments([a.fold])
saved = torch.load(a.checkpoint)
pretrained = CroSSL(**saved["config"])
pretrained.load_state_dict(saved["state"])
fold_seed = 1000 * subjects.index(a.fold)  # as evaluate.run_fold with --seed 0
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
