"""DSADS (UCI "Daily and Sports Activities") in its raw release layout.

`data/aXX/pY/sZZ.txt`: activity a01..a19, subject p1..p8, segment s01..s60; each file is one 5-s segment,
125 rows at 25 Hz x 45 comma-separated columns, column = unit*9 + sensor*3 + axis. A CroSSL modality is one
sensor at one body unit, so the 45 columns are already in modality order (15 modalities x 3 axes).
"""

from __future__ import annotations

import hashlib
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

UNITS = ["torso", "right_arm", "left_arm", "right_leg", "left_leg"]
SENSORS = ["acc", "gyro", "mag"]
AXES = ["x", "y", "z"]
PHYSICAL_UNITS = {"acc": "m/s^2", "gyro": "rad/s", "mag": "arbitrary (about +-1)"}
MODALITIES = [f"{unit}_{sensor}" for unit in UNITS for sensor in SENSORS]
CHANNELS_PER_MODALITY = len(AXES)
CLASSES = [
    "sitting",
    "standing",
    "lying_on_back",
    "lying_on_right_side",
    "ascending_stairs",
    "descending_stairs",
    "standing_in_elevator",
    "moving_in_elevator",
    "walking_in_parking_lot",
    "walking_on_treadmill_flat",
    "walking_on_treadmill_inclined",
    "running_on_treadmill",
    "exercising_on_stepper",
    "exercising_on_cross_trainer",
    "cycling_horizontal",
    "cycling_vertical",
    "rowing",
    "jumping",
    "playing_basketball",
]
SAMPLE_RATE_HZ = 25.0
WINDOW_SAMPLES = 125
SEGMENTS_PER_RECORDING = 60
N_COLUMNS = len(UNITS) * len(SENSORS) * len(AXES)
DEFAULT_DATA_DIR = Path(os.environ.get("CROSSL_DSADS_DIR", "~/.cache/crossl/dsads")).expanduser()
DEFAULT_CACHE_DIR = Path("~/.cache/crossl/arrays").expanduser()  # parsed .npy copies, outside the repo


def modality_unit(modality: str) -> str:
    return modality.rsplit("_", 1)[0]


def modality_sensor(modality: str) -> str:
    return modality.rsplit("_", 1)[1]


def unpack(archive: Path, out_dir: Path) -> Path:
    """Extract the DSADS archive into `out_dir` (giving `out_dir/data/aXX/pY/sZZ.txt`); returns the data dir.

    Only regular files and folders under `data/` are extracted, so a hostile archive cannot write elsewhere.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "r:*") as tar:
        members = [
            m
            for m in tar.getmembers()
            if (m.isfile() or m.isdir())
            and Path(m.name).parts[:1] == ("data",)
            and ".." not in Path(m.name).parts
        ]
        if not any(m.isfile() for m in members):
            raise ValueError(f"{archive}: no files under data/ (not the DSADS raw layout?)")
        tar.extractall(out_dir, members=members, filter="data")
    return out_dir / "data"


def data_dir(root: Path) -> Path:
    """Accept either the unpack folder (holding `data/`) or the `data/` folder itself."""
    root = Path(root).expanduser()
    if (root / "data" / "a01").is_dir():
        return root / "data"
    if (root / "a01").is_dir():
        return root
    raise FileNotFoundError(
        f"DSADS not found under {root}: expected {root}/data/a01/p1/s01.txt "
        "(unpack it with `python -m crossl unpack --archive <dsads.tar.xz> --out <dir>`)"
    )


def segment_path(root: Path, activity: int, subject: str, segment: int) -> Path:
    """activity and segment are 0-based indices; subject is 'p1'..'p8'."""
    return data_dir(root) / f"a{activity + 1:02d}" / subject / f"s{segment + 1:02d}.txt"


def read_segment(path: Path) -> np.ndarray:
    """One segment file as float32 [125, 45] (samples x columns); strict about the documented shape."""
    values = np.loadtxt(path, delimiter=",", dtype=np.float32, ndmin=2)
    if values.shape != (WINDOW_SAMPLES, N_COLUMNS):
        raise ValueError(f"{path}: expected {WINDOW_SAMPLES} rows x {N_COLUMNS} columns, got {values.shape}")
    if not np.isfinite(values).all():
        raise ValueError(f"{path}: non-finite values")
    return values


def available_subjects(root: Path) -> list[str]:
    first = data_dir(root) / "a01"
    return sorted(p.name for p in first.iterdir() if p.is_dir())


def _cache_file(root: Path, subject: str, cache_dir: Path) -> Path:
    key = hashlib.sha1(str(data_dir(root).resolve()).encode()).hexdigest()[:12]
    return cache_dir / f"dsads_{key}_{subject}.npy"


def load_subject(root: Path, subject: str, cache_dir: Path | None = None) -> np.ndarray:
    """All segments of one subject as float32 [19 activities, 60 segments, 125 samples, 45 columns].

    Parsing 1,140 text files takes a few seconds; a .npy copy in `cache_dir` (outside the repo) makes reruns fast.
    """
    if cache_dir is not None:
        cached = _cache_file(root, subject, cache_dir)
        if cached.exists():
            return np.load(cached)
    out = np.empty((len(CLASSES), SEGMENTS_PER_RECORDING, WINDOW_SAMPLES, N_COLUMNS), dtype=np.float32)
    for a in range(len(CLASSES)):
        for s in range(SEGMENTS_PER_RECORDING):
            out[a, s] = read_segment(segment_path(root, a, subject, s))
    if cache_dir is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        # one temporary file per process: two LOSO runs started together both fill the cache
        tmp = cached.with_suffix(f".{os.getpid()}.tmp.npy")
        np.save(tmp, out)
        tmp.replace(cached)
    return out


@dataclass
class DSADS:
    """Raw recordings per subject: {subject: [19, 60, 125, 45]}."""

    recordings: dict[str, np.ndarray]

    @classmethod
    def load(cls, root: Path, subjects: list[str], cache_dir: Path | None = None) -> DSADS:
        return cls({s: load_subject(root, s, cache_dir) for s in subjects})

    def segments(self, subjects: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Labelled 5-s segments as model input: x float32 [N, 45, 125] (channels-major), y int64 [N]."""
        xs, ys = [], []
        for s in subjects:
            rec = self.recordings[s]
            xs.append(rec.reshape(-1, WINDOW_SAMPLES, N_COLUMNS).transpose(0, 2, 1))
            ys.append(np.repeat(np.arange(len(CLASSES)), SEGMENTS_PER_RECORDING))
        return np.ascontiguousarray(np.concatenate(xs)), np.concatenate(ys).astype(np.int64)

    def sliding_windows(self, subjects: list[str], hop: int) -> np.ndarray:
        """Unlabelled pre-training windows [N, 45, 125]: slide over each activity's concatenated segments.

        Windows never cross activities or subjects. (Segments of a05, ascending stairs, are not one
        continuous recording, so a few of its windows straddle a gap; harmless for self-supervision.)
        """
        out = []
        for s in subjects:
            for rec in self.recordings[s]:
                stream = rec.reshape(-1, N_COLUMNS)  # [60*125, 45]
                view = np.lib.stride_tricks.sliding_window_view(stream, WINDOW_SAMPLES, axis=0)  # [T-124, 45, 125]
                out.append(view[::hop])
        return np.ascontiguousarray(np.concatenate(out))


CENTRED_SENSORS = ("mag",)


def modalities_of_sensor(sensor: str) -> list[int]:
    """Indices (manifest order) of every modality of one sensor type."""
    return [i for i, m in enumerate(MODALITIES) if modality_sensor(m) == sensor]


def centred_channels(centre_mag: bool = True) -> np.ndarray:
    """float32 [45]: 1 for channels whose per-window mean the model removes before anything else.

    A magnetometer's 5-s mean is mostly where the subject faced and which room (or steel elevator) they were
    in -- a property of the recording, not of the activity -- and a model trained on five subjects learnt
    it; its changes within the window (limb rotation) are kept. Accelerometer means are kept: gravity's
    direction is what tells sitting from lying."""
    sensors = [modality_sensor(m) for m in MODALITIES for _ in AXES]
    return np.array([centre_mag and s in CENTRED_SENSORS for s in sensors], dtype=np.float32)


def input_stats(x: np.ndarray, centre_mag: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Normalisation constants for the model input x [N, 45, T] RAW: per-channel mean/std after the
    per-window centring of `centred_channels`."""
    c = centred_channels(centre_mag)[None, :, None]
    return channel_stats(x - c * x.mean(axis=2, keepdims=True, dtype=np.float32))


def channel_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std over windows and time of x [N, C, T] (float64 accumulation)."""
    mean = x.mean(axis=(0, 2), dtype=np.float64)
    std = x.std(axis=(0, 2), dtype=np.float64)
    return mean.astype(np.float32), np.maximum(std, 1e-6).astype(np.float32)


def stratified_subset(y: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Indices of a per-class random `fraction` of y (rounded, at least one per class), seeded."""
    rng = np.random.default_rng(seed)
    picked = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        n = max(1, int(round(fraction * idx.size)))
        picked.append(rng.choice(idx, size=n, replace=False))
    return np.sort(np.concatenate(picked))
