"""Data-efficiency curves: a metric against the number of training images, per strategy.

For studies that vary ``train_size``: each strategy's mean over seeds (± one standard
deviation where there are several) at every size, on a log x axis, and a sentence on where
the curves cross.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure

from wbclf.reporting.collect import RunRecord

SIZE_FIELD = "train_size"
# a lead is any gap between two means, however small: the sentence says it is not a test
UNTESTED = "mean gaps at each size, any margin, untested"


@dataclass(frozen=True)
class Point:
    """One strategy at one training-set size."""

    size: float  # the train_size value
    images: float  # mean data/train_images of the runs
    mean: float
    std: float
    n: int


def efficiency_curves(runs: Sequence[RunRecord], metric: str) -> dict[str, list[Point]]:
    """Strategy -> points sorted by training images (runs missing a figure are left out)."""
    cells: dict[tuple[str, float], list[RunRecord]] = defaultdict(list)
    for run in runs:
        size = run.config.get(SIZE_FIELD, 1.0)
        if run.value(metric) is None or run.value("data/train_images") is None:
            continue
        cells[(str(run.config.get("strategy", "scratch")), float(size))].append(run)
    curves: dict[str, list[Point]] = defaultdict(list)
    for (strategy, size), members in sorted(cells.items()):
        values = np.array([r.value(metric) for r in members], float)
        images = float(np.mean([r.value("data/train_images") for r in members]))
        std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        curves[strategy].append(Point(size, images, float(values.mean()), std, len(values)))
    for points in curves.values():
        points.sort(key=lambda p: p.images)
    return dict(curves)


def crossings(curves: dict[str, list[Point]], metric: str) -> list[str]:
    """Per pair of strategies: between which sizes the lead changes, or who leads at all."""
    sentences = []
    for a, b in itertools.combinations(sorted(curves), 2):
        at_a = {p.size: p for p in curves[a]}
        shared = [(at_a[p.size], p) for p in curves[b] if p.size in at_a]
        if len(shared) < 2:
            continue
        shared.sort(key=lambda pair: pair[0].images)
        span = f"{int(shared[0][0].images)} to {int(shared[-1][0].images)} training images"
        gaps = [pa.mean - pb.mean for pa, pb in shared]
        # sizes where one leads (ties neither start nor end a lead)
        leads = [(i, a if gap > 0 else b) for i, gap in enumerate(gaps) if gap != 0]
        if not leads:
            sentences.append(f"{a} and {b} are level on {metric} at every size ({span}).")
            continue
        changes = [(i, j) for (i, first), (j, second) in zip(leads, leads[1:])
                   if first != second]
        if not changes:
            leader = leads[0][1]
            sentences.append(f"{leader} leads {b if leader == a else a} on {metric} at every "
                             f"size where they differ ({span}): the curves do not cross "
                             f"({UNTESTED}).")
            continue
        for i, j in changes:
            before = a if gaps[i] > 0 else b
            after = a if gaps[j] > 0 else b
            sentences.append(f"The {a} and {b} curves cross between "
                             f"{int(shared[i][0].images)} and {int(shared[j][0].images)} "
                             f"training images: {before} leads below, {after} above "
                             f"({UNTESTED}).")
    return sentences


def efficiency_figure(curves: dict[str, list[Point]], metric: str) -> Figure:
    """``metric`` against training images (log x), one line per strategy, ± 1 std."""
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.add_subplot()
    for k, (strategy, points) in enumerate(sorted(curves.items())):
        xs = [p.images for p in points]
        ys = np.array([p.mean for p in points])
        err = np.array([p.std for p in points])
        ax.plot(xs, ys, marker="o", color=f"C{k}", label=strategy)
        ax.fill_between(xs, ys - err, ys + err, color=f"C{k}", alpha=0.15, linewidth=0)
    ax.set_xscale("log")
    ax.set_xlabel("training images")
    ax.set_ylabel(metric)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(title="strategy", fontsize=8)
    return fig
