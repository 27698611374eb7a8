import os
import sys
from pathlib import Path

import pytest
import torch

TRAINING_DIR = Path(__file__).resolve().parents[1]
REPO_DIR = TRAINING_DIR.parent
sys.path.insert(0, str(TRAINING_DIR))
torch.set_num_threads(2)


@pytest.fixture(scope="session")
def dsads_dir() -> Path:
    """The unpacked DSADS dataset. Missing data is a failure (the Makefile unpacks it before the tests),
    unless CROSSL_ALLOW_NO_DATA=1, for machines that only run the synthetic tests."""
    root = Path(os.environ.get("CROSSL_DSADS_DIR", "~/.cache/crossl/dsads")).expanduser()
    if not ((root / "data" / "a01" / "p1" / "s01.txt").is_file() or (root / "a01" / "p1" / "s01.txt").is_file()):
        msg = (
            f"DSADS not found at {root} (set CROSSL_DSADS_DIR, or unpack it: "
            "python -m crossl unpack --archive ../shared/data/dsads/dsads_p1-p6.tar.xz --out ~/.cache/crossl/dsads)"
        )
        if os.environ.get("CROSSL_ALLOW_NO_DATA") == "1":
            pytest.skip(msg)
        pytest.fail(msg)
    return root
