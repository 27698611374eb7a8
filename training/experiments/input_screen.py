"""Quick screen of input handling on one LOSO fold: supervised from scratch, 100 % labels, modality dropout.

This is how the shipped recipe's augmentation and magnetometer centring were chosen (docs/training.md):
    python training/experiments/input_screen.py --fold p1 --tag base
    python training/experiments/input_screen.py --fold p1 --rotate-deg 30 --scale-sd 0.1 --tag rotscale
    python training/experiments/input_screen.py --fold p1 --rotate-deg 30 --scale-sd 0.1 --centre-mag --tag rs_magc
    python training/experiments/input_screen.py --fold p3 --rotate-deg 30 --scale-sd 0.1 --tag rotscale_p3
Every 3 epochs it prints macro-F1 on the held-out subject: all 15 modalities, worst single unit missing, no
magnetometers, mean over the 10 unit pairs, accelerometers only. One thread; ~45 s per epoch on the shared
2-core machine. The package's own LOSO (`python -m crossl evaluate`) is the evaluation of record.
"""

import math
import time

import _fold
import numpy as np
import torch
import torch.nn.functional as F

from crossl import data
from crossl.evaluate import build_model, modality_groups, score
from crossl.model import OFFICIAL_WIDTHS, SMALL_WIDTHS
from crossl.train import Augment, encode_all

ap = _fold.parser(__doc__, "p1")
ap.add_argument("--epochs", type=int, default=12)
ap.add_argument("--rotate-deg", type=float, default=0.0)
ap.add_argument("--scale-sd", type=float, default=0.0)
ap.add_argument("--centre-mag", action="store_true")
ap.add_argument("--widths", choices=["small", "official"], default="small")
ap.add_argument("--lr", type=float, default=1e-3)
ap.add_argument("--batch", type=int, default=64)
ap.add_argument("--tag", default="")
a = ap.parse_args()

torch.set_num_threads(1)
torch.manual_seed(0)
x_tr, y_tr, x_te, y_te = _fold.load(a.data, a.fold)
mean, std = data.input_stats(x_tr, a.centre_mag)
model = build_model(mean, std, SMALL_WIDTHS if a.widths == "small" else OFFICIAL_WIDTHS, 64, a.centre_mag)
groups = modality_groups()
augment = Augment(a.rotate_deg, a.scale_sd)
gen = torch.Generator().manual_seed(1)
opt = torch.optim.Adam(model.parameters(), lr=a.lr)
sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=a.epochs * math.ceil(len(x_tr) / a.batch))
t0 = time.time()
for epoch in range(a.epochs):
    order = torch.randperm(len(x_tr), generator=gen)
    model.train()
    for i in range(0, len(order) - a.batch + 1, a.batch):
        idx = np.sort(order[i : i + a.batch].numpy())
        x = augment(torch.from_numpy(x_tr[idx]), gen)
        logits, _ = model(x, groups.dropout_masks(len(idx), 0.3, gen, "product"))
        loss = F.cross_entropy(logits, torch.from_numpy(y_tr[idx])) + 1e-4 * model.conv_l2()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    if epoch % 3 == 2 or epoch == a.epochs - 1:
        s, _ = score(model, encode_all(model, x_te), y_te)
        pairs = [v["macro_f1"] for k, v in s.items() if k.count("+") == 1]
        four = [v["macro_f1"] for k, v in s.items() if k.count("+") == 3]
        print(
            f"{a.tag} ep{epoch + 1} t={time.time() - t0:.0f}s loss={loss.item():.3f} all={s['all']['macro_f1']:.3f} "
            f"worst4={min(four):.3f} nomag={s['no_mag']['macro_f1']:.3f} pairs={np.mean(pairs):.3f} "
            f"acc_only={s['acc_only']['macro_f1']:.3f}",
            flush=True,
        )
