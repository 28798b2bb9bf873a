"""Per-image predictions of a run: ``predictions_val.npz`` and ``predictions_test.npz``.

One compressed NumPy archive per split, one array per column (columnar, no pickle), so the
report can recompute every interval and paired test from any run directory -- written on
this machine, another one, or downloaded from W&B -- without the model:

    path         (N,) str      the image file, as in splits.json
    label        (N,) int16    true class index
    probs        (N, C) float32 class probabilities of the best checkpoint
    pred         (N,) int16    the prediction at the run's threshold (argmax for C > 2)
    class_names  (C,) str
    threshold    ()  float64   the binary threshold (chosen on val); NaN = argmax
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wbclf.atomic import replacing
from wbclf.tracking.records import Evaluation

__all__ = ["Predictions", "prediction_file", "read_predictions", "write_predictions"]


def prediction_file(run_dir: str | Path, split: str) -> Path:
    """Where a run keeps the predictions of ``split``."""
    return Path(run_dir) / f"predictions_{split}.npz"


@dataclass
class Predictions:
    """One split's per-image predictions, as read back from a run directory."""

    split: str
    paths: list[str]
    labels: np.ndarray
    probs: np.ndarray
    preds: np.ndarray
    class_names: list[str]
    threshold: float | None

    @property
    def correct(self) -> np.ndarray:
        return self.preds == self.labels


def write_predictions(run_dir: str | Path, ev: Evaluation) -> Path:
    """Write ``ev`` as ``predictions_<split>.npz`` (atomically: a reader never sees half)."""
    path = prediction_file(run_dir, ev.split)
    paths = list(ev.paths) if len(ev.paths) == len(ev.labels) else [""] * len(ev.labels)
    with replacing(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(
                fh, path=np.array(paths, dtype=str), label=ev.labels.astype(np.int16),
                probs=ev.probs.astype(np.float32), pred=ev.preds.astype(np.int16),
                class_names=np.array(ev.class_names, dtype=str),
                threshold=np.float64(math.nan if ev.threshold is None else ev.threshold))
    return path


def read_predictions(run_dir: str | Path, split: str) -> Predictions | None:
    """The predictions of ``split``; None when the run has none (older runs) or the file is
    unreadable, so callers fall back to the summary's figures."""
    path = prediction_file(run_dir, split)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            threshold = float(data["threshold"])
            return Predictions(
                split=split, paths=[str(p) for p in data["path"]],
                labels=data["label"].astype(np.int64), probs=data["probs"].astype(np.float64),
                preds=data["pred"].astype(np.int64),
                class_names=[str(c) for c in data["class_names"]],
                threshold=None if math.isnan(threshold) else threshold)
    except (OSError, ValueError, KeyError):
        return None
