"""Figures saved with their PNG encoding off the caller's thread: :class:`FigureWriter`.

A run ends by drawing its figures (grids of 32 and 16 samples, confusion matrices, ROC,
reliability) and logging its W&B tables. Agg's drawing needs the GIL, but OpenCV's zlib
encode (0.13 s for a 3.3-Mpixel sample grid) and the file write release it: done on one
background thread, they overlap the run's next steps on a second core. The files are the
ones :func:`~wbclf.tracking.plots.save_figure_atomic` and
:func:`~wbclf.tracking.plots.save_chart_atomic` write (renamed into place whole), in the order
they were saved; :meth:`FigureWriter.wait` returns once every one is in place.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from matplotlib.figure import Figure

from wbclf.tracking.plots import is_png, render_bgr, save_figure_atomic, write_png

__all__ = ["FigureWriter"]


class FigureWriter:
    """Saves figures like ``save_figure_atomic`` / ``save_chart_atomic``, encoding and
    writing PNGs on one background thread (other formats are saved at once)."""

    def __init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None
        self._pending: list[Future] = []

    def save(self, fig: Figure, path: str | Path, *, dpi: int, chart: bool = False) -> Path:
        """Draw ``fig`` now; its PNG reaches ``path`` by the next :meth:`wait`."""
        path = Path(path)
        if not is_png(path):
            return save_figure_atomic(fig, path, dpi=dpi, chart=chart)
        pixels = render_bgr(fig, dpi=dpi)  # Agg, on this thread: it holds the GIL anyway
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="wbclf-png")
        self._pending.append(self._pool.submit(write_png, pixels, path, dpi, chart=chart))
        return path

    def wait(self) -> None:
        """Return when every figure saved so far is in place; raise the first failure."""
        pending, self._pending = self._pending, []
        first: BaseException | None = None
        for future in pending:
            error = future.exception()
            first = first or error
        if first is not None:
            raise first

    def close(self) -> None:
        """:meth:`wait`, then stop the thread."""
        try:
            self.wait()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None
