import io
import multiprocessing
import tarfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from crossl import data


def test_modalities_and_classes_follow_the_documented_layout():
    assert len(data.MODALITIES) == 15 and data.MODALITIES[:4] == ["torso_acc", "torso_gyro", "torso_mag", "right_arm_acc"]
    assert data.MODALITIES[-1] == "left_leg_mag"
    assert len(data.CLASSES) == 19 and data.CLASSES[0] == "sitting" and data.CLASSES[-1] == "playing_basketball"
    # column = unit*9 + sensor*3 + axis, so modality i owns columns 3i..3i+2
    for i, m in enumerate(data.MODALITIES):
        unit, sensor = data.UNITS.index(data.modality_unit(m)), data.SENSORS.index(data.modality_sensor(m))
        assert unit * 9 + sensor * 3 == i * 3


def test_real_segment_shape_and_units(dsads_dir):
    seg = data.read_segment(data.segment_path(dsads_dir, 0, "p1", 0))  # sitting
    assert seg.shape == (125, 45) and seg.dtype == np.float32
    for u in range(5):
        acc = seg[:, u * 9 : u * 9 + 3]
        gyro = seg[:, u * 9 + 3 : u * 9 + 6]
        # at rest the accelerometer reads gravity (m/s^2) and the gyroscope almost nothing (rad/s)
        assert 8.5 < np.linalg.norm(acc, axis=1).mean() < 11.0
        assert np.abs(gyro).mean() < 0.2


def test_running_moves_more_than_sitting(dsads_dir):
    sitting = data.read_segment(data.segment_path(dsads_dir, 0, "p2", 3))
    running = data.read_segment(data.segment_path(dsads_dir, 11, "p2", 3))
    right_leg_acc = slice(27, 30)
    assert running[:, right_leg_acc].std(axis=0).mean() > 5 * sitting[:, right_leg_acc].std(axis=0).mean()


def test_loader_rejects_wrong_shape(tmp_path):
    bad = tmp_path / "s01.txt"
    bad.write_text("\n".join(",".join(["1.0"] * 44) for _ in range(125)))
    with pytest.raises(ValueError, match="125 rows x 45 columns"):
        data.read_segment(bad)


def test_data_dir_accepts_both_roots_and_explains_missing(dsads_dir, tmp_path):
    d = data.data_dir(dsads_dir)
    assert data.data_dir(d) == d
    with pytest.raises(FileNotFoundError, match="unpack"):
        data.data_dir(tmp_path)


def test_two_processes_can_fill_the_cache_at_once(dsads_dir, tmp_path):
    # two LOSO runs started together both parse p1 and write the same cache file
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        a, b = pool.map(data.load_subject, [dsads_dir] * 2, ["p1"] * 2, [tmp_path] * 2)
    assert np.array_equal(a, b) and a.shape == (19, 60, 125, 45)
    assert [p.name for p in tmp_path.iterdir()] == [data._cache_file(dsads_dir, "p1", tmp_path).name]
    assert np.array_equal(data.load_subject(dsads_dir, "p1", tmp_path), a)


def _tiny_recordings(n_subjects=2):
    rng = np.random.default_rng(0)
    return data.DSADS({f"p{i + 1}": rng.standard_normal((19, 60, 125, 45)).astype(np.float32) for i in range(n_subjects)})


def test_segments_are_channels_major_with_labels():
    ds = _tiny_recordings()
    x, y = ds.segments(["p2"])
    assert x.shape == (19 * 60, 45, 125) and y.shape == (19 * 60,)
    np.testing.assert_array_equal(x[61], ds.recordings["p2"][1, 1].T)
    assert y[61] == 1


def test_sliding_windows_stay_inside_one_activity():
    ds = _tiny_recordings(1)
    w = ds.sliding_windows(["p1"], hop=25)
    per_activity = (60 * 125 - 125) // 25 + 1
    assert w.shape == (19 * per_activity, 45, 125)
    stream = ds.recordings["p1"][3].reshape(-1, 45)
    np.testing.assert_array_equal(w[3 * per_activity + 2], stream[50:175].T)
    last = ds.recordings["p1"][3].reshape(-1, 45)[-125:]
    np.testing.assert_array_equal(w[4 * per_activity - 1], last.T)


def test_stratified_subset_is_seeded_and_keeps_every_class():
    y = np.repeat(np.arange(19), 300)
    a = data.stratified_subset(y, 0.01, seed=1)
    assert len(a) == 19 * 3 and set(y[a]) == set(range(19))
    np.testing.assert_array_equal(a, data.stratified_subset(y, 0.01, seed=1))
    assert not np.array_equal(a, data.stratified_subset(y, 0.01, seed=2))
    assert len(data.stratified_subset(y, 0.0001, seed=1)) == 19


def _tar_with(tmp_path, members: dict[str, bytes]):
    path = tmp_path / "dsads.tar.xz"
    with tarfile.open(path, "w:xz") as tar:
        for name, body in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    return path


def test_unpack_extracts_the_data_tree_only(tmp_path):
    body = ("\n".join(",".join(["0.5"] * 45) for _ in range(125)) + "\n").encode()
    archive = _tar_with(tmp_path, {"data/a01/p1/s01.txt": body, "README.txt": b"x", "data/../../evil.txt": b"x"})
    out = tmp_path / "out"
    d = data.unpack(archive, out)
    assert data.read_segment(d / "a01" / "p1" / "s01.txt").shape == (125, 45)
    assert not (out / "README.txt").exists() and not (tmp_path / "evil.txt").exists()


def test_unpack_rejects_an_archive_without_data(tmp_path):
    with pytest.raises(ValueError, match="no files under data/"):
        data.unpack(_tar_with(tmp_path, {"other/x.txt": b"x"}), tmp_path / "out")


def test_unpack_command_runs_without_torch(tmp_path):
    """`make data` / `make demo` unpack from the runtime-only venv: the command must not import torch (nor
    anything of the training stack). A `torch` package that refuses to import stands in for its absence."""
    import subprocess
    import sys

    blocker = tmp_path / "blocker" / "torch"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('torch is not installed here')\n")
    archive = _tar_with(tmp_path, {"data/a01/p1/s01.txt": b"1,2,3\n"})
    training = Path(__file__).resolve().parents[1]
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{blocker.parent}:{training}"}
    out = tmp_path / "out"
    run = subprocess.run(
        [sys.executable, "-m", "crossl", "unpack", "--archive", str(archive), "--out", str(out)],
        capture_output=True, text=True, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert (out / "data" / "a01" / "p1" / "s01.txt").read_bytes() == b"1,2,3\n"
    # and the blocker really blocks: any other command fails on the missing torch
    other = subprocess.run([sys.executable, "-m", "crossl", "report", "--results", str(tmp_path)], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert other.returncode != 0 and "torch is not installed here" in other.stderr
