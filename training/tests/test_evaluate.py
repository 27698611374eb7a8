"""run_fold end to end on random recordings, with tiny models and a handful of steps."""

from dataclasses import replace

import numpy as np
import pytest
import torch

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


def test_an_expert_coverage_pretrains_the_experts_start_like_a_plain_run_at_that_coverage(tmp_path):
    rng = np.random.default_rng(1)
    ds = data.DSADS({s: rng.standard_normal((19, 60, 125, 45)).astype(np.float32) for s in ("p1", "p2")})
    pre = PretrainConfig(epochs=1, batch_size=64)
    clf = ClassifierConfig(min_steps=2, epochs=1, max_passes=128, probe_steps=2)
    mixed = tmp_path / "mixed"
    fold = run_fold(ds, "p2", ["p1", "p2"], [1.0], ["crossl_routed"], pre, clf, (4, 6, 8), 0, 500, 0, mixed, expert_coverage=0.5)
    plain = tmp_path / "plain"
    run_fold(ds, "p2", ["p1", "p2"], [1.0], ["crossl_probe"], replace(pre, coverage=0.5), clf, (4, 6, 8), 0, 500, 0, plain)

    general, expert = torch.load(mixed / "pretrain_p2.pt"), torch.load(mixed / "pretrain_p2_expert.pt")
    assert general["key"]["pretrain"]["coverage"] == 0.9 and expert["key"]["pretrain"]["coverage"] == 0.5
    reference = torch.load(plain / "pretrain_p2.pt")
    assert expert["key"] == reference["key"]
    assert all(torch.equal(expert["state"][k], reference["state"][k]) for k in reference["state"])
    assert not all(torch.equal(general["state"][k], reference["state"][k]) for k in reference["state"])
    assert 0.0 <= fold["results"]["crossl_routed"]["1"]["no_mag"]["macro_f1"] <= 1.0


def test_a_rerun_skips_done_folds_and_reports_every_fold_of_the_experiment(tmp_path, monkeypatch):
    from crossl import evaluate

    rng = np.random.default_rng(2)
    root = tmp_path / "dsads"
    (root / "data" / "a01").mkdir(parents=True)  # the layout check; the recordings come from the cache
    cache = tmp_path / "cache"
    cache.mkdir()
    for s in ("p1", "p2"):
        np.save(data._cache_file(root, s, cache), rng.standard_normal((19, 60, 125, 45)).astype(np.float32))
    clf = ClassifierConfig(min_steps=2, epochs=1)

    def run(folds: list[str], seed: int) -> list[str]:
        return evaluate.run(
            root, folds, ["p1", "p2"], tmp_path / "out", [0.05], ["supervised"], PretrainConfig(), clf, (4, 6, 8),
            0, 100, seed, cache, f"evaluate --folds {','.join(folds)} --seed {seed}", run_dir=tmp_path / "runs",
        )  # fmt: skip

    assert run(["p2"], 0) == ["p2"]
    written = (tmp_path / "out" / "fold_p2.json").read_text()
    assert run(["p1"], 0) == ["p1", "p2"], "another invocation's fold of the same experiment is reported too"
    calls = []
    real_run_fold = evaluate.run_fold
    monkeypatch.setattr(evaluate, "run_fold", lambda *a, **k: calls.append(a[1]) or real_run_fold(*a, **k))
    assert run(["p1", "p2"], 0) == ["p1", "p2"]  # same settings, another command line: nothing runs again
    assert calls == [] and (tmp_path / "out" / "fold_p2.json").read_text() == written
    assert run(["p2"], 1) == ["p2"], "another seed is another experiment: p2 runs again, p1 (seed 0) is left out"
    assert calls == ["p2"]


def test_finetune_seeds_share_one_pretraining_and_reseed_only_what_follows(tmp_path):
    rng = np.random.default_rng(2)
    ds = data.DSADS({s: rng.standard_normal((19, 60, 125, 45)).astype(np.float32) for s in ("p1", "p2")})
    pre = PretrainConfig(epochs=1, batch_size=64)
    clf = ClassifierConfig(min_steps=3, epochs=1, max_passes=128)
    run_dir = tmp_path / "nested_p2"
    args = (ds, "p2", ["p1", "p2"], [0.05], ["crossl_finetune"], pre, clf, (4, 6, 8), 0, 500, 0, run_dir)
    default = run_fold(*args, pretrain_subjects=["p1"])
    ckpt = run_dir / "pretrain_p1.pt"
    first_pretraining = torch.load(ckpt)
    same = run_fold(*args, pretrain_subjects=["p1"], finetune_seed=0)
    other = run_fold(*args, pretrain_subjects=["p1"], finetune_seed=3)
    # one pre-training (reused, not redone) for every finetune seed
    assert same["pretrain_history"] == other["pretrain_history"] == default["pretrain_history"]
    assert torch.load(ckpt)["key"] == first_pretraining["key"]
    # finetune seed 0 is the default run; another one trains another classifier
    scores = lambda f: f["results"]["crossl_finetune"]["0.05"]["all"]  # noqa: E731
    assert scores(same) == scores(default)
    assert other["timings"]["crossl_finetune"]["0.05"]["final_loss"] != default["timings"]["crossl_finetune"]["0.05"]["final_loss"]


def test_a_two_seed_ensemble_shares_its_first_member_with_the_fine_tune_and_averages_probabilities(tmp_path, monkeypatch):
    from crossl import evaluate

    rng = np.random.default_rng(4)
    ds = data.DSADS({s: rng.standard_normal((19, 60, 125, 45)).astype(np.float32) for s in ("p1", "p2")})
    pre = PretrainConfig(epochs=1, batch_size=64)
    clf = ClassifierConfig(min_steps=2, epochs=1, max_passes=128, probe_steps=2)
    members = []
    real_score = evaluate.score
    monkeypatch.setattr(evaluate, "score", lambda *a: members.append(a) or real_score(*a))
    fold = run_fold(ds, "p2", ["p1", "p2"], [1.0], ["crossl_finetune", "crossl_ens2"], pre, clf, (4, 6, 8), 0, 500, 0, tmp_path)

    (model, e, y, *_), (model2, e2, y2, _, _, partners) = members
    assert model is model2 and torch.equal(e, e2) and len(partners) == 1 and partners[0][0] is not model
    # the ensemble's answer is the argmax of the mean of both members' probabilities
    keep = torch.ones(1, len(data.MODALITIES))
    mean = sum(torch.softmax(evaluate.logits_from_embeddings(m, x, keep), -1) for m, x in [(model, e), *partners]) / 2
    expected = evaluate.f1_score(y2, mean.argmax(-1).numpy(), average="macro", labels=np.arange(len(data.CLASSES)))
    assert fold["results"]["crossl_ens2"]["1"]["all"]["macro_f1"] == pytest.approx(expected)
    assert fold["timings"]["crossl_ens2"]["1"]["seconds"] > fold["timings"]["crossl_finetune"]["1"]["seconds"]
