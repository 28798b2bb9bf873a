"""LineText: figure text that Agg renders a line at a time, placed as matplotlib places it;
everything else (other backends, mathtext, rotation) untouched."""

from __future__ import annotations

import io

import matplotlib
import numpy as np
import pytest
from matplotlib.figure import Figure
from matplotlib.text import Text

from wbclf.tracking.plots import render_rgba
from wbclf.tracking.line_text import LineText, figure_text

CAPTION = "true: Tomato / Spider mites Two-spotted\nspider mite\npred 0.67: Grape / healthy"
PLACES = [  # (x, y, text, properties)
    (0.02, 0.95, CAPTION, {"fontsize": 8.5, "color": "#1a7f37", "va": "top"}),
    (0.5, 0.5, "centred, half transparent", {"fontsize": 12, "color": "#cf222e", "alpha": 0.5,
                                             "ha": "center", "va": "center"}),
    (0.98, 0.05, "Malignant (count 12)\nbaseline", {"fontsize": 7, "ha": "right",
                                                    "va": "baseline"}),
]


def _figure(cls: type, places=PLACES) -> Figure:
    fig = Figure(figsize=(5, 3))
    for x, y, text, props in places:
        fig.add_artist(cls(x, y, text, transform=fig.transFigure, **props))
    return fig


def _ink(rgba: np.ndarray) -> np.ndarray:
    return 255 - rgba[..., :3].astype(int)


@pytest.mark.parametrize("dpi", [72, 110, 200])
def test_agg_renders_whole_lines_where_matplotlib_puts_them(dpi):
    plain = _ink(render_rgba(_figure(Text), dpi=dpi))
    fast = _ink(render_rgba(_figure(LineText), dpi=dpi))
    assert not np.array_equal(plain, fast)  # really drawn another way
    assert abs(fast.sum() / plain.sum() - 1) < 0.03  # the same amount of ink...
    for axis in (0, 1):  # ...in the same rows and columns, to a pixel or two
        lines = [np.nonzero((ink.max(axis=2) > 60).any(axis=axis))[0] for ink in (plain, fast)]
        gaps = np.abs(np.subtract.outer(*lines))
        assert gaps.min(axis=1).max() <= 2 and gaps.min(axis=0).max() <= 2
    # the same colours: the mean colour of well-inked pixels
    for ink in (plain, fast):
        assert (ink.max(axis=2) > 100).sum() > 100
    shades = [(255 - ink)[ink.max(axis=2) > 100].mean(axis=0) for ink in (plain, fast)]
    assert np.abs(shades[0] - shades[1]).max() < 12
    faint = _ink(render_rgba(_figure(LineText, PLACES[1:2]), dpi=dpi))
    assert faint.max() <= 0.55 * 255  # alpha 0.5: never full red


@pytest.mark.parametrize("text, props", [
    (r"$x^2 + \alpha$", {}), ("rotated", {"rotation": 30}), ("upright", {"rotation": 90})])
def test_mathtext_and_rotated_lines_are_left_to_matplotlib(text, props):
    place = [(0.1, 0.5, text, {"fontsize": 14, **props})]
    plain = render_rgba(_figure(Text, place), dpi=110)
    fast = render_rgba(_figure(LineText, place), dpi=110)
    assert np.array_equal(plain, fast)


def test_other_backends_get_plain_text_and_figure_text_is_a_figure_text():
    matplotlib.rcParams["svg.hashsalt"] = "wbclf"
    outputs = []
    for cls in (Text, LineText):
        buf = io.BytesIO()
        _figure(cls).savefig(buf, format="svg", metadata={"Date": None})
        outputs.append(buf.getvalue())
    assert outputs[0] == outputs[1]

    fig = Figure(figsize=(2, 1))
    text = figure_text(fig, 0.1, 0.2, "hello", fontsize=9)
    assert isinstance(text, LineText) and fig.texts == [text]
    assert tuple(text.get_position()) == (0.1, 0.2) and text.get_transform() == fig.transFigure
    text.remove()
    assert fig.texts == []
