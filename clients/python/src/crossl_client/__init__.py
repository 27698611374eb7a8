"""Python client for crossl-serve: stream a device from numpy arrays or a CSV file, watch predictions,
read the latest one, and label spans for personalisation. See clients/python/README.md."""

from ._client import (
    ChunkRejected,
    Client,
    CrosslError,
    Data,
    Prediction,
    PredictionStream,
    Timings,
)
from ._data import load_csv, prepare_arrays

__all__ = [
    "ChunkRejected",
    "Client",
    "CrosslError",
    "Data",
    "Prediction",
    "PredictionStream",
    "Timings",
    "load_csv",
    "prepare_arrays",
]
__version__ = "0.1.0"
