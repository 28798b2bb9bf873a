"""Agg that renders text a line at a time: :class:`LineCanvasAgg`.

matplotlib 3.11's Agg renderer renders every glyph of a text through FreeType on its own
(~30 µs a glyph): the ~2,400 caption characters of a 32-sample grid took 0.2 s of its
0.24 s draw, and tick labels, legends and cell counts cost the same way in every other
figure. :class:`LineRendererAgg` renders each upright line with matplotlib's own FreeType
font object in one call (``set_text`` + ``draw_glyphs_to_bitmap``, as Agg did up to 3.10)
and composites it with Agg's own ``draw_text_image``, which applies colour, alpha and clip
as for any text. Layout is untouched (matplotlib computes every extent as before), and the
same font, hinting and advances give the same line width; glyphs start on whole pixels
instead of fractional ones (shading, not placement, differs). Mathtext and rotated lines go
through Agg's own path, and on matplotlib versions whose Agg already renders whole lines
nothing changes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg, RendererAgg
from matplotlib.font_manager import FontProperties

__all__ = ["LineCanvasAgg", "LineRendererAgg"]

# Agg renders glyph by glyph where it has this method (matplotlib 3.11); before, it rendered
# whole lines itself.
_PER_GLYPH_AGG = hasattr(RendererAgg, "_draw_text_glyphs_and_boxes")


class LineRendererAgg(RendererAgg):
    """:class:`RendererAgg` whose ``draw_text`` renders an upright plain line in one call."""

    def draw_text(self, gc: Any, x: float, y: float, s: str, prop: FontProperties,
                  angle: float, ismath: bool | str = False, mtext: Any = None) -> None:
        if ismath or angle or not _PER_GLYPH_AGG:
            super().draw_text(gc, x, y, s, prop, angle, ismath=ismath, mtext=mtext)
            return
        from matplotlib.backends.backend_agg import get_hinting_flag

        font = self._prepare_font(prop)  # sized for this renderer's dpi
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
        self._renderer.draw_text_image(np.ascontiguousarray(bitmap), round(x),
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
