"""Training augmentation applied a batch at a time, on uint8, straight into the batch buffer.

Every preset and every user pipeline runs through albumentations (one implementation: what a
user reads in ``wbclf/data/presets/`` or their own file is what trains). An earlier fused
OpenCV copy of ``light`` was 2.3x faster per image but saved about 2% of a demo epoch, so it
went (docs/BENCHMARKS.md, "augment").

Every image's parameters come from its own seed (the :class:`~wbclf.data.datasets.EpochSampler`
draws one per image and epoch), never from the batch or the process: a resumed run, or one
with another worker count, sees exactly the same pixels.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np

from wbclf.data.transforms import check_output


class BatchAugment(Protocol):
    """Augments ``source[rows[k]]`` with seed ``seeds[k]`` into ``out[k]`` for every k."""

    def __call__(self, source: np.ndarray, rows: np.ndarray, seeds: np.ndarray,
                 out: np.ndarray) -> None: ...


def visit_order(rows: np.ndarray) -> np.ndarray:
    """Positions of ``rows`` in ascending row order: memory-mapped pages read front to back."""
    return np.argsort(rows, kind="stable")


class AlbumentationsAugment:
    """Any albumentations pipeline (``image=`` in, ``{"image": ...}`` out), one image at a time.

    The pipeline is reseeded with each image's seed, so its output depends on that seed only.
    """

    def __init__(self, transform: Callable[..., dict]) -> None:
        self.transform = transform

    def __call__(self, source: np.ndarray, rows: np.ndarray, seeds: np.ndarray,
                 out: np.ndarray) -> None:
        for k in visit_order(rows):
            if hasattr(self.transform, "set_random_seed"):
                self.transform.set_random_seed(int(seeds[k]))
            image = self.transform(image=np.asarray(source[rows[k]]))["image"]
            if image.shape != out.shape[1:]:  # one line naming the pipeline, not a numpy error
                check_output(image, getattr(self.transform, "wbclf_spec", "pipeline"),
                             out.shape[1])
            out[k] = image


def as_batch_augment(transform) -> BatchAugment | None:
    """A batch augmentation from a batch one (as is), an albumentations pipeline, or None."""
    if transform is None or isinstance(transform, AlbumentationsAugment):
        return transform
    return AlbumentationsAugment(transform)
