"""Plain data passed from the training code to the loggers (no torch, no wandb)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Evaluation:
    """Predictions of a model on one split and the metrics computed from them."""

    split: str  # "val" or "test"
    labels: np.ndarray  # (N,) int
    probs: np.ndarray  # (N, C) float, softmax probabilities
    loss: float
    metrics: dict[str, float]  # unprefixed: "acc", "macro_f1", "f1/<class>", "auc", ...
    class_names: list[str]
    threshold: float | None = None  # binary decision threshold used (chosen on val)
    paths: list[str] = field(default_factory=list)

    @property
    def preds(self) -> np.ndarray:
        from wbclf.metrics import predict_labels

        return predict_labels(self.probs, self.threshold)


@dataclass
class SamplePredictions:
    """A fixed set of images with what the model said about them."""

    images: np.ndarray  # (N, H, W, 3) uint8 RGB, as the model saw them (before normalization)
    labels: np.ndarray  # (N,) int
    preds: np.ndarray  # (N,) int
    confidences: np.ndarray  # (N,) float: probability of the predicted class
    class_names: list[str]
    paths: list[str] = field(default_factory=list)
    cams: np.ndarray | None = None  # (N, H, W) float in [0, 1]: Grad-CAM of the predicted class
    # Grad-CAM overlays made so far, by sample index (see plots.sample_overlay): the W&B table
    # and the run directory's grid show the same ones, blended once
    overlays: dict[int, np.ndarray] = field(default_factory=dict, repr=False, compare=False)

    @property
    def correct(self) -> np.ndarray:
        return self.labels == self.preds


# How a run ended: what ``Logger.finish`` takes and ``summary.json`` records as ``status``.
FINISH_STATUSES = ("finished", "pruned", "failed", "diverged", "interrupted")


def check_status(status: str) -> str:
    if status not in FINISH_STATUSES:
        raise ValueError(f"status={status!r} is not allowed; allowed: "
                         + ", ".join(FINISH_STATUSES))
    return status
