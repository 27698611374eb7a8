"""Leave-one-subject-out evaluation: CroSSL probe / fine-tune vs supervised and random-init baselines,
at several label fractions, under every pattern of missing body units and sensor types."""

from __future__ import annotations

import itertools
import zlib
import json
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

from . import data
from .model import CroSSL
from .train import (
    ClassifierConfig,
    ModalityGroups,
    PretrainConfig,
    encode_all,
    finished_pretraining,
    fresh_copy,
    logits_from_embeddings,
    pretrain,
    pretraining_key,
    seed_everything,
    train_classifier,
)

METHODS = {
    # name: (starts from pre-trained weights, encoder+aggregator frozen)
    "crossl_probe": (True, True),
    "crossl_finetune": (True, False),
    "supervised": (False, False),
    "random_probe": (False, True),
    # crossl_finetune plus a no-magnetometer expert (fine-tuned with the magnetometers always absent) that
    # answers whenever no magnetometer is present: what `release --no-mag-expert` ships.
    "crossl_routed": (True, False),
    # crossl_finetune plus a second fine-tune of the same pre-training (another classifier seed); the two
    # average their class probabilities on every input, as one exported graph would.
    "crossl_ens2": (True, False),
    # one network fine-tuned with the magnetometers also removed from a quarter of its training windows
    "crossl_nomag25": (True, False),
}
# Classifier settings a method changes (the rest from the run's ClassifierConfig).
METHOD_CLASSIFIER = {"crossl_nomag25": {"absent_sensors": ("mag",), "p_absent_windows": 0.25}}
METHOD_LABELS = {
    "crossl_probe": "CroSSL frozen probe",
    "crossl_finetune": "CroSSL fine-tune",
    "supervised": "Supervised from scratch",
    "random_probe": "Random-init frozen probe",
    "crossl_routed": "CroSSL fine-tune + no-mag expert",
    "crossl_ens2": "CroSSL fine-tune, two-seed ensemble",
    "crossl_nomag25": "CroSSL fine-tune, magnetometers removed from 25 % of windows",
}


def modality_groups() -> ModalityGroups:
    return ModalityGroups(
        unit_of=[data.UNITS.index(data.modality_unit(m)) for m in data.MODALITIES],
        sensor_of=[data.SENSORS.index(data.modality_sensor(m)) for m in data.MODALITIES],
        sensor_names=list(data.SENSORS),
    )


def scenarios() -> dict[str, np.ndarray]:
    """Presence masks to evaluate: all 31 non-empty subsets of body units ('all' = all five), then whole
    sensor types absent."""
    out: dict[str, np.ndarray] = {}
    units = [data.modality_unit(m) for m in data.MODALITIES]
    sensors = [data.modality_sensor(m) for m in data.MODALITIES]
    for k in range(len(data.UNITS), 0, -1):
        for combo in itertools.combinations(data.UNITS, k):
            name = "all" if k == len(data.UNITS) else "+".join(combo)
            out[name] = np.array([u in combo for u in units], dtype=np.float32)
    out["no_mag"] = np.array([s != "mag" for s in sensors], dtype=np.float32)
    out["no_gyro"] = np.array([s != "gyro" for s in sensors], dtype=np.float32)
    out["acc_only"] = np.array([s == "acc" for s in sensors], dtype=np.float32)
    return out


def units_in(scenario: str) -> int | None:
    if scenario == "all":
        return len(data.UNITS)
    if scenario in ("no_mag", "no_gyro", "acc_only"):
        return None
    return scenario.count("+") + 1


def score(
    model: CroSSL,
    e_test: torch.Tensor,
    y_test: np.ndarray,
    expert: CroSSL | None = None,
    e_expert: torch.Tensor | None = None,
    partners: list[tuple[CroSSL, torch.Tensor]] = (),
) -> tuple[dict, list]:
    """Macro-F1 and accuracy per scenario. With an expert: scenarios without any magnetometer are answered
    by the expert, as RoutedCroSSL does (the route depends only on the presence mask). With partners (an
    ensemble): every scenario is answered by the mean of the class probabilities of model and partners."""
    out = {}
    confusion = None
    mag = data.modalities_of_sensor("mag")
    for name, keep in scenarios().items():
        use_expert = expert is not None and keep[mag].sum() == 0
        mask = torch.from_numpy(keep)[None]
        members = [(expert, e_expert)] if use_expert else [(model, e_test), *partners]
        probs = sum(torch.softmax(logits_from_embeddings(m, e, mask), -1) for m, e in members)
        pred = probs.argmax(-1).numpy()
        out[name] = {
            "macro_f1": float(f1_score(y_test, pred, average="macro", labels=np.arange(len(data.CLASSES)))),
            "accuracy": float(accuracy_score(y_test, pred)),
        }
        if name == "all":
            confusion = confusion_matrix(y_test, pred, labels=np.arange(len(data.CLASSES))).tolist()
    return out, confusion


def build_model(
    mean: np.ndarray, std: np.ndarray, widths: tuple[int, ...], head_hidden: int, centre_mag: bool = True
) -> CroSSL:
    """mean/std must come from `data.input_stats(x, centre_mag)` with the same centre_mag."""
    return CroSSL(
        len(data.MODALITIES),
        data.CHANNELS_PER_MODALITY,
        len(data.CLASSES),
        torch.from_numpy(mean),
        torch.from_numpy(std),
        widths=widths,
        head_hidden=head_hidden,
        centre=torch.from_numpy(data.centred_channels(centre_mag)),
    )


def _pretrained(
    ds: data.DSADS,
    test_subject: str,
    train_subjects: list[str],
    pre_cfg: PretrainConfig,
    widths: tuple[int, ...],
    head_hidden: int,
    hop: int,
    fold_seed: int,
    mean: np.ndarray,
    std: np.ndarray,
    centre_mag: bool,
    ckpt: Path,
    needs_pretraining: bool,
) -> tuple[CroSSL, list[dict]]:
    """The fold's pre-trained model: from `ckpt` when its key matches, else pre-trained (and saved) now."""
    seed_everything(fold_seed)
    model = build_model(mean, std, widths, head_hidden, centre_mag)
    key = pretraining_key(pre_cfg, model, hop, train_subjects, fold_seed)
    if not needs_pretraining:
        return model, []  # only baselines from fresh weights: nothing to pre-train
    saved = finished_pretraining(ckpt, key, pre_cfg.epochs)
    if saved is not None:
        model.load_state_dict(saved["state"])
        print(f"[{test_subject}] reusing {ckpt}", flush=True)
        return model, saved["history"]
    windows = ds.sliding_windows(train_subjects, hop)
    print(f"[{test_subject}] pre-training (coverage {pre_cfg.coverage:g}) on {len(windows)} windows from {train_subjects}", flush=True)
    return model, pretrain(model, windows, pre_cfg, fold_seed, ckpt, f"pretrain {test_subject}", key)


def run_fold(
    ds: data.DSADS,
    test_subject: str,
    subjects: list[str],
    fractions: list[float],
    methods: list[str],
    pre_cfg: PretrainConfig,
    clf_cfg: ClassifierConfig,
    widths: tuple[int, ...],
    head_hidden: int,
    hop: int,
    seed: int,
    run_dir: Path,
    centre_mag: bool = True,
    expert_coverage: float | None = None,
    pretrain_subjects: list[str] | None = None,
    finetune_seed: int | None = None,
) -> dict:
    """pretrain_subjects (default: every subject but the test subject) lets nested selection pre-train once
    per outer fold on all its training subjects and reuse that for the inner validation runs: the seed and
    checkpoint then depend only on the pre-training subjects, so both calls share one checkpoint.
    finetune_seed (default: seed) reseeds only what follows pre-training (label subsets, classifier
    initialisation and order), so several few-label seeds can share one pre-training."""
    train_subjects = [s for s in subjects if s != test_subject]
    x_tr, y_tr = ds.segments(train_subjects)
    x_te, y_te = ds.segments([test_subject])
    groups = modality_groups()
    fold_seed = seed + 1000 * subjects.index(test_subject)
    ckpt = run_dir / f"pretrain_{test_subject}.pt"
    if pretrain_subjects is None:
        pretrain_subjects = train_subjects
        mean, std = data.input_stats(x_tr, centre_mag)
    else:
        mean, std = data.input_stats(ds.segments(pretrain_subjects)[0], centre_mag)
        fold_seed = seed + zlib.crc32(",".join(pretrain_subjects).encode()) % 100_000
        ckpt = run_dir / f"pretrain_{'_'.join(pretrain_subjects)}.pt"

    needs_pretraining = any(METHODS[m][0] for m in methods)
    pretrained, history = _pretrained(
        ds, test_subject, pretrain_subjects, pre_cfg, widths, head_hidden, hop, fold_seed, mean, std, centre_mag,
        ckpt, needs_pretraining,
    )  # fmt: skip
    # The no-mag expert may start from its own pre-training (another coverage); same seed, so it equals a
    # plain run at that coverage and reuses its checkpoint when copied here.
    expert_base = pretrained
    if "crossl_routed" in methods and expert_coverage is not None and expert_coverage != pre_cfg.coverage:
        expert_base, _ = _pretrained(
            ds, test_subject, train_subjects, replace(pre_cfg, coverage=expert_coverage), widths, head_hidden, hop,
            fold_seed, mean, std, centre_mag, run_dir / f"pretrain_{test_subject}_expert.pt", True,
        )  # fmt: skip

    if finetune_seed is not None and finetune_seed != seed:
        fold_seed += 1_000_003 * (finetune_seed - seed)
    partial = run_dir.parent / f"fold_{test_subject}.partial.json"
    partial.parent.mkdir(parents=True, exist_ok=True)  # baselines alone never write a checkpoint there
    results: dict = {m: {} for m in methods}
    confusions: dict = {m: {} for m in methods}
    timings: dict = {m: {} for m in methods}
    for frac in fractions:
        idx = data.stratified_subset(y_tr, frac, fold_seed + int(round(frac * 1000)))
        # crossl_finetune, crossl_routed's general copy and crossl_ens2's first member are the same training
        # (same start, seeds and config): train it once per fraction when several are asked for.
        trained: dict[tuple[bool, bool, str], tuple] = {}
        for method in methods:
            from_pretrained, frozen = METHODS[method]
            key = (from_pretrained, frozen, repr(METHOD_CLASSIFIER.get(method)))
            if key in trained and from_pretrained and not frozen:
                model, info = trained[key]
            else:
                seed_everything(fold_seed + 7)
                model = fresh_copy(pretrained) if from_pretrained else build_model(mean, std, widths, head_hidden, centre_mag)
                # a fresh network has nothing pre-trained to train more gently
                cfg = clf_cfg if from_pretrained else replace(clf_cfg, pretrained_lr_scale=1.0)
                cfg = replace(cfg, **METHOD_CLASSIFIER.get(method, {}))
                info = train_classifier(
                    model, x_tr[idx], y_tr[idx], cfg, groups, fold_seed + 11, frozen, desc=f"{test_subject} {method} {frac:g}"
                )
                trained[key] = (model, info)
            expert = None
            if method == "crossl_routed":
                expert = fresh_copy(expert_base)
                expert_info = train_classifier(
                    expert, x_tr[idx], y_tr[idx], replace(clf_cfg, absent_sensors=("mag",)), groups, fold_seed + 13,
                    False, desc=f"{test_subject} no-mag expert {frac:g}",
                )  # fmt: skip
                info = {**info, "seconds": info["seconds"] + expert_info["seconds"], "expert_steps": expert_info["steps"]}
            partners = []
            if method == "crossl_ens2":
                seed_everything(fold_seed + 17)
                partner = fresh_copy(pretrained)
                partner_info = train_classifier(
                    partner, x_tr[idx], y_tr[idx], clf_cfg, groups, fold_seed + 19, False,
                    desc=f"{test_subject} ensemble member 2 {frac:g}",
                )  # fmt: skip
                partners.append((partner, encode_all(partner, x_te)))
                info = {**info, "seconds": info["seconds"] + partner_info["seconds"]}
            e_expert = encode_all(expert, x_te) if expert is not None else None
            scores, confusion = score(model, encode_all(model, x_te), y_te, expert, e_expert, partners)
            key = f"{frac:g}"
            results[method][key] = scores
            confusions[method][key] = confusion
            timings[method][key] = info
            print(
                f"[{test_subject}] {method:16s} labels={frac:>5g} n={len(idx):5d} "
                f"macroF1(all)={scores['all']['macro_f1']:.4f} no_mag={scores['no_mag']['macro_f1']:.4f} "
                f"({info['seconds']:.0f}s)",
                flush=True,
            )
            partial.write_text(json.dumps({"results": results, "timings": timings}))
    return {
        "test_subject": test_subject,
        "train_subjects": train_subjects,
        "n_train": int(len(y_tr)),
        "n_test": int(len(y_te)),
        "pretrain_history": history,
        "results": results,
        "confusion_all": confusions,
        "timings": timings,
    }


def run(
    root: Path,
    folds: list[str],
    subjects: list[str],
    out_dir: Path,
    fractions: list[float],
    methods: list[str],
    pre_cfg: PretrainConfig,
    clf_cfg: ClassifierConfig,
    widths: tuple[int, ...],
    head_hidden: int,
    hop: int,
    seed: int,
    cache_dir: Path | None,
    command: str,
    centre_mag: bool = True,
    run_dir: Path | None = None,
    expert_coverage: float | None = None,
    finetune_seed: int | None = None,
    nested_checkpoints: Path | None = None,
) -> list[str]:
    """Fold JSONs go to out_dir; pre-training checkpoints (large, reusable) to run_dir (default out_dir).
    nested_checkpoints (the run dir of `nested`) starts every fold from its outer fold's pre-training (same
    subjects, seed and checkpoint), so a study of the shipped recipe needs no pre-training of its own.
    Returns every fold in out_dir of this experiment (folds written by other invocations with other --folds
    included, other settings left out), for the report."""
    out_dir.mkdir(parents=True, exist_ok=True)
    ds = data.DSADS.load(root, subjects, cache_dir)
    settings = {
        "command": command,
        "subjects": subjects,
        "fractions": fractions,
        "methods": methods,
        "pretrain": asdict(pre_cfg),
        "classifier": asdict(clf_cfg),
        "widths": list(widths),
        "head_hidden": head_hidden,
        "hop": hop,
        "centre_mag": centre_mag,
        "seed": seed,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    if expert_coverage is not None:  # only then, so earlier runs' settings still compare equal
        settings["expert_pretrain_coverage"] = expert_coverage
    if finetune_seed is not None:
        settings["finetune_seed"] = finetune_seed
    if nested_checkpoints is not None:
        settings["pretraining"] = "nested outer fold"
    for fold in folds:
        path = out_dir / f"fold_{fold}.json"
        if path.exists() and _experiment(json.loads(path.read_text()).get("settings", {})) == _experiment(settings):
            print(f"[{fold}] done already: {path}", flush=True)
            continue
        t0 = time.perf_counter()
        if nested_checkpoints is None:
            ckpt_dir, pretrain_subjects = (run_dir or out_dir) / "checkpoints", None
        else:
            ckpt_dir, pretrain_subjects = nested_checkpoints / f"nested_{fold}", [s for s in subjects if s != fold]
        result = run_fold(
            ds, fold, subjects, fractions, methods, pre_cfg, clf_cfg, widths, head_hidden, hop, seed, ckpt_dir,
            centre_mag, expert_coverage, pretrain_subjects, finetune_seed,
        )  # fmt: skip
        result["settings"] = settings
        result["seconds"] = time.perf_counter() - t0
        path.write_text(json.dumps(result, indent=1))
        print(f"[{fold}] wrote {path} ({result['seconds']:.0f}s)", flush=True)
    from .report import load_folds  # report imports this module

    return [f["test_subject"] for f in load_folds(out_dir) if _experiment(f.get("settings", {})) == _experiment(settings)]


def _experiment(settings: dict) -> dict:
    """What makes two fold results one experiment: the settings but the command line (which names the folds
    run by that invocation, and local paths), compared as JSON (tuples in the configs read back as lists)."""
    return {k: v for k, v in json.loads(json.dumps(settings)).items() if k != "command"}
