"""Drawing helpers shared by the toy datasets.

Images are float32 RGB in [0, 255] while drawn; coordinates are pixels (x, y).
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np


@lru_cache(maxsize=8)
def grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (ys, xs) scaled to [-1, 1]."""
    c = (np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1
    ys, xs = np.meshgrid(c, c, indexing="ij")
    return ys, xs


def smooth_field(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth random field with values of about unit scale."""
    coarse = rng.standard_normal((cells, cells)).astype(np.float32)
    return cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)


def grain(rng: np.random.Generator, size: int, sigma: float, blur: float = 0.0) -> np.ndarray:
    noise = rng.standard_normal((size, size)).astype(np.float32) * sigma
    return cv2.GaussianBlur(noise, (0, 0), blur) if blur > 0 else noise


def lighting(rng: np.random.Generator, size: int, strength: float) -> np.ndarray:
    """Multiplicative linear light gradient in a random direction."""
    ys, xs = grid(size)
    angle = rng.uniform(0, 2 * np.pi)
    return 1.0 + strength * rng.uniform(-1, 1) * (xs * np.cos(angle) + ys * np.sin(angle))


def blend(img: np.ndarray, colour, alpha: np.ndarray) -> None:
    """In place: img = img * (1 - alpha) + colour * alpha."""
    a = alpha[..., None]
    img *= 1 - a
    img += a * np.asarray(colour, np.float32)


def fill(size: int, polygons: list[np.ndarray]) -> np.ndarray:
    """Anti-aliased coverage mask in [0, 1] of float polygons (sub-pixel precise)."""
    mask = np.zeros((size, size), np.uint8)
    cv2.fillPoly(mask, [np.round(p * 16).astype(np.int32) for p in polygons], 255,
                 cv2.LINE_AA, shift=4)
    return mask.astype(np.float32) / 255


def polyline(layer: np.ndarray, pts: np.ndarray, thickness: int) -> None:
    cv2.polylines(layer, [np.round(pts * 16).astype(np.int32)], False, 255,
                  max(1, thickness), cv2.LINE_AA, shift=4)


def blob(rng: np.random.Generator, center, radius: float, rough: float,
          points: int = 48) -> np.ndarray:
    """Closed blobby outline: a circle with random low harmonics."""
    theta = np.linspace(0, 2 * np.pi, points, endpoint=False)
    r = np.ones(points)
    for k in range(2, 6):
        r += rough * rng.uniform(0, 0.3) / k ** 0.5 * np.cos(k * theta + rng.uniform(0, 6.3))
    r = radius * np.maximum(r, 0.3)
    return np.stack([center[0] + r * np.cos(theta), center[1] + r * np.sin(theta)], 1)


def rotate(img: np.ndarray, degrees: float) -> np.ndarray:
    h, w = img.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2 - 0.5, h / 2 - 0.5), degrees, 1.0)
    return cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REFLECT_101)


def lerp(a, b, t: float) -> np.ndarray:
    return np.asarray(a, np.float32) * (1 - t) + np.asarray(b, np.float32) * t


def finish(rng: np.random.Generator, img: np.ndarray, noise: float) -> np.ndarray:
    """Camera: sensor noise, a touch of defocus, 8-bit output."""
    img += grain(rng, img.shape[0], noise)[..., None]
    if rng.random() < 0.5:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.3, 0.8))
    return np.clip(img, 0, 255).astype(np.uint8)
