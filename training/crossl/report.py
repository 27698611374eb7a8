"""Tables (markdown), summary JSON and plots (PNG) from the per-fold JSONs that `evaluate` writes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from scipy.stats import wilcoxon

from . import data
from .evaluate import METHOD_LABELS, units_in

SENSOR_SCENARIOS = ["no_mag", "no_gyro", "acc_only"]


def load_folds(results_dir: Path, folds: list[str] | None = None) -> list[dict]:
    paths = sorted(p for p in results_dir.glob("fold_*.json") if not p.name.endswith(".partial.json"))
    out = [json.loads(p.read_text()) for p in paths]
    if folds is not None:
        out = [f for f in out if f["test_subject"] in folds]
    if not out:
        raise FileNotFoundError(f"no fold_*.json in {results_dir}" + (f" for folds {', '.join(folds)}" if folds else ""))
    return sorted(out, key=lambda f: f["test_subject"])


def _ms(values: list[float]) -> dict:
    v = np.asarray(values, dtype=float)
    return {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else 0.0, "folds": [float(x) for x in v]}


def _fmt(stat: dict) -> str:
    return f"{stat['mean']:.3f} ± {stat['sd']:.3f}"


def summarize(folds: list[dict]) -> dict:
    methods = list(folds[0]["results"].keys())
    fractions = list(folds[0]["results"][methods[0]].keys())
    scen = list(folds[0]["results"][methods[0]][fractions[0]].keys())
    full = fractions[-1]
    summary: dict = {
        "folds": [f["test_subject"] for f in folds],
        "methods": methods,
        "label_fractions": fractions,
        "by_fraction": {},
        "robustness": {},
        "quality_bar": {},
    }
    for m in methods:
        summary["by_fraction"][m] = {
            fr: {
                metric: _ms([f["results"][m][fr]["all"][metric] for f in folds]) for metric in ("macro_f1", "accuracy")
            }
            for fr in fractions
        }
        summary["robustness"][m] = {s: _ms([f["results"][m][full][s]["macro_f1"] for f in folds]) for s in scen}
        rob = summary["robustness"][m]
        one_missing = [s for s in scen if units_in(s) == len(data.UNITS) - 1]
        pairs = [s for s in scen if units_in(s) == 2]
        worst = min(one_missing, key=lambda s: rob[s]["mean"])
        summary["quality_bar"][m] = {
            "label_fraction": full,
            "all_modalities": rob["all"]["mean"],
            "worst_single_unit_missing": {"scenario": worst, "macro_f1": rob[worst]["mean"]},
            "no_mag": rob["no_mag"]["mean"],
            "mean_over_unit_pairs": float(np.mean([rob[s]["mean"] for s in pairs])),
            "by_units_present": {
                k: float(np.mean([rob[s]["mean"] for s in scen if units_in(s) == k])) for k in range(1, len(data.UNITS) + 1)
            },
        }
    return summary


def tables_markdown(summary: dict, folds: list[dict]) -> str:
    methods, fractions = summary["methods"], summary["label_fractions"]
    lines = [
        f"Leave-one-subject-out folds (held-out subject): {', '.join(summary['folds'])}. "
        "Each cell: mean ± sd over folds; macro-F1 (sklearn, 19 classes) unless stated.",
        "",
        "### Macro-F1 by label fraction (all 15 modalities present)",
        "",
        "| method | " + " | ".join(f"{float(f) * 100:g} % labels" for f in fractions) + " |",
        "|---|" + "---|" * len(fractions),
    ]
    for m in methods:
        cells = [_fmt(summary["by_fraction"][m][f]["macro_f1"]) for f in fractions]
        lines.append(f"| {METHOD_LABELS.get(m, m)} | " + " | ".join(cells) + " |")
    lines += ["", "### Accuracy by label fraction (all 15 modalities present)", ""]
    lines += ["| method | " + " | ".join(f"{float(f) * 100:g} % labels" for f in fractions) + " |", "|---|" + "---|" * len(fractions)]
    for m in methods:
        cells = [_fmt(summary["by_fraction"][m][f]["accuracy"]) for f in fractions]
        lines.append(f"| {METHOD_LABELS.get(m, m)} | " + " | ".join(cells) + " |")

    lines += _per_fold_vs_supervised(folds, methods, fractions)

    full = fractions[-1]
    lines += [
        "",
        f"### Quality-bar view ({float(full) * 100:g} % labels; bar: all ≥ 0.90, worst one unit missing ≥ 0.85, "
        "no magnetometers ≥ 0.85, mean over the 10 unit pairs ≥ 0.75)",
        "",
        "| method | all 15 | worst single unit missing | no mag | mean over 10 unit pairs |",
        "|---|---|---|---|---|",
    ]
    for m in methods:
        q = summary["quality_bar"][m]
        w = q["worst_single_unit_missing"]
        lines.append(
            f"| {METHOD_LABELS.get(m, m)} | {q['all_modalities']:.3f} | {w['macro_f1']:.3f} (without "
            f"{_missing_unit(w['scenario'])}) | {q['no_mag']:.3f} | {q['mean_over_unit_pairs']:.3f} |"
        )
    lines += [
        "",
        f"### Robustness: macro-F1 with only some body units / sensor types present ({float(full) * 100:g} % labels)",
        "",
        "| present | units | " + " | ".join(METHOD_LABELS.get(m, m) for m in methods) + " |",
        "|---|---|" + "---|" * len(methods),
    ]
    for s in summary["robustness"][methods[0]]:
        k = units_in(s)
        cells = [_fmt(summary["robustness"][m][s]) for m in methods]
        lines.append(f"| {s} | {k if k is not None else '5 (sensor type subset)'} | " + " | ".join(cells) + " |")
    lines += ["", "### Pre-training and classifier wall time per fold (seconds, 2-core shared CPU)", ""]
    lines += ["| fold | pre-train s | pre-train epochs | evaluate run s (excludes pre-training when it was reused from a checkpoint) |", "|---|---|---|---|"]
    for f in folds:
        h = f["pretrain_history"]
        lines.append(f"| {f['test_subject']} | {sum(r['seconds'] for r in h):.0f} | {len(h)} | {f.get('seconds', float('nan')):.0f} |")
    return "\n".join(lines) + "\n"


def _per_fold_vs_supervised(folds: list[dict], methods: list[str], fractions: list[str]) -> list[str]:
    """Per fold and label fraction, each CroSSL method's macro-F1 minus the supervised baseline's: the
    'does pre-training help with few labels' question, without the between-subject spread of the means."""
    crossl = [m for m in methods if m.startswith("crossl_")]
    if "supervised" not in methods or not crossl:
        return []
    lines = [
        "",
        "### Per fold: CroSSL minus supervised from scratch (macro-F1, all 15 modalities; > 0 = CroSSL ahead)",
        "",
        "| fold | method | " + " | ".join(f"{float(f) * 100:g} %" for f in fractions) + " |",
        "|---|---|" + "---|" * len(fractions),
    ]
    wins = {(m, f): 0 for m in crossl for f in fractions}
    for fold in folds:
        r = fold["results"]
        for m in crossl:
            cells = []
            for f in fractions:
                d = r[m][f]["all"]["macro_f1"] - r["supervised"][f]["all"]["macro_f1"]
                wins[m, f] += d > 0
                cells.append(f"{d:+.3f}")
            lines.append(f"| {fold['test_subject']} | {METHOD_LABELS.get(m, m)} | " + " | ".join(cells) + " |")
    for m in crossl:
        cells = [f"{wins[m, f]}/{len(folds)}" for f in fractions]
        lines.append(f"| folds won | {METHOD_LABELS.get(m, m)} | " + " | ".join(cells) + " |")
    return lines


def _missing_unit(scenario: str) -> str:
    present = set(scenario.split("+"))
    return ",".join(u for u in data.UNITS if u not in present)


def plots(summary: dict, folds: list[dict], out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    methods, fractions = summary["methods"], summary["label_fractions"]
    written = []

    fig, ax = plt.subplots(figsize=(6, 4))
    xs = [float(f) * 100 for f in fractions]
    for m in methods:
        st = [summary["by_fraction"][m][f]["macro_f1"] for f in fractions]
        ax.errorbar(xs, [s["mean"] for s in st], yerr=[s["sd"] for s in st], marker="o", capsize=3, label=METHOD_LABELS.get(m, m))
    ax.set_xscale("log")
    ax.set_xticks(xs, [f"{x:g}%" for x in xs])
    ax.set_xlabel("labelled training windows (per class, stratified)")
    ax.set_ylabel("macro-F1 (held-out subject)")
    ax.set_title(f"DSADS LOSO ({', '.join(summary['folds'])}): F1 vs labels")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    written.append(out_dir / "f1_vs_label_fraction.png")
    fig.savefig(written[-1], dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    ks = list(range(1, len(data.UNITS) + 1))
    for m in methods:
        by_k = summary["quality_bar"][m]["by_units_present"]
        ax.plot(ks, [by_k[k] for k in ks], marker="o", label=METHOD_LABELS.get(m, m))
    ax.set_xticks(ks)
    ax.set_xlabel("body units present (mean over all subsets of that size)")
    ax.set_ylabel("macro-F1")
    ax.set_title(f"Missing body units ({float(fractions[-1]) * 100:g} % labels)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    written.append(out_dir / "f1_vs_units_present.png")
    fig.savefig(written[-1], dpi=120)
    plt.close(fig)

    method = "crossl_finetune" if "crossl_finetune" in methods else methods[0]
    cm = np.sum([np.asarray(f["confusion_all"][method][fractions[-1]]) for f in folds], axis=0).astype(float)
    cm_norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(9, 8))
    im = ax.imshow(cm_norm, cmap="Blues", vmin=0, vmax=1)
    n = len(data.CLASSES)
    ax.set_xticks(range(n), data.CLASSES, rotation=90, fontsize=7)
    ax.set_yticks(range(n), data.CLASSES, fontsize=7)
    for i in range(n):
        for j in range(n):
            if cm_norm[i, j] >= 0.01:
                ax.text(j, i, f"{cm_norm[i, j]:.2f}", ha="center", va="center", fontsize=5, color="white" if cm_norm[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{METHOD_LABELS.get(method, method)}, {float(fractions[-1]) * 100:g} % labels, all modalities; folds summed, row-normalised")
    fig.colorbar(im, fraction=0.046)
    fig.tight_layout()
    written.append(out_dir / "confusion_matrix.png")
    fig.savefig(written[-1], dpi=120)
    plt.close(fig)
    return written


# What `release` can ship, in the order a results folder's summary picks it (with --no-mag-expert,
# crossl_routed; else the plain fine-tune; a run of only the nomag25 recipe, e.g. few_labels.sh for 2.5.0).
SHIPPABLE = ("crossl_routed", "crossl_finetune", "crossl_nomag25")


def manifest_metrics(summary: dict, shipped: str | None = None) -> dict | None:
    """The summary metrics `model.json` carries (`python -m crossl export|release --metrics FILE`); None when
    the results hold no method that `release` ships (e.g. supervised alone)."""
    if shipped is None:
        shipped = next((m for m in SHIPPABLE if m in summary["quality_bar"]), None)
        if shipped is None:
            return None
    full = summary["label_fractions"][-1]
    q = summary["quality_bar"][shipped]
    return {
        "evaluation": f"leave-one-subject-out on DSADS, folds {','.join(summary['folds'])}; "
        "macro-F1 mean over folds; see MODEL_CARD.md",
        "loso_macro_f1_all_modalities": {
            m: {f"{float(f) * 100:g}%": round(v[f]["macro_f1"]["mean"], 4) for f in v}
            for m, v in summary["by_fraction"].items()
        },
        "shipped_recipe_loso_estimate": {
            "method": f"{shipped} ({float(full) * 100:g} % labels, modality dropout)",
            "all_modalities": round(q["all_modalities"], 4),
            "worst_single_unit_missing": round(q["worst_single_unit_missing"]["macro_f1"], 4),
            "no_mag": round(q["no_mag"], 4),
            "mean_over_unit_pairs": round(q["mean_over_unit_pairs"], 4),
        },
    }


def write(results_dir: Path, out_dir: Path, folds: list[str] | None = None) -> dict:
    fold_results = load_folds(results_dir, folds)
    summary = summarize(fold_results)
    summary["settings"] = fold_results[0].get("settings", {})
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    (out_dir / "tables.md").write_text(tables_markdown(summary, fold_results))
    metrics = manifest_metrics(summary)
    if metrics is not None:
        (out_dir / "manifest_metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    for p in plots(summary, fold_results, out_dir / "plots"):
        print(f"wrote {p}")
    print(f"wrote {out_dir / 'summary.json'} and {out_dir / 'tables.md'}")
    return summary


def _run_seed(settings: dict) -> int | None:
    """What tells seeded runs apart: --finetune-seed when the runs share one pre-training, else --seed."""
    return settings.get("finetune_seed", settings.get("seed"))


def seeds_markdown(
    results_dirs: list[Path],
    method: str = "crossl_finetune",
    baseline: str = "supervised",
    baseline_dirs: list[Path] | None = None,
) -> str:
    """`method` against `baseline` (macro-F1, all modalities present) over several LOSO runs that differ only
    in --seed: one results folder per seed. A seed changes the pre-training run, the labelled subset and the
    classifier's initialisation, so the spread over seeds inside one fold is the noise a one-seed table hides.
    Runs that share one pre-training and differ in --finetune-seed are told apart by that seed instead (the
    spread then leaves out the pre-training's).
    baseline_dirs: where the baseline's runs are, one per seed in the same order (default: results_dirs), for
    a variant of `method` evaluated alone against the baseline runs already made."""
    runs = [load_folds(d) for d in results_dirs]
    base_runs = [load_folds(d) for d in baseline_dirs] if baseline_dirs else runs
    seeds = [_run_seed(r[0].get("settings", {})) for r in runs]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"results folders must hold different seeds, got {seeds}")
    base_seeds = [_run_seed(r[0].get("settings", {})) for r in base_runs]
    if base_seeds != seeds:
        raise ValueError(f"baseline folders must hold the same seeds in the same order: {base_seeds} vs {seeds}")
    for dirs, rs, m in ((results_dirs, runs, method), (baseline_dirs or results_dirs, base_runs, baseline)):
        for d, r in zip(dirs, rs):
            if any(m not in f["results"] for f in r):
                raise ValueError(f"{d} holds folds without {m!r} (methods there: {sorted(r[0]['results'])})")
    folds = sorted(set.intersection(*({f["test_subject"] for f in r} for r in runs + base_runs)))
    fractions = sorted(
        set.intersection(
            *(set(f["results"][method]) for r in runs for f in r), *(set(f["results"][baseline]) for r in base_runs for f in r)
        ),
        key=float,
    )
    if not folds or not fractions:
        raise ValueError(f"the results folders share no fold with both {method} and {baseline} at one label fraction")

    def macro_f1(run: list[dict], m: str) -> list[list[float]]:
        """[fold, fraction] for one seed's run."""
        by_fold = {f["test_subject"]: f for f in run}
        return [[by_fold[fold]["results"][m][fr]["all"]["macro_f1"] for fr in fractions] for fold in folds]

    # f1[seed index, fold index, 0 = method / 1 = baseline, fraction index]
    f1 = np.array([np.stack([macro_f1(r, method), macro_f1(b, baseline)], axis=1) for r, b in zip(runs, base_runs)])
    diff = f1[:, :, 0] - f1[:, :, 1]  # [seed, fold, fraction]
    a, b = METHOD_LABELS.get(method, method), METHOD_LABELS.get(baseline, baseline)
    n_s, n_f = len(seeds), len(folds)
    lines = [
        f"{a} vs {b}, macro-F1 with all modalities present; folds {', '.join(folds)}; seeds {', '.join(map(str, seeds))}.",
        "",
        f"| label fraction | {a} | {b} | difference, mean ± sd over folds of the {n_s}-seed mean | folds ahead ({n_s}-seed mean) "
        f"| Wilcoxon p over folds (two-sided) | (fold, seed) runs ahead | sd over seeds within a fold, {a} / {b} |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for k, fr in enumerate(fractions):
        fold_diff = diff[:, :, k].mean(axis=0)
        within = f1[:, :, :, k].std(axis=0, ddof=1).mean(axis=0) if n_s > 1 else None
        p = wilcoxon(fold_diff).pvalue if n_f > 1 and np.any(fold_diff != 0) else float("nan")
        lines.append(
            f"| {float(fr) * 100:g} % | {_fmt(_ms(f1[:, :, 0, k].mean(axis=0)))} | {_fmt(_ms(f1[:, :, 1, k].mean(axis=0)))} "
            f"| {fold_diff.mean():+.3f} ± {_ms(fold_diff)['sd']:.3f} | {int((fold_diff > 0).sum())}/{n_f} | {p:.2f} "
            f"| {int((diff[:, :, k] > 0).sum())}/{n_s * n_f} "
            + (f"| {within[0]:.3f} / {within[1]:.3f} |" if within is not None else "| – (one seed) |")
        )
    lines += ["", "| seed | " + " | ".join(f"{float(fr) * 100:g} %: difference (folds ahead)" for fr in fractions) + " |"]
    lines.append("|---|" + "---|" * len(fractions))
    for s, seed in enumerate(seeds):
        cells = [f"{diff[s, :, k].mean():+.3f} ({int((diff[s, :, k] > 0).sum())}/{n_f})" for k in range(len(fractions))]
        lines.append(f"| {seed} | " + " | ".join(cells) + " |")
    lines += ["", "| fold | " + " | ".join(f"{float(fr) * 100:g} %: difference per seed" for fr in fractions) + " |"]
    lines.append("|---|" + "---|" * len(fractions))
    for j, fold in enumerate(folds):
        cells = [" ".join(f"{d:+.3f}" for d in diff[:, j, k]) for k in range(len(fractions))]
        lines.append(f"| {fold} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# Settings that choose what a run computes or how fast, not how a result is computed.
_RUN_ONLY_SETTINGS = {"command", "torch_threads", "torch", "subjects", "fractions", "methods"}


def _flat(settings: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in settings.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        elif prefix or k not in _RUN_ONLY_SETTINGS:
            out[f"{prefix}{k}"] = json.dumps(v)
    return out


def _setting_labels(runs: list[list[dict]], dirs: list[Path]) -> list[str]:
    """Name each run by the settings in which it differs from the others (e.g. `pretrain.coverage=0.5`). A
    setting some runs did not record (made before it existed) counts only if the runs that did differ in it."""
    flat = [_flat(r[0].get("settings", {})) for r in runs]
    keys = sorted({k for f in flat for k in f if len({g[k] for g in flat if k in g}) > 1})
    labels = [", ".join(f"{k}={f.get(k, '–')}" for k in keys) for f in flat]
    return labels if all(labels) and len(set(labels)) == len(labels) else [d.name for d in dirs]


def sweep_markdown(
    results_dirs: list[Path],
    methods: list[str] | None = None,
    baseline_dir: Path | None = None,
    baseline: str = "supervised",
) -> str:
    """LOSO runs that differ in one setting (e.g. --coverage), one results folder each, side by side: per
    method, macro-F1 mean ± sd over the folds every folder holds, with everything present, without
    magnetometers and averaged over the 10 two-unit subsets, at each label fraction all of them share. The
    first folder is the reference: every other row also gives its paired difference with everything present
    (mean over folds, folds ahead). baseline_dir adds `baseline` from another run as a last, italic row."""
    runs = [load_folds(d) for d in results_dirs]
    base = load_folds(baseline_dir) if baseline_dir else None
    methods = methods or [m for m in runs[0][0]["results"] if all(m in f["results"] for r in runs for f in r)]
    for d, r in zip(results_dirs, runs):
        for m in methods:
            if any(m not in f["results"] for f in r):
                raise ValueError(f"{d} holds folds without {m!r} (methods there: {sorted(r[0]['results'])})")
    if base is not None and any(baseline not in f["results"] for f in base):
        raise ValueError(f"{baseline_dir} holds folds without {baseline!r}")
    folds = sorted(set.intersection(*({f["test_subject"] for f in r} for r in runs + ([base] if base else []))))
    fractions = sorted(set.intersection(*(set(f["results"][m]) for r in runs for f in r for m in methods)), key=float)
    if not methods or not folds or not fractions:
        raise ValueError("the results folders share no fold holding one method at one label fraction")
    labels = _setting_labels(runs, results_dirs)

    def f1(run: list[dict], m: str, fr: str, what: str) -> np.ndarray | None:
        """[fold] macro-F1 for `what` = all / no_mag / pairs (mean over the two-unit subsets)."""
        by_fold = {f["test_subject"]: f["results"][m].get(fr) for f in run}
        if any(by_fold[fold] is None for fold in folds):
            return None
        scen = by_fold[folds[0]]
        keys = [s for s in scen if units_in(s) == 2] if what == "pairs" else [what] if what in scen else []
        if not keys:
            return None
        return np.array([np.mean([by_fold[fold][s]["macro_f1"] for s in keys]) for fold in folds])

    def cell(v: np.ndarray | None) -> str:
        return _fmt(_ms(list(v))) if v is not None else "–"

    head = [f"{float(fr) * 100:g} %: {w}" for fr in fractions for w in ("all", "no mag", "unit pairs", "Δ all (folds ahead)")]
    lines = [f"Macro-F1 mean ± sd over folds {', '.join(folds)}; Δ is paired against the first row.", ""]
    for m in methods:
        lines += [f"**{METHOD_LABELS.get(m, m)}**", "", "| run | " + " | ".join(head) + " |", "|---|" + "---|" * len(head)]
        ref = {fr: f1(runs[0], m, fr, "all") for fr in fractions}
        for i, (label, run) in enumerate(zip(labels, runs)):
            cells = []
            for fr in fractions:
                cells += [cell(f1(run, m, fr, w)) for w in ("all", "no_mag", "pairs")]
                d = f1(run, m, fr, "all") - ref[fr]
                cells.append("(reference)" if i == 0 else f"{d.mean():+.3f} ({int((d > 0).sum())}/{len(folds)})")
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        if base is not None:
            cells = []
            for fr in fractions:
                cells += [cell(f1(base, baseline, fr, w)) for w in ("all", "no_mag", "pairs")]
                d = f1(base, baseline, fr, "all")
                cells.append(f"{(d - ref[fr]).mean():+.3f} ({int((d > ref[fr]).sum())}/{len(folds)})" if d is not None else "–")
            lines.append(f"| *{METHOD_LABELS.get(baseline, baseline)} ({baseline_dir})* | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def robustness_markdown(
    results_dirs: list[Path],
    methods: list[str] | None = None,
    fraction: str | None = None,
    baseline: str = "supervised",
    baseline_dir: Path | None = None,
    folds: list[str] | None = None,
) -> str:
    """Missing-modality robustness of LOSO runs side by side (e.g. classifiers trained with and without
    modality dropout): macro-F1 mean ± sd over the folds every folder holds, averaged over the subsets with
    k body units present and for whole sensor types absent, at one label fraction (default: the largest all
    share), over `folds` (default: all). A method appears for the runs that hold it. Inside each run every
    other method is paired against `baseline` per fold, taken from the run itself or, where the run lacks it,
    from baseline_dir; every run after the first is paired against the first, method by method. Δ cells:
    mean over folds (folds ahead)."""
    runs = [load_folds(d, folds) for d in results_dirs]
    base = load_folds(baseline_dir, folds) if baseline_dir else None
    holds = [[m for m in r[0]["results"] if all(m in f["results"] for f in r)] for r in runs]
    methods = methods or list(dict.fromkeys(m for h in holds for m in h))
    for m in methods:
        if not any(m in h for h in holds):
            raise ValueError(f"no results folder holds {m!r} in every fold")
    if base is not None and any(baseline not in f["results"] for f in base):
        raise ValueError(f"{baseline_dir} holds folds without {baseline!r}")
    folds = sorted(set.intersection(*({f["test_subject"] for f in r} for r in runs + ([base] if base else []))))
    pairs = [(r, m) for r, h in zip(runs, holds) for m in methods if m in h] + ([(base, baseline)] if base else [])
    shared = set.intersection(*(set(f["results"][m]) for r, m in pairs for f in r))
    if fraction is None and shared:
        fraction = max(shared, key=float)
    if not folds or fraction not in shared:
        raise ValueError(f"the results folders share no fold holding {methods} at label fraction {fraction}")
    labels = _setting_labels(runs, results_dirs)
    scen = list(pairs[0][0][0]["results"][pairs[0][1]][fraction])
    columns = [(f"{k} unit{'s' if k > 1 else ''}", [s for s in scen if units_in(s) == k]) for k in range(len(data.UNITS), 0, -1)]
    columns = [c for c in columns if c[1]] + [(s.replace("_", " "), [s]) for s in SENSOR_SCENARIOS if s in scen]

    def f1(run: list[dict], m: str) -> np.ndarray:
        """[column, fold] macro-F1, averaged over the column's scenarios."""
        by_fold = {f["test_subject"]: f["results"][m][fraction] for f in run}
        return np.array([[np.mean([by_fold[fold][s]["macro_f1"] for s in keys]) for fold in folds] for _, keys in columns])

    def delta(a: np.ndarray, b: np.ndarray) -> str:
        return " | ".join(f"{d.mean():+.3f} ({int((d > 0).sum())}/{len(folds)})" for d in a - b)

    def name(m: str) -> str:
        return METHOD_LABELS.get(m, m)

    lines = [
        f"Macro-F1 at {float(fraction) * 100:g} % labels, mean ± sd over folds {', '.join(folds)}; 'k units' = mean over "
        "the subsets of k body units present (every sensor of them). Δ: paired mean over folds (folds ahead).",
        "",
        "| run | method | " + " | ".join(c for c, _ in columns) + " |",
        "|---|---|" + "---|" * len(columns),
    ]
    for label, run, held in zip(labels, runs, holds):
        ms = [m for m in methods if m in held]
        for m in ms:
            lines.append(f"| {label} | {name(m)} | " + " | ".join(_fmt(_ms(list(v))) for v in f1(run, m)) + " |")
        ref, ref_name = (f1(run, baseline), name(baseline)) if baseline in held else (None, "")
        if ref is None and base is not None:
            ref, ref_name = f1(base, baseline), f"{name(baseline)} ({baseline_dir})"
        for m in (m for m in ms if m != baseline and ref is not None):
            lines.append(f"| {label} | Δ {name(m)} − {ref_name} | " + delta(f1(run, m), ref) + " |")
    for label, run, held in list(zip(labels, runs, holds))[1:]:
        for m in (m for m in methods if m in held and m in holds[0]):
            lines.append(f"| Δ {label} − {labels[0]} | {name(m)} | " + delta(f1(run, m), f1(runs[0], m)) + " |")
    return "\n".join(lines) + "\n"
