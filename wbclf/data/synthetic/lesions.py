"""toy-lesions: a stand-in for Kaggle's Melanoma Cancer dataset.

Layout ``train/{Benign,Malignant}``, ``test/{Benign,Malignant}``, no validation folder. Each
image is a dermoscopy-like lesion whose class shifts a latent ABCD score (asymmetry, border,
colour, diameter), so the classes overlap as real ones do.
"""

from __future__ import annotations

import cv2
import numpy as np

from wbclf.data.synthetic.draw import (blend, blob, fill, finish, grain, grid, lerp, lighting,
                                       polyline, smooth_field)
from wbclf.data.synthetic.plumbing import Job


def plan_lesions(n: int, seed: int) -> list[Job]:
    """Melanoma layout: train mildly imbalanced (more benign), test balanced."""
    counts = {
        "train": {"Benign": n + n // 10, "Malignant": max(1, n - n // 10)},
        "test": {"Benign": max(1, n // 3), "Malignant": max(1, n // 3)},
    }
    jobs, number = [], 0
    for split_idx, (split, per_class) in enumerate(counts.items()):
        for cls_idx, (cls, count) in enumerate(per_class.items()):
            for i in range(count):
                rel = f"{split}/{cls}/melanoma_{number}.jpg"
                jobs.append(Job("lesion", (cls_idx == 1,), (seed, 0, split_idx, cls_idx, i),
                                 ((rel, ""),)))
                number += 1
    return jobs


_LESION_PATCH_COLOURS = {  # RGB of the extra colours of the C in ABCD
    "dark_brown": (70, 40, 28), "black": (28, 22, 24), "red": (155, 58, 52),
    "blue_grey": (105, 115, 135), "white": (200, 185, 178),
}


def render_lesion(rng: np.random.Generator, size: int, malignant: bool) -> np.ndarray:
    """A dermoscopy-like skin lesion; the class shifts a latent ABCD score, not each cue."""
    # One latent score drives asymmetry, border, colours and diameter, each with its own
    # noise; the classes overlap on it, so some benign lesions look irregular and some
    # malignant ones fairly round (Bayes accuracy is around 90 %, not 100 %).
    score = rng.beta(5, 2) if malignant else rng.beta(2, 5)

    def cue() -> float:
        return float(np.clip(score + rng.normal(0, 0.12), 0, 1))

    asym, border, colours, diam = cue(), cue(), cue(), cue()
    img, tone = _skin(rng, size)
    radius = size * (0.11 + 0.15 * diam) * rng.uniform(0.85, 1.15)
    center = size / 2 + rng.normal(0, 0.07 * size, 2)
    outline = _lesion_outline(rng, center, radius, asym, border)
    alpha = _lesion_alpha(rng, size, outline, border)
    colour = _lesion_colour(rng, size, tone, center, radius, colours)
    blend(img, colour, alpha * rng.uniform(0.82, 0.97))
    _hairs(rng, img)
    img *= (lighting(rng, size, 0.15) * _vignette(rng, size))[..., None]
    return finish(rng, img, rng.uniform(1, 4))


def _skin(rng: np.random.Generator, size: int) -> tuple[np.ndarray, float]:
    """Skin of a random tone with uneven pigment and fine texture; returns (image, tone)."""
    tone = float(rng.beta(1.6, 3.0))  # mostly fair skin, some darker
    base = lerp((236, 196, 176), (140, 94, 70), tone) + rng.normal(0, 2.5, 3)
    img = np.empty((size, size, 3), np.float32)
    img[:] = base
    blotch = smooth_field(rng, size, 4) * rng.uniform(3, 9)
    img += blotch[..., None] * np.array([1.0, 0.5, 0.5], np.float32)  # redness is uneven
    img += grain(rng, size, rng.uniform(4, 9), blur=0.8)[..., None]  # pores, fine texture
    return img, tone


def _lesion_outline(rng: np.random.Generator, center: np.ndarray, radius: float, asym: float,
                    border: float) -> np.ndarray:
    """Polar outline: ovality (symmetric), odd harmonics (asymmetry), high ones (border)."""
    theta = np.linspace(0, 2 * np.pi, 128, endpoint=False)
    r = 1 + rng.uniform(0, 0.12) * np.cos(2 * theta + rng.uniform(0, 6.3))
    for k in (1, 2, 3):  # several low harmonics with unrelated phases: no mirror axis
        r += asym * rng.uniform(0.04, 0.2) * np.cos(k * theta + rng.uniform(0, 6.3))
    for k in range(4, 18):
        amp = border ** 1.5 * rng.uniform(0, 0.09) / (k / 4) ** 0.7
        r += amp * np.cos(k * theta + rng.uniform(0, 6.3))
    r = radius * np.maximum(r, 0.35)
    return np.stack([center[0] + r * np.cos(theta), center[1] + r * np.sin(theta)], 1)


def _lesion_alpha(rng: np.random.Generator, size: int, outline: np.ndarray,
                  border: float) -> np.ndarray:
    """Lesion opacity: a sharp edge in places, fading out where the border is ill-defined."""
    mask = fill(size, [outline])
    sharp = cv2.GaussianBlur(mask, (0, 0), size * 0.005)
    fuzzy = cv2.GaussianBlur(mask, (0, 0), size * (0.01 + 0.035 * border))
    w = np.clip(0.5 + smooth_field(rng, size, 4), 0, 1) * border
    return sharp * (1 - w) + fuzzy * w


def _lesion_colour(rng: np.random.Generator, size: int, tone: float, center: np.ndarray,
                   radius: float, colours: float) -> np.ndarray:
    """One even brown, plus extra colour patches that grow in number with `colours`."""
    shade = float(np.clip(0.35 * tone + rng.uniform(0, 0.65), 0, 1))
    base = lerp((165, 108, 80), (86, 52, 40), shade) + rng.normal(0, 2.5, 3)
    col = np.empty((size, size, 3), np.float32)
    col[:] = base
    # even colour, but never flat: faint mottling like a pigment network seen out of focus
    col *= (1 + 0.04 * smooth_field(rng, size, 5) + grain(rng, size, 0.04, blur=1.0))[..., None]
    names = list(_LESION_PATCH_COLOURS)
    for _ in range(rng.binomial(4, colours ** 1.6)):
        # Benign extras are mostly a darker brown; the alarming colours go with the score.
        name = names[rng.integers(1, 5)] if rng.random() < colours else "dark_brown"
        spot = center + rng.normal(0, 0.4 * radius, 2)
        patch = fill(size, [blob(rng, spot, radius * rng.uniform(0.2, 0.5), 1.0)])
        patch = cv2.GaussianBlur(patch, (0, 0), radius * 0.08)
        blend(col, _LESION_PATCH_COLOURS[name], patch * rng.uniform(0.35, 0.5 + 0.45 * colours))
    return col


def _hairs(rng: np.random.Generator, img: np.ndarray) -> None:
    """Thin dark curved hairs crossing the image (half of the images have none)."""
    if rng.random() < 0.5:
        return
    size = img.shape[0]
    layer = np.zeros((size, size), np.uint8)
    t = np.linspace(0, 1, 24)[:, None]
    for _ in range(rng.integers(1, 10)):
        p0 = rng.uniform(-0.1, 1.1, 2) * size
        angle = rng.uniform(0, 2 * np.pi)
        length = rng.uniform(0.35, 1.1) * size
        p2 = p0 + length * np.array([np.cos(angle), np.sin(angle)])
        bend = rng.uniform(-0.25, 0.25) * length * np.array([-np.sin(angle), np.cos(angle)])
        p1 = (p0 + p2) / 2 + bend
        pts = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t ** 2 * p2
        polyline(layer, pts, round(size / 128 * rng.uniform(0.6, 1.6)))
    colour = rng.uniform(15, 60) * np.array([1.0, 0.85, 0.75])
    blend(img, colour, layer.astype(np.float32) / 255 * rng.uniform(0.6, 0.95))


def _vignette(rng: np.random.Generator, size: int) -> np.ndarray:
    """Radial fall-off; some images show the dermatoscope's dark circular field stop."""
    ys, xs = grid(size)
    r2 = xs ** 2 + ys ** 2
    v = 1 - rng.uniform(0, 0.3) * r2 / 2
    if rng.random() < 0.15:
        edge = rng.uniform(0.95, 1.3)
        v = v * np.clip((edge - np.sqrt(r2)) / 0.08, 0.06, 1)
    return v
