"""python -m crossl unpack | pretrain | finetune | evaluate | nested | nested-merge | report | seeds | sweep | robustness | export | release"""

from __future__ import annotations

import argparse
from dataclasses import replace
import json
import shlex
import sys
from pathlib import Path

from . import data

if sys.argv[1:2] != ["unpack"]:
    # Unpacking needs neither torch nor the training stack (`make demo` / `make data` run it from the
    # runtime-only venv), so the heavy imports happen only for the other commands.
    import torch

    from .model import OFFICIAL_WIDTHS, SMALL_WIDTHS
    from .train import Augment, ClassifierConfig, PretrainConfig

DEFAULT_RUNS = Path("training/runs") if Path("training/crossl").is_dir() else Path("runs")


def _subjects(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


def _fractions(text: str) -> list[float]:
    return [float(f) / 100 for f in text.split(",")]


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", type=Path, default=data.DEFAULT_DATA_DIR, help="DSADS folder (holding data/aXX/pY/sZZ.txt)")
    p.add_argument("--subjects", type=_subjects, default=_subjects("p1,p2,p3,p4,p5,p6"), help="subjects available for training/evaluation")
    p.add_argument("--cache-dir", type=Path, default=data.DEFAULT_CACHE_DIR, help="parsed .npy cache (outside the repo)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--widths", choices=["small", "official"], default="small", help="encoder widths: small 8/16/32 or official 24/48/96")
    p.add_argument("--head-hidden", type=int, default=64, help="hidden units of the classifier head (0 = linear)")
    p.add_argument("--hop", type=int, default=100, help="pre-training sliding-window hop, samples")
    p.add_argument("--pretrain-epochs", type=int, default=PretrainConfig.epochs)
    p.add_argument("--pretrain-batch", type=int, default=PretrainConfig.batch_size)
    p.add_argument("--pretrain-lr", type=float, default=PretrainConfig.lr)
    p.add_argument("--coverage", type=float, default=PretrainConfig.coverage, help="latent mask keep probability per modality")
    p.add_argument("--vicreg", type=float, nargs=3, default=(10.0, 10.0, 100.0), metavar=("INV", "VAR", "COV"))
    p.add_argument("--l2", type=float, default=1e-4, help="L2 penalty on conv kernels")
    p.add_argument("--clf-epochs", type=int, default=ClassifierConfig.epochs)
    p.add_argument("--clf-min-steps", type=int, default=ClassifierConfig.min_steps, help="fewest optimiser steps (end to end)")
    p.add_argument("--clf-max-passes", type=int, default=ClassifierConfig.max_passes, help="most labelled sample passes (end to end)")
    p.add_argument("--probe-steps", type=int, default=ClassifierConfig.probe_steps, help="optimiser steps of a frozen probe")
    p.add_argument("--clf-lr", type=float, default=ClassifierConfig.lr)
    p.add_argument("--pretrained-lr-scale", type=float, default=ClassifierConfig.pretrained_lr_scale, help="fine-tuning: learning rate of the pre-trained encoders and aggregator relative to --clf-lr (the head trains at --clf-lr)")
    p.add_argument("--no-modality-dropout", action="store_true", help="train classifiers with every modality present")
    p.add_argument("--dropout-pattern", choices=["product", "mixed"], default=ClassifierConfig.dropout_pattern, help="modality dropout: units x sensor types, or a mix of units only / sensor types only / both")
    p.add_argument("--rotate-deg", type=float, default=Augment.max_rotation_deg, help="augmentation: max random rotation per unit, degrees (0 = off)")
    p.add_argument("--scale-sd", type=float, default=Augment.scale_sd, help="augmentation: sd of the random gain per modality (0 = off)")
    p.add_argument("--no-centre-mag", action="store_true", help="keep magnetometer per-window means (default: removed inside the model)")
    p.add_argument("--no-augment", action="store_true", help="no input augmentation in pre-training or end-to-end training")
    p.add_argument("--run-dir", type=Path, default=DEFAULT_RUNS, help="checkpoints and logs (git-ignored)")


def _recipe(p: argparse.ArgumentParser, more: str = "") -> None:
    p.add_argument(
        "--recipe",
        choices=["crossl_finetune", "crossl_nomag25"],  # one-network candidates of `evaluate`/`nested`
        default="crossl_finetune",
        help="the nested candidate whose classifier settings to train (crossl_nomag25: magnetometers also removed "
        "from a quarter of the training windows)" + more,
    )


def _configs(a: argparse.Namespace) -> tuple[PretrainConfig, ClassifierConfig, tuple[int, ...]]:
    augment = None if a.no_augment else Augment(max_rotation_deg=a.rotate_deg, scale_sd=a.scale_sd)
    pre = PretrainConfig(
        augment=augment,
        epochs=a.pretrain_epochs,
        batch_size=a.pretrain_batch,
        lr=a.pretrain_lr,
        coverage=a.coverage,
        l2=a.l2,
        invariance=a.vicreg[0],
        variance=a.vicreg[1],
        covariance=a.vicreg[2],
    )
    clf = ClassifierConfig(
        epochs=a.clf_epochs,
        min_steps=a.clf_min_steps,
        max_passes=a.clf_max_passes,
        probe_steps=a.probe_steps,
        lr=a.clf_lr,
        pretrained_lr_scale=a.pretrained_lr_scale,
        l2=a.l2,
        modality_dropout=not a.no_modality_dropout,
        dropout_pattern=a.dropout_pattern,
        augment=augment,
    )
    return pre, clf, SMALL_WIDTHS if a.widths == "small" else OFFICIAL_WIDTHS


def _write_table(table: str, out: Path | None) -> None:
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(table)
    print(table)


def unpack_main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="python -m crossl unpack", description="extract the DSADS archive (tar.xz) into a folder outside the repo")
    p.add_argument("--archive", type=Path, required=True)
    p.add_argument("--out", type=Path, default=data.DEFAULT_DATA_DIR)
    a = p.parse_args(argv)
    print(data.unpack(a.archive, a.out))


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["unpack"]:
        return unpack_main(argv[1:])
    command = "python -m crossl " + shlex.join(argv)
    parser = argparse.ArgumentParser(prog="python -m crossl", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("unpack", help="extract the DSADS archive (tar.xz) into a folder outside the repo")
    p.add_argument("--archive", type=Path, required=True)
    p.add_argument("--out", type=Path, default=data.DEFAULT_DATA_DIR)

    p = sub.add_parser("pretrain", help="VICReg pre-training with latent masking on unlabelled windows")
    _common(p)
    p.add_argument("--out", type=Path, required=True, help="checkpoint file")

    p = sub.add_parser("finetune", help="train the classifier on labelled windows (probe or full fine-tune)")
    _common(p)
    p.add_argument("--pretrained", type=Path, help="pre-trained checkpoint; omit for supervised from scratch")
    p.add_argument("--frozen", action="store_true", help="frozen encoder+aggregator (probe)")
    p.add_argument("--label-percent", type=float, default=100.0)
    _recipe(p)
    p.add_argument("--out", type=Path, required=True, help="checkpoint file")

    p = sub.add_parser("evaluate", help="leave-one-subject-out evaluation; writes fold JSONs, tables and plots")
    _common(p)
    p.add_argument("--folds", type=_subjects, default=_subjects("p1,p2,p3"), help="held-out subjects, one fold each")
    p.add_argument("--label-percents", type=_fractions, default=_fractions("1,5,10,100"))
    p.add_argument("--methods", type=_subjects, default=_subjects("crossl_probe,crossl_finetune,supervised,random_probe"))
    p.add_argument("--expert-coverage", type=float, help="crossl_routed: pre-train the no-mag expert's starting point at this coverage (default: share the --coverage pre-training)")
    p.add_argument("--finetune-seed", type=int, help="seed of label subsets and classifier training only (default --seed); pre-training keeps --seed's")
    p.add_argument("--nested-pretraining", action="store_true", help="start each fold from `nested`'s outer-fold pre-training (its checkpoints under --run-dir/nested; pre-trained there when missing)")
    p.add_argument("--out", type=Path, required=True, help="results folder")

    p = sub.add_parser("nested", help="nested LOSO: choose among --candidates on an inner validation subject, score the held-out subject once")
    _common(p)
    p.add_argument("--folds", type=_subjects, default=_subjects("p1,p2,p3,p4,p5,p6"), help="held-out subjects, one outer fold each")
    p.add_argument("--candidates", type=_subjects, default=_subjects("crossl_finetune,crossl_routed"), help="methods (see evaluate) the inner split chooses among")
    p.add_argument("--out", type=Path, required=True, help="results folder (nested_<subject>.json, nested.md)")

    p = sub.add_parser("nested-merge", help="one nested table from runs over different candidate sets (best inner score across them wins)")
    p.add_argument("--results", nargs="+", required=True, help="nested results folders (nested_<subject>.json); FOLDER=LABEL renames that run's candidates to name@LABEL (runs with other settings, e.g. another pre-training)")
    p.add_argument("--out", type=Path, required=True, help="folder for the merged nested_<subject>.json, nested.md, manifest_metrics.json")

    p = sub.add_parser("report", help="tables and plots from the fold JSONs in a results folder")
    p.add_argument("--results", type=Path, required=True)
    p.add_argument("--out", type=Path, help="default: the results folder")

    p = sub.add_parser("seeds", help="CroSSL fine-tune vs supervised over LOSO runs that differ only in --seed")
    p.add_argument("--results", type=Path, nargs="+", required=True, help="one results folder per seed")
    p.add_argument("--method", default="crossl_finetune")
    p.add_argument("--baseline", default="supervised")
    p.add_argument("--baseline-results", type=Path, nargs="+", help="the baseline's folders, one per seed in --results order (default: --results)")
    p.add_argument("--out", type=Path, help="markdown file (default: print)")

    p = sub.add_parser("sweep", help="LOSO runs that differ in one setting (e.g. --coverage) side by side")
    p.add_argument("--results", type=Path, nargs="+", required=True, help="one results folder per run; the first is the reference")
    p.add_argument("--methods", type=_subjects, help="default: every method all folders hold")
    p.add_argument("--baseline-results", type=Path, help="a results folder whose --baseline is added as a last row")
    p.add_argument("--baseline", default="supervised")
    p.add_argument("--out", type=Path, help="markdown file (default: print)")

    p = sub.add_parser("robustness", help="missing-modality robustness of LOSO runs side by side (e.g. with / without modality dropout)")
    p.add_argument("--results", type=Path, nargs="+", required=True, help="one results folder per run; the first is the reference")
    p.add_argument("--methods", type=_subjects, help="default: every method some folder holds in all its folds")
    p.add_argument("--label-percent", type=float, help="default: the largest label fraction all of them share")
    p.add_argument("--baseline", default="supervised", help="method every other one is paired against inside a run")
    p.add_argument("--baseline-results", type=Path, help="where to take --baseline from for runs that lack it")
    p.add_argument("--folds", type=_subjects, help="only these held-out subjects (default: every fold all folders hold)")
    p.add_argument("--out", type=Path, help="markdown file (default: print)")

    p = sub.add_parser("export", help="write model.onnx, model.json, golden.json from a checkpoint")
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--data", type=Path, default=data.DEFAULT_DATA_DIR)
    p.add_argument("--out", type=Path, default=Path("models/crossl-dsads"))
    p.add_argument("--name", default="crossl-dsads")
    p.add_argument("--version", required=True)
    p.add_argument("--metrics", type=Path, help="JSON of summary metrics for the manifest")

    p = sub.add_parser("release", help="pre-train + train the head on all subjects, export models/<name>/")
    _common(p)
    p.add_argument("--method", choices=["finetune", "probe", "supervised"], default="finetune")
    p.add_argument("--out", type=Path, default=Path("models/crossl-dsads"))
    p.add_argument("--name", default="crossl-dsads")
    p.add_argument("--version", required=True)
    p.add_argument("--metrics", type=Path, help="JSON of summary metrics (e.g. from `report`) for the manifest")
    p.add_argument("--no-mag-expert", action="store_true", help="also train a head with the magnetometers always absent and route to it when no magnetometer is present")
    p.add_argument("--expert-coverage", type=float, help="with --no-mag-expert: pre-train the expert's starting point separately at this coverage (default: share the --coverage pre-training)")
    _recipe(p, "; a finished pre-training already in --run-dir with the same settings is reused")

    a = parser.parse_args(argv)
    if hasattr(a, "threads"):
        torch.set_num_threads(a.threads)

    if a.cmd == "unpack":
        print(data.unpack(a.archive, a.out))
    elif a.cmd == "pretrain":
        from .evaluate import build_model
        from .release import save_checkpoint
        from .train import pretrain, seed_everything

        pre, _, widths = _configs(a)
        ds = data.DSADS.load(a.data, a.subjects, a.cache_dir)
        mean, std = data.input_stats(ds.segments(a.subjects)[0], not a.no_centre_mag)
        seed_everything(a.seed)
        model = build_model(mean, std, widths, a.head_hidden, not a.no_centre_mag)
        history = pretrain(model, ds.sliding_windows(a.subjects, a.hop), pre, a.seed, a.run_dir / "pretrain_last.pt")
        save_checkpoint(model, a.out, history=history, command=command)
    elif a.cmd == "finetune":
        from .evaluate import METHOD_CLASSIFIER, build_model, modality_groups
        from .release import load_checkpoint, save_checkpoint
        from .train import seed_everything, train_classifier

        _, clf, widths = _configs(a)
        clf = replace(clf, **METHOD_CLASSIFIER.get(a.recipe, {}))
        ds = data.DSADS.load(a.data, a.subjects, a.cache_dir)
        x, y = ds.segments(a.subjects)
        seed_everything(a.seed)
        if a.pretrained:
            model, _ = load_checkpoint(a.pretrained)
        else:
            model = build_model(*data.input_stats(x, not a.no_centre_mag), widths, a.head_hidden, not a.no_centre_mag)
        idx = data.stratified_subset(y, a.label_percent / 100, a.seed)
        info = train_classifier(model, x[idx], y[idx], clf, modality_groups(), a.seed, a.frozen, desc="finetune")
        save_checkpoint(model, a.out, command=command, info=info)
    elif a.cmd == "evaluate":
        from . import evaluate, report

        pre, clf, widths = _configs(a)
        # the report covers every fold of this experiment in --out, so parallel per-fold runs end complete
        folds = evaluate.run(
            a.data, a.folds, a.subjects, a.out, a.label_percents, a.methods, pre, clf, widths,
            a.head_hidden, a.hop, a.seed, a.cache_dir, command, not a.no_centre_mag,
            a.run_dir / "loso", a.expert_coverage, a.finetune_seed, a.run_dir / "nested" if a.nested_pretraining else None,
        )  # fmt: skip
        report.write(a.out, a.out, folds=folds)
    elif a.cmd == "nested":
        from . import nested

        pre, clf, widths = _configs(a)
        results = nested.run(
            a.data, a.subjects, a.folds, a.candidates, a.out, pre, clf, widths, a.head_hidden, a.hop, a.seed,
            a.cache_dir, command, a.run_dir / "nested", not a.no_centre_mag,
        )  # fmt: skip
        _write_table(nested.markdown(results), a.out / "nested.md")
        (a.out / "manifest_metrics.json").write_text(json.dumps(nested.manifest_metrics(results), indent=1))
    elif a.cmd == "nested-merge":
        from . import nested

        runs = []
        for spec in a.results:
            folder, _, label = spec.partition("=")
            run = [json.loads(f.read_text()) for f in sorted(Path(folder).glob("nested_p*.json"))]
            runs.append(nested.relabel(run, label) if label else run)
        results = sorted(nested.merge(runs), key=lambda r: r["test_subject"])
        a.out.mkdir(parents=True, exist_ok=True)
        for r in results:
            (a.out / f"nested_{r['test_subject']}.json").write_text(json.dumps(r, indent=1, default=str))
        _write_table(nested.markdown(results), a.out / "nested.md")
        (a.out / "manifest_metrics.json").write_text(json.dumps(nested.manifest_metrics(results), indent=1))
    elif a.cmd == "report":
        from . import report

        report.write(a.results, a.out or a.results)
    elif a.cmd == "seeds":
        from . import report

        table = report.seeds_markdown(a.results, a.method, a.baseline, a.baseline_results)
        _write_table(table, a.out)
    elif a.cmd == "sweep":
        from . import report

        _write_table(report.sweep_markdown(a.results, a.methods, a.baseline_results, a.baseline), a.out)
    elif a.cmd == "robustness":
        from . import report

        fraction = None if a.label_percent is None else f"{a.label_percent / 100:g}"
        table = report.robustness_markdown(a.results, a.methods, fraction, a.baseline, a.baseline_results, a.folds)
        _write_table(table, a.out)
    elif a.cmd == "export":
        from .release import load_checkpoint, write_model_dir

        model, saved = load_checkpoint(a.checkpoint)
        metrics = json.loads(a.metrics.read_text()) if a.metrics else {}
        training = dict(saved.get("training") or {"dataset": "DSADS", "command": saved.get("command")})
        training["exported_by"] = command
        write_model_dir(model, a.data, a.out, a.name, a.version, training, metrics)
    elif a.cmd == "release":
        from .release import release

        pre, clf, widths = _configs(a)
        release(
            a.data, a.subjects, a.out, a.name, a.version, a.method, pre, clf, widths, a.head_hidden,
            a.hop, a.seed, a.cache_dir, a.run_dir, a.metrics, command, not a.no_centre_mag, a.no_mag_expert,
            a.expert_coverage, a.recipe,
        )  # fmt: skip


if __name__ == "__main__":
    main()
