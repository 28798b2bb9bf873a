"""Figures of a run directory: confusion matrix, sample grids, ROC/PR curves, Grad-CAM overlays.

Everything uses matplotlib's object API (``matplotlib.figure.Figure``, rendered by Agg) and
never ``pyplot``: no global figure registry, no GUI backend, nothing to close, and trials
running in threads of one process cannot draw into each other's figures.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.transforms import ScaledTranslation
from numpy.typing import ArrayLike

from wbclf.atomic import replacing
from wbclf.tracking.figure_layout import (
    EDGE_IN,
    LABEL_PAD_PT,
    TITLE_PAD_PT,
    UNIT_LABELS,
    UNIT_TICKS,
    Margins,
    draw_ticks,
    line_height_in,
    pin_labels,
    rc_points,
    tick_room_in,
    unit_grid,
    unit_panels,
)
from wbclf.tracking.grid_pictures import BoxedPictures, fit_top_left
from wbclf.tracking.records import SamplePredictions

__all__ = [
    "cam_overlay",
    "confusion_matrix_figure",
    "display_name",
    "figure_png",
    "encode_png",
    "is_png",
    "render_bgr",
    "render_rgba",
    "roc_figure",
    "samples_grid",
    "save_chart_atomic",
    "save_figure_atomic",
    "write_png",
]

CORRECT_COLOR = "#1a7f37"
MISTAKE_COLOR = "#d1242f"
# Sample grids are read at a page's width (the HTML report's column is ~1120 px) more often
# than at full size; captions are sized so that they are CAPTION_PX tall there.
READ_WIDTH_PX = 1100
CAPTION_PX = 12.5


def display_name(name: str, max_len: int = 40) -> str:
    """A class name as a figure label: ``Corn_(maize)___Common_rust_`` -> ``Corn (maize) /
    Common rust``.

    The plant-disease names join crop and condition with ``___`` and words with ``_``; spaces
    read better in a figure. Names longer than ``max_len`` lose their middle to an ellipsis, so
    that two long names that differ only at the end stay distinct.
    """
    text = " ".join(name.replace("___", " / ").replace("_", " ").split()) or name
    if len(text) <= max_len:
        return text
    head = (max_len - 1) // 2
    tail = max_len - 1 - head
    return f"{text[:head]}…{text[-tail:]}"


# --------------------------------------------------------------------------- confusion matrix


def confusion_matrix_figure(
    cm: ArrayLike, class_names: Sequence[str], *, title: str = "Confusion matrix"
) -> Figure:
    """Counts in the cells, colour by the row-normalized value (the recall of each true class).

    Colouring by counts would hide every mistake of a small class next to a big one; the row
    fraction makes each row comparable. Zero cells stay empty so that mistakes stand out. The
    figure grows with the number of classes so that 38 long names stay readable.

    Args:
        cm: ``(C, C)`` counts, rows true, columns predicted.
        class_names: Class names in label-index order.
        title: Figure title.
    """
    counts = np.asarray(cm, dtype=np.int64)
    c = len(class_names)
    if counts.shape != (c, c):
        raise ValueError(f"cm must be ({c}, {c}) for {c} class names, got {counts.shape}")
    totals = counts.sum(axis=1, keepdims=True)
    frac = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)

    labels = [display_name(n, 48) for n in class_names]
    longest = max(len(s) for s in labels) + 6  # the y labels carry " (count)"
    font = float(np.clip(220 / max(c, 1), 5.5, 10))
    label_in = longest * font * 0.55 / 72 + 0.4  # room the tick labels take, in inches
    cell_in = float(np.clip(7.5 / max(c, 1), 0.26, 1.2))
    side = max(c * cell_in, 3.2)
    upright = max(len(s) for s in labels) <= 12  # short names read better horizontally
    figsize = (side + label_in + 1.6, side + (0.5 if upright else label_in) + 1.0)
    row_labels = [f"{s} ({int(n)})" for s, n in zip(labels, totals[:, 0])]
    total = int(counts.sum())
    acc = np.trace(counts) / total if total else float("nan")
    heading = f"{title}  (n={total}, accuracy {acc:.3f})"

    fig = Figure(figsize=figsize)
    x_room = tick_room_in(labels, font, across=not upright)
    y_room = tick_room_in(row_labels, font, across=True)
    image_rect, bar_rect = _matrix_rects(figsize, x_room, y_room, font)
    ax = fig.add_axes(image_rect)
    side_in = image_rect[2] * figsize[0]
    pin_labels(ax, (side_in, side_in), x_room=x_room, y_room=y_room)
    image = ax.imshow(frac, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest",
                      aspect="auto")  # the axes is square already
    bar = fig.colorbar(image, cax=fig.add_axes(bar_rect))
    bar.set_ticks([])
    draw_ticks(bar.ax, "right", UNIT_TICKS, UNIT_LABELS, size=font)  # the default's ticks
    bar.set_label("fraction of the true class", fontsize=font)
    bar_room = tick_room_in(UNIT_LABELS, font, across=True) + LABEL_PAD_PT / 72
    bar.ax.yaxis.set_label_coords(1 + bar_room / (bar_rect[2] * figsize[0]), 0.5)

    cell_font = float(np.clip(font * (0.9 if counts.max() < 1000 else 0.75), 4.5, 10))
    for i, j in zip(*np.nonzero(counts)):
        color = "white" if frac[i, j] > 0.55 else "black"
        weight = "bold" if i == j else "normal"
        ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=cell_font,
                color=color, fontweight=weight)

    # Marks and texts, not matplotlib ticks: 38 classes made 152 Tick objects (draw_ticks).
    draw_ticks(ax, "bottom", range(c), labels, size=font, rotation=0 if upright else 90)
    draw_ticks(ax, "left", range(c), row_labels, size=font)
    ax.set_xlabel("predicted", fontsize=font + 1)
    ax.set_ylabel("true (count)", fontsize=font + 1)
    # Light grid between the cells helps following a row across 38 columns. One collection of
    # lines, not minor ticks: each tick is five artists, laid out and drawn one by one.
    edges = np.arange(c + 1) - 0.5
    ends = (-0.5, c - 0.5)
    segments = [[(x, ends[0]), (x, ends[1])] for x in edges]
    segments += [[(ends[0], y), (ends[1], y)] for y in edges]
    ax.add_collection(LineCollection(segments, colors="#d0d7de", linewidths=0.4, zorder=1.5),
                      autolim=False)
    ax.set_title(heading, fontsize=font + 2, y=1.0)  # y given: not placed by measuring
    return fig


# The confusion matrix's colorbar, in widths of the image (as constrained layout sized it).
BAR_FRACTION = 0.04
BAR_GAP_FRACTION = 0.02
BAR_MIN_IN = 0.2
BAR_MIN_GAP_IN = 0.1
BAR_ASPECT = 20.0


def _matrix_rects(figsize: tuple[float, float], x_room: float, y_room: float, font: float,
                  ) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Where the confusion matrix's image and colorbar go (figure fractions): the image square
    in the room its ticks (``x_room`` below, ``y_room`` left, inches), axis labels and title
    leave, the colorbar beside it."""
    axis_label = line_height_in(font + 1) + LABEL_PAD_PT / 72
    room = Margins(
        left=EDGE_IN + axis_label + y_room,
        bottom=EDGE_IN + axis_label + x_room,
        # the colorbar: its label, tick labels, the bar and its gap (sized from the image, below)
        right=EDGE_IN + line_height_in(font) + LABEL_PAD_PT / 72
        + tick_room_in(UNIT_LABELS, font, across=True),
        top=EDGE_IN + line_height_in(font + 2) + TITLE_PAD_PT / 72)
    width_in, height_in = figsize
    # The bar's width and gap grow with the image (constrained layout gave them 4 % and 2 %
    # of the axes' width); the image is the largest square that leaves room for both.
    avail_w = width_in - room.left - room.right
    avail_h = height_in - room.bottom - room.top
    side = min(avail_h, avail_w / (1 + BAR_FRACTION + BAR_GAP_FRACTION))
    bar_w, gap = max(BAR_MIN_IN, BAR_FRACTION * side), max(BAR_MIN_GAP_IN, BAR_GAP_FRACTION * side)
    side = min(side, avail_w - bar_w - gap)
    x0 = room.left + (avail_w - side - gap - bar_w) / 2
    y0 = room.bottom + (avail_h - side) / 2
    bar_h = min(side, BAR_ASPECT * bar_w)  # matplotlib's colorbars are at most 20 x 1
    image = (x0 / width_in, y0 / height_in, side / width_in, side / height_in)
    bar = ((x0 + side + gap) / width_in, (y0 + (side - bar_h) / 2) / height_in,
           bar_w / width_in, bar_h / height_in)
    return image, bar


# --------------------------------------------------------------------------- sample grids


def cam_overlay(image: np.ndarray, cam: np.ndarray, *, alpha: float = 0.55) -> np.ndarray:
    """Blend a Grad-CAM heat map over an image.

    The heat map is weighted by the CAM itself, so that regions the model ignored show the
    plain image and only the regions it used turn warm.

    Args:
        image: ``(H, W, 3)`` (or ``(H, W)``) uint8 image.
        cam: ``(h, w)`` map in [0, 1]; resized to ``(H, W)`` when the sizes differ.
        alpha: Opacity of the heat map where the CAM is 1.

    Returns:
        ``(H, W, 3)`` uint8 RGB.
    """
    from matplotlib import colormaps

    img = np.asarray(image)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    if img.ndim != 3 or img.shape[2] < 3:
        raise ValueError(f"image must be (H, W, 3), got shape {img.shape}")
    img = img[..., :3].astype(np.float32)
    heat = np.nan_to_num(np.asarray(cam, dtype=np.float32), nan=0.0)
    if heat.ndim != 2:
        raise ValueError(f"cam must be (H, W), got shape {heat.shape}")
    if heat.shape != img.shape[:2]:
        heat = _resize(heat, img.shape[:2])
    heat = np.clip(heat, 0.0, 1.0)
    colored = colormaps["jet"](heat)[..., :3].astype(np.float32) * 255.0
    weight = (alpha * heat)[..., None]
    return np.clip(img * (1.0 - weight) + colored * weight, 0, 255).astype(np.uint8)


def sample_overlay(samples: SamplePredictions, k: int) -> np.ndarray:
    """Sample ``k``'s image with its Grad-CAM blended in, made once per sample set (kept in
    ``samples.overlays``): the W&B table and the run directory's grid show the same one."""
    if samples.cams is None:
        raise ValueError("these samples have no Grad-CAM maps")
    if k not in samples.overlays:
        samples.overlays[k] = cam_overlay(samples.images[k], samples.cams[k])
    return samples.overlays[k]


def _resize(values: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    resized = Image.fromarray(values.astype(np.float32), mode="F").resize(
        (shape[1], shape[0]), Image.BILINEAR
    )
    return np.asarray(resized, dtype=np.float32)


def caption_points(fig_width_in: float, read_width_px: float = READ_WIDTH_PX,
                   caption_px: float = CAPTION_PX) -> float:
    """The font size (pt) that is ``caption_px`` tall when the figure is shown
    ``read_width_px`` wide, whatever the dpi it is saved at."""
    return caption_px * fig_width_in * 72.0 / read_width_px


# Sample-grid geometry, in inches unless named _PT. The layout is computed, not left to
# constrained layout: that engine draws the figure a second time on every save, which doubled
# the cost of the grids (the largest fixed cost of a cached frozen trial).
GRID_SIDE_PAD_IN = 0.04  # between an image and the edge of its cell
GRID_ROW_GAP_IN = 0.1  # below an image (its red frame reaches 2 pt out) before the next caption
GRID_EDGE_IN = 0.08  # above the title and below the last row
CAPTION_PAD_PT = TITLE_PAD_PT  # between a caption's last line and its image
CHAR_WIDTH = 0.56  # a character's mean width in font sizes (DejaVu Sans, mixed case)


@dataclass(frozen=True)
class GridLayout:
    """Where everything of a sample grid goes (inches, origin bottom left)."""

    cols: int
    rows: int
    cell_w: float  # the width of a cell: image and caption
    image_in: float  # the height of an image's box
    caption_in: float  # the band above each image its caption fills
    title_in: float  # the band the suptitle fills (0 without a title)

    @property
    def size(self) -> tuple[float, float]:
        height = (2 * GRID_EDGE_IN + self.title_in + self.rows * (self.caption_in + self.image_in)
                  + (self.rows - 1) * GRID_ROW_GAP_IN)
        return self.cols * self.cell_w, height

    def image_rect(self, k: int) -> tuple[float, float, float, float]:
        """``[left, bottom, width, height]`` of sample ``k``'s image box, in figure fractions."""
        width, height = self.size
        row, col = divmod(k, self.cols)
        top = height - GRID_EDGE_IN - self.title_in - row * (
            self.caption_in + self.image_in + GRID_ROW_GAP_IN) - self.caption_in
        left = col * self.cell_w + GRID_SIDE_PAD_IN
        return (left / width, (top - self.image_in) / height,
                (self.cell_w - 2 * GRID_SIDE_PAD_IN) / width, self.image_in / height)

    def title_y(self) -> float:
        """The top of the suptitle, in figure fractions."""
        return 1.0 - GRID_EDGE_IN / self.size[1]


def text_chars(width_in: float, font: float) -> int:
    """About how many characters of size ``font`` (pt) fit in ``width_in`` inches."""
    return max(12, int(width_in * 72 / (CHAR_WIDTH * font)))


def samples_grid(
    samples: SamplePredictions, cols: int | None = None, *, title: str | None = None
) -> Figure:
    """A grid of images with their true class, prediction and confidence.

    Correct predictions have a green caption; mistakes a red caption and a red frame. When
    ``samples.cams`` is set, each image is shown with its Grad-CAM overlay beside it. Captions
    stay readable when the grid is shown at a page's width (``READ_WIDTH_PX``): few enough
    columns (4 with Grad-CAM, 6 without) and a font sized for that width.

    The figure has no axes: the pictures are one artist (:class:`BoxedPictures`) that
    resamples each once, to the pixels its box covers at the dpi the figure is saved at
    (any dpi; PDF/SVG embed them at the dpi ``savefig`` is given); captions, title and
    frames are figure-level text and patches. Drawing 32 axes and 32 ``imshow`` resamplings
    took most of a grid's cost.

    Args:
        samples: The images and what the model said about them.
        cols: Images per row at most (default 4 with Grad-CAM, 6 without).
        title: Figure title.
    """
    n = len(samples.images)
    with_cam = samples.cams is not None
    if n == 0:
        fig = Figure(figsize=(4, 1.5))
        fig.text(0.5, 0.5, f"{title or 'samples'}: none", ha="center", va="center")
        return fig
    cols = max(1, min(cols or (4 if with_cam else 6), n))
    cell_w = 3.3 if with_cam else 1.9
    # The font follows the width the grid would have with a full row, so that a grid of a
    # few images is not drawn with huge captions.
    font = caption_points(max(cols, 4 if with_cam else 6) * cell_w)
    width = text_chars(cell_w, font)  # characters a caption line holds
    names = samples.class_names
    captions = [_sample_caption(names[int(samples.labels[k])], names[int(samples.preds[k])],
                                float(samples.confidences[k]), width) for k in range(n)]
    correct = samples.correct
    title_font = font * 1.2
    heading = ""
    if title:
        # Wrapped to the figure's width: a grid of one or two images is narrower than the title.
        heading = "\n".join(textwrap.wrap(f"{title}  ({int(correct.sum())}/{n} correct)",
                                           width=text_chars(cols * cell_w - 0.2, title_font)))
    lines = max(c.count("\n") + 1 for c in captions)
    layout = GridLayout(
        cols=cols, rows=-(-n // cols), cell_w=cell_w,
        image_in=cell_w / (2.05 if with_cam else 1.0),
        caption_in=line_height_in(font, lines) + CAPTION_PAD_PT / 72,
        title_in=line_height_in(title_font, heading.count("\n") + 1) + 0.05 if heading else 0.0)
    fig = Figure(figsize=layout.size)
    pictures = [_grid_picture(samples, k) for k in range(n)]
    # An image narrower than its box keeps to the box's top left: under its caption.
    rects = [fit_top_left(layout.image_rect(k), p.shape[:2], layout.size)
             for k, p in enumerate(pictures)]
    fig.add_artist(BoxedPictures(pictures, rects))
    for rect, caption, ok in zip(rects, captions, correct):
        _caption_and_frame(fig, rect, caption, bool(ok), font)
    if heading:
        fig.suptitle(heading, fontsize=title_font, y=layout.title_y(), va="top")
    return fig


def _grid_picture(samples: SamplePredictions, k: int) -> np.ndarray:
    """Sample ``k``'s image, with its Grad-CAM overlay beside it when there is one."""
    picture = _rgb(np.asarray(samples.images[k]))
    if samples.cams is None:
        return picture
    overlay = sample_overlay(samples, k)
    gap = np.full((picture.shape[0], max(2, picture.shape[1] // 32), 3), 255, np.uint8)
    return np.concatenate([picture, gap, overlay], axis=1)


def _caption_and_frame(fig: Figure, rect: tuple[float, float, float, float], caption: str,
                       ok: bool, font: float) -> None:
    """A picture's caption above it and, around a mistake, a red frame.

    Placed as an axes title and frame were: the caption's last baseline ``CAPTION_PAD_PT``
    above the picture's left top corner, the frame 4 pt wide centred on its edge, with the
    axes' thin dark edge line over its middle.
    """
    left, bottom, width, height = rect
    color = CORRECT_COLOR if ok else MISTAKE_COLOR
    above = fig.transFigure + ScaledTranslation(0, CAPTION_PAD_PT / 72, fig.dpi_scale_trans)
    fig.text(left, bottom + height, caption, fontsize=font, color=color, ha="left",
             va="baseline", transform=above)
    if not ok:
        for edge, line_width, z in ((MISTAKE_COLOR, 4.0, 1.0), ("black", 0.8, 2.5)):
            fig.add_artist(Rectangle((left, bottom), width, height, transform=fig.transFigure,
                                     fill=False, edgecolor=edge, linewidth=line_width,
                                     zorder=z))


def _sample_caption(true: str, pred: str, confidence: float, width: int) -> str:
    """``true: X`` over ``pred 0.87: Y``, each on two lines at most of ``width`` characters."""
    # Confidence before the name: a long name is cut, never the number.
    pred_text = _caption(f"pred {confidence:.2f}: {pred}", width)
    return f"{_caption(f'true: {true}', width)}\n{pred_text}"


def _caption(text: str, width: int) -> str:
    """``text`` as a display name on two lines at most of about ``width`` characters."""
    # Word wrapping wastes the end of each line: shorten (in the middle) a bit more than 2x.
    short = display_name(text, int(1.8 * width))
    return "\n".join(textwrap.wrap(short, width=width, max_lines=2, placeholder="…"))


def _rgb(image: np.ndarray) -> np.ndarray:
    return np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image[..., :3]


# --------------------------------------------------------------------------- ROC / PR


def roc_figure(
    y_true: ArrayLike,
    p_positive: ArrayLike,
    *,
    positive_name: str = "positive",
    threshold: float | None = None,
    title: str = "",
) -> Figure:
    """ROC and precision-recall curves of a binary problem, side by side.

    The operating point of ``threshold`` (positive iff ``p >= threshold``) is marked on both,
    with its sensitivity and specificity: for a screening task that point matters more than
    the area.

    Args:
        y_true: Binary labels, 1 = positive.
        p_positive: Scores of the positive class.
        positive_name: Name of class 1, for the labels.
        threshold: The decision threshold in use (e.g. chosen on val); None: not marked.
        title: Figure title.
    """
    from wbclf.metrics import pr_points, roc_points

    y = np.asarray(y_true).astype(np.int64)
    p = np.asarray(p_positive, dtype=np.float64)
    fpr, tpr, _ = roc_points(y, p)
    precision, recall, _ = pr_points(y, p)
    name = display_name(positive_name)
    fig = Figure(figsize=(10, 4.6))
    heading, heading_pt = title or f"{name} vs rest (n={len(y)})", 11.0
    # Room above the square axes: the suptitle, a gap, the top y tick label's upper half.
    top = (EDGE_IN + line_height_in(heading_pt) + LABEL_PAD_PT / 72
           + line_height_in(rc_points("ytick.labelsize")) / 2)
    ax_roc, ax_pr = unit_panels(
        fig, ["false positive rate (1 - specificity)", f"recall (sensitivity, {name})"],
        [f"true positive rate (sensitivity, {name})", "precision"], top_in=top, square=True)

    if len(fpr):
        auc = float(np.trapezoid(tpr, fpr)) if hasattr(np, "trapezoid") else float(
            np.trapz(tpr, fpr))
        ax_roc.plot(fpr, tpr, color="#0969da", linewidth=2, label=f"ROC (AUC {auc:.3f})")
    else:
        ax_roc.text(0.5, 0.5, "undefined: one class only", ha="center", va="center")
    ax_roc.plot([0, 1], [0, 1], color="#8c959f", linestyle="--", linewidth=1, label="chance")

    if len(recall):
        # Average precision: precision at each recall step (recall is decreasing here).
        ap = float(-np.sum(np.diff(recall) * precision[:-1]))
        ax_pr.step(recall, precision, where="post", color="#8250df", linewidth=2,
                   label=f"PR (AP {ap:.3f})")
        prevalence = float((y == 1).mean())
        ax_pr.axhline(prevalence, color="#8c959f", linestyle="--", linewidth=1,
                      label=f"prevalence {prevalence:.3f}")
    else:
        ax_pr.text(0.5, 0.5, "undefined: no positives", ha="center", va="center")

    if threshold is not None and len(y):
        pred = p >= threshold
        pos, neg = y == 1, y == 0
        sens = float(pred[pos].mean()) if pos.any() else float("nan")
        spec = float((~pred[neg]).mean()) if neg.any() else float("nan")
        prec = float(pos[pred].mean()) if pred.any() else float("nan")
        label = f"threshold {threshold:.3f}: sens {sens:.3f}, spec {spec:.3f}"
        ax_roc.plot([1 - spec], [sens], "o", color=MISTAKE_COLOR, markersize=8, label=label)
        ax_pr.plot([sens], [prec], "o", color=MISTAKE_COLOR, markersize=8,
                   label=f"threshold {threshold:.3f}: precision {prec:.3f}")
    for ax in (ax_roc, ax_pr):
        ax.set_xlim(-0.01, 1.01)
        ax.set_ylim(-0.01, 1.01)
        ax.set_aspect("equal")
        unit_grid(ax, colors="#eaeef2", linewidths=0.6)
        ax.legend(loc="lower right" if ax is ax_roc else "lower left", fontsize=8)
    fig.suptitle(heading, fontsize=heading_pt, y=1 - EDGE_IN / fig.get_figheight(), va="top")
    return fig


def save_chart_atomic(fig: Figure, path: str | Path, *, dpi: int = 110) -> Path:
    """:func:`save_figure_atomic` for a chart (the confusion matrix, ROC and reliability
    figures: flat colours on white): the same pixels, each PNG row filtered by its difference
    to the row above only.

    zlib level 1 with libpng's adaptive filter choice (what :func:`figure_png` asks for)
    tries five filters on every row; on a chart "up" alone gives files as small (within 3 %,
    often smaller) and encodes 2.5x faster. Photographs (the sample grids) compress worse
    with it, so they keep :func:`save_figure_atomic`. Not a PNG suffix: that function.
    """
    return save_figure_atomic(fig, path, dpi=dpi, chart=True)


# --------------------------------------------------------------------------- saving

PNG_COMPRESS_LEVEL = 1  # zlib 1..9: 1 is the fastest


def save_figure_atomic(fig: Figure, path: str | Path, *, dpi: int = 110,
                       chart: bool = False) -> Path:
    """Render ``fig`` to a temporary file beside ``path``, then rename it over ``path``.

    A reader (or a crash) never sees half a PNG. The format follows the suffix (PNG if none);
    every figure is saved on a white background. PNGs are drawn once by Agg and encoded as
    RGB at zlib's fastest level (:func:`figure_png`; ``chart``: see
    :func:`save_chart_atomic`); other formats go through ``savefig``.
    """
    path = Path(path)
    if is_png(path):
        return write_png(render_bgr(fig, dpi=dpi), path, dpi, chart=chart)
    with replacing(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".").lower(), dpi=dpi, facecolor="white")
    return path


def is_png(path: str | Path) -> bool:
    """Whether :func:`save_figure_atomic` writes ``path`` as a PNG (its suffix, or none)."""
    return Path(path).suffix.lower() in ("", ".png")


def write_png(bgr: np.ndarray, path: str | Path, dpi: float, *, chart: bool = False) -> Path:
    """Encode drawn pixels (:func:`render_bgr`) as ``path``, renamed into place whole."""
    with replacing(path) as tmp:
        tmp.write_bytes(encode_png(bgr, dpi, chart=chart))
    return Path(path)


def figure_png(fig: Figure, *, dpi: int = 110) -> bytes:
    """``fig`` as PNG bytes: the pixels ``savefig(format="png", facecolor="white")`` writes,
    without their alpha channel.

    Faster than ``savefig`` (which figures took most of a cached trial's time in): ``savefig``
    draws a figure with a layout engine twice (once to lay it out, once to render), where
    ``Figure.draw`` lays out and renders in one pass; and OpenCV encodes RGB at zlib level 1
    faster than PIL encodes the RGBA that ``savefig`` hands it. The background is opaque
    white, so the alpha channel is 255 everywhere and dropping it loses nothing.
    """
    return encode_png(render_bgr(fig, dpi=dpi), dpi)


def render_bgr(fig: Figure, *, dpi: int = 110) -> np.ndarray:
    """:func:`render_rgba` as the ``(H, W, 3)`` BGR copy OpenCV encodes (the alpha channel
    of a figure on white is 255 everywhere)."""
    import cv2

    return cv2.cvtColor(render_rgba(fig, dpi=dpi), cv2.COLOR_RGBA2BGR)


def encode_png(bgr: np.ndarray, dpi: float | None, *, chart: bool = False) -> bytes:
    """``bgr`` (or gray, or BGRA) as PNG bytes at zlib's fastest level, the dpi recorded
    unless None; ``chart``: every row filtered "up" (see :func:`save_chart_atomic`). OpenCV
    releases the GIL meanwhile."""
    import cv2

    options = [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESS_LEVEL]
    if chart:
        options += [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_UP]
    ok, png = cv2.imencode(".png", bgr, options)
    if not ok:
        raise RuntimeError("OpenCV could not encode the picture as PNG")
    return png.tobytes() if dpi is None else with_dpi(png.tobytes(), dpi)


def with_dpi(png: bytes, dpi: float) -> bytes:
    """``png`` with its resolution recorded (a ``pHYs`` chunk right after the header), as
    ``savefig`` records it: without one, documents and viewers that size an image by its
    dpi would show it at 72 dpi, half as large again."""
    import struct
    import zlib

    header_end = 8 + 8 + 13 + 4  # signature, then the IHDR chunk: length, type, data, CRC
    per_metre = round(dpi / 0.0254)
    body = b"pHYs" + struct.pack(">IIB", per_metre, per_metre, 1)  # unit 1: the metre
    chunk = struct.pack(">I", 9) + body + struct.pack(">I", zlib.crc32(body))
    return png[:header_end] + chunk + png[header_end:]


def render_rgba(fig: Figure, *, dpi: int = 110) -> np.ndarray:
    """``fig`` drawn once by Agg at ``dpi`` on white: ``(H, W, 4)`` uint8 RGBA.

    The figure's dpi, facecolor and canvas are restored afterwards, as ``savefig`` does.
    """
    from wbclf.tracking.line_text import LineCanvasAgg

    canvas, old_dpi, old_face = fig.canvas, fig.dpi, fig.get_facecolor()
    fig.set_dpi(dpi)
    fig.set_facecolor("white")
    try:
        agg = LineCanvasAgg(fig)  # attaches itself to fig; text drawn a line at a time
        agg.draw()
        # A view, not a copy: it keeps the detached renderer (and its buffer) alive.
        return np.asarray(agg.buffer_rgba())
    finally:
        fig.set_dpi(old_dpi)
        fig.set_facecolor(old_face)
        fig.set_canvas(canvas)
