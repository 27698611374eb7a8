import json

import pytest

from crossl import report


def _fold(tmp, seed, subject, f1):
    """A results folder holding one fold JSON: f1[method][fraction] = macro-F1 with everything present."""
    results = {m: {fr: {"all": {"macro_f1": v, "accuracy": v}} for fr, v in by_fr.items()} for m, by_fr in f1.items()}
    d = tmp / f"seed{seed}"
    d.mkdir(parents=True, exist_ok=True)
    (d / f"fold_{subject}.json").write_text(json.dumps({"test_subject": subject, "settings": {"seed": seed}, "results": results}))
    return d


def _row(table, first_cell):
    return next(line for line in table.splitlines() if line.startswith(f"| {first_cell} |")).split(" | ")


def test_seed_table_averages_seeds_inside_each_fold_before_comparing(tmp_path):
    # fold p1: CroSSL ahead by 0.10 then behind by 0.02 (seed mean +0.04); fold p2: behind by 0.06 both times
    runs = {
        0: {"p1": (0.80, 0.70), "p2": (0.70, 0.76)},
        1: {"p1": (0.78, 0.80), "p2": (0.64, 0.70)},
    }
    dirs = []
    for seed, folds in runs.items():
        for subject, (crossl, sup) in folds.items():
            d = _fold(tmp_path, seed, subject, {"crossl_finetune": {"0.05": crossl, "1": 0.9}, "supervised": {"0.05": sup}})
        dirs.append(d)
    table = report.seeds_markdown(dirs)
    row = _row(table, "5 %")
    assert row[1] == "0.730 ± 0.085"  # CroSSL: fold means 0.79 and 0.67
    assert row[2] == "0.740 ± 0.014"  # supervised: fold means 0.75 and 0.73
    assert row[3] == "-0.010 ± 0.071"  # fold differences +0.04 and -0.06
    assert row[4] == "1/2"  # folds where the seed mean favours CroSSL
    assert row[6] == "1/4"  # single runs where CroSSL is ahead
    assert row[7].startswith("0.028 / 0.057")  # sd over the two seeds, averaged over folds
    assert "| 100 % |" not in table  # supervised was not run at 100 %: no row
    assert _row(table, "0")[1] == "+0.020 (1/2) |" and _row(table, "1")[1] == "-0.040 (0/2) |"  # per seed
    assert _row(table, "p1")[1] == "+0.100 -0.020 |"  # per fold, one difference per seed


def test_seed_table_refuses_two_folders_of_one_seed(tmp_path):
    a = _fold(tmp_path, 0, "p1", {"crossl_finetune": {"1": 0.9}, "supervised": {"1": 0.9}})
    with pytest.raises(ValueError, match="different seeds"):
        report.seeds_markdown([a, a])


def test_seed_table_tells_runs_apart_by_finetune_seed_when_they_share_a_pretraining(tmp_path):
    dirs = []
    for ft in (0, 1):
        d = _fold(tmp_path / f"ft{ft}", 0, "p1", {"crossl_finetune": {"0.05": 0.9}, "supervised": {"0.05": 0.8}})
        path = d / "fold_p1.json"
        fold = json.loads(path.read_text())
        fold["settings"]["finetune_seed"] = ft
        path.write_text(json.dumps(fold))
        dirs.append(d)
    assert "seeds 0, 1" in report.seeds_markdown(dirs)


def test_seed_table_can_take_the_baseline_from_other_folders(tmp_path):
    variant = _fold(tmp_path / "variant", 0, "p1", {"crossl_finetune": {"0.05": 0.9}})
    base = _fold(tmp_path / "base", 0, "p1", {"supervised": {"0.05": 0.8}})
    assert _row(report.seeds_markdown([variant], baseline_dirs=[base]), "5 %")[3] == "+0.100 ± 0.000"
    other = _fold(tmp_path / "base", 1, "p1", {"supervised": {"0.05": 0.8}})
    with pytest.raises(ValueError, match="same seeds"):
        report.seeds_markdown([variant], baseline_dirs=[other])


def test_seed_table_explains_a_missing_method_or_no_overlap(tmp_path):
    only_sup = _fold(tmp_path / "a", 0, "p1", {"supervised": {"0.05": 0.8}})
    with pytest.raises(ValueError, match="without 'crossl_finetune'"):
        report.seeds_markdown([only_sup])
    other_fraction = _fold(tmp_path / "b", 0, "p1", {"crossl_finetune": {"1": 0.9}})
    with pytest.raises(ValueError, match="share no fold"):
        report.seeds_markdown([other_fraction], baseline_dirs=[only_sup])


def _sweep_fold(d, subject, coverage, f1):
    """One fold JSON: f1[method][fraction] = (all, no_mag, pair_a, pair_b), settings differing in coverage."""
    scen = ("all", "no_mag", "torso+left_leg", "right_arm+left_arm")
    results = {m: {fr: {s: {"macro_f1": v, "accuracy": v} for s, v in zip(scen, vals)} for fr, vals in by.items()} for m, by in f1.items()}
    settings = {"seed": 0, "command": f"evaluate {subject}", "pretrain": {"coverage": coverage, "epochs": 10}}
    d.mkdir(parents=True, exist_ok=True)
    (d / f"fold_{subject}.json").write_text(json.dumps({"test_subject": subject, "settings": settings, "results": results}))
    return d


def test_sweep_table_names_runs_by_the_setting_that_differs_and_pairs_folds(tmp_path):
    ref, low = tmp_path / "ref", tmp_path / "low"
    for subject, (r, lo) in {"p1": (0.70, 0.80), "p2": (0.60, 0.58)}.items():
        _sweep_fold(ref, subject, 0.9, {"crossl_probe": {"0.01": (r, 0.5, 0.4, 0.2), "1": (0.9,) * 4}, "supervised": {"0.01": (0.75,) * 4}})
        _sweep_fold(low, subject, 0.5, {"crossl_probe": {"0.01": (lo, 0.6, 0.3, 0.5)}})
    table = report.sweep_markdown([ref, low], ["crossl_probe"], baseline_dir=ref)
    first = _row(table, "pretrain.coverage=0.9")
    assert first[1:5] == ["0.650 ± 0.071", "0.500 ± 0.000", "0.300 ± 0.000", "(reference) |"]
    row = _row(table, "pretrain.coverage=0.5")
    assert row[1] == "0.690 ± 0.156" and row[3] == "0.400 ± 0.000"  # unit pairs: mean of the two pairs
    assert row[4] == "+0.040 (1/2) |"  # paired: +0.10 on p1, -0.02 on p2
    assert "100 %" not in table  # only fractions every run holds
    assert _row(table, f"*Supervised from scratch ({ref})*")[4] == "+0.100 (2/2) |"
    with pytest.raises(ValueError, match="without 'crossl_finetune'"):
        report.sweep_markdown([ref, low], ["crossl_finetune"])


def _robustness_fold(d, subject, dropout, f1):
    """One fold JSON at 100 % labels: f1[method] = (all, the two one-unit-missing subsets' value, pair, no_mag)."""
    results = {}
    for m, (everything, four, pair, no_mag) in f1.items():
        scen = {"all": everything, "right_arm+left_arm+right_leg+left_leg": four, "torso+right_arm+left_arm+right_leg": four}
        scen |= {"torso+left_leg": pair, "no_mag": no_mag}
        results[m] = {"1": {s: {"macro_f1": v, "accuracy": v} for s, v in scen.items()}}
    settings = {"seed": 0, "classifier": {"modality_dropout": dropout}}
    d.mkdir(parents=True, exist_ok=True)
    (d / f"fold_{subject}.json").write_text(json.dumps({"test_subject": subject, "settings": settings, "results": results}))


def test_robustness_table_groups_subsets_by_units_present_and_pairs_within_and_across_runs(tmp_path):
    on, off = tmp_path / "on", tmp_path / "off"
    for subject, four in {"p1": 0.9, "p2": 0.6}.items():
        _robustness_fold(on, subject, True, {"crossl_finetune": (0.9, 0.8, 0.7, 0.6), "supervised": (0.9, 0.8, 0.6, 0.5)})
        _robustness_fold(off, subject, False, {"crossl_finetune": (0.95, four, 0.3, 0.2)})
    table = report.robustness_markdown([on, off], baseline_dir=on)
    assert "| run | method | 5 units | 4 units | 2 units | no mag |" in table  # no 3- or 1-unit subsets here
    assert _row(table, "classifier.modality_dropout=true")[1:] == ["CroSSL fine-tune", "0.900 ± 0.000", "0.800 ± 0.000", "0.700 ± 0.000", "0.600 ± 0.000 |"]
    assert _row(table, "classifier.modality_dropout=false")[2:4] == ["0.950 ± 0.000", "0.750 ± 0.212"]  # 4 units: folds 0.9, 0.6
    lines = table.splitlines()
    inside_on = next(line for line in lines if line.startswith("| classifier.modality_dropout=true | Δ"))
    assert inside_on.split(" | ")[1:] == ["Δ CroSSL fine-tune − Supervised from scratch", "+0.000 (0/2)", "+0.000 (0/2)", "+0.100 (2/2)", "+0.100 (2/2) |"]
    inside_off = next(line for line in lines if line.startswith("| classifier.modality_dropout=false | Δ"))
    assert f"Supervised from scratch ({on})" in inside_off  # off lacks supervised: taken from baseline_dir
    assert inside_off.split(" | ")[2:] == ["+0.050 (2/2)", "-0.050 (1/2)", "-0.300 (0/2)", "-0.300 (0/2) |"]
    across = _row(table, "Δ classifier.modality_dropout=false − classifier.modality_dropout=true")
    assert across[1:] == ["CroSSL fine-tune", "+0.050 (2/2)", "-0.050 (1/2)", "-0.400 (0/2)", "-0.400 (0/2) |"]
    assert "Supervised from scratch | +" not in table.split("Δ classifier")[-1]  # no across row for a method off lacks
    with pytest.raises(ValueError, match="no results folder holds 'random_probe'"):
        report.robustness_markdown([on, off], ["random_probe"])
    only_p2 = report.robustness_markdown([on, off], baseline_dir=on, folds=["p2"])
    assert "folds p2;" in only_p2 and _row(only_p2, "classifier.modality_dropout=false")[3] == "0.600 ± 0.000"
    with pytest.raises(ValueError, match="at label fraction 0.05"):
        report.robustness_markdown([on, off], fraction="0.05")  # no run holds 5 %
    with pytest.raises(FileNotFoundError, match="for folds p9"):
        report.robustness_markdown([on, off], folds=["p9"])
