"""ONNX export, manifest (model.json) and golden cases, exactly per docs/model-contract.md."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import data
from .model import CroSSL

OPSET = 18


class ContractGraph(nn.Module):
    """The served signature: one raw [B, C, T] tensor per modality + present [B, M] ->
    (logits, probabilities, embedding)."""

    def __init__(self, model: CroSSL):
        super().__init__()
        self.model = model

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        *xs, present = inputs
        logits, z = self.model(torch.cat(xs, dim=1), present)
        return logits, torch.softmax(logits, dim=-1), z


def input_names(modalities: list[str]) -> list[str]:
    return [f"x_{m}" for m in modalities] + ["present"]


OUTPUT_NAMES = ["logits", "probabilities", "embedding"]


def export_onnx(model: CroSSL, modalities: list[str], path: Path, window_samples: int) -> None:
    model = model.cpu().eval()
    c = model.config["channels"]
    b = 2
    args = tuple(torch.randn(b, c, window_samples) for _ in modalities) + (torch.ones(b, len(modalities)),)
    names = input_names(modalities)
    path.parent.mkdir(parents=True, exist_ok=True)
    # torch.export-based exporter (the TorchScript one is deprecated): every input shares one dynamic batch
    # axis; the program is optimised (constant folding etc.) before it is written as a single file.
    batch = torch.export.Dim("batch", min=1)
    program = torch.onnx.export(
        ContractGraph(model).eval(),
        args,
        input_names=names,
        output_names=OUTPUT_NAMES,
        dynamic_shapes=(tuple({0: batch} for _ in names),),  # forward(*inputs): one varargs tuple
        opset_version=OPSET,
        dynamo=True,
        optimize=True,
        verbose=False,
    )
    program.save(str(path), external_data=False)


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def ort_session(path: Path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def ort_run(session, modalities: list[str], x: np.ndarray, present: np.ndarray) -> dict[str, np.ndarray]:
    """x: channels-major [B, M*C, T] like the training tensors."""
    c = x.shape[1] // len(modalities)
    feeds = {f"x_{m}": np.ascontiguousarray(x[:, i * c : (i + 1) * c]) for i, m in enumerate(modalities)}
    feeds["present"] = present.astype(np.float32)
    return dict(zip(OUTPUT_NAMES, session.run(OUTPUT_NAMES, feeds), strict=True))


@torch.no_grad()
def torch_outputs(model: CroSSL, x: np.ndarray, present: np.ndarray) -> dict[str, np.ndarray]:
    model.eval()
    logits, z = model(torch.from_numpy(x), torch.from_numpy(present.astype(np.float32)))
    return {"logits": logits.numpy(), "probabilities": torch.softmax(logits, -1).numpy(), "embedding": z.numpy()}


def manifest(
    model: CroSSL, name: str, version: str, description: str, onnx_path: Path, training: dict, metrics: dict
) -> dict:
    return {
        "format_version": 1,
        "name": name,
        "version": version,
        "created": datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z"),
        "description": description,
        "model_file": onnx_path.name,
        "model_sha256": sha256(onnx_path),
        "opset": OPSET,
        "window_seconds": data.WINDOW_SAMPLES / data.SAMPLE_RATE_HZ,
        "recommended_hop_seconds": 1.0,
        "modalities": [
            {
                "name": m,
                "unit": data.modality_unit(m),
                "sensor": data.modality_sensor(m),
                "channels": data.CHANNELS_PER_MODALITY,
                "channel_names": list(data.AXES),
                "physical_unit": data.PHYSICAL_UNITS[data.modality_sensor(m)],
                "sample_rate_hz": data.SAMPLE_RATE_HZ,
                "window_samples": data.WINDOW_SAMPLES,
                "input": f"x_{m}",
            }
            for m in data.MODALITIES
        ],
        "classes": list(data.CLASSES),
        "inputs": {"present": "present"},
        "outputs": {n: n for n in OUTPUT_NAMES},
        "embedding_size": model.config["embedding_size"],
        "architecture": _architecture(model.config),
        "training": training,
        "metrics": metrics,
    }


def _architecture(config: dict) -> dict:
    arch = {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()}
    if "expert_when_absent" in arch:  # indices -> names, for readers of the manifest
        arch["expert_when_absent"] = [data.MODALITIES[i] for i in arch["expert_when_absent"]]
    return arch


def golden_case_specs() -> list[tuple[int, str, int, str, list[str]]]:
    """(activity, subject, segment, case tag, present modalities) -- real windows across activities and
    subjects, several with absent modalities (one unit missing, one sensor type missing, one unit only)."""
    every = list(data.MODALITIES)

    def without(pred):
        return [m for m in every if not pred(m)]

    return [
        (0, "p1", 0, "all", every),
        (4, "p2", 10, "all", every),
        (11, "p3", 20, "all", every),
        (16, "p4", 30, "no_left_arm", without(lambda m: data.modality_unit(m) == "left_arm")),
        (8, "p5", 40, "no_mag", without(lambda m: data.modality_sensor(m) == "mag")),
        (14, "p6", 50, "torso_only", [m for m in every if data.modality_unit(m) == "torso"]),
        (18, "p1", 5, "acc_only", [m for m in every if data.modality_sensor(m) == "acc"]),
        (2, "p2", 15, "no_right_leg", without(lambda m: data.modality_unit(m) == "right_leg")),
        (9, "p3", 25, "legs_only", [m for m in every if data.modality_unit(m).endswith("_leg")]),
        (13, "p4", 35, "right_arm_only", [m for m in every if data.modality_unit(m) == "right_arm"]),
    ]


def golden(model: CroSSL, root: Path, onnx_sha: str, tolerance: float = 1e-4) -> dict:
    cases = []
    for activity, subject, segment, tag, present_mods in golden_case_specs():
        path = data.segment_path(root, activity, subject, segment)
        seg = data.read_segment(path)  # [125, 45] samples-major
        present = np.array([[1.0 if m in present_mods else 0.0 for m in data.MODALITIES]], dtype=np.float32)
        x = np.zeros((1, data.N_COLUMNS, data.WINDOW_SAMPLES), dtype=np.float32)
        c = data.CHANNELS_PER_MODALITY
        body = {}
        for i, m in enumerate(data.MODALITIES):
            if m in present_mods:
                x[0, i * c : (i + 1) * c] = seg[:, i * c : (i + 1) * c].T
                body[m] = _floats(seg[:, i * c : (i + 1) * c])
        out = torch_outputs(model, x, present)
        cases.append(
            {
                "name": f"a{activity + 1:02d}_{subject}_s{segment + 1:02d}_{tag}",
                "source": f"data/a{activity + 1:02d}/{subject}/s{segment + 1:02d}.txt",
                "true_label": data.CLASSES[activity],
                "modalities": body,
                "present": present[0].astype(int).tolist(),
                "label": data.CLASSES[int(out["logits"][0].argmax())],
                "logits": _floats(out["logits"][0]),
                "probabilities": _floats(out["probabilities"][0]),
                "embedding": _floats(out["embedding"][0]),
            }
        )
    return {"model_sha256": onnx_sha, "tolerance": tolerance, "cases": cases}


def _floats(a: np.ndarray) -> list:
    """float32 values as the shortest decimals that parse back to the same float32 (compact, exact)."""
    if a.ndim > 1:
        return [_floats(row) for row in a]
    return [float(str(v)) for v in a.astype(np.float32)]


def golden_inputs(case: dict, modalities: list[str], channels: int, window_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """Rebuild the channels-major [1, M*C, T] tensor (absent modalities = zeros) and present mask from a case."""
    x = np.zeros((1, len(modalities) * channels, window_samples), dtype=np.float32)
    for i, m in enumerate(modalities):
        if m in case["modalities"]:
            x[0, i * channels : (i + 1) * channels] = np.asarray(case["modalities"][m], dtype=np.float32).T
    return x, np.asarray([case["present"]], dtype=np.float32)


def write_json(path: Path, obj: dict, indent: int | None = 1) -> None:
    path.write_text(json.dumps(obj, indent=indent) + "\n")


def max_abs_diff(model: CroSSL, onnx_path: Path, modalities: list[str], x: np.ndarray, present: np.ndarray) -> float:
    """Max abs difference over all outputs between ORT and PyTorch on the same inputs."""
    ref = torch_outputs(model, x, present)
    got = ort_run(ort_session(onnx_path), modalities, x, present)
    return max(float(np.abs(ref[k] - got[k]).max()) for k in OUTPUT_NAMES)
