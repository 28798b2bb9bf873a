"""Agg that renders text a line at a time: :class:`LineCanvasAgg`.

matplotlib 3.11's Agg renderer renders every glyph of a text through FreeType on its own
(~30 µs a glyph): the ~2,400 caption characters of a 32-sample grid took 0.2 s of its
0.24 s draw, and tick labels, legends and cell counts cost the same way in every other
figure. :class:`LineRendererAgg` renders each upright line with matplotlib's own FreeType
font object in one call (``set_text`` + ``draw_glyphs_to_bitmap``, as Agg did up to 3.10)
and composites it with Agg's own ``draw_text_image``, which applies colour, alpha and clip
as for any text. Layout is untouched (matplotlib computes every extent as before), and the
same font, hinting and advances give the same line width; glyphs start on whole pixels
instead of fractional ones (shading, not placement, differs). Mathtext, rotated lines and
text drawn without antialiasing go through Agg's own path, and on matplotlib versions whose Agg
already renders whole lines (or lacks a call this needs) nothing changes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg, RendererAgg
from matplotlib.font_manager import FontProperties

__all__ = ["LineCanvasAgg", "LineRendererAgg"]


def _whole_lines_needed() -> bool:
    """Agg renders glyph by glyph where it has ``_draw_text_glyphs_and_boxes`` (matplotlib
    3.11; before, it rendered whole lines itself), and the calls a whole line takes exist."""
    from matplotlib import backends
    from matplotlib.ft2font import FT2Font

    agg = getattr(backends, "_backend_agg", None)
    return (hasattr(RendererAgg, "_draw_text_glyphs_and_boxes")
            and hasattr(RendererAgg, "_prepare_font")
            and agg is not None and hasattr(agg.RendererAgg, "draw_text_image")
            and all(hasattr(FT2Font, name) for name in (
                "set_text", "draw_glyphs_to_bitmap", "get_image", "get_bitmap_offset",
                "get_width_height", "get_descent")))


_PER_GLYPH_AGG = _whole_lines_needed()


class LineRendererAgg(RendererAgg):
    """:class:`RendererAgg` whose ``draw_text`` renders an upright plain line in one call."""

    def draw_text(self, gc: Any, x: float, y: float, s: str, prop: FontProperties,
                  angle: float, ismath: bool | str = False, mtext: Any = None) -> None:
        if ismath or angle or not gc.get_antialiased() or not _PER_GLYPH_AGG:
            super().draw_text(gc, x, y, s, prop, angle, ismath=ismath, mtext=mtext)
            return
        from matplotlib.backends.backend_agg import get_hinting_flag

        font = self._prepare_font(prop)  # sized for this renderer's dpi
        font.set_text(s, 0, flags=get_hinting_flag())
        font.draw_glyphs_to_bitmap(antialiased=True)
        bitmap = np.asarray(font.get_image())
        if not bitmap.size:
            return
        height, descent = font.get_width_height()[1] / 64, font.get_descent() / 64
        # x, y: the pen's origin on the baseline, y downwards. The bitmap starts at the first
        # glyph's left bearing (its offset) and one pixel above the ink's top;
        # draw_text_image takes the bitmap's left and bottom side (y downwards).
        left = round(x + font.get_bitmap_offset()[0] / 64)
        top = round(y) - round(height - descent) - 1
        self._renderer.draw_text_image(np.ascontiguousarray(bitmap), left,
                                       top + bitmap.shape[0], 0, gc)


class LineCanvasAgg(FigureCanvasAgg):
    """:class:`FigureCanvasAgg` that draws with :class:`LineRendererAgg`."""

    def get_renderer(self) -> RendererAgg:
        w, h = self.get_width_height(physical=True)
        key = w, h, self.figure.dpi
        if self._lastKey != key or not isinstance(self.renderer, LineRendererAgg):
            self.renderer = LineRendererAgg(w, h, self.figure.dpi)
            self._lastKey = key
        return self.renderer
