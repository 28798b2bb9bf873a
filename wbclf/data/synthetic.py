"""Built-in synthetic datasets ``toy-lesions`` and ``toy-leaves``.

Both are written as real JPEG files in the exact folder layouts of the Kaggle datasets they
stand in for (DESIGN.md §5), so the data layer meets every quirk of the real data offline:

* ``toy-lesions`` (Melanoma Cancer Dataset): ``train/{Benign,Malignant}``, ``test/{...}``,
  no validation folder; the task follows the ABCD rule with overlapping classes.
* ``toy-leaves`` (New Plant Diseases Dataset): the nested ``...(Augmented)`` tree, its
  all-lowercase duplicate (hard links), ``train``/``valid``, class names with commas and
  parentheses, augmentation suffixes in file names and the unlabeled ``test/test`` folder.

Each source image is drawn with OpenCV from its own numpy Generator keyed by
(seed, dataset, split, class, index), so the bytes do not depend on the order of generation.
"""
from __future__ import annotations

import glob
import json
import os
import shutil
import socket
import uuid
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

TOY_DATASETS: tuple[str, ...] = ("toy-lesions", "toy-leaves")
DEFAULTS: dict[str, dict] = {
    # train ~ 1,000 images (550 benign / 450 malignant), test 166 + 166
    "toy-lesions": {"n": 500, "size": 128},
    # train ~ 2,050 + valid ~ 410 files over 8 classes (>= 2,400 for the benchmark)
    "toy-leaves": {"n": 256, "size": 128},
}

MARKER = ".wbclf-synth.json"
FORMAT_VERSION = 1  # bump when the drawings change, so cached copies can be told apart
JPEG_QUALITY = 90
PLANT_TOP = "New Plant Diseases Dataset(Augmented)"

# Offline augmentations of the plant dataset: file-name suffix -> transform of a BGR image.
AUGMENTATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "": lambda img: img,
    "_flipLR": lambda img: cv2.flip(img, 1),
    "_flipTB": lambda img: cv2.flip(img, 0),
    "_90deg": lambda img: cv2.rotate(img, cv2.ROTATE_90_COUNTERCLOCKWISE),
    "_180deg": lambda img: cv2.rotate(img, cv2.ROTATE_180),
    "_270deg": lambda img: cv2.rotate(img, cv2.ROTATE_90_CLOCKWISE),
    "_new30degFlipLR": lambda img: cv2.flip(_rotate(img, 30.0), 1),
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


@dataclass(frozen=True)
class _Job:
    """One source image to draw and the files it becomes (original first, then variants)."""

    kind: str  # "lesion" or "leaf"
    params: tuple
    key: tuple[int, ...]  # seeds the image's own Generator
    files: tuple[tuple[str, str], ...]  # (path relative to the root, augmentation suffix)


# --------------------------------------------------------------------------- public API


def synthesize(name: str, out: str | Path, *, n: int | None = None, size: int | None = None,
               seed: int = 0, progress: bool = False) -> Path:
    """Generate dataset `name` under `out` (which becomes the dataset root) and return the root.

    The files are written into a temporary sibling folder that is renamed to `out` at the
    end, so an interrupted run never leaves half a dataset at `out`. A complete dataset
    already at `out` (it holds ``.wbclf-synth.json``) is returned as is.

    Args:
        name: One of `TOY_DATASETS`.
        out: Dataset root to create.
        n: Images per class in train (roughly); other splits derive from it.
        size: Side of the square images in pixels.
        seed: Same seed and arguments give byte-identical files.
        progress: Show a progress bar.

    Raises:
        ValueError: Unknown name or a bad argument.
        FileExistsError: `out` holds something other than this dataset.
    """
    if name not in TOY_DATASETS:
        raise ValueError(f"unknown toy dataset {name!r}; allowed: {', '.join(TOY_DATASETS)}")
    n_eff = DEFAULTS[name]["n"] if n is None else int(n)
    size_eff = DEFAULTS[name]["size"] if size is None else int(size)
    if n_eff < 1 or size_eff < 32 or seed < 0:
        raise ValueError(f"toy dataset needs n >= 1, size >= 32 and seed >= 0; "
                         f"got n={n_eff}, size={size_eff}, seed={seed}")
    out = Path(out).expanduser().absolute()
    if _check_existing(out, name, n, size, seed):
        return out

    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(out)
    # host and pid in the name let a later run recognise (and delete) a killed run's leftovers
    tag = f"{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
    tmp = out.parent / f".{out.name}.partial.{tag}"
    try:
        tmp.mkdir()
        plan = _plan_lesions if name == "toy-lesions" else _plan_leaves
        jobs = plan(n_eff, seed)
        _run_jobs(tmp, size_eff, jobs, progress=progress, desc=name)
        if name == "toy-leaves":
            _mirror_tree(tmp / PLANT_TOP, tmp / PLANT_TOP.lower())
        marker = {"name": name, "n": n_eff, "size": size_eff, "seed": seed,
                  "version": FORMAT_VERSION, "files": sum(len(j.files) for j in jobs)}
        (tmp / MARKER).write_text(json.dumps(marker, indent=1) + "\n")
        _publish(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


# ------------------------------------------------------------------- file-system plumbing


def _read_marker(root: Path) -> dict | None:
    try:
        return json.loads((root / MARKER).read_text())
    except (OSError, ValueError):
        return None


def _check_existing(out: Path, name: str, n: int | None, size: int | None, seed: int) -> bool:
    """True if `out` already holds this dataset; raise if it holds anything else."""
    if not out.exists():
        return False
    marker = _read_marker(out)
    if marker is None:
        if out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # an empty folder is fair game (rename cannot replace it on Windows)
            return False
        raise FileExistsError(f"{out} exists and is not a complete toy dataset "
                              f"(no {MARKER}); remove it or choose another folder")
    # n and size left as None accept whatever was generated (e.g. a quick small copy).
    wanted = {"name": name, "seed": seed, "n": n, "size": size}
    clash = {k: v for k, v in wanted.items() if v is not None and marker.get(k) != v}
    if clash:
        have = ", ".join(f"{k}={marker.get(k)}" for k in wanted)
        raise FileExistsError(f"{out} holds a toy dataset with {have}, not the requested "
                              f"{clash}; remove it or choose another folder")
    return True


def _remove_stale_partials(out: Path) -> None:
    """Delete temp folders left by killed runs on this host (their process is gone)."""
    host = socket.gethostname()
    for path in out.parent.glob(f".{glob.escape(out.name)}.partial.*"):
        parts = path.name[len(f".{out.name}.partial."):].rsplit(".", 2)
        if len(parts) == 3 and parts[0] == host and parts[1].isdigit():
            if not _pid_alive(int(parts[1])):
                shutil.rmtree(path, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process there
        return True
    try:
        os.kill(pid, 0)
    except PermissionError:  # exists, owned by another user
        return True
    except (ProcessLookupError, OverflowError):
        return False
    return True


def _publish(tmp: Path, out: Path) -> None:
    """Rename the finished temp folder to `out`; a concurrent run may have won the race."""
    try:
        os.rename(tmp, out)
    except OSError:
        if _read_marker(out) is None:
            raise
        shutil.rmtree(tmp, ignore_errors=True)


def _mirror_tree(src: Path, dst: Path) -> None:
    """Replicate `src` under `dst` with hard links (copies where links are not possible)."""
    if dst.exists():  # case-insensitive file system: the duplicate is the same folder
        return
    for dirpath, _, filenames in os.walk(src):
        target = dst / Path(dirpath).relative_to(src)
        target.mkdir(parents=True, exist_ok=True)
        for fname in filenames:
            try:
                os.link(Path(dirpath) / fname, target / fname)
            except OSError:
                shutil.copy2(Path(dirpath) / fname, target / fname)


def _run_jobs(root: Path, size: int, jobs: list[_Job], *, progress: bool, desc: str) -> None:
    """Draw and write every job, in one process.

    Defaults take a few seconds, so no worker pool: forked workers proved fragile with
    OpenCV (a child calling cv2.setNumThreads after the parent had used OpenCV's threads
    hung on a futex), and spawned ones would re-import the caller's unguarded __main__.
    """
    for job in jobs:
        for rel, _ in job.files:
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
    if progress:
        from tqdm import tqdm

        jobs = tqdm(jobs, desc=desc, unit="img")
    for job in jobs:
        _write_job(root, size, job)


def _write_job(root: Path, size: int, job: _Job) -> None:
    rng = np.random.default_rng(job.key)
    render = _render_lesion if job.kind == "lesion" else _render_leaf
    bgr = np.ascontiguousarray(render(rng, size, *job.params)[..., ::-1])
    for rel, suffix in job.files:
        ok, buf = cv2.imencode(".jpg", AUGMENTATIONS[suffix](bgr),
                               [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise RuntimeError(f"JPEG encoding failed for {rel}")
        (root / rel).write_bytes(buf.tobytes())


# ------------------------------------------------------------------------------- plans


def _plan_lesions(n: int, seed: int) -> list[_Job]:
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
                jobs.append(_Job("lesion", (cls_idx == 1,), (seed, 0, split_idx, cls_idx, i),
                                 ((rel, ""),)))
                number += 1
    return jobs


def _plan_leaves(n: int, seed: int) -> list[_Job]:
    """Plant layout: train, valid (~20 % of train) and the 33-file unlabeled test folder."""
    jobs = []
    for cls_idx, leaf in enumerate(LEAF_CLASSES):
        n_train = max(1, round(n * leaf.weight))
        for split_idx, (split, count) in enumerate(
                (("train", n_train), ("valid", max(1, round(0.2 * n_train))))):
            jobs += _plan_leaf_split(leaf, cls_idx, split, split_idx, count, seed)
        for i in range(leaf.n_test):
            rel = f"test/test/{leaf.test_name}{i + 1}.JPG"
            jobs.append(_Job("leaf", (leaf.crop, leaf.disease), (seed, 1, 2, cls_idx, i, 1),
                             ((rel, ""),)))
    return jobs


def _plan_leaf_split(leaf: LeafClass, cls_idx: int, split: str, split_idx: int, count: int,
                     seed: int) -> list[_Job]:
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
        jobs.append(_Job("leaf", (leaf.crop, leaf.disease), (seed, 1, split_idx, cls_idx, i, 1),
                         files))
        made += len(files)
        i += 1
    return jobs


# -------------------------------------------------------------------- drawing helpers
# Images are float32 RGB in [0, 255] while drawn; coordinates are pixels (x, y).


@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (ys, xs) scaled to [-1, 1]."""
    c = (np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1
    ys, xs = np.meshgrid(c, c, indexing="ij")
    return ys, xs


def _smooth_field(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth random field with values of about unit scale."""
    coarse = rng.standard_normal((cells, cells)).astype(np.float32)
    return cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)


def _grain(rng: np.random.Generator, size: int, sigma: float, blur: float = 0.0) -> np.ndarray:
    noise = rng.standard_normal((size, size)).astype(np.float32) * sigma
    return cv2.GaussianBlur(noise, (0, 0), blur) if blur > 0 else noise


def _lighting(rng: np.random.Generator, size: int, strength: float) -> np.ndarray:
    """Multiplicative linear light gradient in a random direction."""
    ys, xs = _grid(size)
    angle = rng.uniform(0, 2 * np.pi)
    return 1.0 + strength * rng.uniform(-1, 1) * (xs * np.cos(angle) + ys * np.sin(angle))


def _blend(img: np.ndarray, colour, alpha: np.ndarray) -> None:
    """In place: img = img * (1 - alpha) + colour * alpha."""
    a = alpha[..., None]
    img *= 1 - a
    img += a * np.asarray(colour, np.float32)


def _fill(size: int, polygons: list[np.ndarray]) -> np.ndarray:
    """Anti-aliased coverage mask in [0, 1] of float polygons (sub-pixel precise)."""
    mask = np.zeros((size, size), np.uint8)
    cv2.fillPoly(mask, [np.round(p * 16).astype(np.int32) for p in polygons], 255,
                 cv2.LINE_AA, shift=4)
    return mask.astype(np.float32) / 255


def _polyline(layer: np.ndarray, pts: np.ndarray, thickness: int) -> None:
    cv2.polylines(layer, [np.round(pts * 16).astype(np.int32)], False, 255,
                  max(1, thickness), cv2.LINE_AA, shift=4)


def _blob(rng: np.random.Generator, center, radius: float, rough: float,
          points: int = 48) -> np.ndarray:
    """Closed blobby outline: a circle with random low harmonics."""
    theta = np.linspace(0, 2 * np.pi, points, endpoint=False)
    r = np.ones(points)
    for k in range(2, 6):
        r += rough * rng.uniform(0, 0.3) / k ** 0.5 * np.cos(k * theta + rng.uniform(0, 6.3))
    r = radius * np.maximum(r, 0.3)
    return np.stack([center[0] + r * np.cos(theta), center[1] + r * np.sin(theta)], 1)


def _rotate(img: np.ndarray, degrees: float) -> np.ndarray:
    h, w = img.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2 - 0.5, h / 2 - 0.5), degrees, 1.0)
    return cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REFLECT_101)


def _lerp(a, b, t: float) -> np.ndarray:
    return np.asarray(a, np.float32) * (1 - t) + np.asarray(b, np.float32) * t


def _finish(rng: np.random.Generator, img: np.ndarray, noise: float) -> np.ndarray:
    """Camera: sensor noise, a touch of defocus, 8-bit output."""
    img += _grain(rng, img.shape[0], noise)[..., None]
    if rng.random() < 0.5:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.3, 0.8))
    return np.clip(img, 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------ toy-lesions

_LESION_PATCH_COLOURS = {  # RGB of the extra colours of the C in ABCD
    "dark_brown": (70, 40, 28), "black": (28, 22, 24), "red": (155, 58, 52),
    "blue_grey": (105, 115, 135), "white": (200, 185, 178),
}


def _render_lesion(rng: np.random.Generator, size: int, malignant: bool) -> np.ndarray:
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
    _blend(img, colour, alpha * rng.uniform(0.82, 0.97))
    _hairs(rng, img)
    img *= (_lighting(rng, size, 0.15) * _vignette(rng, size))[..., None]
    return _finish(rng, img, rng.uniform(1, 4))


def _skin(rng: np.random.Generator, size: int) -> tuple[np.ndarray, float]:
    """Skin of a random tone with uneven pigment and fine texture; returns (image, tone)."""
    tone = float(rng.beta(1.6, 3.0))  # mostly fair skin, some darker
    base = _lerp((236, 196, 176), (140, 94, 70), tone) + rng.normal(0, 2.5, 3)
    img = np.empty((size, size, 3), np.float32)
    img[:] = base
    blotch = _smooth_field(rng, size, 4) * rng.uniform(3, 9)
    img += blotch[..., None] * np.array([1.0, 0.5, 0.5], np.float32)  # redness is uneven
    img += _grain(rng, size, rng.uniform(4, 9), blur=0.8)[..., None]  # pores, fine texture
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
    mask = _fill(size, [outline])
    sharp = cv2.GaussianBlur(mask, (0, 0), size * 0.005)
    fuzzy = cv2.GaussianBlur(mask, (0, 0), size * (0.01 + 0.035 * border))
    w = np.clip(0.5 + _smooth_field(rng, size, 4), 0, 1) * border
    return sharp * (1 - w) + fuzzy * w


def _lesion_colour(rng: np.random.Generator, size: int, tone: float, center: np.ndarray,
                   radius: float, colours: float) -> np.ndarray:
    """One even brown, plus extra colour patches that grow in number with `colours`."""
    shade = float(np.clip(0.35 * tone + rng.uniform(0, 0.65), 0, 1))
    base = _lerp((165, 108, 80), (86, 52, 40), shade) + rng.normal(0, 2.5, 3)
    col = np.empty((size, size, 3), np.float32)
    col[:] = base
    # even colour, but never flat: faint mottling like a pigment network seen out of focus
    col *= (1 + 0.04 * _smooth_field(rng, size, 5) + _grain(rng, size, 0.04, blur=1.0))[..., None]
    names = list(_LESION_PATCH_COLOURS)
    for _ in range(rng.binomial(4, colours ** 1.6)):
        # Benign extras are mostly a darker brown; the alarming colours go with the score.
        name = names[rng.integers(1, 5)] if rng.random() < colours else "dark_brown"
        spot = center + rng.normal(0, 0.4 * radius, 2)
        patch = _fill(size, [_blob(rng, spot, radius * rng.uniform(0.2, 0.5), 1.0)])
        patch = cv2.GaussianBlur(patch, (0, 0), radius * 0.08)
        _blend(col, _LESION_PATCH_COLOURS[name], patch * rng.uniform(0.35, 0.5 + 0.45 * colours))
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
        _polyline(layer, pts, round(size / 128 * rng.uniform(0.6, 1.6)))
    colour = rng.uniform(15, 60) * np.array([1.0, 0.85, 0.75])
    _blend(img, colour, layer.astype(np.float32) / 255 * rng.uniform(0.6, 0.95))


def _vignette(rng: np.random.Generator, size: int) -> np.ndarray:
    """Radial fall-off; some images show the dermatoscope's dark circular field stop."""
    ys, xs = _grid(size)
    r2 = xs ** 2 + ys ** 2
    v = 1 - rng.uniform(0, 0.3) * r2 / 2
    if rng.random() < 0.15:
        edge = rng.uniform(0.95, 1.3)
        v = v * np.clip((edge - np.sqrt(r2)) / 0.08, 0.06, 1)
    return v


# ------------------------------------------------------------------------- toy-leaves

_BACKGROUNDS = (  # RGB: lab backdrops as in the real photos, plus a few odd ones
    (150, 150, 145), (186, 176, 160), (96, 96, 98), (124, 134, 146), (206, 206, 200),
    (140, 124, 104), (70, 80, 70),
)


def _render_leaf(rng: np.random.Generator, size: int, crop: str, disease: str) -> np.ndarray:
    """A photographed leaf of `crop` showing `disease` (or healthy, maybe a harmless blemish)."""
    polygons, veins, angle = _leaf_geometry(rng, size, crop)
    mask = _fill(size, polygons)
    leaf = _leaf_surface(rng, size, crop, veins)
    if disease == "healthy":
        _blemishes(rng, leaf, mask)
    else:
        # Low severity means few, small, faint lesions: the hard cases.
        severity = float(rng.beta(1.3, 1.6))
        _DISEASES[disease](rng, leaf, mask, severity, angle)
    img = _background(rng, size, mask)
    _blend(img, leaf, mask)
    img *= (_lighting(rng, size, 0.2) * rng.uniform(0.75, 1.15))[..., None]
    return _finish(rng, img, rng.uniform(1, 3))


def _background(rng: np.random.Generator, size: int, mask: np.ndarray) -> np.ndarray:
    """Backdrop with uneven light and the leaf's soft shadow."""
    base = np.asarray(_BACKGROUNDS[rng.integers(len(_BACKGROUNDS))], np.float32)
    img = np.empty((size, size, 3), np.float32)
    img[:] = base * rng.uniform(0.85, 1.15) + rng.normal(0, 5, 3)  # mostly a brightness shift
    img *= (1 + 0.05 * _smooth_field(rng, size, 3))[..., None]
    img += _grain(rng, size, 2.0)[..., None]
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
    green = _lerp(dark, light, rng.random()) + rng.normal(0, 6, 3)
    leaf = np.empty((size, size, 3), np.float32)
    leaf[:] = green
    leaf *= (1 + 0.07 * _smooth_field(rng, size, 5))[..., None]
    leaf += _grain(rng, size, 3.0, blur=0.7)[..., None]
    layer = np.zeros((size, size), np.uint8)
    for i, vein in enumerate(veins):
        main = i == 0 and crop != "corn"
        _polyline(layer, vein, round(size / 128 * (2 if main else 1)))
    vein_colour = green * 1.25 + np.array([20, 20, 5], np.float32)
    _blend(leaf, vein_colour, layer.astype(np.float32) / 255 * rng.uniform(0.25, 0.6))
    if crop == "pepper":  # glossy: a broad soft highlight
        leaf += (25 * np.clip(_smooth_field(rng, size, 3), 0, None))[..., None]
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
    layer = _fill(size, [_blob(rng, c, r, 1.5) for c, r in zip(centers, radii)])
    layer = cv2.GaussianBlur(layer, (0, 0), size * 0.005)
    olive = np.array([58, 62, 30], np.float32) * rng.uniform(0.7, 1.2)
    _blend(leaf, olive, layer * (0.45 + 0.5 * severity))


def _rust(rng: np.random.Generator, leaf: np.ndarray, mask: np.ndarray, severity: float,
          angle: float) -> None:
    """Many small orange-brown pustules, elongated along the blade."""
    size = leaf.shape[0]
    centers = _spots(rng, mask, 8 + round(severity * 70))
    radii = size * rng.uniform(0.006, 0.014, len(centers))
    layer = _circles(size, centers, radii * 1.8, axes_ratio=np.full(len(radii), 0.55),
                     angle=angle)
    colour = np.array([185, 100, 38], np.float32) * rng.uniform(0.8, 1.1)
    _blend(leaf, colour, layer * (0.4 + 0.55 * severity))


def _bacterial_spot(rng: np.random.Generator, leaf: np.ndarray, mask: np.ndarray,
                    severity: float, angle: float) -> None:
    """Small dark spots, each with a yellow halo."""
    size = leaf.shape[0]
    centers = _spots(rng, mask, 4 + round(severity * 30))
    radii = size * rng.uniform(0.006, 0.013, len(centers))
    halo = cv2.GaussianBlur(_circles(size, centers, radii * 2.2), (0, 0), size * 0.006)
    _blend(leaf, (205, 195, 70), halo * (0.3 + 0.5 * severity))
    _blend(leaf, (50, 38, 25), _circles(size, centers, radii) * (0.45 + 0.5 * severity))


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
        _blend(leaf, (190, 175, 60), halo * strength * 0.8)
        _blend(leaf, (128, 92, 52), _circles(size, c, [r], axes_ratio=q, angle=tilt) * strength)
        rings = int(rng.integers(2, 5))
        for j in range(1, rings + 1):
            ring = _circles(size, c, [r * j / (rings + 0.5)], max(1, round(size / 128)),
                            axes_ratio=q, angle=tilt)
            _blend(leaf, (70, 50, 30), ring * strength * 0.8)


def _blemishes(rng: np.random.Generator, leaf: np.ndarray, mask: np.ndarray) -> None:
    """Harmless flecks (dust, insect bites) on some healthy leaves, so spots alone don't tell."""
    if rng.random() > 0.35:
        return
    size = leaf.shape[0]
    centers = _spots(rng, mask, int(rng.integers(1, 5)))
    radii = size * rng.uniform(0.004, 0.012, len(centers))
    colour = _lerp((170, 160, 100), (90, 80, 55), rng.random())
    _blend(leaf, colour, _circles(size, centers, radii) * rng.uniform(0.3, 0.6))


_DISEASES = {"scab": _scab, "rust": _rust, "bacterial_spot": _bacterial_spot,
             "early_blight": _early_blight}
