"""Albumentations presets (train only) and on-device normalization.

Images leave the loader as uint8 (4x less to copy than float32); conversion to float and
normalization with the model's mean/std happen on the device, in :class:`DeviceNormalizer`.
Evaluation applies no transform at all: the cache already holds images at training resolution
(short side resized, centre-cropped), which is the deterministic eval transform.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # never look for updates on import

import albumentations as A  # noqa: E402
import cv2  # noqa: E402
import torch  # noqa: E402

PRESETS = ("none", "light", "strong")


def _light(size: int) -> list[A.BasicTransform]:
    return [
        A.HorizontalFlip(p=0.5),
        A.Affine(scale=(0.9, 1.1), translate_percent=(-0.06, 0.06), rotate=(-15, 15),
                 border_mode=cv2.BORDER_REFLECT_101, p=0.7),
        A.RandomBrightnessContrast(brightness_limit=0.1, contrast_limit=0.1, p=0.5),
    ]


def _strong(size: int) -> list[A.BasicTransform]:
    # Leaves and skin lesions have no canonical orientation: all 8 flips/rotations are valid.
    return [
        A.RandomResizedCrop(size=(size, size), scale=(0.6, 1.0), ratio=(0.8, 1.25), p=1.0),
        A.SquareSymmetry(p=1.0),
        A.Affine(rotate=(-30, 30), border_mode=cv2.BORDER_REFLECT_101, p=0.5),
        A.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.03, p=0.7),
        A.OneOf([A.GaussianBlur(blur_limit=(3, 5)), A.GaussNoise(std_range=(0.02, 0.08))],
                p=0.3),
        A.CoarseDropout(num_holes_range=(1, 4), hole_height_range=(0.05, 0.15),
                        hole_width_range=(0.05, 0.15), fill=0, p=0.3),
    ]


def build_train_transform(preset: str, size: int, *, seed: int | None = None
                          ) -> A.Compose | None:
    """The training augmentation for ``preset`` on ``size`` x ``size`` uint8 RGB images."""
    if preset not in PRESETS:
        raise ValueError(f"augment='{preset}' is not allowed; allowed: {', '.join(PRESETS)}")
    if preset == "none":
        return None
    transforms = _light(size) if preset == "light" else _strong(size)
    return A.Compose(transforms, seed=seed)


class DeviceNormalizer(torch.nn.Module):
    """uint8 NCHW batch on the device -> normalized float batch (optionally channels_last)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], *,
                 channels_last: bool = False, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        scale = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1) * 255.0
        shift = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1) * 255.0
        self.register_buffer("shift", shift, persistent=False)
        self.register_buffer("scale", scale, persistent=False)
        self.channels_last = channels_last
        self.dtype = dtype

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = (images.float() - self.shift) / self.scale
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x.to(self.dtype)
