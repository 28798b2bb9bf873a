"""toy-leaves: a stand-in for Kaggle's New Plant Diseases dataset.

The nested ``New Plant Diseases Dataset(Augmented)`` tree with ``train``/``valid``, class names
with commas and parentheses, the offline-augmentation suffixes in file names (``_flipLR``,
``_90deg``, ...) and the unlabeled ``test/test`` folder; leaves of 4 crops, healthy or with one
disease each.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np

from wbclf.data.synthetic.draw import (blend, blob, fill, finish, grain, lerp, lighting,
                                       polyline, rotate, smooth_field)
from wbclf.data.synthetic.plumbing import Job

PLANT_TOP = "New Plant Diseases Dataset(Augmented)"

# Offline augmentations of the plant dataset: file-name suffix -> transform of a BGR image.
AUGMENTATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "": lambda img: img,
    "_flipLR": lambda img: cv2.flip(img, 1),
    "_flipTB": lambda img: cv2.flip(img, 0),
    "_90deg": lambda img: cv2.rotate(img, cv2.ROTATE_90_COUNTERCLOCKWISE),
    "_180deg": lambda img: cv2.rotate(img, cv2.ROTATE_180),
    "_270deg": lambda img: cv2.rotate(img, cv2.ROTATE_90_CLOCKWISE),
    "_new30degFlipLR": lambda img: cv2.flip(rotate(img, 30.0), 1),
}
_VARIANT_SUFFIXES = tuple(s for s in AUGMENTATIONS if s)


@dataclass(frozen=True)
class LeafClass:
    """One toy-leaves class: folder name, what to draw and how its files are named."""

    name: str
    crop: str
    disease: str
    codes: tuple[str, ...]  # photographer/lab codes of the real file names; no digits
    test_name: str  # stem prefix in the unlabeled test/test folder
    n_test: int
    weight: float  # relative class size: the real classes are mildly imbalanced


LEAF_CLASSES: tuple[LeafClass, ...] = (
    LeafClass("Apple___Apple_scab", "apple", "scab", ("FREC_Scab",), "AppleScab", 5, 1.0),
    LeafClass("Apple___healthy", "apple", "healthy", ("RS_HL",), "AppleHealthy", 4, 1.1),
    LeafClass("Corn_(maize)___Common_rust_", "corn", "rust", ("RS_Rust",), "CornCommonRust",
              4, 0.95),
    LeafClass("Corn_(maize)___healthy", "corn", "healthy", ("R.S_HL",), "CornHealthy", 4, 1.05),
    LeafClass("Pepper,_bell___Bacterial_spot", "pepper", "bacterial_spot",
              ("JR_B.Spot", "NREC_B.Spot"), "PepperBellBacterialSpot", 4, 0.9),
    LeafClass("Pepper,_bell___healthy", "pepper", "healthy", ("JR_HL",), "PepperBellHealthy",
              4, 1.0),
    LeafClass("Tomato___Early_blight", "tomato", "early_blight", ("RS_Erly.B",),
              "TomatoEarlyBlight", 4, 1.05),
    LeafClass("Tomato___healthy", "tomato", "healthy", ("RS_HL", "GH_HL Leaf"), "TomatoHealthy",
              4, 0.95),
)


DEFAULT_LEAK = 0.1  # share of valid files that are augmented copies of train leaves


def plan_leaves(n: int, seed: int, leak: float = 0.0) -> list[Job]:
    """Plant layout: train, valid (~20 % of train) and the 33-file unlabeled test folder.

    ``leak`` of each class's valid files are augmented copies of train leaves, as in the
    real set (rebuilt by offline augmentation, then split without regard to the source leaf).
    """
    jobs = []
    for cls_idx, leaf in enumerate(LEAF_CLASSES):
        n_train = max(1, round(n * leaf.weight))
        n_valid = max(1, round(0.2 * n_train))
        train = _plan_leaf_split(leaf, cls_idx, "train", 0, n_train, seed)
        n_leaked = min(round(leak * n_valid), len(train))
        valid = _plan_leaf_split(leaf, cls_idx, "valid", 1, n_valid - n_leaked, seed)
        jobs += _leak_into_valid(train, leaf, cls_idx, n_leaked, seed) + valid
        for i in range(leaf.n_test):
            rel = f"test/test/{leaf.test_name}{i + 1}.JPG"
            jobs.append(Job("leaf", (leaf.crop, leaf.disease), (seed, 1, 2, cls_idx, i, 1),
                             ((rel, ""),)))
    return jobs


def _plan_leaf_split(leaf: LeafClass, cls_idx: int, split: str, split_idx: int, count: int,
                     seed: int) -> list[Job]:
    """Source leaves with 0-3 augmented variants each, until `count` files."""
    folder = f"{PLANT_TOP}/{PLANT_TOP}/{split}/{leaf.name}"
    jobs, made, i = [], 0, 0
    while made < count:
        rng = np.random.default_rng((seed, 1, split_idx, cls_idx, i, 0))
        uid = uuid.UUID(bytes=rng.bytes(16), version=4)
        code = leaf.codes[rng.integers(len(leaf.codes))]
        # The source id is everything up to the last " <digits>"; codes hold no digits.
        stem = f"{uid}___{code} {rng.integers(1, 10000)}"
        ext = ".jpg" if rng.random() < 0.15 else ".JPG"
        k = min(int(rng.choice(4, p=(0.4, 0.3, 0.2, 0.1))), count - made - 1)
        picks = sorted(rng.choice(len(_VARIANT_SUFFIXES), size=k, replace=False))
        suffixes = [""] + [_VARIANT_SUFFIXES[p] for p in picks]
        files = tuple((f"{folder}/{stem}{s}{ext}", s) for s in suffixes)
        jobs.append(Job("leaf", (leaf.crop, leaf.disease), (seed, 1, split_idx, cls_idx, i, 1),
                         files))
        made += len(files)
        i += 1
    return jobs


def _leak_into_valid(train: list[Job], leaf: LeafClass, cls_idx: int, count: int,
                     seed: int) -> list[Job]:
    """``train`` with ``count`` of its leaves also written into valid, each as a variant
    (flip, rotation) none of its train files has, under the same source name."""
    rng = np.random.default_rng((seed, 1, 3, cls_idx))
    chosen = set(rng.choice(len(train), size=count, replace=False).tolist()) if count else set()
    prefix = f"{PLANT_TOP}/{PLANT_TOP}/train/{leaf.name}/"
    out = []
    for i, job in enumerate(train):
        if i in chosen:
            used = {suffix for _, suffix in job.files}
            unused = [s for s in _VARIANT_SUFFIXES if s not in used]
            suffix = unused[rng.integers(len(unused))]
            stem, ext = job.files[0][0][len(prefix):].rsplit(".", 1)
            rel = f"{PLANT_TOP}/{PLANT_TOP}/valid/{leaf.name}/{stem}{suffix}.{ext}"
            job = Job(job.kind, job.params, job.key, job.files + ((rel, suffix),))
        out.append(job)
    return out


def leaked_copies(jobs: list[Job]) -> list[tuple[str, str]]:
    """(valid file, train original) of every leaf written into both splits."""
    pairs = []
    for job in jobs:
        for rel, _ in job.files[1:]:
            if "/valid/" in rel and "/train/" in job.files[0][0]:
                pairs.append((rel, job.files[0][0]))
    return pairs


_BACKGROUNDS = (  # RGB: lab backdrops as in the real photos, plus a few odd ones
    (150, 150, 145), (186, 176, 160), (96, 96, 98), (124, 134, 146), (206, 206, 200),
    (140, 124, 104), (70, 80, 70),
)


def render_leaf(rng: np.random.Generator, size: int, crop: str, disease: str) -> np.ndarray:
    """A photographed leaf of `crop` showing `disease` (or healthy, maybe a harmless blemish)."""
    polygons, veins, angle = _leaf_geometry(rng, size, crop)
    mask = fill(size, polygons)
    leaf = _leaf_surface(rng, size, crop, veins)
    if disease == "healthy":
        _blemishes(rng, leaf, mask)
    else:
        # Low severity means few, small, faint lesions: the hard cases.
        severity = float(rng.beta(1.3, 1.6))
        _DISEASES[disease](rng, leaf, mask, severity, angle)
    img = _background(rng, size, mask)
    blend(img, leaf, mask)
    img *= (lighting(rng, size, 0.2) * rng.uniform(0.75, 1.15))[..., None]
    return finish(rng, img, rng.uniform(1, 3))


def _background(rng: np.random.Generator, size: int, mask: np.ndarray) -> np.ndarray:
    """Backdrop with uneven light and the leaf's soft shadow."""
    base = np.asarray(_BACKGROUNDS[rng.integers(len(_BACKGROUNDS))], np.float32)
    img = np.empty((size, size, 3), np.float32)
    img[:] = base * rng.uniform(0.85, 1.15) + rng.normal(0, 5, 3)  # mostly a brightness shift
    img *= (1 + 0.05 * smooth_field(rng, size, 3))[..., None]
    img += grain(rng, size, 2.0)[..., None]
    shift = rng.normal(0, 0.025 * size, 2)
    moved = cv2.warpAffine(mask, np.float32([[1, 0, shift[0]], [0, 1, shift[1]]]), (size, size))
    shadow = cv2.GaussianBlur(moved, (0, 0), size * rng.uniform(0.01, 0.04))
    img *= (1 - rng.uniform(0.15, 0.5) * shadow)[..., None]
    return img


def _leaf_geometry(rng: np.random.Generator, size: int,
                   crop: str) -> tuple[list[np.ndarray], list[np.ndarray], float]:
    """Outline polygons and vein polylines in pixels, and the leaf's axis angle (degrees)."""
    polys, veins = _LEAF_SHAPES[crop](rng, size)
    angle = rng.uniform(0, 360)
    a = np.deg2rad(angle)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    # Local coordinates are centred on the leaf; jitter its position a little.
    offset = size / 2 + rng.normal(0, 0.05 * size, 2)
    place = lambda pts: pts @ rot.T + offset
    return [place(p) for p in polys], [place(v) for v in veins], angle


def _blade(rng: np.random.Generator, length: float, ratio: float, widest: float,
           lobes: int = 0, lobe_depth: float = 0.0,
           serration: float = 0.0) -> tuple[np.ndarray, list[np.ndarray]]:
    """A simple leaf blade from base (0, 0) to tip (length, 0) with pinnate veins."""
    t = np.linspace(0, 1, 90)
    a = widest / (1 - widest)  # t**a * (1 - t) peaks at `widest`; the tip comes out pointed
    half = t ** a * (1 - t)
    half = half / half.max() * ratio * length / 2
    if lobes:
        half *= 1 - lobe_depth * (0.5 - 0.5 * np.cos(2 * np.pi * lobes * t))
    if serration:
        half *= 1 + serration * np.abs(np.sin(np.pi * 30 * t))
    skew = rng.uniform(-0.08, 0.08)  # real leaves are never quite symmetric
    x = t * length
    upper = np.stack([x, half * (1 + skew)], 1)
    lower = np.stack([x, -half * (1 - skew)], 1)[::-1]
    veins = [np.array([[0.0, 0.0], [0.97 * length, 0.0]])]
    for tv in np.linspace(0.12, 0.82, rng.integers(4, 7)):
        i = int(tv * 89)
        for side in (1, -1):
            end = [x[i] + 0.14 * length, side * 0.8 * half[min(i + 12, 89)]]
            veins.append(np.array([[x[i], 0.0], end]))
    return np.concatenate([upper, lower]), veins


def _move(pts: np.ndarray, degrees: float, offset) -> np.ndarray:
    a = np.deg2rad(degrees)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return pts @ rot.T + np.asarray(offset, float)


def _apple(rng: np.random.Generator, size: int) -> tuple[list, list]:
    """Ovate, widest below the middle, finely serrated, with a petiole."""
    length = size * rng.uniform(0.55, 0.8)
    blade, veins = _blade(rng, length, rng.uniform(0.5, 0.65), rng.uniform(0.35, 0.45),
                          serration=0.03)
    petiole = np.array([[-0.15 * length, -0.01 * length], [-0.15 * length, 0.01 * length],
                        [0.02 * length, 0.012 * length], [0.02 * length, -0.012 * length]])
    shift = (-0.45 * length, 0)
    return [_move(blade, 0, shift), _move(petiole, 0, shift)], [_move(v, 0, shift) for v in veins]


def _pepper(rng: np.random.Generator, size: int) -> tuple[list, list]:
    """Broad, smooth-edged ovate-elliptic blade with a long tip."""
    length = size * rng.uniform(0.6, 0.85)
    blade, veins = _blade(rng, length, rng.uniform(0.55, 0.72), rng.uniform(0.3, 0.4))
    petiole = np.array([[-0.2 * length, -0.012 * length], [-0.2 * length, 0.012 * length],
                        [0.02 * length, 0.015 * length], [0.02 * length, -0.015 * length]])
    shift = (-0.45 * length, 0)
    return [_move(blade, 0, shift), _move(petiole, 0, shift)], [_move(v, 0, shift) for v in veins]


def _tomato(rng: np.random.Generator, size: int) -> tuple[list, list]:
    """Compound leaf: a lobed terminal leaflet and 2-4 lateral leaflets on a rachis."""
    length = size * rng.uniform(0.38, 0.5)
    rachis_len = length * rng.uniform(0.5, 0.8)
    polys, veins = [], []
    terminal, tveins = _blade(rng, length, rng.uniform(0.45, 0.6), 0.4,
                              lobes=int(rng.integers(3, 6)), lobe_depth=rng.uniform(0.1, 0.3))
    polys.append(terminal)
    veins += tveins
    pairs = 1 if rng.random() < 0.5 else 2
    for j in range(pairs):
        base = -rachis_len * (j + 1) / pairs
        for side in (1, -1):
            small, sveins = _blade(rng, length * rng.uniform(0.5, 0.75), rng.uniform(0.45, 0.6),
                                   0.4, lobes=int(rng.integers(2, 4)),
                                   lobe_depth=rng.uniform(0.05, 0.2))
            tilt = side * rng.uniform(40, 75)
            polys.append(_move(small, tilt, (base, 0)))
            veins += [_move(v, tilt, (base, 0)) for v in sveins]
    w = 0.012 * length
    rachis = np.array([[-rachis_len - 0.2 * length, -w], [-rachis_len - 0.2 * length, w],
                       [0.05 * length, w], [0.05 * length, -w]])
    polys.append(rachis)
    shift = (rachis_len / 2 - 0.3 * length, 0)
    return [_move(p, 0, shift) for p in polys], [_move(v, 0, shift) for v in veins]


def _corn(rng: np.random.Generator, size: int) -> tuple[list, list]:
    """Long narrow blade entering from outside the frame, gently curved, parallel veins."""
    to_base = size * rng.uniform(0.8, 1.0)  # the base stays outside the image, as in the photos
    to_tip = size * rng.uniform(0.25, 0.8)
    length = to_base + to_tip
    width = size * rng.uniform(0.16, 0.26)
    t = np.linspace(0, 1, 90)
    half = width / 2 * (1 - t) ** 0.45 * (1 + 0.1 * (1 - t))
    half *= 1 + 0.03 * np.sin(2 * np.pi * rng.uniform(3, 8) * t + rng.uniform(0, 6.3))  # wavy
    x = t * length - to_base
    mid = rng.uniform(-0.25, 0.25) * length * (t - 0.5) ** 2  # the blade droops a little
    outline = np.concatenate([np.stack([x, mid + half], 1), np.stack([x, mid - half], 1)[::-1]])
    veins = [np.stack([x, mid + f * half], 1) for f in (-0.66, -0.33, 0.0, 0.33, 0.66)]
    return [outline], veins


_LEAF_SHAPES = {"apple": _apple, "corn": _corn, "pepper": _pepper, "tomato": _tomato}

_LEAF_GREENS = {  # RGB range (dark, light) per crop
    "apple": ((50, 90, 35), (110, 150, 60)),
    "corn": ((70, 115, 40), (140, 170, 70)),
    "pepper": ((35, 85, 30), (90, 140, 50)),
    "tomato": ((45, 95, 40), (115, 155, 70)),
}


def _leaf_surface(rng: np.random.Generator, size: int, crop: str,
                  veins: list[np.ndarray]) -> np.ndarray:
    """Leaf colour layer (unmasked): a green with mottling, texture and lighter veins."""
    dark, light = _LEAF_GREENS[crop]
    green = lerp(dark, light, rng.random()) + rng.normal(0, 6, 3)
    leaf = np.empty((size, size, 3), np.float32)
    leaf[:] = green
    leaf *= (1 + 0.07 * smooth_field(rng, size, 5))[..., None]
    leaf += grain(rng, size, 3.0, blur=0.7)[..., None]
    layer = np.zeros((size, size), np.uint8)
    for i, vein in enumerate(veins):
        main = i == 0 and crop != "corn"
        polyline(layer, vein, round(size / 128 * (2 if main else 1)))
    vein_colour = green * 1.25 + np.array([20, 20, 5], np.float32)
    blend(leaf, vein_colour, layer.astype(np.float32) / 255 * rng.uniform(0.25, 0.6))
    if crop == "pepper":  # glossy: a broad soft highlight
        leaf += (25 * np.clip(smooth_field(rng, size, 3), 0, None))[..., None]
    return leaf


def _spots(rng: np.random.Generator, mask: np.ndarray, count: int) -> np.ndarray:
    """`count` random points (x, y) on the leaf."""
    ys, xs = np.nonzero(mask > 0.7)
    if len(xs) == 0:
        return np.zeros((0, 2))
    pick = rng.integers(len(xs), size=count)
    return np.stack([xs[pick], ys[pick]], 1) + rng.uniform(-0.5, 0.5, (count, 2))


def _circles(size: int, centers: np.ndarray, radii: np.ndarray, thickness: int = -1,
             axes_ratio: np.ndarray | None = None, angle: float = 0.0) -> np.ndarray:
    """Coverage mask in [0, 1] of (elliptic) discs or rings at sub-pixel positions."""
    layer = np.zeros((size, size), np.uint8)
    ratio = np.ones(len(centers)) if axes_ratio is None else axes_ratio
    for (x, y), r, q in zip(centers, radii, ratio):
        cv2.ellipse(layer, (int(round(x * 16)), int(round(y * 16))),
                    (max(1, int(round(r * 16))), max(1, int(round(r * q * 16)))), angle, 0, 360,
                    255, thickness, cv2.LINE_AA, shift=4)
    return layer.astype(np.float32) / 255


def _scab(rng: np.random.Generator, leaf: np.ndarray, mask: np.ndarray, severity: float,
          angle: float) -> None:
    """Dark olive, velvety blotches with feathery edges."""
    size = leaf.shape[0]
    centers = _spots(rng, mask, 2 + round(severity * 10))
    radii = size * rng.uniform(0.015, 0.045, len(centers)) * (0.6 + 0.8 * severity)
    layer = fill(size, [blob(rng, c, r, 1.5) for c, r in zip(centers, radii)])
    layer = cv2.GaussianBlur(layer, (0, 0), size * 0.005)
    olive = np.array([58, 62, 30], np.float32) * rng.uniform(0.7, 1.2)
    blend(leaf, olive, layer * (0.45 + 0.5 * severity))


def _rust(rng: np.random.Generator, leaf: np.ndarray, mask: np.ndarray, severity: float,
          angle: float) -> None:
    """Many small orange-brown pustules, elongated along the blade."""
    size = leaf.shape[0]
    centers = _spots(rng, mask, 8 + round(severity * 70))
    radii = size * rng.uniform(0.006, 0.014, len(centers))
    layer = _circles(size, centers, radii * 1.8, axes_ratio=np.full(len(radii), 0.55),
                     angle=angle)
    colour = np.array([185, 100, 38], np.float32) * rng.uniform(0.8, 1.1)
    blend(leaf, colour, layer * (0.4 + 0.55 * severity))


def _bacterial_spot(rng: np.random.Generator, leaf: np.ndarray, mask: np.ndarray,
                    severity: float, angle: float) -> None:
    """Small dark spots, each with a yellow halo."""
    size = leaf.shape[0]
    centers = _spots(rng, mask, 4 + round(severity * 30))
    radii = size * rng.uniform(0.006, 0.013, len(centers))
    halo = cv2.GaussianBlur(_circles(size, centers, radii * 2.2), (0, 0), size * 0.006)
    blend(leaf, (205, 195, 70), halo * (0.3 + 0.5 * severity))
    blend(leaf, (50, 38, 25), _circles(size, centers, radii) * (0.45 + 0.5 * severity))


def _early_blight(rng: np.random.Generator, leaf: np.ndarray, mask: np.ndarray,
                  severity: float, angle: float) -> None:
    """Larger brown lesions with concentric rings and a yellow rim."""
    size = leaf.shape[0]
    strength = 0.4 + 0.55 * severity
    for (x, y) in _spots(rng, mask, 1 + round(severity * 4)):
        r = size * rng.uniform(0.025, 0.06) * (0.6 + 0.7 * severity)
        q, tilt = rng.uniform(0.7, 1.0, 1), rng.uniform(0, 180)
        c = np.array([[x, y]])
        halo = cv2.GaussianBlur(_circles(size, c, [r * 1.35], axes_ratio=q, angle=tilt),
                                (0, 0), r * 0.25)
        blend(leaf, (190, 175, 60), halo * strength * 0.8)
        blend(leaf, (128, 92, 52), _circles(size, c, [r], axes_ratio=q, angle=tilt) * strength)
        rings = int(rng.integers(2, 5))
        for j in range(1, rings + 1):
            ring = _circles(size, c, [r * j / (rings + 0.5)], max(1, round(size / 128)),
                            axes_ratio=q, angle=tilt)
            blend(leaf, (70, 50, 30), ring * strength * 0.8)


def _blemishes(rng: np.random.Generator, leaf: np.ndarray, mask: np.ndarray) -> None:
    """Harmless flecks (dust, insect bites) on some healthy leaves, so spots alone don't tell."""
    if rng.random() > 0.35:
        return
    size = leaf.shape[0]
    centers = _spots(rng, mask, int(rng.integers(1, 5)))
    radii = size * rng.uniform(0.004, 0.012, len(centers))
    colour = lerp((170, 160, 100), (90, 80, 55), rng.random())
    blend(leaf, colour, _circles(size, centers, radii) * rng.uniform(0.3, 0.6))


_DISEASES = {"scab": _scab, "rust": _rust, "bacterial_spot": _bacterial_spot,
             "early_blight": _early_blight}
