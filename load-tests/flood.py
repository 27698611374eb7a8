#!/usr/bin/env python3
"""Floods a running crossl-serve with maximal Open Inference Protocol requests (every modality present,
`--rows` rows, the server's --max-request-rows default being 64) from `--clients` threads for
`--seconds`, and prints how the server answered (status counts, requests/s). Standard library only; sends to
127.0.0.1 only and stops by itself.
    python3 load-tests/flood.py --target http://127.0.0.1:8080 --clients 8 --seconds 30
"""
import argparse
import collections
import json
import pathlib
import random
import threading
import time
import urllib.error
import urllib.request


def body(manifest: dict, rows: int) -> bytes:
    rng = random.Random(0)
    inputs = []
    for m in manifest["modalities"]:
        n = rows * m["channels"] * m["window_samples"]
        inputs.append({"name": f"x_{m['name']}", "shape": [rows, m["channels"], m["window_samples"]],
                       "datatype": "FP32", "data": [round(rng.uniform(-10, 10), 3) for _ in range(n)]})
    inputs.append({"name": "present", "shape": [rows, len(manifest["modalities"])], "datatype": "FP32",
                   "data": [1.0] * (rows * len(manifest["modalities"]))})
    return json.dumps({"inputs": inputs}).encode()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", default="http://127.0.0.1:8080")
    ap.add_argument("--model", default="models/crossl-dsads")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=30.0)
    args = ap.parse_args()
    assert args.target.startswith(("http://127.", "http://localhost")), "local targets only"
    manifest = json.loads((pathlib.Path(args.model) / "model.json").read_text())
    payload = body(manifest, args.rows)
    url = f"{args.target}/v2/models/{manifest['name']}/infer"
    counts: collections.Counter = collections.Counter()
    lock = threading.Lock()
    stop_at = time.monotonic() + args.seconds

    def client() -> None:
        while time.monotonic() < stop_at:
            req = urllib.request.Request(url, data=payload, headers={"content-type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=30) as r:
                    r.read()
                    status = r.status
            except urllib.error.HTTPError as e:
                e.read()
                status = e.code
            except OSError as e:
                status = type(e).__name__
            with lock:
                counts[status] += 1

    threads = [threading.Thread(target=client) for _ in range(args.clients)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - started
    total = sum(counts.values())
    print(f"flood: {args.clients} clients x {args.rows}-row OIP requests ({len(payload) / 1e6:.1f} MB each) "
          f"for {wall:.1f} s: {total} requests ({total / wall:.1f}/s); by status: {dict(sorted(counts.items(), key=str))}")


if __name__ == "__main__":
    main()
