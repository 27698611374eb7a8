"""capacity_ratio.py: which step counts as held, and the two ratios against the bare session."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import capacity_ratio  # noqa: E402


def step(devices, predictions_per_s, received, expected, p99_ms, seconds=30.0):
    return {
        "devices": devices,
        "predictions_per_s": predictions_per_s,
        "windows_received": received,
        "windows_expected": expected,
        "streamed_seconds": seconds,
        "latency": {"p99_ms": p99_ms},
    }


RUN = {
    "steps": [
        step(100, 86.0, 3000, 3000, 9.0),
        step(600, 520.0, 17990, 18000, 40.0),  # 99.94 %: held
        step(700, 600.0, 20985, 21000, 150.0),  # every window but p99 over 100 ms: not held
        step(800, 640.0, 20000, 24000, 500.0),  # saturated: the most predictions/s
    ]
}


def test_held_needs_both_the_fraction_and_the_latency():
    assert capacity_ratio.held(RUN["steps"][1])
    assert not capacity_ratio.held(RUN["steps"][2])
    assert not capacity_ratio.held(RUN["steps"][3])
    assert not capacity_ratio.held(step(10, 0.0, 0, 0, 1.0)), "a step that expected nothing holds nothing"


def test_ratios_against_the_mean_of_the_bare_measurements():
    r = capacity_ratio.ratios(RUN, [900.0, 1100.0], hop_ms=1000)
    assert r["bare_reference"] == 1000.0
    assert r["busiest_devices"] == 800 and r["busiest_saturated"] and abs(r["busiest_ratio"] - 0.64) < 1e-12
    assert r["held_devices"] == 600 and abs(r["held_windows_per_s"] - 600.0) < 1e-12
    assert abs(r["held_ratio"] - 0.6) < 1e-12
    # at a 2-s hop the same devices send half the windows
    assert abs(capacity_ratio.ratios(RUN, [1000.0], hop_ms=2000)["held_ratio"] - 0.3) < 1e-12
    text = capacity_ratio.markdown(r, batch=4)
    assert "**0.64**" in text and "**0.60**" in text and "batch 4" in text


def test_no_held_step_is_reported_as_such(tmp_path):
    run = {"steps": [RUN["steps"][3]]}
    r = capacity_ratio.ratios(run, [1000.0], hop_ms=1000)
    assert r["held_ratio"] is None and "no step held" in capacity_ratio.markdown(r, batch=4)
    # the report command end to end, appending to an existing table
    (tmp_path / "run.json").write_text(json.dumps(run))
    (tmp_path / "bare.jsonl").write_text(json.dumps({"batch": 4, "hop_ms": 1000, "windows_per_s": 1000.0}) + "\n")
    (tmp_path / "table.md").write_text("| table |\n")
    sys.argv = ["capacity_ratio.py", "report", "--run", str(tmp_path / "run.json"), "--bare", str(tmp_path / "bare.jsonl"),
                "--markdown", str(tmp_path / "table.md")]  # fmt: skip
    capacity_ratio.main()
    table = (tmp_path / "table.md").read_text()
    assert table.startswith("| table |\n") and "**0.64**" in table and "saturated" in table
