"""Figure text that Agg draws a line at a time: :class:`LineText`.

matplotlib 3.11's Agg renderer renders every glyph of a text through FreeType on its own
(~30 µs a glyph): the ~2,400 caption characters of a 32-sample grid took 0.2 s of its
0.24 s draw. :class:`LineText` is a :class:`matplotlib.text.Text` in every respect (layout,
extents, alignment, clipping, PDF/SVG output) except the last step under such an Agg: each
line is laid out and rendered by matplotlib's own FreeType font object in one call
(``set_text`` + ``draw_glyphs_to_bitmap``, as Agg did up to 3.10) and composited with Agg's
own ``draw_text_image``, which applies the colour, alpha and clip as for any text. The same
font, hinting and advances, so the same line width; glyphs start on whole pixels instead of
fractional ones (shading, not placement, differs). Mathtext, rotated lines, and matplotlib
versions whose Agg already renders whole lines are drawn as usual.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import RendererAgg
from matplotlib.font_manager import FontProperties
from matplotlib.text import Text

__all__ = ["LineText", "figure_text"]

# Agg renders glyph by glyph where it has this method (matplotlib 3.11); before, it rendered
# whole lines itself and a LineText is a plain Text.
_PER_GLYPH_AGG = hasattr(RendererAgg, "_draw_text_glyphs_and_boxes")


class LineText(Text):
    """A :class:`~matplotlib.text.Text` whose lines Agg renders one line at a time."""

    def draw(self, renderer: Any) -> None:
        if _PER_GLYPH_AGG and isinstance(renderer, RendererAgg):
            renderer = _LineRenderer(renderer)
        super().draw(renderer)


def figure_text(fig: Any, x: float, y: float, s: str, **kwargs: Any) -> LineText:
    """``fig.text(x, y, s, **kwargs)`` as a :class:`LineText` (in ``fig.texts`` too)."""
    text = LineText(x, y, s, **{"transform": fig.transSubfigure, **kwargs})
    text.set_figure(fig)
    fig.texts.append(text)
    text._remove_method = fig.texts.remove  # what Figure.text sets: text.remove() works
    fig.stale = True
    return text


class _LineRenderer:
    """An Agg renderer whose ``draw_text`` renders a plain line in one call; every other
    call goes to the renderer it wraps."""

    def __init__(self, inner: RendererAgg) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def draw_text(self, gc: Any, x: float, y: float, s: str, prop: FontProperties,
                  angle: float, ismath: bool | str = False, mtext: Any = None) -> None:
        if ismath or angle:
            self._inner.draw_text(gc, x, y, s, prop, angle, ismath=ismath, mtext=mtext)
            return
        from matplotlib.backends.backend_agg import get_hinting_flag

        font = self._inner._prepare_font(prop)  # sized for this renderer's dpi
        font.set_text(s, 0, flags=get_hinting_flag())
        font.draw_glyphs_to_bitmap(antialiased=gc.get_antialiased())
        bitmap = np.asarray(font.get_image())
        if not bitmap.size:
            return
        if not gc.get_antialiased():
            bitmap = bitmap * np.uint8(0xFF)
        height, descent = font.get_width_height()[1] / 64, font.get_descent() / 64
        # y is the baseline, downwards; the bitmap's first row is one pixel above the ink's
        # top, and draw_text_image takes the bitmap's left and bottom side (y downwards).
        top = round(y) - round(height - descent) - 1
        self._inner._renderer.draw_text_image(np.ascontiguousarray(bitmap), round(x),
                                              top + bitmap.shape[0], 0, gc)
