"""LineCanvasAgg: Agg that renders each upright text line in one call, placed where
matplotlib's own Agg places it; mathtext and rotated text drawn by Agg itself."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from wbclf.tracking.line_text import LineCanvasAgg, LineRendererAgg

CAPTION = "true: Tomato / Spider mites Two-spotted\nspider mite\npred 0.67: Grape / healthy"


def _figure() -> Figure:
    """Figure text in several alignments and colours, and an axes with ticks and a legend."""
    fig = Figure(figsize=(5, 4))
    fig.text(0.02, 0.97, CAPTION, fontsize=8.5, color="#1a7f37", va="top")
    fig.text(0.98, 0.6, "Malignant (12)\nbaseline", fontsize=7, ha="right", va="baseline")
    fig.text(0.5, 0.45, "centred, half transparent", fontsize=12, color="#cf222e", alpha=0.5,
             ha="center", va="center")
    fig.text(0.45, 0.75, "Malignant", fontsize=22)  # a wide left bearing at a large size
    fig.text(0.05, 0.55, "jump", fontsize=22)  # a negative one
    ax = fig.add_axes((0.15, 0.08, 0.5, 0.3))
    ax.plot([0, 1], [0, 1], label="ROC (AUC 0.912)")
    ax.legend(loc="lower right", fontsize=7)
    ax.set_title("test: ECE 0.041 (n=400)", fontsize=9)
    return fig


def _draw(fig: Figure, canvas: type) -> np.ndarray:
    agg = canvas(fig)
    agg.draw()
    return 255 - np.asarray(agg.buffer_rgba())[..., :3].astype(int)  # ink


@pytest.mark.parametrize("dpi", [72, 110, 200])
def test_lines_land_where_agg_puts_them_with_the_same_ink_and_colour(dpi):
    fig = _figure()
    fig.set_dpi(dpi)
    plain, fast = _draw(fig, FigureCanvasAgg), _draw(fig, LineCanvasAgg)
    assert isinstance(fig.canvas.get_renderer(), LineRendererAgg)
    assert not np.array_equal(plain, fast)  # really rendered another way
    assert abs(fast.sum() / plain.sum() - 1) < 0.03  # the same amount of ink...
    for axis in (0, 1):  # ...in the same rows and columns, to a pixel or two
        lines = [np.nonzero((ink.max(axis=2) > 60).any(axis=axis))[0] for ink in (plain, fast)]
        gaps = np.abs(np.subtract.outer(*lines))
        assert gaps.min(axis=1).max() <= 2 and gaps.min(axis=0).max() <= 2
    for ink in (plain, fast):  # the same colours: the mean of well-inked pixels
        assert (ink.max(axis=2) > 100).sum() > 100
    shades = [(255 - ink)[ink.max(axis=2) > 100].mean(axis=0) for ink in (plain, fast)]
    assert np.abs(shades[0] - shades[1]).max() < 12
    faint = Figure(figsize=(3, 1), dpi=dpi)
    faint.text(0.1, 0.4, "half transparent", fontsize=12, color="#cf222e", alpha=0.5)
    assert _draw(faint, LineCanvasAgg).max() <= 0.55 * 255  # alpha 0.5: never full red


@pytest.mark.parametrize("text", ["Malignant", "jump", "Wave (AUC 0.91)", "T"])
def test_large_lines_start_and_end_where_agg_puts_them(text):
    """The first glyph's bearing and the line's baseline: the ink's box within a pixel."""
    fig = Figure(figsize=(4, 1.5), dpi=200)
    fig.text(0.1, 0.3, text, fontsize=24)
    boxes = []
    for canvas in (FigureCanvasAgg, LineCanvasAgg):
        ink = _draw(fig, canvas).max(axis=2) > 60
        rows, cols = np.nonzero(ink.any(axis=1))[0], np.nonzero(ink.any(axis=0))[0]
        boxes.append(np.array([rows[0], rows[-1], cols[0], cols[-1]]))
    assert np.abs(boxes[0] - boxes[1]).max() <= 1, boxes


def test_mathtext_and_rotated_lines_are_agg_s_own():
    """Drawn by Agg itself (and text without antialiasing): a figure of only such text has
    Agg's pixels exactly."""
    fig = Figure(figsize=(4, 3))
    fig.text(0.1, 0.8, r"$\alpha^2 + \sqrt{x}$", fontsize=12)
    fig.text(0.1, 0.2, "rotated 45", rotation=45, color="#8250df")
    fig.text(0.8, 0.2, "true positive rate", rotation=90, fontsize=9)
    fig.text(0.3, 0.5, "no antialiasing", antialiased=False, fontsize=11)
    plain, fast = _draw(fig, FigureCanvasAgg), _draw(fig, LineCanvasAgg)
    assert plain.sum() > 0 and np.array_equal(plain, fast)
