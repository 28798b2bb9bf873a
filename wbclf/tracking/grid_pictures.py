"""The pictures of a sample grid as one artist: each resampled once, drawn as a raster.

A grid used to be one axes and one ``imshow`` per sample: 32 axes to lay out and draw, and
Agg resampling every picture through matplotlib's image pipeline on each save. Here the
pictures are resampled by PIL straight to the pixels their boxes cover at the resolution
being rendered, and handed to the renderer as they are (no further resampling, no axes).
The resolution is read from the renderer at draw time, so that a figure saved at any dpi,
or as PDF/SVG (whose images are rasterized at the dpi ``savefig`` was given), gets pictures
of the right size.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.artist import Artist, allow_rasterization
from matplotlib.backend_bases import RendererBase
from PIL import Image

__all__ = ["BoxedPictures", "fit_top_left", "resample_rgba"]

Rect = tuple[float, float, float, float]  # left, bottom, width, height in figure fractions


def fit_top_left(box: Rect, picture_hw: tuple[int, int], fig_size_in: tuple[float, float]
                 ) -> Rect:
    """The part of ``box`` a picture of ``picture_hw`` fills at its own aspect ratio,
    anchored at the box's top left (where an ``imshow`` axes anchored ``"NW"`` put it)."""
    left, bottom, width, height = box
    box_w, box_h = width * fig_size_in[0], height * fig_size_in[1]  # inches: aspect is real
    aspect = picture_hw[1] / picture_hw[0]
    shown_w, shown_h = (box_h * aspect, box_h) if box_w / box_h > aspect else (
        box_w, box_w / aspect)
    shown_h_frac = shown_h / fig_size_in[1]
    return left, bottom + height - shown_h_frac, shown_w / fig_size_in[0], shown_h_frac


def resample_rgba(picture: np.ndarray, width: int, height: int) -> np.ndarray:
    """``(H, W, 3)`` uint8 resampled to ``(height, width, 4)`` opaque RGBA.

    PIL's Hamming filter is antialiased both ways: it widens its support when shrinking
    (no aliasing of large images) and interpolates smoothly when enlarging, close to
    matplotlib's default ``"antialiased"`` (Hanning) rendering of the same picture.
    """
    image = Image.fromarray(np.ascontiguousarray(picture, dtype=np.uint8))
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.HAMMING)
    return np.asarray(image.convert("RGBA"))


class BoxedPictures(Artist):
    """Pictures in rectangles of a figure, each drawn at one raster pixel per output pixel.

    Args:
        pictures: ``(H, W, 3)`` uint8 RGB arrays.
        rects: Where each picture goes: ``(left, bottom, width, height)`` in figure
            fractions; the picture is stretched to the rect (give it its own aspect ratio,
            e.g. with :func:`fit_top_left`).
    """

    zorder = 0  # under the captions and frames, as images are

    def __init__(self, pictures: Sequence[np.ndarray], rects: Sequence[Rect]) -> None:
        super().__init__()
        if len(pictures) != len(rects):
            raise ValueError(f"{len(pictures)} pictures for {len(rects)} rects")
        self.pictures = list(pictures)
        self.rects = list(rects)

    def pixel_boxes(self, renderer: RendererBase) -> list[tuple[int, int, int, int]]:
        """Each picture's ``(left, bottom, right, top)`` in raster pixels of ``renderer``
        (display units times its image magnification, which is 1 for Agg)."""
        fig = self.get_figure(root=True)
        scale = renderer.get_image_magnification()
        boxes = []
        for left, bottom, width, height in self.rects:
            corners = fig.transFigure.transform([(left, bottom), (left + width, bottom + height)])
            x0, y0, x1, y1 = (int(round(v)) for v in corners.ravel() * scale)
            boxes.append((x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)))
        return boxes

    @allow_rasterization
    def draw(self, renderer: RendererBase) -> None:
        if not self.get_visible():
            return
        scale = renderer.get_image_magnification()
        renderer.open_group("boxed_pictures", gid=self.get_gid())
        gc = renderer.new_gc()
        gc.set_clip_rectangle(self.get_figure(root=True).bbox)
        for picture, (x0, y0, x1, y1) in zip(self.pictures, self.pixel_boxes(renderer)):
            # Renderers take a raster bottom row first (as matplotlib's images hand it over)
            # and place it by its bottom-left corner; the flipped copy is also writable,
            # which Agg requires (PIL's arrays are read-only).
            rgba = resample_rgba(picture, x1 - x0, y1 - y0)[::-1]
            renderer.draw_image(gc, x0 / scale, y0 / scale, np.ascontiguousarray(rgba))
        gc.restore()
        renderer.close_group("boxed_pictures")
        self.stale = False
