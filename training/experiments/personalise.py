"""Offline evaluation of per-device personalisation (issue 19, point 4): the service's personal head
(crossl.personal = src/store/personal.rs, same temperature and mixing) fitted on k = 1, 2, 5 labelled
windows per class taken from the START of each recording (segments s01.. in time order), scored by
macro-F1 on the rest of that subject's windows against the general model. Embeddings and general
probabilities come from the exported ONNX model via onnxruntime (all 15 modalities present, or the subset
--sensors keeps: by sensor type or without one body unit, absent both when labelling and after); no training.

    python training/experiments/personalise.py [--model models/crossl-dsads] [--subjects p1 p2 ...] [--sensors no_mag]

Writes a markdown table to training/runs/personalise_<model version>.md and prints it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import f1_score

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from crossl import data, personal  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


# --sensors: which modalities a device has (the others absent for every window, as the service marks them):
# by sensor type (no_mag, acc_only) or without one body unit (no_torso, no_right_arm, ...).
SENSOR_SETS = {
    "all": tuple(data.MODALITIES),
    "no_mag": tuple(m for m in data.MODALITIES if data.modality_sensor(m) != "mag"),
    "acc_only": tuple(m for m in data.MODALITIES if data.modality_sensor(m) == "acc"),
    **{f"no_{u}": tuple(m for m in data.MODALITIES if not m.startswith(f"{u}_")) for u in data.UNITS},
}


def run_model(session, x: np.ndarray, present: tuple[str, ...] = SENSOR_SETS["all"]) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities, embeddings) for channels-major windows [N, 45, 125]; modalities not in `present` are
    absent (zero input, present 0), as the service sends them."""
    c = data.CHANNELS_PER_MODALITY
    keep = np.array([m in present for m in data.MODALITIES])
    feeds = {
        f"x_{m}": np.ascontiguousarray(x[:, i * c : (i + 1) * c] * np.float32(keep[i]))
        for i, m in enumerate(data.MODALITIES)
    }
    feeds["present"] = np.tile(keep.astype(np.float32), (len(x), 1))
    probs, emb = session.run(["probabilities", "embedding"], feeds)
    return probs, emb


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=REPO / "models" / "crossl-dsads")
    ap.add_argument("--data", type=Path, default=data.DEFAULT_DATA_DIR)
    ap.add_argument("--subjects", nargs="*", default=None, help="default: every subject in --data")
    ap.add_argument("--k", type=int, nargs="*", default=[1, 2, 5])
    ap.add_argument("--temperature", type=float, default=personal.TEMPERATURE)
    ap.add_argument("--reject-distance", type=float, default=personal.REJECT_DISTANCE)
    ap.add_argument("--combine", choices=["replace", "product"], default="replace", help="as --personal-combine")
    ap.add_argument(
        "--held-out",
        action="store_true",
        help="the subjects were held out of the model's training (a LOSO fold's model, personalise_loso.sh)",
    )
    ap.add_argument("--sensors", choices=list(SENSOR_SETS), default="all", help="modalities the device has: all, by sensor type, or without one body unit")
    ap.add_argument("--out", type=Path, default=REPO / "training" / "runs")
    a = ap.parse_args()

    import onnxruntime as ort

    manifest = json.loads((a.model / "model.json").read_text())
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(str(a.model / manifest["model_file"]), opts, providers=["CPUExecutionProvider"])
    subjects = a.subjects or data.available_subjects(a.data)
    seen = set(manifest.get("training", {}).get("subjects", []) or [])
    n_classes = len(data.CLASSES)
    rows = []  # (subject, general F1, {k: personal F1})
    for s in subjects:
        rec = data.load_subject(a.data, s, data.DEFAULT_CACHE_DIR)  # [19, 60, 125, 45], segments in time order
        x = np.ascontiguousarray(rec.reshape(-1, data.WINDOW_SAMPLES, data.N_COLUMNS).transpose(0, 2, 1))
        y = np.repeat(np.arange(n_classes), data.SEGMENTS_PER_RECORDING)
        segment = np.tile(np.arange(data.SEGMENTS_PER_RECORDING), n_classes)
        probs, emb = run_model(session, x, SENSOR_SETS[a.sensors])
        scores = {}
        # Every k is scored on the same windows (those after the largest k), so the columns compare.
        test = segment >= max(a.k)
        general_f1 = f1_score(y[test], probs[test].argmax(1), average="macro")
        for k in a.k:
            train = segment < k
            classes, means = personal.fit(emb[train], y[train])
            p = personal.probabilities(
                classes, means, probs[test], emb[test], a.temperature, a.reject_distance, a.combine
            )
            scores[k] = f1_score(y[test], p.argmax(1), average="macro")
        rows.append((s, general_f1, scores))

    version = manifest.get("version", "?")
    lines = [
        f"# Personalisation, model {manifest.get('name')} {version}",
        "",
        f"Head: nearest class mean on L2-normalised embeddings, temperature {a.temperature}, reject distance "
        f"{a.reject_distance}, combine {a.combine} (the service's defaults: 0.05, 0.25, replace; `crossl.personal` = src/store/personal.rs). k labelled "
        f"windows (5-s segments) per class from the start of each recording; macro-F1 on segments "
        f"s{max(a.k) + 1:02d}–s{data.SEGMENTS_PER_RECORDING} of every activity, "
        + ("all 15 modalities present." if a.sensors == "all" else f"device set {a.sensors}: {', '.join(SENSOR_SETS[a.sensors])} present (the rest absent throughout)."),
        "",
    ]
    trained_on = [s for s in subjects if s in seen] if seen else []
    if a.held_out:
        lines += [f"Model {version} was trained without {', '.join(subjects)} (a leave-one-subject-out fold).", ""]
    elif trained_on or not seen:
        lines += [
            "**Caveat:** "
            + (
                f"model {version} was trained on {', '.join(trained_on)}"
                if trained_on
                else f"model {version}'s manifest does not list its training subjects; 2.3.0 saw p1–p6"
            )
            + " — the general model has seen these subjects, so the gain here understates (or misstates) what "
            "personalisation does for an unseen wearer. Re-run on held-out subjects.",
            "",
        ]
    header = "| subject | general | " + " | ".join(f"k={k}" for k in a.k) + " | " + " | ".join(
        f"gain k={k}" for k in a.k
    )
    lines += [header + " |", "|---" * (2 + 2 * len(a.k)) + "|"]
    for s, g, sc in rows:
        lines.append(
            f"| {s} | {g:.3f} | "
            + " | ".join(f"{sc[k]:.3f}" for k in a.k)
            + " | "
            + " | ".join(f"{sc[k] - g:+.3f}" for k in a.k)
            + " |"
        )
    g_mean = np.mean([r[1] for r in rows])
    k_mean = {k: np.mean([r[2][k] for r in rows]) for k in a.k}
    lines.append(
        f"| **mean** | {g_mean:.3f} | "
        + " | ".join(f"{k_mean[k]:.3f}" for k in a.k)
        + " | "
        + " | ".join(f"{k_mean[k] - g_mean:+.3f}" for k in a.k)
        + " |"
    )
    text = "\n".join(lines) + "\n"
    a.out.mkdir(parents=True, exist_ok=True)
    suffix = "".join(f"_{v}" for v in (a.combine, a.sensors) if v not in ("replace", "all"))
    out = a.out / f"personalise_{version}{suffix}.md"
    out.write_text(text)
    print(text)
    print(f"written to {out}")


if __name__ == "__main__":
    main()
