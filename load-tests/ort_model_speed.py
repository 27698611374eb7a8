"""Model compute alone: median ONNX Runtime time per batch of a model.onnx (CPU EP, 1 intra-op thread,
all modalities present, random inputs). Pass several models to compare them, run alternately.

    .venv/bin/python load-tests/ort_model_speed.py OLD/model.onnx models/crossl-dsads/model.onnx
"""

import argparse
import statistics
import time

import numpy as np
import onnxruntime as ort

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("models", nargs="+")
ap.add_argument("--batch", type=int, default=32)
ap.add_argument("--rounds", type=int, default=5, help="alternating rounds")
ap.add_argument("--iterations", type=int, default=20, help="timed runs per model per round")
a = ap.parse_args()

opts = ort.SessionOptions()
opts.intra_op_num_threads = 1
sessions = [ort.InferenceSession(m, opts, providers=["CPUExecutionProvider"]) for m in a.models]
rng = np.random.default_rng(0)
feeds = []
for s in sessions:
    f = {}
    for i in s.get_inputs():
        shape = [a.batch if not isinstance(d, int) else d for d in i.shape]
        f[i.name] = np.ones(shape, np.float32) if i.name == "present" else rng.standard_normal(shape).astype(np.float32)
    feeds.append(f)
times: list[list[float]] = [[] for _ in sessions]
for s, f in zip(sessions, feeds, strict=True):
    s.run(None, f)  # warm-up
for _ in range(a.rounds):
    for k, (s, f) in enumerate(zip(sessions, feeds, strict=True)):
        for _ in range(a.iterations):
            t0 = time.perf_counter()
            s.run(None, f)
            times[k].append(time.perf_counter() - t0)
base = statistics.median(times[0])
for m, t in zip(a.models, times, strict=True):
    med = statistics.median(t)
    print(f"{m}: median {med * 1e3:.2f} ms per batch of {a.batch} ({a.batch / med:.0f} windows/s), {med / base:.2f}x the first")
