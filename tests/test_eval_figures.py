"""The evaluation figures (confusion matrix, ROC, reliability) laid out without a layout
engine: the same texts as before, each inside the figure, none over an axes or another."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Text
from matplotlib.transforms import Bbox

from tests.test_loggers import make_evaluation
from wbclf.metrics import confusion_matrix, expected_calibration_error
from wbclf.tracking.figure_layout import UNIT_LABELS, tick_labels
from wbclf.tracking.plots import confusion_matrix_figure, display_name, roc_figure
from wbclf.tracking.reliability import reliability_figure

# The 38 classes of PlantVillage ("New Plant Diseases Dataset"), the longest names we show.
PLANT_VILLAGE = [
    "Apple___Apple_scab", "Apple___Black_rot", "Apple___Cedar_apple_rust", "Apple___healthy",
    "Blueberry___healthy", "Cherry_(including_sour)___Powdery_mildew",
    "Cherry_(including_sour)___healthy", "Corn_(maize)___Cercospora_leaf_spot Gray_leaf_spot",
    "Corn_(maize)___Common_rust_", "Corn_(maize)___Northern_Leaf_Blight",
    "Corn_(maize)___healthy", "Grape___Black_rot", "Grape___Esca_(Black_Measles)",
    "Grape___Leaf_blight_(Isariopsis_Leaf_Spot)", "Grape___healthy",
    "Orange___Haunglongbing_(Citrus_greening)", "Peach___Bacterial_spot", "Peach___healthy",
    "Pepper,_bell___Bacterial_spot", "Pepper,_bell___healthy", "Potato___Early_blight",
    "Potato___Late_blight", "Potato___healthy", "Raspberry___healthy", "Soybean___healthy",
    "Squash___Powdery_mildew", "Strawberry___Leaf_scorch", "Strawberry___healthy",
    "Tomato___Bacterial_spot", "Tomato___Early_blight", "Tomato___Late_blight",
    "Tomato___Leaf_Mold", "Tomato___Septoria_leaf_spot",
    "Tomato___Spider_mites Two-spotted_spider_mite", "Tomato___Target_Spot",
    "Tomato___Tomato_Yellow_Leaf_Curl_Virus", "Tomato___Tomato_mosaic_virus", "Tomato___healthy",
]
LESIONS = ["Benign", "Malignant"]
DPIS = [110, 40]  # the logger's default, and the small dpi tests save at


def _drawn(fig: Figure, dpi: float):
    fig.set_dpi(dpi)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return canvas.get_renderer()


def _off_limits(fig: Figure) -> set[int]:
    """The tick labels matplotlib does not draw: ticks outside their axis's view limits."""
    hidden = set()
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            lo, hi = sorted(axis.get_view_interval())
            eps = (hi - lo) * 1e-9
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                if not lo - eps <= tick.get_loc() <= hi + eps:
                    hidden.update({id(tick.label1), id(tick.label2)})
    return hidden


def _shown(texts, hidden: set[int] = frozenset()) -> list[Text]:
    return [t for t in texts if t.get_visible() and t.get_text() and id(t) not in hidden]


def _box(text: Text, renderer) -> Bbox:
    return text.get_window_extent(renderer)


def _clash(a: Bbox, b: Bbox, tol: float = 0.5) -> bool:
    """Whether two boxes share more than ``tol`` pixels in both directions (touching is fine)."""
    return (min(a.x1, b.x1) - max(a.x0, b.x0) > tol) and (min(a.y1, b.y1) - max(a.y0, b.y0) > tol)


def _inside(box: Bbox, outer: Bbox, tol: float = 0.5) -> bool:
    return (box.x0 >= outer.x0 - tol and box.y0 >= outer.y0 - tol
            and box.x1 <= outer.x1 + tol and box.y1 <= outer.y1 + tol)


def _around(ax: Axes, hidden: set[int]) -> list[Text]:
    """The texts drawn around an axes: tick labels, axis labels, titles."""
    drawn = [t for side in ("bottom", "left", "right") for t in tick_labels(ax, side)]
    return _shown([*ax.get_xticklabels(), *ax.get_yticklabels(), *drawn, ax.xaxis.label,
                   ax.yaxis.label, ax.title, ax._left_title, ax._right_title], hidden)


def assert_fits(fig: Figure, dpi: float) -> None:
    """Every text inside the figure; no text around an axes on any axes or on another such
    text (tick labels of one axis may not overlap each other either)."""
    renderer = _drawn(fig, dpi)
    hidden = _off_limits(fig)
    for text in _shown(fig.findobj(Text), hidden):
        box = _box(text, renderer)
        assert _inside(box, fig.bbox), f"{text.get_text()!r} leaves the figure at {dpi} dpi"
    around = [(ax, t, _box(t, renderer)) for ax in fig.axes for t in _around(ax, hidden)]
    frames = [ax.get_window_extent(renderer) for ax in fig.axes]
    for i, (owner, text, box) in enumerate(around):
        for k, frame in enumerate(frames):
            assert not _clash(box, frame), f"{text.get_text()!r} runs into axes {k} at {dpi} dpi"
        for other_owner, other, other_box in around[i + 1:]:
            assert not _clash(box, other_box), (
                f"{text.get_text()!r} overlaps {other.get_text()!r} at {dpi} dpi")
    suptitle = fig._suptitle
    if suptitle is not None and suptitle.get_text():
        box = _box(suptitle, renderer)
        assert all(not _clash(box, frame) for frame in frames), "suptitle runs into an axes"
        assert all(not _clash(box, b) for *_, b in around), "suptitle overlaps a label"


# --------------------------------------------------------------------------- confusion matrix


def _confusion(names: list[str], n_per_class: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = len(names)
    labels = np.repeat(np.arange(c), n_per_class)
    preds = np.where(rng.uniform(size=labels.size) < 0.8, labels, rng.integers(0, c, labels.size))
    return confusion_matrix(labels, preds, c)


@pytest.mark.parametrize("dpi", DPIS)
@pytest.mark.parametrize("names,per_class", [(LESIONS, 200), (LESIONS, 4000),
                                             (PLANT_VILLAGE, 40), (PLANT_VILLAGE, 1500)],
                         ids=["2", "2-big-counts", "38-long-names", "38-big-counts"])
def test_confusion_matrix_texts_fit(names, per_class, dpi):
    cm = _confusion(names, per_class)
    fig = confusion_matrix_figure(cm, names, title="Confusion matrix (test)")
    assert fig.get_layout_engine() is None  # laid out once, from the text sizes
    assert_fits(fig, dpi)
    image_ax, bar_ax = fig.axes
    # the same texts as before the layout was computed
    total, acc = int(cm.sum()), np.trace(cm) / cm.sum()
    assert image_ax.get_title() == f"Confusion matrix (test)  (n={total}, accuracy {acc:.3f})"
    assert (image_ax.get_xlabel(), image_ax.get_ylabel()) == ("predicted", "true (count)")
    shown = [display_name(n, 48) for n in names]
    assert [t.get_text() for t in tick_labels(image_ax, "bottom")] == shown
    assert [t.get_text() for t in tick_labels(image_ax, "left")] == [
        f"{s} ({int(row)})" for s, row in zip(shown, cm.sum(axis=1))]
    assert bar_ax.get_ylabel() == "fraction of the true class"
    assert tuple(t.get_text() for t in tick_labels(bar_ax, "right")) == UNIT_LABELS
    counts = [t for t in image_ax.texts if t.get_gid() is None]
    assert len(counts) == np.count_nonzero(cm)  # a count in each non-empty cell
    # the image is square (cells are square), the colorbar beside it at most as tall
    renderer = _drawn(fig, dpi)
    image, bar = image_ax.get_window_extent(renderer), bar_ax.get_window_extent(renderer)
    assert image.width == pytest.approx(image.height, abs=1)
    assert bar.x0 > image.x1 and bar.height <= image.height + 1
    assert bar.y0 >= image.y0 - 1 and bar.y1 <= image.y1 + 1


@pytest.mark.parametrize("dpi", [72, 40])
@pytest.mark.parametrize("c", [1, 5, 12])
def test_confusion_matrix_fits_at_small_dpi(c, dpi):
    """Small text is hinted wider than its glyph advances (up to 11 % at 40-72 dpi): the
    margins leave room for that, with the long names rotated (5, 12) or upright (1)."""
    names = [f"{n}_{k}" for k, n in enumerate(PLANT_VILLAGE[:c])]
    assert_fits(confusion_matrix_figure(_confusion(names, 30), names), dpi)
    short = [f"c{k}" for k in range(c)]
    assert_fits(confusion_matrix_figure(_confusion(short, 30), short), dpi)


def test_confusion_matrix_size_follows_the_classes():
    """Figure sizes as chosen before the layout change: they grow with the classes."""
    small = confusion_matrix_figure(_confusion(LESIONS, 10), LESIONS)
    large = confusion_matrix_figure(_confusion(PLANT_VILLAGE, 5), PLANT_VILLAGE)
    assert tuple(small.get_size_inches()) == pytest.approx((6.35, 4.7), abs=0.01)
    assert tuple(large.get_size_inches()) == pytest.approx((14.27, 13.67), abs=0.01)


# --------------------------------------------------------------------------- ROC


def _scores(n: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    return y, np.clip(0.35 * y + 0.65 * rng.uniform(size=n), 0, 1)


@pytest.mark.parametrize("dpi", DPIS)
@pytest.mark.parametrize("name", ["Malignant", "Tomato___Spider_mites Two-spotted_spider_mite"],
                         ids=["short", "long"])
def test_roc_texts_fit(name, dpi):
    y, p = _scores()
    title = f"{name} on test (n={len(y)})"
    fig = roc_figure(y, p, positive_name=name, threshold=0.5, title=title)
    assert fig.get_layout_engine() is None
    assert_fits(fig, dpi)
    assert fig.get_suptitle() == title
    ax_roc, ax_pr = fig.axes
    shown = display_name(name)
    # a long name wraps its axis labels onto more lines; the words stay the same
    assert " ".join(ax_roc.get_ylabel().split()) == f"true positive rate (sensitivity, {shown})"
    assert " ".join(ax_pr.get_xlabel().split()) == f"recall (sensitivity, {shown})"
    assert ax_roc.get_xlabel() == "false positive rate (1 - specificity)"
    assert ax_pr.get_ylabel() == "precision"
    roc_legend = [t.get_text() for t in ax_roc.get_legend().get_texts()]
    pr_legend = [t.get_text() for t in ax_pr.get_legend().get_texts()]
    assert roc_legend[0].startswith("ROC (AUC ") and roc_legend[1] == "chance"
    assert roc_legend[2].startswith("threshold 0.500: sens ")
    assert pr_legend[0].startswith("PR (AP ") and pr_legend[1].startswith("prevalence ")
    for ax in (ax_roc, ax_pr):
        for side in ("bottom", "left"):
            assert tuple(t.get_text() for t in tick_labels(ax, side)) == UNIT_LABELS
    renderer = _drawn(fig, dpi)
    for ax in (ax_roc, ax_pr):  # equal aspect: square axes
        box = ax.get_window_extent(renderer)
        assert box.width == pytest.approx(box.height, abs=1)


# --------------------------------------------------------------------------- reliability


@pytest.mark.parametrize("dpi", DPIS)
@pytest.mark.parametrize("splits", [["val"], ["val", "test"]], ids=["val", "val+test"])
@pytest.mark.parametrize("names", [LESIONS, PLANT_VILLAGE], ids=["2", "38"])
def test_reliability_has_a_panel_per_evaluation_and_fits(names, splits, dpi):
    evaluations = [make_evaluation(s, names, n=400, seed=k) for k, s in enumerate(splits)]
    fig = reliability_figure(evaluations)
    assert fig.get_layout_engine() is None
    assert tuple(fig.get_size_inches()) == pytest.approx((4.6 * len(splits), 4.4))
    assert_fits(fig, dpi)
    assert len(fig.axes) == len(splits)
    for ax, ev in zip(fig.axes, evaluations):
        ece = expected_calibration_error(ev.labels, ev.probs)
        assert ax.get_title() == f"{ev.split}: ECE {ece:.3f} (n=400)"
        assert (ax.get_xlabel(), ax.get_ylabel()) == ("confidence (top probability)", "accuracy")
        legend = [t.get_text() for t in ax.get_legend().get_texts()]
        assert legend == ["perfect calibration", "mean confidence (size: images)",
                          "accuracy in bin"]
        for side in ("bottom", "left"):
            assert tuple(t.get_text() for t in tick_labels(ax, side)) == UNIT_LABELS


# --------------------------------------------------------------------------- saving


def _png_rows(data: bytes) -> tuple[int, int, bytes]:
    """``(width, height, inflated IDAT)`` of an 8-bit RGB PNG."""
    import struct
    import zlib

    at, idat, size = 8, b"", (0, 0)
    while at < len(data):
        length, kind = struct.unpack(">I4s", data[at:at + 8])
        body = data[at + 8:at + 8 + length]
        if kind == b"IHDR":
            size = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        at += 12 + length
    return size[0], size[1], zlib.decompress(idat)


def test_charts_are_written_with_the_up_filter(tmp_path):
    """Every row of a chart's PNG is filtered by "up" (type 2), at zlib's fastest level; the
    dpi is recorded; other formats go through savefig."""
    from PIL import Image

    from wbclf.tracking.plots import save_chart_atomic

    fig = reliability_figure([make_evaluation("val", LESIONS, n=100)])
    path = save_chart_atomic(fig, tmp_path / "reliability.png", dpi=40)
    width, height, raw = _png_rows(path.read_bytes())
    stride = 1 + 3 * width
    assert len(raw) == stride * height
    assert {raw[row * stride] for row in range(height)} == {2}
    assert Image.open(path).info["dpi"] == pytest.approx((40, 40), abs=0.01)
    svg = save_chart_atomic(fig, tmp_path / "reliability.svg", dpi=40)
    assert svg.read_bytes().startswith(b"<?xml")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reliability.png", "reliability.svg"]
