"""Nested selection: the inner validation subject is never the held-out one, and the quality lines are the
card's (worst single unit missing, mean over unit pairs)."""

import numpy as np

from crossl import nested
from crossl.evaluate import scenarios

SUBJECTS = ["p1", "p2", "p3", "p4", "p5", "p6"]


def test_inner_validation_subject_is_a_training_subject_and_each_serves_once():
    inner = [nested.inner_validation_subject(t, SUBJECTS) for t in SUBJECTS]
    assert all(v != t for v, t in zip(inner, SUBJECTS))
    assert sorted(inner) == sorted(SUBJECTS)


def _scores(f1_of):
    return {name: {"macro_f1": f1_of(name), "accuracy": 0.0} for name in scenarios()}


def test_quality_lines_and_selection_score():
    # all = 0.9; four-unit subsets 0.8 except one at 0.7; pairs 0.6; no_mag 0.5; acc_only 0.4; others 0.1
    def f1(name):
        if name == "all":
            return 0.9
        if name == "no_mag":
            return 0.5
        if name == "acc_only":
            return 0.4
        units = name.count("+") + 1
        if units == 4:
            return 0.7 if name == "torso+right_arm+left_arm+right_leg" else 0.8
        return 0.6 if units == 2 else 0.1

    q = nested.quality(_scores(f1))
    assert q["all"] == 0.9 and q["no_mag"] == 0.5 and q["acc_only"] == 0.4
    assert q["worst_single_unit_missing"] == 0.7
    assert q["worst_single_unit_missing_scenario"] == "torso+right_arm+left_arm+right_leg"
    assert np.isclose(q["mean_over_unit_pairs"], 0.6)
    assert np.isclose(nested.selection_score(q), (0.9 + 0.7 + 0.5 + 0.6) / 4)


def test_markdown_reports_every_fold_and_the_mean():
    q = {"all": 0.9, "worst_single_unit_missing": 0.8, "no_mag": 0.7, "mean_over_unit_pairs": 0.6, "acc_only": 0.5}
    rows = [
        {"test_subject": t, "inner_validation_subject": nested.inner_validation_subject(t, SUBJECTS), "chosen": "a",
         "candidates": ["a", "b"], "outer": q, "inner": {"a": {"selection_score": 0.7}, "b": {"selection_score": 0.6}}}
        for t in ("p1", "p2")
    ]  # fmt: skip
    md = nested.markdown(rows)
    assert "| p1 | p2 | a | 0.900 |" in md and "| mean (2 folds) | | | 0.900 | 0.800 | 0.700 | 0.600 | 0.500 |" in md
    assert "p2 (validate on p3): a 0.700, b 0.600 -> a" in md


def test_manifest_metrics_are_the_outer_means_of_the_finished_folds():
    rows = [
        {"test_subject": "p1", "chosen": "a", "outer": {"all": 0.9, "worst_single_unit_missing": 0.8, "no_mag": 0.7,
                                                         "mean_over_unit_pairs": 0.6, "acc_only": 0.5}},
        {"test_subject": "p2", "chosen": "b", "outer": {"all": 0.8, "worst_single_unit_missing": 0.6, "no_mag": 0.5,
                                                         "mean_over_unit_pairs": 0.4, "acc_only": 0.3}},
    ]  # fmt: skip
    est = nested.manifest_metrics(rows)["nested_outer_estimate"]
    assert est["folds"] == ["p1", "p2"] and est["chosen"] == {"p1": "a", "p2": "b"}
    assert est["all"] == 0.85 and est["no_mag"] == 0.6 and est["acc_only"] == 0.4


def test_merge_picks_the_best_inner_candidate_across_runs_and_its_outer_score():
    def row(t, inner, chosen, outer_all):
        return {"test_subject": t, "inner_validation_subject": "v", "chosen": chosen, "outer": {"all": outer_all},
                "inner": {m: {"selection_score": v} for m, v in inner.items()}, "candidates": list(inner)}  # fmt: skip

    old = [row("p1", {"a": 0.8, "b": 0.7}, "a", 0.91), row("p2", {"a": 0.6, "b": 0.7}, "b", 0.82)]
    new = [row("p1", {"a": 0.8, "c": 0.85}, "c", 0.93), row("p2", {"a": 0.6, "c": 0.65}, "c", 0.99)]
    merged = {r["test_subject"]: r for r in nested.merge([old, new])}
    assert merged["p1"]["chosen"] == "c" and merged["p1"]["outer"]["all"] == 0.93
    assert merged["p2"]["chosen"] == "b" and merged["p2"]["outer"]["all"] == 0.82  # c won its run, not overall
    assert set(merged["p2"]["inner"]) == {"a", "b", "c"}
    # a shared candidate whose inner score differs between runs: the runs are not comparable
    bad = [row("p1", {"a": 0.79, "c": 0.85}, "c", 0.93)]
    try:
        nested.merge([old, bad])
    except ValueError as e:
        assert "p1" in str(e)
    else:
        raise AssertionError("merged runs whose shared candidate disagrees")


def test_relabel_lets_runs_with_other_settings_merge_as_distinct_candidates():
    def row(t, inner, chosen):
        return {"test_subject": t, "chosen": chosen, "outer": {"all": 0.9},
                "inner": {m: {"selection_score": v} for m, v in inner.items()}, "candidates": list(inner)}  # fmt: skip

    old = [row("p1", {"a": 0.8, "b": 0.7}, "a")]
    dense = [row("p1", {"a": 0.85}, "a")]  # same method name, another pre-training: merge alone refuses it
    try:
        nested.merge([old, dense])
    except ValueError:
        pass
    else:
        raise AssertionError("merged runs whose shared candidate disagrees")
    relabelled = nested.relabel(dense, "dense")
    assert relabelled[0]["chosen"] == "a@dense" and relabelled[0]["candidates"] == ["a@dense"]
    assert dense[0]["chosen"] == "a", "the input run is left as it was"
    (merged,) = nested.merge([old, relabelled])
    assert merged["chosen"] == "a@dense" and set(merged["inner"]) == {"a", "b", "a@dense"}
