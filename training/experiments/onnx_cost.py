"""What a model directory costs to serve: ONNX file size, parameter count and ONNX Runtime CPU throughput
(1 intra-op thread, full batches of real DSADS windows with every modality present), median over repeats.
Used to weigh the official encoder widths (24/48/96) against the small ones (8/16/32).

    python training/experiments/onnx_cost.py models/crossl-dsads training/runs/official_model
"""

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import onnx

from crossl import data, export

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("model_dirs", type=Path, nargs="+", help="folders holding model.onnx")
ap.add_argument("--data", type=Path, default=data.DEFAULT_DATA_DIR)
ap.add_argument("--batch", type=int, default=32)
ap.add_argument("--repeats", type=int, default=15, help="timed runs of 10 batches each")
a = ap.parse_args()

x, _ = data.DSADS.load(a.data, ["p1"], data.DEFAULT_CACHE_DIR).segments(["p1"])
x = x[:: max(1, len(x) // a.batch)][: a.batch]
present = np.ones((len(x), len(data.MODALITIES)), dtype=np.float32)
print("| model | widths | ONNX MB | parameters | windows/s (median) | min–max |")
print("|---|---|---|---|---|---|")
for d in a.model_dirs:
    path = d / "model.onnx"
    params = sum(int(np.prod(t.dims)) for t in onnx.load(str(path)).graph.initializer)
    session = export.ort_session(path)
    for _ in range(5):  # warm-up
        export.ort_run(session, data.MODALITIES, x, present)
    rates = []
    for _ in range(a.repeats):
        t0 = time.perf_counter()
        for _ in range(10):
            export.ort_run(session, data.MODALITIES, x, present)
        rates.append(10 * len(x) / (time.perf_counter() - t0))
    arch = "/".join(map(str, json.loads((d / "model.json").read_text())["architecture"]["widths"]))
    print(
        f"| {d} | {arch} | {path.stat().st_size / 1e6:.1f} | {params:,} | {statistics.median(rates):.0f} "
        f"| {min(rates):.0f}–{max(rates):.0f} |"
    )
