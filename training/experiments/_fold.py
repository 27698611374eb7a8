"""What every screen here starts from: one LOSO fold of DSADS p1..p6, split and seeded as
`python -m crossl evaluate --seed 0` splits and seeds it (run as `python training/experiments/<screen>.py`,
so this directory is on sys.path)."""

import argparse
from pathlib import Path

import numpy as np

from crossl import data

SUBJECTS = ["p1", "p2", "p3", "p4", "p5", "p6"]


def parser(doc: str, fold: str) -> argparse.ArgumentParser:
    """--data and --fold (the held-out subject), with the screen's docstring as its help."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=data.DEFAULT_DATA_DIR, help="DSADS folder")
    ap.add_argument("--fold", default=fold, choices=SUBJECTS, help="held-out subject")
    return ap


def load(data_dir: Path, fold: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """x_train, y_train (the other five subjects), x_test, y_test (the held-out one), 5 s segments."""
    ds = data.DSADS.load(data_dir, SUBJECTS, data.DEFAULT_CACHE_DIR)
    x_tr, y_tr = ds.segments([s for s in SUBJECTS if s != fold])
    x_te, y_te = ds.segments([fold])
    return x_tr, y_tr, x_te, y_te


def seed(fold: str) -> int:
    """The fold's base seed, as evaluate.run_fold with --seed 0."""
    return 1000 * SUBJECTS.index(fold)
