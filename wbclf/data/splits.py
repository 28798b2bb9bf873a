"""Train / val / test splits: carved when missing, grouped, stratified, seeded, saved."""

from __future__ import annotations

import hashlib
import json
import os
from collections import defaultdict
from pathlib import Path

import numpy as np

from wbclf.atomic import write_text_atomic
from wbclf.data.layouts import DatasetIndex, Sample

SPLITS = ("train", "val", "test")


def _carve(samples: list[Sample], fraction: float, rng: np.random.Generator
           ) -> tuple[list[Sample], list[Sample]]:
    """Split ``samples`` into (rest, carved) so that ~``fraction`` of every class is carved.

    Whole groups move together (augmented copies of one plant leaf stay on one side), and
    every class with at least two groups keeps at least one group on each side.
    """
    by_class: dict[int, dict[str, list[Sample]]] = defaultdict(lambda: defaultdict(list))
    for s in samples:
        by_class[s.label][s.group].append(s)
    rest: list[Sample] = []
    carved: list[Sample] = []
    for label in sorted(by_class):
        groups = by_class[label]
        names = sorted(groups)
        order = rng.permutation(len(names))
        total = sum(len(g) for g in groups.values())
        target = fraction * total
        taken = 0
        for rank, i in enumerate(order):
            group = groups[names[i]]
            # at least one group carved and one kept, whenever the class has two or more
            carve = rank < len(order) - 1 and (rank == 0 or taken < target)
            if carve:
                carved.extend(group)
                taken += len(group)
            else:
                rest.extend(group)
    return _sorted(rest), _sorted(carved)


def _sorted(samples: list[Sample]) -> list[Sample]:
    return sorted(samples, key=lambda s: (s.label, s.path))


def _stable_rank(path: str) -> str:
    # Order by a hash of the path: the subset is the same for every seed and every machine.
    return hashlib.sha1(path.encode()).hexdigest()


def _by_class(samples: list[Sample]) -> dict[int, list[Sample]]:
    by_class: dict[int, list[Sample]] = defaultdict(list)
    for s in samples:
        by_class[s.label].append(s)
    return by_class


def _limit(samples: list[Sample], limit: int) -> list[Sample]:
    if limit <= 0:
        return samples
    by_class = _by_class(samples)
    kept: list[Sample] = []
    for label in sorted(by_class):
        kept.extend(sorted(by_class[label], key=lambda s: _stable_rank(s.path))[:limit])
    return _sorted(kept)


def class_balanced_picks(labels: np.ndarray, count: int, rng: np.random.Generator
                         ) -> list[int]:
    """Up to ``count`` positions of ``labels``, one class after another in turn (round
    robin), each class's positions in an order drawn from ``rng``; in the order picked."""
    pools = [list(rng.permutation(np.flatnonzero(labels == c))) for c in np.unique(labels)]
    chosen: list[int] = []
    while len(chosen) < min(count, len(labels)):
        for pool in pools:
            if pool and len(chosen) < count:
                chosen.append(int(pool.pop()))
    return chosen


def make_splits(index: DatasetIndex, *, val_fraction: float, seed: int,
                limit_per_class: int = 0) -> dict[str, list[Sample]]:
    """Return train/val/test sample lists for a run.

    Validation (and, for flat folders, test) is carved from train, stratified by class and
    grouped, with a generator seeded by ``seed``. ``limit_per_class`` then keeps at most N
    images per class and split, chosen by a hash of the path (independent of the seed).
    """
    rng = np.random.default_rng([seed, 1009])
    train = list(index.splits["train"])
    test = list(index.splits.get("test", []))
    if "test" not in index.splits:
        train, test = _carve(train, val_fraction, rng)
    val = list(index.splits.get("val", []))
    if "val" not in index.splits:
        train, val = _carve(train, val_fraction, rng)
    splits = {"train": train, "val": val, "test": test}
    return {name: _limit(_sorted(s), limit_per_class) for name, s in splits.items()}


def subsample_train(samples: list[Sample], size: float, seed: int) -> list[Sample]:
    """The first ``size`` of each class (a fraction, or a count when > 1) in an order fixed
    by ``seed``: every smaller subset of a seed lies inside every larger one, so a
    data-efficiency curve adds images instead of drawing new ones."""
    if size == 1.0:
        return samples
    by_class = _by_class(samples)
    kept: list[Sample] = []
    for label in sorted(by_class):
        members = sorted(by_class[label], key=lambda s: s.path)
        order = np.random.default_rng([seed, 2027, label]).permutation(len(members))
        count = round(size * len(members)) if size <= 1 else int(size)
        count = min(len(members), max(1, count))  # every class keeps at least one image
        kept.extend(members[i] for i in order[:count])
    return _sorted(kept)


def save_splits(path: str | Path, splits: dict[str, list[Sample]], index: DatasetIndex) -> None:
    """Write the file lists (relative to the dataset root) so a run can be reproduced."""
    root = index.root
    data = {
        "root": str(root),
        "layout": index.layout,
        "classes": index.classes,
        "splits": {
            name: [[os.path.relpath(s.path, root), s.label, s.group] for s in samples]
            for name, samples in splits.items()
        },
    }
    write_text_atomic(path, json.dumps(data))


def load_splits(path: str | Path) -> tuple[list[str], dict[str, list[Sample]]]:
    """Read a splits file written by :func:`save_splits`: (classes, splits)."""
    data = json.loads(Path(path).read_text())
    root = data["root"]
    splits = {
        name: [Sample(os.path.join(root, rel), int(label), group) for rel, label, group in rows]
        for name, rows in data["splits"].items()
    }
    return data["classes"], splits


def leaked_groups(splits: dict[str, list[Sample]]) -> set[str]:
    """Groups that appear in more than one split (should be empty for carved splits)."""
    seen: dict[str, str] = {}
    leaked = set()
    for name, samples in splits.items():
        for s in samples:
            if seen.setdefault(s.group, name) != name:
                leaked.add(s.group)
    return leaked
