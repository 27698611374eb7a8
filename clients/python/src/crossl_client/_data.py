"""Sensor data for `Client.stream`: numpy arrays per modality, or a CSV file."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np


def prepare_arrays(data: Mapping[str, Any], manifest: dict[str, Any]) -> dict[str, np.ndarray]:
    """Checks arrays of samples × channels against the model's modalities; returns float32 copies in
    manifest order (1-D arrays are one-channel modalities)."""
    specs = {m["name"]: m for m in manifest["modalities"]}
    unknown = sorted(set(data) - set(specs))
    if unknown:
        raise ValueError(f"unknown modalities {unknown}; the model has {list(specs)}")
    out: dict[str, np.ndarray] = {}
    for name, spec in specs.items():
        if name not in data:
            continue
        array = np.asarray(data[name], dtype=np.float32)
        if array.ndim == 1:
            array = array.reshape(-1, 1)
        if array.ndim != 2 or array.shape[1] != spec["channels"]:
            raise ValueError(
                f"{name}: shape {array.shape}, expected (samples, {spec['channels']}) "
                f"(channels {', '.join(spec['channel_names'])})"
            )
        if not np.isfinite(array).all():
            raise ValueError(f"{name}: NaN or infinite values")
        out[name] = array
    if not out:
        raise ValueError("no modality to stream")
    return out


def load_csv(path: str | os.PathLike[str], manifest: dict[str, Any]) -> dict[str, np.ndarray]:
    """Reads a recording from a comma-separated file, one sample per line, in one of two layouts:

    * with a header: columns named `<modality>_<channel>` (e.g. `torso_acc_x`); modalities without
      columns are absent, other columns are ignored;
    * without a header: one column per channel of every modality in manifest order (for the DSADS model
      the 45 columns of a raw DSADS `sNN.txt` segment: torso, right arm, left arm, right leg, left leg;
      acc, gyro, mag; x, y, z).
    """
    with open(path, encoding="utf-8") as f:
        first = f.readline()
    cells = [c.strip() for c in first.split(",")]
    has_header = any(_not_a_number(c) for c in cells)
    table = np.loadtxt(path, delimiter=",", dtype=np.float32, skiprows=1 if has_header else 0, ndmin=2)
    specs = manifest["modalities"]
    if has_header:
        column = {name: i for i, name in enumerate(cells)}
        data: dict[str, np.ndarray] = {}
        for spec in specs:
            names = [f"{spec['name']}_{c}" for c in spec["channel_names"]]
            found = [n for n in names if n in column]
            if not found:
                continue
            if len(found) != len(names):
                missing = sorted(set(names) - set(found))
                raise ValueError(f"{path}: {spec['name']} lacks columns {missing}")
            data[spec["name"]] = table[:, [column[n] for n in names]]
        if not data:
            expected = ", ".join(f"{s['name']}_{s['channel_names'][0]}" for s in specs[:2])
            raise ValueError(f"{path}: no column names a modality channel (expected e.g. {expected}, …)")
        return prepare_arrays(data, manifest)
    width = sum(s["channels"] for s in specs)
    if table.shape[1] != width:
        raise ValueError(
            f"{path}: {table.shape[1]} columns; a headerless CSV needs one per channel of every modality "
            f"in manifest order ({width}), or give a header row naming the columns"
        )
    data = {}
    offset = 0
    for spec in specs:
        data[spec["name"]] = table[:, offset : offset + spec["channels"]]
        offset += spec["channels"]
    return prepare_arrays(data, manifest)


def _not_a_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return True
    return False
