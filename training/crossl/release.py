"""Train the shipped model on all available subjects and write models/<name>/ per docs/model-contract.md."""

from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from . import data, export
from .evaluate import METHOD_CLASSIFIER, build_model, modality_groups
from .model import CroSSL, RoutedCroSSL, build_from_config
from .train import (
    ClassifierConfig,
    PretrainConfig,
    finished_pretraining,
    fresh_copy,
    pretrain,
    pretraining_key,
    seed_everything,
    set_random_state,
    train_classifier,
)


def _machine() -> str:
    """Where the training ran, for the manifest (train.device() picks CUDA when present)."""
    cpu = f"{platform.machine()} CPU, torch threads={torch.get_num_threads()}, torch {torch.__version__}"
    return f"{torch.cuda.get_device_name()} GPU + {cpu}" if torch.cuda.is_available() else cpu


def save_checkpoint(model: CroSSL, path: Path, **extra) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state": model.state_dict(), "config": model.config, **extra}, path)


def load_checkpoint(path: Path) -> tuple[CroSSL | RoutedCroSSL, dict]:
    saved = torch.load(path, map_location="cpu")
    model = build_from_config(saved["config"])
    model.load_state_dict(saved["state"])
    return model.eval(), saved


def write_model_dir(
    model: CroSSL, root: Path, out_dir: Path, name: str, version: str, training: dict, metrics: dict
) -> dict:
    """model.onnx + model.json + golden.json; checks ORT against PyTorch on the golden cases before returning."""
    out_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = out_dir / "model.onnx"
    export.export_onnx(model, data.MODALITIES, onnx_path, data.WINDOW_SAMPLES)
    man = export.manifest(
        model,
        name,
        version,
        f"CroSSL on DSADS: {len(data.MODALITIES)} modalities (5 body units x acc/gyro/mag), {len(data.CLASSES)} activities",
        onnx_path,
        training,
        metrics,
    )
    gold = export.golden(model, root, man["model_sha256"])
    worst = 0.0
    session = export.ort_session(onnx_path)
    for case in gold["cases"]:
        x, present = export.golden_inputs(case, data.MODALITIES, data.CHANNELS_PER_MODALITY, data.WINDOW_SAMPLES)
        got = export.ort_run(session, data.MODALITIES, x, present)
        for k in export.OUTPUT_NAMES:
            worst = max(worst, float(np.abs(got[k][0] - np.asarray(case[k], dtype=np.float32)).max()))
    if worst > gold["tolerance"]:
        raise RuntimeError(f"ORT vs PyTorch max abs diff {worst:.2e} exceeds {gold['tolerance']}")
    man["training"]["ort_vs_torch_max_abs_diff_on_golden"] = worst
    export.write_json(out_dir / "model.json", man)
    export.write_json(out_dir / "golden.json", gold, indent=None)
    print(f"wrote {out_dir} (sha256 {man['model_sha256'][:12]}..., ORT vs torch {worst:.2e})", flush=True)
    return man


def release(
    root: Path,
    subjects: list[str],
    out_dir: Path,
    name: str,
    version: str,
    method: str,
    pre_cfg: PretrainConfig,
    clf_cfg: ClassifierConfig,
    widths: tuple[int, ...],
    head_hidden: int,
    hop: int,
    seed: int,
    cache_dir: Path | None,
    run_dir: Path,
    metrics_file: Path | None,
    command: str,
    centre_mag: bool = True,
    no_mag_expert: bool = False,
    expert_coverage: float | None = None,
    recipe: str = "crossl_finetune",
) -> None:
    """recipe: an evaluate/nested candidate whose classifier settings the release takes (crossl_finetune: the
    plain ones; crossl_nomag25: magnetometers also removed from a quarter of the training windows)."""
    clf_cfg = replace(clf_cfg, **METHOD_CLASSIFIER.get(recipe, {}))
    separate_expert = no_mag_expert and expert_coverage is not None and expert_coverage != pre_cfg.coverage
    if separate_expert and method == "supervised":
        raise ValueError("--expert-coverage needs pre-training; --method supervised has none")
    t0 = time.perf_counter()
    ds = data.DSADS.load(root, subjects, cache_dir)
    x, y = ds.segments(subjects)
    mean, std = data.input_stats(x, centre_mag)
    seed_everything(seed)
    model = build_model(mean, std, widths, head_hidden, centre_mag)
    history: list = []
    expert_pre_cfg = replace(pre_cfg, coverage=expert_coverage) if separate_expert else None
    pretrained = None
    if method != "supervised":
        ckpt = run_dir / "release_pretrain.pt"
        # A finished pre-training with the same settings is reused, its random state with it, so what follows
        # is what a run that pre-trained now would do (a second recipe on one pre-training).
        key = pretraining_key(pre_cfg, model, hop, subjects, seed)
        saved = finished_pretraining(ckpt, key, pre_cfg.epochs)
        reuse = saved is not None and "rng" in saved
        windows = ds.sliding_windows(subjects, hop) if not reuse or expert_pre_cfg is not None else None
        if reuse:
            print(f"reusing the pre-training in {ckpt}", flush=True)
            model.load_state_dict(saved["state"])
            history = saved["history"]
            set_random_state(saved["rng"])
        else:
            print(f"pre-training on {len(windows)} unlabelled windows from {subjects}", flush=True)
            history = pretrain(model, windows, pre_cfg, seed, ckpt, desc="release pretrain", checkpoint_key=key)
        if expert_pre_cfg is not None:
            # Same seed and the same amount of randomness as the first pre-training, so the expert's start
            # equals a plain release's at that coverage and the fine-tunes below are unchanged.
            seed_everything(seed)
            pretrained = build_model(mean, std, widths, head_hidden, centre_mag)
            print(f"pre-training the expert's copy at coverage {expert_coverage:g}", flush=True)
            pretrain(pretrained, windows, expert_pre_cfg, seed, run_dir / "release_pretrain_expert.pt", desc="release expert pretrain")
        del windows
    else:
        clf_cfg = replace(clf_cfg, pretrained_lr_scale=1.0)  # nothing pre-trained
    t1 = time.perf_counter()
    if no_mag_expert and pretrained is None:
        pretrained = fresh_copy(model)
    info = train_classifier(model, x, y, clf_cfg, modality_groups(), seed + 11, frozen=(method == "probe"), desc="release head")
    expert_info: dict = {}
    mag = data.modalities_of_sensor("mag")
    if pretrained is not None:
        expert_cfg = replace(clf_cfg, absent_sensors=("mag",))
        expert_info = train_classifier(
            pretrained, x, y, expert_cfg, modality_groups(), seed + 13, frozen=(method == "probe"), desc="release no-mag expert"
        )
        expert_info["classifier"] = asdict(expert_cfg)
        model = RoutedCroSSL(model, pretrained, mag)
    metrics = json.loads(metrics_file.read_text()) if metrics_file and metrics_file.exists() else {}
    training = {
        "dataset": "DSADS (UCI ML Repository 256), raw layout",
        "subjects": subjects,
        "labelled_windows": int(len(y)),
        "method": method,
        "recipe": recipe,
        "command": command,
        "pretrain": {**asdict(pre_cfg), "hop_samples": hop, "epochs_run": len(history)},
        "classifier": asdict(clf_cfg),
        "no_mag_expert": (
            {
                "classifier": expert_info["classifier"],
                "pretrain_coverage": (expert_pre_cfg or pre_cfg).coverage,
                "used_when_absent": [data.MODALITIES[i] for i in mag],
            }
            if expert_info else None
        ),
        "seed": seed,
        "pretrain_seconds": round(t1 - t0, 1),
        "classifier_seconds": round(info["seconds"] + expert_info.get("seconds", 0.0), 1),
        "total_seconds": round(time.perf_counter() - t0, 1),
        "machine": _machine(),
        "normalisation": "per-channel mean/std of the training subjects, inside the graph"
        + ("; magnetometer channels centred per window first" if centre_mag else ""),
    }
    save_checkpoint(model, run_dir / "release_model.pt", training=training, command=command)
    write_model_dir(model, root, out_dir, name, version, training, metrics)
