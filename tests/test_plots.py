"""Sample grids laid out by hand (no constrained layout) and figures saved as PNG."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.text import Text
from matplotlib.transforms import Bbox

from tests.test_loggers import make_samples
from wbclf.tracking.plots import MISTAKE_COLOR, samples_grid

PLANT = ["Apple___Apple_scab", "Corn_(maize)___Northern_Leaf_Blight",
         "Tomato___Spider_mites Two-spotted_spider_mite", "Grape___healthy"]
# Only the long names: every caption gets its largest number of lines.
LONG = ["Corn_(maize)___Northern_Leaf_Blight", "Tomato___Spider_mites Two-spotted_spider_mite"]
FRAME_PT = 2.0  # half the red frame's width: how far it reaches beyond an image


def _draw(fig: Figure, dpi: float) -> FigureCanvasAgg:
    fig.set_dpi(dpi)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return canvas


def _inside(box: Bbox, outer: Bbox, tol: float = 0.5) -> bool:
    return (box.x0 >= outer.x0 - tol and box.y0 >= outer.y0 - tol
            and box.x1 <= outer.x1 + tol and box.y1 <= outer.y1 + tol)


@pytest.mark.parametrize("names", [PLANT, LONG], ids=["plant", "long"])
@pytest.mark.parametrize("cams", [True, False], ids=["cam", "plain"])
@pytest.mark.parametrize("n", [1, 5, 16, 32])
def test_captions_and_title_fit_between_the_images(n, cams, names):
    fig = samples_grid(make_samples(names, n=n, size=96, cams=cams),
                       title="Best model (epoch 12): sample predictions")
    assert fig.get_layout_engine() is None  # drawn once when saved
    dpi = 110
    renderer = _draw(fig, dpi).get_renderer()
    frame = FRAME_PT * dpi / 72
    images = [ax.images[0].get_window_extent(renderer).padded(frame) for ax in fig.axes]
    texts = [t for t in fig.findobj(Text) if t.get_text()]
    captions = [t.get_window_extent(renderer) for t in texts if t.get_text().startswith("true: ")]
    titles = [t.get_window_extent(renderer) for t in texts if "correct)" in t.get_text()]
    assert len(images) == len(captions) == n and len(titles) == 1
    for i, box in enumerate(captions + titles):
        assert _inside(box, fig.bbox), f"text {i} leaves the figure: {box} not in {fig.bbox}"
        for j, image in enumerate(images):
            assert not box.overlaps(image), f"text {i} runs into image {j}"
        for j, other in enumerate(captions + titles):
            assert j == i or not box.overlaps(other), f"texts {i} and {j} overlap"
    for image in images:
        assert _inside(image, fig.bbox, tol=frame)


def test_grid_rows_columns_and_frames():
    samples = make_samples(PLANT, n=5, size=32, cams=True)
    fig = samples_grid(samples, title="t")
    lefts = {round(ax.get_position().x0, 6) for ax in fig.axes}
    tops = {round(ax.get_position().y1, 6) for ax in fig.axes}
    assert (len(fig.axes), len(lefts), len(tops)) == (5, 4, 2)  # 4 columns with Grad-CAM
    assert fig.get_suptitle() == f"t  ({int(samples.correct.sum())}/5 correct)"
    for ax, ok in zip(fig.axes, samples.correct):
        frames = [p for p in ax.patches if isinstance(p, Rectangle)
                  and p.get_edgecolor()[:3] == pytest.approx((0xd1 / 255, 0x24 / 255, 0x2f / 255))]
        assert len(frames) == (0 if ok else 1)
        assert ax.get_title(loc="left").startswith("true: ")
        assert ax.images[0].get_array().shape[1] > ax.images[0].get_array().shape[0]  # CAM beside
    assert MISTAKE_COLOR == "#d1242f"
    plain = samples_grid(make_samples(PLANT, n=13, size=32))
    assert len({round(ax.get_position().x0, 6) for ax in plain.axes}) == 6  # 6 without
    assert len({round(ax.get_position().y1, 6) for ax in plain.axes}) == 3
    assert plain.get_suptitle() == ""


def test_empty_grid_says_none():
    fig = samples_grid(make_samples(PLANT, n=0), title="Worst mistakes")
    assert [t.get_text() for t in fig.texts] == ["Worst mistakes: none"]
    assert fig.axes == []


# --------------------------------------------------------------------------- saving


def _grid_and_curves() -> list[Figure]:
    """A sample grid, a confusion matrix and a reliability diagram (all laid out by hand)."""
    from tests.test_loggers import make_evaluation
    from wbclf.tracking.plots import confusion_matrix_figure
    from wbclf.tracking.reliability import reliability_figure

    names = ["Benign", "Malignant"]
    evaluations = [make_evaluation("val", names), make_evaluation("test", names, seed=1)]
    return [samples_grid(make_samples(PLANT, n=7, size=48, cams=True), title="Best model"),
            confusion_matrix_figure(np.array([[50, 3], [7, 40]]), names),
            reliability_figure(evaluations)]


@pytest.mark.parametrize("saver", ["save_figure_atomic", "save_chart_atomic"])
@pytest.mark.parametrize("dpi", [110, 40])
def test_png_has_the_pixels_savefig_writes(tmp_path, dpi, saver):
    """One Agg draw and OpenCV's encoder: savefig's pixels exactly, RGB instead of RGBA
    (charts filtered differently, the same pixels)."""
    import io

    from PIL import Image

    from wbclf.tracking import plots

    for k, (ours, theirs) in enumerate(zip(_grid_and_curves(), _grid_and_curves())):
        path = getattr(plots, saver)(ours, tmp_path / f"{k}.png", dpi=dpi)
        buf = io.BytesIO()
        theirs.savefig(buf, format="png", dpi=dpi, facecolor="white",
                       pil_kwargs={"compress_level": 1})
        written, reference = Image.open(path), Image.open(buf)
        # the resolution is recorded as savefig records it (documents size images by it)
        assert written.info["dpi"] == pytest.approx(reference.info["dpi"], abs=0.01), k
        new, old = np.asarray(written), np.asarray(reference)
        assert new.shape == (*old.shape[:2], 3), k
        assert (old[..., 3] == 255).all(), k  # opaque: the alpha channel says nothing
        assert np.array_equal(new, old[..., :3]), f"figure {k}: pixels differ"


def test_saving_leaves_the_figure_as_it_was(tmp_path):
    from wbclf.tracking.plots import save_figure_atomic

    fig = _grid_and_curves()[1]
    fig.set_facecolor("#eeeeee")
    before = (fig.dpi, fig.get_facecolor(), fig.canvas, fig.get_layout_engine())
    save_figure_atomic(fig, tmp_path / "a.png", dpi=40)
    assert (fig.dpi, fig.get_facecolor(), fig.canvas, fig.get_layout_engine()) == before
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]  # no temporary file left


@pytest.mark.parametrize("suffix,magic", [(".pdf", b"%PDF"), (".svg", b"<?xml"),
                                          (".jpg", b"\xff\xd8\xff"), ("", b"\x89PNG")])
def test_other_formats_follow_the_suffix(tmp_path, suffix, magic):
    from wbclf.tracking.plots import save_figure_atomic

    path = save_figure_atomic(_grid_and_curves()[1], tmp_path / f"cm{suffix}", dpi=40)
    assert path.read_bytes().startswith(magic)
