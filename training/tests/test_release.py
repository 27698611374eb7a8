"""release() on random recordings with tiny models: what --expert-coverage changes and what it does not."""

from pathlib import Path

import numpy as np
import pytest
import torch

from crossl import data, release
from crossl.train import ClassifierConfig, PretrainConfig


@pytest.fixture()
def tiny_release(monkeypatch, tmp_path):
    rng = np.random.default_rng(2)
    recordings = {s: rng.standard_normal((19, 60, 125, 45)).astype(np.float32) for s in ("p1",)}
    monkeypatch.setattr(data.DSADS, "load", classmethod(lambda cls, root, subjects, cache_dir=None: cls(recordings)))
    written: dict = {}

    def capture(model, root, out_dir, name, version, training, metrics):
        written[out_dir.name] = (model, training)

    monkeypatch.setattr(release, "write_model_dir", capture)

    def run(tag: str, coverage: float, expert_coverage: float | None):
        pre = PretrainConfig(epochs=1, batch_size=64, coverage=coverage)
        clf = ClassifierConfig(min_steps=2, epochs=1, max_passes=128)
        release.release(
            tmp_path, ["p1"], tmp_path / tag, "m", "0", "finetune", pre, clf, (4, 6, 8), 0, 500, 0, None,
            tmp_path / "runs" / tag, None, "test", no_mag_expert=True, expert_coverage=expert_coverage,
        )  # fmt: skip
        return written[tag]

    return run, tmp_path / "runs"


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_an_expert_coverage_changes_only_the_experts_start(tiny_release):
    run, runs = tiny_release
    mixed, training = run("mixed", 0.9, 0.5)
    shared, _ = run("shared", 0.9, None)
    at_half, _ = run("half", 0.5, None)

    assert training["pretrain"]["coverage"] == 0.9 and training["no_mag_expert"]["pretrain_coverage"] == 0.5
    assert (runs / "mixed" / "release_pretrain_expert.pt").is_file()
    assert not (runs / "shared" / "release_pretrain_expert.pt").exists()
    # the general copy is the plain coverage-0.9 release's, the expert the plain coverage-0.5 release's
    assert _same(mixed.general, shared.general)
    assert _same(mixed.expert, at_half.expert)
    assert not _same(mixed.expert, shared.expert)


def test_an_expert_coverage_without_pretraining_is_refused(tmp_path):
    with pytest.raises(ValueError, match="needs pre-training"):
        release.release(
            tmp_path, ["p1"], tmp_path / "out", "m", "0", "supervised", PretrainConfig(), ClassifierConfig(),
            (4, 6, 8), 0, 100, 0, None, tmp_path / "runs", None, "test", no_mag_expert=True, expert_coverage=0.5,
        )  # fmt: skip


def test_a_second_release_on_the_same_pretraining_reuses_it_and_trains_what_a_fresh_run_would(monkeypatch, tmp_path):
    rng = np.random.default_rng(3)
    recordings = {"p1": rng.standard_normal((19, 60, 125, 45)).astype(np.float32)}
    monkeypatch.setattr(data.DSADS, "load", classmethod(lambda cls, root, subjects, cache_dir=None: cls(recordings)))
    written: dict = {}
    monkeypatch.setattr(release, "write_model_dir", lambda model, root, out_dir, *rest: written.__setitem__(out_dir.name, (model, rest[2])))
    pretrained = []
    real_pretrain = release.pretrain
    monkeypatch.setattr(release, "pretrain", lambda *a, **k: pretrained.append(1) or real_pretrain(*a, **k))

    def run(tag: str, run_dir: str, recipe: str = "crossl_finetune"):
        pre = PretrainConfig(epochs=1, batch_size=64, coverage=0.5)
        clf = ClassifierConfig(min_steps=2, epochs=1, max_passes=128)
        release.release(
            tmp_path, ["p1"], tmp_path / tag, "m", "0", "finetune", pre, clf, (4, 6, 8), 0, 500, 0, None,
            tmp_path / run_dir, None, "test", recipe=recipe,
        )  # fmt: skip
        return written[tag]

    first, _ = run("first", "a")
    again, _ = run("again", "a")  # same settings, same run folder: the pre-training is reused
    assert len(pretrained) == 1
    assert _same(first, again), "reusing the pre-training changes nothing downstream"
    nomag, training = run("nomag", "a", recipe="crossl_nomag25")
    assert len(pretrained) == 1 and training["recipe"] == "crossl_nomag25"
    assert training["classifier"]["absent_sensors"] == ("mag",) and training["classifier"]["p_absent_windows"] == 0.25
    assert not _same(first, nomag)
    fresh, _ = run("fresh", "b", recipe="crossl_nomag25")  # its own folder: pre-trains again
    assert len(pretrained) == 2 and _same(nomag, fresh)
