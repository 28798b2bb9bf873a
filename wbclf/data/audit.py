"""``wbclf data audit``: near-duplicate images within and across the splits a run would use.

The splits are the ones ``wbclf train`` makes (the dataset's own, and val carved from train
by source leaf with the given seed), so the audit also checks that carve. Fingerprints are
computed from the decoded-image cache (:mod:`wbclf.data.dedup`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from wbclf.atomic import write_bytes_atomic
from wbclf.data.cache import build_or_load
from wbclf.data.dedup import DEFAULT_THRESHOLD, SIDE, fingerprints, near_pairs
from wbclf.data.layouts import DatasetError, index_dataset
from wbclf.data.sources import resolve_dataset
from wbclf.data.splits import SPLITS, make_splits

# The split pairs, in the order they are reported: leaks first, then copies within a split.
PAIR_NAMES = ("train-val", "train-test", "val-test", "within train", "within val",
              "within test")


def pair_name(first: str, second: str) -> str:
    """``train-test`` for two splits (in SPLITS order), ``within train`` for one."""
    return f"within {first}" if first == second else f"{first}-{second}"


@dataclass
class AuditImages:
    """The audited files: path, split and cache row of each, and the cached pixels."""

    paths: list[str]
    splits: list[str]
    images: np.ndarray  # N x SIDE x SIDE x 3 uint8 (memmap)


def load_audit_images(dataset: str, data_dir: str | Path, *, val_fraction: float, seed: int,
                      cache_dir: str | None = None,
                      progress: bool | None = None) -> tuple[AuditImages, dict[str, Any]]:
    """Index and split ``dataset`` like a run, and decode every image once (cached)."""
    root = resolve_dataset(dataset, data_dir, progress=bool(progress))
    index = index_dataset(root)
    splits = make_splits(index, val_fraction=val_fraction, seed=seed)
    order = [(name, s.path) for name in SPLITS for s in splits[name]]
    if not order:
        raise DatasetError(f"dataset '{dataset}' has no images to audit")
    cache = build_or_load([p for _, p in order], SIDE, cache_dir,
                          workers=min(4, os.cpu_count() or 1), progress=progress)
    keep = [i for i in range(len(order)) if i not in cache.failed]
    array = np.asarray(cache.open())
    images = AuditImages(paths=[order[i][1] for i in keep], splits=[order[i][0] for i in keep],
                         images=array[keep] if len(keep) < len(order) else array)
    info = {"root": str(index.root), "layout": index.layout,
            "images": {name: images.splits.count(name) for name in SPLITS}}
    return images, info


def audit(images: AuditImages, threshold: float = DEFAULT_THRESHOLD, *,
          prints: np.ndarray | None = None) -> dict[str, Any]:
    """Near-duplicate pairs of ``images`` with counts per split pair and leaked images
    (``prints``: their fingerprints, when already computed)."""
    if prints is None:
        prints = fingerprints(images.images, len(images.paths))
    rank = {name: i for i, name in enumerate(SPLITS)}
    pairs = []
    counts = dict.fromkeys(PAIR_NAMES, 0)
    leaked: dict[str, set[int]] = {"val": set(), "test": set()}
    for pair in near_pairs(prints, threshold):
        a, b = sorted((pair.a, pair.b), key=lambda i: (rank[images.splits[i]], i))
        first, second = images.splits[a], images.splits[b]
        counts[pair_name(first, second)] += 1
        if first != second:
            # the later split's image is the one evaluated on something trained on
            leaked[second].add(b)
        pairs.append({"a": images.paths[a], "b": images.paths[b], "splits": [first, second],
                      "distance": round(pair.distance, 6)})
    return {"threshold": threshold, "pairs": pairs, "counts": counts,
            "leaked_images": {name: len(rows) for name, rows in leaked.items()}}


def leaks_first(pairs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pairs across splits (closest first), then pairs within a split: the worst first."""
    return sorted(pairs, key=lambda p: (p["splits"][0] == p["splits"][1], p["distance"]))


def contact_sheet(images: AuditImages, pairs: list[dict[str, Any]], path: str | Path, *,
                  rows: int = 12, tile: int = 96) -> Path:
    """A PNG of the worst ``rows`` pairs: the two images side by side, captioned."""
    row_of = {p: i for i, p in enumerate(images.paths)}
    caption = 18
    shown = leaks_first(pairs)[:rows]
    sheet = np.full((max(1, len(shown)) * (tile + caption), 2 * tile + 8, 3), 255, np.uint8)
    for k, pair in enumerate(shown):
        top = k * (tile + caption)
        for j, key in enumerate(("a", "b")):
            image = cv2.resize(np.asarray(images.images[row_of[pair[key]]]), (tile, tile),
                               interpolation=cv2.INTER_LINEAR)
            left = j * (tile + 8)
            sheet[top + caption:top + caption + tile, left:left + tile] = image
        text = f"{pair['splits'][0]}-{pair['splits'][1]}  d={pair['distance']:.4f}"
        cv2.putText(sheet, text, (2, top + 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1,
                    cv2.LINE_AA)
    if not shown:
        cv2.putText(sheet, "no near-duplicates", (2, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                    (0, 0, 0), 1, cv2.LINE_AA)
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(sheet[..., ::-1]))
    if not ok:
        raise RuntimeError("PNG encoding of the contact sheet failed")
    return write_bytes_atomic(path, buf.tobytes())


def render_audit(result: dict[str, Any], examples: int = 3) -> str:
    """Counts per split pair, with a few example pairs each."""
    lines = [f"root:      {result['root']}", f"layout:    {result['layout']}",
             "images:    " + ", ".join(f"{k} {v}" for k, v in result["images"].items()),
             f"threshold: {result['threshold']} (distance = 1 - cosine of fingerprints)", ""]
    for name in PAIR_NAMES:
        lines.append(f"{name:<13} {result['counts'][name]:>7} pair(s)")
        shown = [p for p in result["pairs"] if pair_name(*p["splits"]) == name][:examples]
        for p in shown:
            lines.append(f"    {p['distance']:.4f}  {_relative(p['a'], result['root'])}")
            lines.append(f"            {_relative(p['b'], result['root'])}")
    leaked = result["leaked_images"]
    lines += ["", f"val images with a copy in train:          {leaked['val']}",
              f"test images with a copy in train or val:  {leaked['test']}"]
    if result.get("sheet"):
        lines.append(f"contact sheet of the worst pairs: {result['sheet']}")
    return "\n".join(lines)


def _relative(path: str, root: str) -> str:
    try:
        return os.path.relpath(path, root)
    except ValueError:  # another drive on Windows
        return path


def run_audit(dataset: str, data_dir: str | Path, *, threshold: float, sheet: str | Path,
              val_fraction: float, seed: int, as_json: bool) -> str:
    """The whole command: audit, write the contact sheet, return what to print."""
    if not 0.0 <= threshold <= 2.0:
        raise DatasetError(f"--threshold {threshold} is out of range; allowed: 0 to 2 "
                           f"(default {DEFAULT_THRESHOLD})")
    images, info = load_audit_images(dataset, data_dir, val_fraction=val_fraction, seed=seed)
    result = {**info, **audit(images, threshold)}
    result["sheet"] = str(contact_sheet(images, result["pairs"], sheet))
    return json.dumps(result, indent=1) if as_json else render_audit(result)
