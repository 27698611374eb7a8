"""run_fold end to end on random recordings, with tiny models and a handful of steps."""

import numpy as np

from crossl import data
from crossl.evaluate import run_fold
from crossl.train import ClassifierConfig, PretrainConfig


def test_a_fold_of_baselines_alone_runs_and_writes_its_partial_results(tmp_path):
    # only a baseline from fresh weights: nothing is pre-trained, so no checkpoint creates the run folder
    rng = np.random.default_rng(0)
    ds = data.DSADS({s: rng.standard_normal((19, 60, 125, 45)).astype(np.float32) for s in ("p1", "p2")})
    run_dir = tmp_path / "runs" / "loso" / "checkpoints"
    clf = ClassifierConfig(min_steps=2, epochs=1)
    fold = run_fold(ds, "p2", ["p1", "p2"], [0.05], ["supervised"], PretrainConfig(), clf, (4, 6, 8), 0, 100, 0, run_dir)
    assert fold["pretrain_history"] == [] and fold["timings"]["supervised"]["0.05"]["steps"] == 2
    assert 0.0 <= fold["results"]["supervised"]["0.05"]["all"]["macro_f1"] <= 1.0
    assert (run_dir.parent / "fold_p2.partial.json").is_file() and not run_dir.exists()
