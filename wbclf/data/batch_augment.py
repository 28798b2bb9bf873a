"""Training augmentation applied a batch at a time, on uint8, straight into the batch buffer.

Why not albumentations, image by image, for the default preset: profiled on 128 px images (one
core), its ``Compose`` spent more time on dispatch, per-transform reseeding and identity checks
than on pixels: 150 us per image, of which the OpenCV calls are about 60. :class:`LightAugment`
draws the parameters of a whole batch in one vectorized step and then makes at most two OpenCV
calls per image: flip, scale, shift and rotation fused into one ``warpAffine``, brightness and
contrast as one lookup table: 64 us per image in all. The other presets keep their
albumentations pipelines (:class:`AlbumentationsAugment`), still called once per batch.

Every image's parameters come from its own seed (the :class:`~wbclf.data.datasets.EpochSampler`
draws one per image and epoch), never from the batch or the process: a resumed run, or one
with another worker count, sees exactly the same pixels.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import cv2
import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


class BatchAugment(Protocol):
    """Augments ``source[rows[k]]`` with seed ``seeds[k]`` into ``out[k]`` for every k."""

    def __call__(self, source: np.ndarray, rows: np.ndarray, seeds: np.ndarray,
                 out: np.ndarray) -> None: ...


def seeded_uniforms(seeds: np.ndarray, count: int) -> np.ndarray:
    """``count`` uniforms in [0, 1) per seed: the first outputs of SplitMix64 seeded with it.

    A counter-based generator, vectorized over the batch: the numbers of one image depend on
    its seed alone, at no per-image cost of building a generator object.
    """
    state = np.asarray(seeds, dtype=np.int64).astype(np.uint64).reshape(-1, 1)
    with np.errstate(over="ignore"):  # wrap-around is the algorithm
        z = state + _GOLDEN * np.arange(1, count + 1, dtype=np.uint64)
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def visit_order(rows: np.ndarray) -> np.ndarray:
    """Positions of ``rows`` in ascending row order: memory-mapped pages read front to back."""
    return np.argsort(rows, kind="stable")


class LightAugment:
    """The ``light`` preset: horizontal flip; scale, shift and rotation; brightness/contrast.

    Same ranges as the albumentations definition in :mod:`wbclf.data.transforms`: flip with
    p=0.5; affine with p=0.7 (scale 0.9-1.1, shift up to 6% of the side, rotation up to 15
    degrees, reflected borders, bilinear); brightness and contrast each up to 10% with p=0.5.
    """

    def __init__(self, size: int, *, flip_p: float = 0.5, affine_p: float = 0.7,
                 scale: tuple[float, float] = (0.9, 1.1), shift: float = 0.06,
                 rotate: float = 15.0, color_p: float = 0.5, brightness: float = 0.1,
                 contrast: float = 0.1) -> None:
        self.size = size
        self.flip_p, self.affine_p, self.color_p = flip_p, affine_p, color_p
        self.scale, self.shift, self.rotate = scale, shift, rotate
        self.brightness, self.contrast = brightness, contrast

    def params(self, seeds: np.ndarray) -> dict[str, np.ndarray]:
        """Per-image decisions, (B, 2, 3) forward affine matrices and (B, 256) colour tables."""
        u = seeded_uniforms(seeds, 9)
        n, size = len(u), self.size
        flip = u[:, 0] < self.flip_p
        affine = u[:, 1] < self.affine_p
        color = u[:, 2] < self.color_p
        angle = np.deg2rad((2 * u[:, 3] - 1) * self.rotate)
        scale = self.scale[0] + (self.scale[1] - self.scale[0]) * u[:, 4]
        shift = (2 * u[:, 5:7] - 1) * self.shift * size
        # dst = R*s*(F(src) - c) + c + t, with F the optional mirror x -> size-1-x
        c = (size - 1) / 2.0
        cos, sin = np.cos(angle) * scale, np.sin(angle) * scale
        mirror = np.where(flip, -1.0, 1.0)
        m = np.empty((n, 2, 3))
        m[:, 0, 0], m[:, 0, 1] = cos * mirror, -sin
        m[:, 1, 0], m[:, 1, 1] = sin * mirror, cos
        # where the centre goes: F(c) = c for the mirror about the centre, so only R*s acts
        m[:, 0, 2] = c - (m[:, 0, 0] * c + m[:, 0, 1] * c) + shift[:, 0]
        m[:, 1, 2] = c - (m[:, 1, 0] * c + m[:, 1, 1] * c) + shift[:, 1]
        alpha = 1.0 + (2 * u[:, 7] - 1) * self.contrast
        beta = (2 * u[:, 8] - 1) * self.brightness * 255.0
        levels = np.arange(256, dtype=np.float64)
        lut = np.clip(np.rint(levels * alpha[:, None] + beta[:, None]), 0, 255).astype(np.uint8)
        return {"flip": flip, "affine": affine, "color": color, "matrix": m, "lut": lut}

    def __call__(self, source: np.ndarray, rows: np.ndarray, seeds: np.ndarray,
                 out: np.ndarray) -> None:
        p = self.params(seeds)
        dsize = (self.size, self.size)
        for k in visit_order(rows):
            src = np.asarray(source[rows[k]])
            dst = out[k]
            if p["affine"][k]:
                cv2.warpAffine(src, p["matrix"][k], dsize, dst=dst, flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REFLECT_101)
            elif p["flip"][k]:
                cv2.flip(src, 1, dst=dst)
            else:
                dst[...] = src
            if p["color"][k]:
                cv2.LUT(dst, p["lut"][k], dst=dst)


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
            out[k] = self.transform(image=np.asarray(source[rows[k]]))["image"]


def build_batch_augment(preset: str, size: int) -> BatchAugment | None:
    """The batch augmentation for ``preset`` (None for ``none``)."""
    from wbclf.data.transforms import build_train_transform

    if preset == "light":
        return LightAugment(size)
    transform = build_train_transform(preset, size)  # validates the preset name
    return None if transform is None else AlbumentationsAugment(transform)


def as_batch_augment(transform) -> BatchAugment | None:
    """A batch augmentation from a batch one (as is), an albumentations pipeline, or None."""
    if transform is None or isinstance(transform, (LightAugment, AlbumentationsAugment)):
        return transform
    return AlbumentationsAugment(transform)
