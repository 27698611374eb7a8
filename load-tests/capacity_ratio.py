"""Issue 18's ratios from one `make bench-capacity` run: the service's figures (crossl-loadgen's JSON) against
a bare ONNX Runtime session on the same model, batch and threads, measured on the same core right before and
right after the load (ort_model_speed.py --json lines), so drift between the two shows.

    taskset -c 0 python load-tests/capacity_ratio.py bare --server http://127.0.0.1:8080 --model-dir models/crossl-dsads > before.jsonl
    …load…
    taskset -c 0 python load-tests/capacity_ratio.py bare --server http://127.0.0.1:8080 --model-dir models/crossl-dsads > after.jsonl
    python load-tests/capacity_ratio.py report --run target/bench-capacity.json --bare before.jsonl after.jsonl

`bare` asks the running server (`GET /v1/model`) for its model file, batch size, intra-op threads and
execution provider, and times that model alone with those settings (ort_model_speed.py); with a provider
other than the CPU's there is no CPU reference and it prints nothing.

- saturated: the most predictions/s of any step ÷ bare windows/s (target ≥ 0.95; only meaningful when that
  step was past saturation, which the table says);
- held: the most devices of a step that delivered ≥ 99.9 % of its windows with p99 (last chunk →
  prediction) ≤ 100 ms, at one window per device per hop, ÷ bare windows/s (target ≥ 0.9).
Prints a markdown section (appended to --markdown when given).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

HELD_FRACTION = 0.999
HELD_P99_MS = 100.0


def held(step: dict) -> bool:
    expected = step["windows_expected"]
    return expected > 0 and step["windows_received"] >= HELD_FRACTION * expected and step["latency"]["p99_ms"] <= HELD_P99_MS


def ratios(run: dict, bare: list[float], hop_ms: float) -> dict:
    """The two ratios against the mean of the bare measurements; None where no step qualifies. A held step's
    rate is its devices' steady rate, one window per device per hop."""
    ref = statistics.mean(bare)
    steps = run["steps"]
    busiest = max(steps, key=lambda s: s["predictions_per_s"], default=None)
    kept = [s for s in steps if held(s)]
    top = max(kept, key=lambda s: s["devices"], default=None)
    held_wps = top["devices"] * 1000.0 / hop_ms if top else None
    return {
        "bare_windows_per_s": bare,
        "bare_reference": ref,
        "hop_ms": hop_ms,
        "busiest_predictions_per_s": busiest["predictions_per_s"] if busiest else None,
        "busiest_devices": busiest["devices"] if busiest else None,
        "busiest_saturated": bool(busiest) and not held(busiest),
        "busiest_ratio": busiest["predictions_per_s"] / ref if busiest else None,
        "held_devices": top["devices"] if top else None,
        "held_windows_per_s": held_wps,
        "held_ratio": held_wps / ref if held_wps is not None else None,
    }


def markdown(r: dict, batch: int) -> str:
    bare = " and ".join(f"{b:,.0f}" for b in r["bare_windows_per_s"])
    lines = [
        "",
        f"Bare ONNX Runtime on the server's core, batch {batch}, 1 thread (before and after the load): {bare} windows/s "
        f"(reference: their mean, {r['bare_reference']:,.0f}).",
        "",
        "| ratio | service | ÷ bare | target |",
        "|---|---|---|---|",
    ]
    if r["busiest_ratio"] is not None:
        state = "saturated" if r["busiest_saturated"] else "not saturated: ramp further for this ratio"
        lines.append(
            f"| predictions/s of the busiest step ({r['busiest_devices']:,} devices, {state}) | {r['busiest_predictions_per_s']:,.1f} | "
            f"**{r['busiest_ratio']:.2f}** | ≥ 0.95 saturated |"
        )
    if r["held_ratio"] is not None:
        lines.append(
            f"| devices held ({r['held_devices']:,}: ≥ 99.9 % of windows, p99 ≤ 100 ms) × one window per {r['hop_ms']:g} ms | "
            f"{r['held_windows_per_s']:,.1f} windows/s | **{r['held_ratio']:.2f}** | ≥ 0.9 |"
        )
    else:
        lines.append("| devices held (≥ 99.9 % of windows, p99 ≤ 100 ms) | no step held | — | ≥ 0.9 |")
    return "\n".join(lines) + "\n"


def bare(server: str, model_dir: Path, rounds: int) -> dict | None:
    """The served model (found in model_dir, checked by its sha256) timed alone with the server's batch size
    and threads; None off the CPU provider."""
    from ort_model_speed import measure

    with urllib.request.urlopen(f"{server.rstrip('/')}/v1/model", timeout=10) as r:
        info = json.load(r)
    runtime = info.get("runtime") or {}
    if runtime.get("execution_provider") != "cpu":
        print(f"execution provider {runtime.get('execution_provider')!r}: no bare CPU reference", file=sys.stderr)
        return None
    batch, threads = info["batching"]["max_batch_size"], info["batching"]["intra_op_threads"]
    local = json.loads((model_dir / "model.json").read_text())
    if local["model_sha256"] != info["manifest"]["model_sha256"]:
        raise SystemExit(f"{model_dir} does not hold the model the server serves (sha256 differs)")
    model = model_dir / local["model_file"]
    (median,) = measure([str(model)], batch, rounds=rounds, iterations=30, threads=threads)
    return {
        "model": str(model),
        "batch": batch,
        "threads": threads,
        "hop_ms": info["windowing"]["hop_ms"],
        "ms_per_batch": median * 1e3,
        "windows_per_s": batch / median,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("bare", help="time the running server's model alone with its batch size and threads (one JSON line)")
    b.add_argument("--server", required=True, help="the server's HTTP address, e.g. http://127.0.0.1:8080")
    b.add_argument("--model-dir", type=Path, required=True, help="the folder the server loaded (--model)")
    b.add_argument("--rounds", type=int, default=3)
    r = sub.add_parser("report", help="the ratios of a loadgen run against bare measurements")
    r.add_argument("--run", type=Path, required=True, help="crossl-loadgen --json output")
    r.add_argument("--bare", type=Path, nargs="+", required=True, help="`bare` outputs (JSON lines)")
    r.add_argument("--markdown", type=Path, help="append the section to this file")
    a = ap.parse_args()
    if a.cmd == "bare":
        m = bare(a.server, a.model_dir, a.rounds)
        if m:
            print(json.dumps(m))
        return
    measured = [json.loads(line) for f in a.bare if f.exists() for line in f.read_text().splitlines() if line.strip()]
    if not measured:
        print("no bare measurement (not the CPU provider): ratios not computed")
        return
    result = ratios(json.loads(a.run.read_text()), [m["windows_per_s"] for m in measured], measured[0]["hop_ms"])
    text = markdown(result, measured[0]["batch"])
    print(text)
    if a.markdown:
        with a.markdown.open("a") as f:
            f.write(text)


if __name__ == "__main__":
    main()
