"""What `report.write` puts in manifest_metrics.json, whichever methods a results folder holds."""

from crossl import report


def summary(methods: list[str]) -> dict:
    bar = {"all_modalities": 0.9, "worst_single_unit_missing": {"macro_f1": 0.85}, "no_mag": 0.8, "mean_over_unit_pairs": 0.8}
    return {
        "folds": ["p1"],
        "label_fractions": ["0.01"],
        "by_fraction": {m: {"0.01": {"macro_f1": {"mean": 0.7}}} for m in methods},
        "quality_bar": {m: dict(bar) for m in methods},
    }


def test_the_shipped_method_is_picked_routed_then_finetune_then_nomag25():
    assert "crossl_routed" in report.manifest_metrics(summary(["crossl_finetune", "crossl_routed"]))["shipped_recipe_loso_estimate"]["method"]
    assert "crossl_finetune" in report.manifest_metrics(summary(["supervised", "crossl_finetune"]))["shipped_recipe_loso_estimate"]["method"]
    # A few-label run of 2.5.0's recipe alone (few_labels.sh with RECIPE=crossl_nomag25) has no crossl_finetune.
    assert "crossl_nomag25" in report.manifest_metrics(summary(["crossl_nomag25"]))["shipped_recipe_loso_estimate"]["method"]


def test_results_without_a_shippable_method_have_no_manifest_metrics():
    assert report.manifest_metrics(summary(["supervised"])) is None
