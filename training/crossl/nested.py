"""Nested leave-one-subject-out: every choice is made on an inner validation subject drawn from the outer
fold's training subjects; the held-out subject is scored once, with the recipe the inner split chose.

Protocol (one fixed inner split per outer fold, not a full inner LOSO -- CPU budget):
- outer fold t: the training subjects are every subject but t;
- inner validation subject v: the training subject that follows t in the subject order (p1 -> p2, ...,
  p6 -> p1), so each subject serves as validation exactly once;
- pre-training (self-supervised, no labels) uses the unlabelled windows of all outer training subjects,
  v included: no label of v and nothing of t reaches it;
- each candidate recipe is fine-tuned on the labels of the training subjects but v and scored on v;
- the candidate with the best selection score on v (mean of macro-F1 over: all modalities, worst single
  unit missing, no magnetometers, mean over unit pairs) is fine-tuned on all training subjects' labels and
  scored on t. That outer score is the estimate; the inner scores are selection-time numbers.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from . import data
from .evaluate import run_fold, units_in


def inner_validation_subject(test_subject: str, subjects: list[str]) -> str:
    """The training subject after `test_subject` in `subjects`' order (cyclic)."""
    i = subjects.index(test_subject)
    return subjects[(i + 1) % len(subjects)]


def quality(scores: dict) -> dict:
    """The four quality lines (+ acc only) from one method's per-scenario scores at one label fraction."""
    f1 = {name: s["macro_f1"] for name, s in scores.items()}
    one_missing = [s for s in f1 if units_in(s) == len(data.UNITS) - 1]
    pairs = [s for s in f1 if units_in(s) == 2]
    worst = min(one_missing, key=lambda s: f1[s])
    return {
        "all": f1["all"],
        "worst_single_unit_missing": f1[worst],
        "worst_single_unit_missing_scenario": worst,
        "no_mag": f1["no_mag"],
        "mean_over_unit_pairs": float(np.mean([f1[s] for s in pairs])),
        "acc_only": f1["acc_only"],
    }


def selection_score(q: dict) -> float:
    return float(np.mean([q["all"], q["worst_single_unit_missing"], q["no_mag"], q["mean_over_unit_pairs"]]))


def run(
    root: Path,
    subjects: list[str],
    folds: list[str],
    candidates: list[str],
    out_dir: Path,
    pre_cfg,
    clf_cfg,
    widths: tuple[int, ...],
    head_hidden: int,
    hop: int,
    seed: int,
    cache_dir: Path | None,
    command: str,
    run_dir: Path,
    centre_mag: bool = True,
) -> list[dict]:
    out_dir.mkdir(parents=True, exist_ok=True)
    ds = data.DSADS.load(root, subjects, cache_dir)
    results = []
    for t in folds:
        path = out_dir / f"nested_{t}.json"
        if path.exists():
            results.append(json.loads(path.read_text()))
            print(f"[{t}] done already: {path}", flush=True)
            continue
        t0 = time.perf_counter()
        train = [s for s in subjects if s != t]
        assert t not in train, "the held-out subject must never reach pre-training or selection"
        v = inner_validation_subject(t, subjects)
        # Both calls pass pretrain_subjects=train: the inner call (test subject v) pre-trains on all of
        # `train`, v's unlabelled windows included, and saves it; the outer call (test subject t) finds the
        # same checkpoint key and reuses it, so each outer fold pre-trains once.
        ckpt_dir = run_dir / f"nested_{t}"
        inner = run_fold(
            ds, v, train, [1.0], candidates, pre_cfg, clf_cfg, widths, head_hidden, hop, seed, ckpt_dir,
            centre_mag, pretrain_subjects=train,
        )  # fmt: skip
        inner_q = {m: quality(inner["results"][m]["1"]) for m in candidates}
        chosen = max(candidates, key=lambda m: selection_score(inner_q[m]))
        print(f"[{t}] inner validation on {v}: " + ", ".join(f"{m} {selection_score(q):.4f}" for m, q in inner_q.items()) + f" -> {chosen}", flush=True)
        outer = run_fold(
            ds, t, subjects, [1.0], [chosen], pre_cfg, clf_cfg, widths, head_hidden, hop, seed, ckpt_dir,
            centre_mag, pretrain_subjects=train,
        )  # fmt: skip
        result = {
            "test_subject": t,
            "inner_validation_subject": v,
            "candidates": candidates,
            "inner": {m: {"quality": inner_q[m], "selection_score": selection_score(inner_q[m])} for m in candidates},
            "chosen": chosen,
            "outer": quality(outer["results"][chosen]["1"]),
            "outer_scenarios": outer["results"][chosen]["1"],
            "settings": {
                "command": command,
                "pretrain": asdict(pre_cfg),
                "classifier": asdict(clf_cfg),
                "widths": list(widths),
                "hop": hop,
                "seed": seed,
            },
            "seconds": time.perf_counter() - t0,
        }
        path.write_text(json.dumps(result, indent=1, default=str))
        print(f"[{t}] outer ({chosen}): " + json.dumps({k: v for k, v in result["outer"].items()}), flush=True)
        results.append(result)
    return results


def merge(runs: list[list[dict]]) -> list[dict]:
    """One nested result per fold from several runs over different candidate sets, as if one run had had every
    candidate: per fold, the candidate with the best inner selection score across the runs wins, and its
    outer score comes from the run that chose it (a run's winner beat its own candidates, so the overall
    winner was chosen, and scored, in its run). A candidate in several runs must have the same inner scores
    in each (same seeds and settings): otherwise the runs are not comparable and this raises."""
    by_fold: dict[str, list[dict]] = {}
    for run in runs:
        for r in run:
            by_fold.setdefault(r["test_subject"], []).append(r)
    merged = []
    for t, rs in by_fold.items():
        inner: dict[str, dict] = {}
        for r in rs:
            for m, v in r["inner"].items():
                if m in inner and not np.isclose(inner[m]["selection_score"], v["selection_score"], atol=1e-9):
                    raise ValueError(f"{t}: {m}'s inner score differs between runs ({inner[m]['selection_score']} vs {v['selection_score']})")
                inner[m] = v
        chosen = max(inner, key=lambda m: inner[m]["selection_score"])
        source = next(r for r in rs if r["chosen"] == chosen)
        merged.append({**source, "candidates": list(inner), "inner": inner, "merged_from": len(rs)})
    return merged


def relabel(run: list[dict], label: str) -> list[dict]:
    """A run's candidates renamed `name@label`: for merging runs whose candidates share a method name but not
    its settings (e.g. the same fine-tune on another pre-training), which `merge` would otherwise refuse."""
    tag = lambda m: f"{m}@{label}"  # noqa: E731
    return [
        {
            **r,
            "candidates": [tag(m) for m in r["candidates"]],
            "inner": {tag(m): v for m, v in r["inner"].items()},
            "chosen": tag(r["chosen"]),
        }
        for r in run
    ]


def manifest_metrics(results: list[dict]) -> dict:
    """What `export --metrics` puts into model.json: the outer estimate, mean over the finished folds."""
    keys = ["all", "worst_single_unit_missing", "no_mag", "mean_over_unit_pairs", "acc_only"]
    folds = [r["test_subject"] for r in results]
    return {
        "evaluation": "nested leave-one-subject-out on DSADS (one fixed inner validation subject per outer fold; "
        f"outer folds: {','.join(folds)}); macro-F1 of the recipe each inner split chose, mean over those folds; "
        "see MODEL_CARD.md",
        "nested_outer_estimate": {
            "folds": folds,
            "chosen": {r["test_subject"]: r["chosen"] for r in results},
            **{k: round(float(np.mean([r["outer"][k] for r in results])), 4) for k in keys},
        },
    }


def markdown(results: list[dict]) -> str:
    lines = [
        "| held-out | inner validation | chosen | all | worst unit missing | no mag | unit pairs | acc only |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        q = r["outer"]
        lines.append(
            f"| {r['test_subject']} | {r['inner_validation_subject']} | {r['chosen']} | {q['all']:.3f} | "
            f"{q['worst_single_unit_missing']:.3f} | {q['no_mag']:.3f} | {q['mean_over_unit_pairs']:.3f} | {q['acc_only']:.3f} |"
        )
    if results:
        keys = ["all", "worst_single_unit_missing", "no_mag", "mean_over_unit_pairs", "acc_only"]
        means = [np.mean([r["outer"][k] for r in results]) for k in keys]
        lines.append(f"| mean ({len(results)} folds) | | | " + " | ".join(f"{m:.3f}" for m in means) + " |")
    lines += ["", "Selection-time scores (inner validation subject, selection score = mean of the four lines):", ""]
    for r in results:
        lines.append(f"- {r['test_subject']} (validate on {r['inner_validation_subject']}): " + ", ".join(
            f"{m} {r['inner'][m]['selection_score']:.3f}" for m in r["candidates"]) + f" -> {r['chosen']}")
    return "\n".join(lines) + "\n"
