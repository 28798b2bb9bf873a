"""Margins and ticks of the evaluation figures, computed from the sizes of their texts.

The confusion matrix, ROC and reliability figures place their axes here instead of leaving it
to constrained layout: that engine measures every artist of a figure (it creates and lays out
each tick and its label) twice per draw, which cost more than drawing the figure itself. The
texts around an axes are known before it is drawn (tick labels, axis labels, title), so their
room is computed from the font's glyph advances, in inches, once. Their ticks are drawn by
:func:`draw_ticks`, without matplotlib's per-position ``Tick`` objects.

Distances follow matplotlib's settings: ticks ``xtick.major.size`` long with their labels
``xtick.major.pad`` beyond (3.5 pt each by default), axis labels 4 pt from the tick labels,
titles 6 pt above the axes.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.text import Text

__all__ = ["Margins", "axes_rect", "draw_ticks", "line_height_in", "pin_labels", "rc_points",
           "text_width_in", "tick_labels", "tick_room_in", "unit_grid", "unit_panels",
           "wrap_to"]

EDGE_IN = 0.05  # between the outermost text and the figure's edge
LABEL_PAD_PT = 4.0  # between the tick labels and the axis label
TITLE_PAD_PT = 6.0  # between the axes (or its top tick label) and the title
# A text line's height in font sizes: the font's ascent and descent (matplotlib sizes a line
# by "lp"), plus a margin for hinting at small dpi.
LINE_HEIGHT = 1.3
WIDTH_SLACK = 1.12  # advances ignore hinting, which widens small text at low dpi by up to 11 %
# Ticks of an axis for values in [0, 1], labelled as matplotlib's default formatter does.
UNIT_TICKS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
UNIT_LABELS = tuple(f"{v:.1f}" for v in UNIT_TICKS)


@lru_cache(maxsize=4096)
def _advance(char: str) -> float:
    """The advance of ``char`` in the default font, in font sizes (kerning aside, which only
    narrows a text)."""
    from matplotlib import ft2font
    from matplotlib.font_manager import FontProperties, findfont, get_font

    # matplotlib < 3.10 names the flag LOAD_NO_HINTING (pyproject allows >= 3.7)
    flags = ft2font.LoadFlags.NO_HINTING if hasattr(ft2font, "LoadFlags") else (
        ft2font.LOAD_NO_HINTING)
    font = get_font(findfont(FontProperties()))
    font.set_size(100, 72)
    glyph = font.load_char(ord(char), flags=flags)
    return glyph.linearHoriAdvance / 65536 / 100


def text_width_in(text: str, size: float) -> float:
    """The width of ``text`` (its longest line) drawn at ``size`` pt, in inches."""
    widest = max(sum(_advance(ch) for ch in line) for line in text.split("\n"))
    return widest * size * WIDTH_SLACK / 72


def line_height_in(size: float, lines: int = 1) -> float:
    """The height ``lines`` lines at ``size`` pt take, in inches."""
    return lines * size * LINE_HEIGHT / 72


def tick_room_in(labels: Iterable[str], size: float, *, across: bool) -> float:
    """Room the ticks and their labels take beside an axis, in inches: the labels' widest
    width when they lie ``across`` the axis (y labels, rotated x labels), else one line."""
    from matplotlib import rcParams

    ticks_pt = rcParams["xtick.major.size"] + rcParams["xtick.major.pad"]  # mark, then gap
    texts = list(labels)
    if not texts:
        return ticks_pt / 72
    extent = max(text_width_in(t, size) for t in texts) if across else line_height_in(size)
    return extent + ticks_pt / 72


@dataclass(frozen=True)
class Margins:
    """Room around an axes inside its cell of the figure, in inches."""

    left: float
    bottom: float
    right: float
    top: float


def axes_rect(figsize: tuple[float, float], cell: tuple[float, float, float, float],
              margins: Margins, *, square: bool = False) -> tuple[float, float, float, float]:
    """``[left, bottom, width, height]`` (figure fractions) of an axes in ``cell``.

    Args:
        figsize: The figure's ``(width, height)`` in inches.
        cell: ``(x0, y0, x1, y1)`` in inches: the part of the figure the axes and its texts get.
        margins: The room its texts take inside the cell.
        square: Make the axes square (an image, equal-aspect curves), centred in what is left,
            as matplotlib would shrink it at draw time.
    """
    width_in, height_in = figsize
    x0, y0 = cell[0] + margins.left, cell[1] + margins.bottom
    w = max(cell[2] - margins.right - x0, 0.1)
    h = max(cell[3] - margins.top - y0, 0.1)
    if square:
        side = min(w, h)
        x0, y0 = x0 + (w - side) / 2, y0 + (h - side) / 2
        w = h = side
    return x0 / width_in, y0 / height_in, w / width_in, h / height_in


def pin_labels(ax: Axes, size_in: tuple[float, float], *, x_room: float, y_room: float,
               ) -> None:
    """Put ``ax``'s axis labels ``x_room`` below and ``y_room`` left of it (inches: the room
    its ticks take, as :func:`tick_room_in` gives), the axes being ``size_in`` large.

    Left to itself, matplotlib measures every tick label of an axis on each draw to place
    its label; these positions are known.
    """
    width_in, height_in = size_in
    ax.xaxis.set_label_coords(0.5, -(x_room + LABEL_PAD_PT / 72) / height_in)
    ax.yaxis.set_label_coords(-(y_room + LABEL_PAD_PT / 72) / width_in, 0.5)


def rc_points(key: str) -> float:
    """The size in points of the font rcParams ``key`` names (e.g. ``"xtick.labelsize"``)."""
    from matplotlib import rcParams
    from matplotlib.font_manager import FontProperties

    return FontProperties(size=rcParams[key]).get_size_in_points()


def wrap_to(text: str, size: float, width_in: float) -> str:
    """``text`` broken at spaces into lines at most ``width_in`` wide (a long class name in an
    axis label), or as it is when it fits."""
    if text_width_in(text, size) <= width_in:
        return text
    chars = max(8, int(len(text) * width_in / text_width_in(text, size)))
    return "\n".join(textwrap.wrap(text, width=chars))


def unit_panels(fig: Figure, xlabels: Sequence[str], ylabels: Sequence[str], *, top_in: float,
                square: bool) -> list[Axes]:
    """A row of axes, one per label pair, each in an equal share of ``fig``'s width, for
    values in [0, 1] (ticks ``0.0`` to ``1.0`` by 0.2), their axis labels set and pinned.

    Args:
        fig: The figure, without a layout engine.
        xlabels, ylabels: Each panel's axis labels; a label longer than its axes is wrapped.
        top_in: Room above the axes (a title, a suptitle), inches.
        square: Square axes (equal-aspect curves), centred in their share.
    """
    width_in, height_in = fig.get_size_inches()
    tick_font, label_font = rc_points("xtick.labelsize"), rc_points("axes.labelsize")
    ends = [UNIT_LABELS[0], UNIT_LABELS[-1]]
    x_room = tick_room_in(ends, tick_font, across=False)
    y_room = tick_room_in(ends, tick_font, across=True)
    share = width_in / len(xlabels)
    axes = []
    for k, (xlabel, ylabel) in enumerate(zip(xlabels, ylabels)):
        cell = (k * share, 0.0, (k + 1) * share, height_in)
        # The last x tick label is centred on the axes' right edge: half of it sticks out.
        right = EDGE_IN + text_width_in(ends[1], tick_font) / 2
        first = Margins(left=EDGE_IN + line_height_in(label_font) + LABEL_PAD_PT / 72 + y_room,
                        bottom=EDGE_IN + line_height_in(label_font) + LABEL_PAD_PT / 72 + x_room,
                        right=right, top=top_in)
        rect = axes_rect((width_in, height_in), cell, first, square=square)
        # Labels longer than the axes wrap; the margins then make room for their lines.
        xlabel = wrap_to(xlabel, label_font, rect[2] * width_in)
        ylabel = wrap_to(ylabel, label_font, rect[3] * height_in)
        lines_x, lines_y = xlabel.count("\n") + 1, ylabel.count("\n") + 1
        room = Margins(
            left=EDGE_IN + line_height_in(label_font, lines_y) + LABEL_PAD_PT / 72 + y_room,
            bottom=EDGE_IN + line_height_in(label_font, lines_x) + LABEL_PAD_PT / 72 + x_room,
            right=right, top=top_in)
        rect = axes_rect((width_in, height_in), cell, room, square=square)
        ax = fig.add_axes(rect)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        # The six ticks that show, drawn as marks and texts (see draw_ticks).
        draw_ticks(ax, "bottom", UNIT_TICKS, UNIT_LABELS, size=tick_font)
        draw_ticks(ax, "left", UNIT_TICKS, UNIT_LABELS, size=tick_font)
        pin_labels(ax, (rect[2] * width_in, rect[3] * height_in), x_room=x_room, y_room=y_room)
        axes.append(ax)
    return axes


def draw_ticks(ax: Axes, side: str, positions: Sequence[float], labels: Sequence[str], *,
               size: float, rotation: float = 0.0) -> list[Text]:
    """Tick marks and their labels on the ``side`` (``"bottom"``, ``"left"`` or ``"right"``)
    of ``ax``, at data ``positions``; the axis's own ticks are removed.

    They look like matplotlib's ticks (the same markers, lengths, pad and alignment), but are
    one line of markers and a text per label: each matplotlib ``Tick`` is five artists (two
    marks, a grid line, two labels; three of them hidden) copied from a template, which cost
    more than drawing the whole figure once. The labels carry the gid ``"<side> tick label"``
    (:func:`tick_labels` finds them).
    """
    from matplotlib import rcParams
    from matplotlib.lines import TICKDOWN, TICKLEFT, TICKRIGHT, Line2D
    from matplotlib.text import Text
    from matplotlib.transforms import blended_transform_factory, offset_copy

    if side not in ("bottom", "left", "right"):
        raise ValueError(f"side must be 'bottom', 'left' or 'right', got {side!r}")
    bottom = side == "bottom"
    key = "xtick" if bottom else "ytick"
    length, pad = rcParams[f"{key}.major.size"], rcParams[f"{key}.major.pad"]
    if bottom:
        ax.set_xticks([])
        base = blended_transform_factory(ax.transData, ax.transAxes)
        xs, ys = list(positions), [0.0] * len(positions)
        marker, shift, align = TICKDOWN, {"y": -(length + pad)}, {"ha": "center", "va": "top"}
    else:
        ax.set_yticks([])
        base = blended_transform_factory(ax.transAxes, ax.transData)
        left = side == "left"
        xs, ys = [0.0 if left else 1.0] * len(positions), list(positions)
        marker = TICKLEFT if left else TICKRIGHT
        shift = {"x": -(length + pad) if left else length + pad}
        align = {"ha": "right" if left else "left", "va": "center_baseline"}
    color = rcParams[f"{key}.color"]
    ax.add_artist(Line2D(xs, ys, linestyle="none", marker=marker, markersize=length,
                         markeredgewidth=rcParams[f"{key}.major.width"], color=color,
                         transform=base, clip_on=False))
    place = offset_copy(base, fig=ax.get_figure(), units="points", **shift)
    texts = []
    for x, y, label in zip(xs, ys, labels):
        text = Text(x, y, label, fontsize=size, color=color, rotation=rotation,
                    transform=place, clip_on=False, gid=f"{side} tick label", **align)
        ax.add_artist(text)
        texts.append(text)
    return texts


def tick_labels(ax: Axes, side: str) -> list[Text]:
    """The labels :func:`draw_ticks` drew on the ``side`` of ``ax``, in order."""
    return [t for t in ax.texts if t.get_gid() == f"{side} tick label"]


def unit_grid(ax: Axes, **line: object) -> None:
    """Grid lines at the unit ticks across ``ax`` (``ax.grid`` draws them from its ticks)."""
    from matplotlib.collections import LineCollection
    from matplotlib.transforms import blended_transform_factory

    across = blended_transform_factory(ax.transData, ax.transAxes)
    up = blended_transform_factory(ax.transAxes, ax.transData)
    for transform, segments in ((across, [[(v, 0), (v, 1)] for v in UNIT_TICKS]),
                                (up, [[(0, v), (1, v)] for v in UNIT_TICKS])):
        ax.add_artist(LineCollection(segments, transform=transform, zorder=1.5, **line))
