"""The reliability diagram of a run (``reliability.png``): how far to trust its probabilities.

Bars show the accuracy of the images in each confidence bin (15 equal-width bins of the top
probability); the diagonal is perfect calibration, and the gap between a bar and the
diagonal is what the expected calibration error (ECE) averages.
"""

from __future__ import annotations

from collections.abc import Sequence

from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure

from wbclf.metrics import CALIBRATION_BINS, expected_calibration_error, reliability_bins
from wbclf.tracking.figure_layout import (
    EDGE_IN,
    TITLE_PAD_PT,
    line_height_in,
    rc_points,
    unit_panels,
)
from wbclf.tracking.records import Evaluation

__all__ = ["reliability_figure"]


def reliability_figure(evaluations: Sequence[Evaluation]) -> Figure:
    """One panel per evaluation (val, test), each with its ECE and image count."""
    fig = Figure(figsize=(4.6 * len(evaluations), 4.4))
    # Room above each panel for its title (axes placed from known text sizes: constrained
    # layout cost more than drawing the figure).
    top = EDGE_IN + line_height_in(rc_points("axes.titlesize")) + TITLE_PAD_PT / 72
    xlabel, ylabel = "confidence (top probability)", "accuracy"
    axes = unit_panels(fig, [xlabel] * len(evaluations), [ylabel] * len(evaluations),
                       top_in=top, square=False)
    width = 1.0 / CALIBRATION_BINS
    for ax, ev in zip(axes, evaluations):
        rows = reliability_bins(ev.labels, ev.probs)
        ece = expected_calibration_error(ev.labels, ev.probs)
        # The bars as one collection: ``ax.bar`` makes (and draws) a patch per bin.
        bars = PolyCollection([[(lo, 0), (lo, acc), (lo + width, acc), (lo + width, 0)]
                               for lo, *_, acc in rows],
                              facecolors="#4c72b0", edgecolors="white", label="accuracy in bin")
        ax.add_collection(bars, autolim=False)
        (diagonal,) = ax.plot([0, 1], [0, 1], "--", color="#888888", label="perfect calibration")
        dots = ax.scatter([conf for _, _, _, conf, _ in rows], [acc for *_, acc in rows],
                          s=[8 + 60 * n / len(ev.labels) for _, _, n, _, _ in rows],
                          color="#dd8452", zorder=3, label="mean confidence (size: images)")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_title(f"{ev.split}: ECE {ece:.3f} (n={len(ev.labels)})", y=1.0)
        ax.legend(handles=[diagonal, dots, bars], loc="upper left", fontsize=7)
    return fig
