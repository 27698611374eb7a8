"""Model compute alone: median ONNX Runtime time per batch of a model.onnx (CPU EP, 1 intra-op thread by
default, all modalities present, random inputs). Pass several models to compare them, run alternately.
`--provider cuda` runs the CUDA EP (onnxruntime-gpu) with host arrays in and out, as the service feeds it.

    .venv/bin/python load-tests/ort_model_speed.py OLD/model.onnx models/crossl-dsads/model.onnx
"""

import argparse
import json
import statistics
import time

import numpy as np
import onnxruntime as ort


PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


def measure(
    models: list[str], batch: int, rounds: int = 5, iterations: int = 20, threads: int = 1, provider: str = "cpu"
) -> list[float]:
    """Median seconds per batch of each model, the models timed alternately (round-robin) so drift spreads."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    ep = PROVIDERS[provider]
    if ep not in ort.get_available_providers():
        raise SystemExit(f"{ep} is not in this onnxruntime ({ort.get_available_providers()}): install onnxruntime-gpu")
    sessions = [ort.InferenceSession(m, opts, providers=[ep]) for m in models]
    for s in sessions:
        if s.get_providers()[0] != ep:  # ONNX Runtime falls back to CPU silently when the EP cannot start
            raise SystemExit(f"{ep} could not start (session runs on {s.get_providers()})")
    rng = np.random.default_rng(0)
    feeds = []
    for s in sessions:
        f = {}
        for i in s.get_inputs():
            shape = [batch if not isinstance(d, int) else d for d in i.shape]
            f[i.name] = np.ones(shape, np.float32) if i.name == "present" else rng.standard_normal(shape).astype(np.float32)
        feeds.append(f)
    times: list[list[float]] = [[] for _ in sessions]
    for s, f in zip(sessions, feeds, strict=True):
        s.run(None, f)  # warm-up
    for _ in range(rounds):
        for k, (s, f) in enumerate(zip(sessions, feeds, strict=True)):
            for _ in range(iterations):
                t0 = time.perf_counter()
                s.run(None, f)
                times[k].append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=5, help="alternating rounds")
    ap.add_argument("--iterations", type=int, default=20, help="timed runs per model per round")
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads")
    ap.add_argument("--provider", choices=sorted(PROVIDERS), default="cpu", help="execution provider")
    ap.add_argument("--json", action="store_true", help="one JSON object per model (ms_per_batch, windows_per_s)")
    a = ap.parse_args()
    medians = measure(a.models, a.batch, a.rounds, a.iterations, a.threads, a.provider)
    for m, med in zip(a.models, medians, strict=True):
        if a.json:
            print(json.dumps({"model": m, "provider": a.provider, "batch": a.batch, "threads": a.threads, "ms_per_batch": med * 1e3, "windows_per_s": a.batch / med}))
        else:
            print(f"{m}: median {med * 1e3:.2f} ms per batch of {a.batch} ({a.batch / med:.0f} windows/s), {med / medians[0]:.2f}x the first")


if __name__ == "__main__":
    main()
