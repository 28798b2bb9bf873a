#!/usr/bin/env python
"""Benchmark of ``wbclf data audit`` at the size of the real plant set (87k images).

Generates an ImageFolder tree of N distinct 256 px JPEG images (smooth random colour fields
with a few shapes, quick to draw; 10 classes; train/val/test 80/10/10), plants a known
share of flipped / rotated / re-encoded copies of train images into val and test, then runs
the audit's stages one by one and times them: decoding into the cache (4 processes),
fingerprints, the pair search. Prints JSON: the timings, the pairs found per split pair and
the recall of the planted copies.

    python scripts/bench_audit.py [--images 87000] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wbclf.data.audit import audit, load_audit_images  # noqa: E402
from wbclf.data.dedup import fingerprints  # noqa: E402

CLASSES = 10
PLANTED = 0.01  # share of the images that are planted copies


def draw(rng: np.random.Generator, size: int = 256) -> np.ndarray:
    """A distinct BGR image: an upscaled random colour grid with a few ellipses on it."""
    grid = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
    image = cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC)
    for _ in range(3):
        centre = tuple(int(v) for v in rng.integers(0, size, 2))
        axes = tuple(int(v) for v in rng.integers(10, size // 3, 2))
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        cv2.ellipse(image, centre, axes, float(rng.uniform(0, 180)), 0, 360, colour, -1)
    return image


def change(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """A flipped, rotated (90/180/270 or 30 degrees) or re-encoded copy."""
    kind = int(rng.integers(5))
    if kind == 0:
        return cv2.flip(image, 1)
    if kind == 1:
        return cv2.rotate(image, cv2.ROTATE_90_CLOCKWISE)
    if kind == 2:
        return cv2.rotate(image, cv2.ROTATE_180)
    if kind == 3:
        h, w = image.shape[:2]
        m = cv2.getRotationMatrix2D((w / 2 - 0.5, h / 2 - 0.5), 30.0, 1.0)
        return cv2.warpAffine(image, m, (w, h), borderMode=cv2.BORDER_REFLECT_101)
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 60])
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)


def generate(root: Path, count: int, seed: int = 0) -> set[frozenset[str]]:
    """Write the tree; return the planted pairs (train original, copy)."""
    rng = np.random.default_rng(seed)
    planted: set[frozenset[str]] = set()
    originals: list[tuple[str, np.ndarray]] = []
    for i in range(count):
        cls = f"class_{i % CLASSES}"
        split = "train" if i % 10 < 8 else ("val" if i % 10 == 8 else "test")
        folder = root / split / cls
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"img_{i:06d}.jpg"
        if split != "train" and originals and rng.random() < PLANTED * 5:
            source, pixels = originals[int(rng.integers(len(originals)))]
            image = change(rng, pixels)
            planted.add(frozenset((source, str(path))))
        else:
            image = draw(rng)
            if split == "train" and len(originals) < 2000:
                originals.append((str(path), image))
        cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    return planted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=87000)
    parser.add_argument("--out", default=None, help="where the tree goes (default: a temp dir)")
    args = parser.parse_args()
    base = Path(args.out or tempfile.mkdtemp(prefix="wbclf-audit-bench-"))
    os.environ.setdefault("WBCLF_CACHE_DIR", str(base / "cache"))
    root = base / "tree"
    start = time.perf_counter()
    planted = generate(root, args.images)
    generated = time.perf_counter() - start

    start = time.perf_counter()
    images, info = load_audit_images(str(root), base, val_fraction=0.15, seed=0)
    decoded = time.perf_counter() - start
    start = time.perf_counter()
    prints = fingerprints(images.images, len(images.paths))
    fingerprinted = time.perf_counter() - start
    start = time.perf_counter()
    result = audit(images, prints=prints)
    searched = time.perf_counter() - start
    found = {frozenset((p["a"], p["b"])) for p in result["pairs"]}
    print(json.dumps({
        "images": len(images.paths), "cpu_cores": os.cpu_count(),
        "load_average": os.getloadavg()[0],
        "generate_s": round(generated, 1), "decode_to_cache_s": round(decoded, 1),
        "fingerprints_s": round(fingerprinted, 1),
        "pair_search_s": round(searched, 1), "counts": result["counts"],
        "planted": len(planted),
        "planted_recall": round(len(found & planted) / max(1, len(planted)), 4),
    }, indent=1))


if __name__ == "__main__":
    main()
