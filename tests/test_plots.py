"""Sample grids laid out by hand (no constrained layout) and figures saved as PNG."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Text
from matplotlib.transforms import Bbox

from tests.test_loggers import make_samples
from wbclf.tracking.grid_pictures import BoxedPictures
from wbclf.tracking.plots import MISTAKE_COLOR, samples_grid
from wbclf.tracking.records import SamplePredictions

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


def _pictures(fig: Figure) -> BoxedPictures:
    """The one artist that draws a grid's pictures (a grid has no axes)."""
    found = [a for a in fig.get_children() if isinstance(a, BoxedPictures)]
    assert len(found) == 1 and fig.axes == []
    return found[0]


def _picture_boxes(fig: Figure, renderer) -> list[Bbox]:
    """Each picture's box in display pixels, as drawn."""
    return [Bbox.from_extents(*box) for box in _pictures(fig).pixel_boxes(renderer)]


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
    images = [box.padded(frame) for box in _picture_boxes(fig, renderer)]
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
    # each caption sits above its own picture, starting at its left edge
    for caption, image in zip(captions, images):
        assert caption.x0 == pytest.approx(image.x0 + frame, abs=1.5)
        assert image.y1 < caption.y0 < image.y1 + 2 * frame


def _png(fig: Figure, dpi: int) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """``fig`` saved as PNG at ``dpi``, read back; its picture boxes as ``(left, top, right,
    bottom)`` rows and columns of that PNG."""
    import io

    from PIL import Image

    from wbclf.tracking.plots import figure_png

    pixels = np.asarray(Image.open(io.BytesIO(figure_png(fig, dpi=dpi))).convert("RGB"))
    renderer = _draw(fig, dpi).get_renderer()
    height = pixels.shape[0]
    boxes = [(x0, height - y1, x1, height - y0)
             for x0, y0, x1, y1 in _pictures(fig).pixel_boxes(renderer)]
    return pixels.astype(np.int16), boxes


def _framed(pixels: np.ndarray, box: tuple[int, int, int, int], dpi: int) -> bool | None:
    """True: a red frame all round ``box`` (every pixel along each side has a red pixel
    within a frame's reach outside it); False: only white there; None: something else."""
    left, top, right, bottom = box
    reach = int(np.ceil(FRAME_PT * dpi / 72))
    bands = [pixels[max(0, top - reach):top, left:right], pixels[bottom:bottom + reach, left:right],
             pixels[top:bottom, max(0, left - reach):left].transpose(1, 0, 2),
             pixels[top:bottom, right:right + reach].transpose(1, 0, 2)]
    red = np.array([0xd1, 0x24, 0x2f])
    if all((np.abs(band - red).max(axis=2) <= 2).any(axis=0).all() for band in bands):
        return True
    return False if all((band == 255).all() for band in bands) else None


def test_grid_rows_columns_and_frames():
    samples = make_samples(PLANT, n=5, size=32, cams=True)
    fig = samples_grid(samples, title="t")
    rects = _pictures(fig).rects
    lefts = {round(r[0], 6) for r in rects}
    tops = {round(r[1] + r[3], 6) for r in rects}
    assert (len(rects), len(lefts), len(tops)) == (5, 4, 2)  # 4 columns with Grad-CAM
    assert fig.get_suptitle() == f"t  ({int(samples.correct.sum())}/5 correct)"
    captions = [t.get_text() for t in fig.texts if t.get_text().startswith("true: ")]
    assert len(captions) == 5
    assert all(p.shape[1] > p.shape[0] for p in _pictures(fig).pictures)  # Grad-CAM beside
    assert MISTAKE_COLOR == "#d1242f"
    pixels, boxes = _png(fig, 110)
    assert [_framed(pixels, box, 110) for box in boxes] == list(~samples.correct)
    plain = samples_grid(make_samples(PLANT, n=13, size=32))
    assert len({round(r[0], 6) for r in _pictures(plain).rects}) == 6  # 6 without
    assert len({round(r[1] + r[3], 6) for r in _pictures(plain).rects}) == 3
    assert plain.get_suptitle() == ""


def smooth_samples(n: int, cams: bool, size: int = 40) -> SamplePredictions:
    """Samples whose pictures are smooth colour ramps, each with its own colours: any
    antialiased resampling of them agrees to a few levels, and no two look alike."""
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1)
    # per sample: the colour at the top left, and how much it changes across and down
    start, across, down = (c[:, None, None, :] for c in rng.uniform(20, 235, (3, n, 3)))
    images = start + (across - start) * xx[..., None] + (down - start) * yy[..., None] * 0.5
    labels = np.arange(n) % len(PLANT)
    preds = labels.copy()
    preds[::3] = (preds[::3] + 1) % len(PLANT)
    return SamplePredictions(
        images=np.clip(images, 0, 255).astype(np.uint8), labels=labels, preds=preds,
        confidences=rng.uniform(0.3, 1.0, n), class_names=list(PLANT),
        cams=np.broadcast_to(xx * yy, (n, size, size)).copy() if cams else None)


def _expected(samples: SamplePredictions, k: int, width: int, height: int) -> np.ndarray:
    """Sample ``k`` as the grid shows it (image, gap, Grad-CAM overlay), resized by PIL's
    bilinear filter rather than the grid's own."""
    from PIL import Image

    from wbclf.tracking.plots import cam_overlay

    picture = samples.images[k]
    if samples.cams is not None:
        gap = np.full((picture.shape[0], max(2, picture.shape[1] // 32), 3), 255, np.uint8)
        picture = np.concatenate([picture, gap, cam_overlay(picture, samples.cams[k])], axis=1)
    return np.asarray(Image.fromarray(picture).resize((width, height), Image.BILINEAR),
                      dtype=np.int16)


@pytest.mark.parametrize("dpi", [110, 220])
@pytest.mark.parametrize("cams", [True, False], ids=["cam", "plain"])
def test_the_pictures_are_in_their_boxes_and_mistakes_framed_red(dpi, cams):
    samples = smooth_samples(7, cams)
    fig = samples_grid(samples, title="Best model")
    pixels, boxes = _png(fig, dpi)
    frame = int(np.ceil(2 * dpi / 72))  # the part of a frame that lies over the picture
    others = []
    for k, ((left, top, right, bottom), ok) in enumerate(zip(boxes, samples.correct)):
        shown = pixels[top:bottom, left:right]
        want = _expected(samples, k, right - left, bottom - top)
        inner = slice(frame, -frame) if not ok else slice(None)
        diff = np.abs(shown[inner, inner] - want[inner, inner])
        # Two antialiased filters agree on smooth ramps to a level or two; they differ only
        # along the white gap's sharp edges. Another sample's picture is ~40 levels off.
        assert diff.mean() < 3 and (diff > 20).mean() < 0.02, f"picture {k} is not in its box"
        other = _expected(samples, (k + 1) % 7, right - left, bottom - top)
        others.append(np.abs(shown[inner, inner] - other[inner, inner]).mean())
        assert _framed(pixels, (left, top, right, bottom), dpi) == (not ok), k
    assert min(others) > 10  # the comparison tells pictures apart
    # the size in pixels follows the dpi (a 40 px picture is not pasted at its own size),
    # the picture keeps its aspect ratio and fills its box's width
    width = boxes[0][2] - boxes[0][0]
    height = boxes[0][3] - boxes[0][1]
    cell_w, aspect = (3.3, (2 * 40 + 2) / 40) if cams else (1.9, 1.0)
    assert width == pytest.approx((cell_w - 0.08) * dpi, abs=1)
    assert width / height == pytest.approx(aspect, abs=0.02)


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
    """One Agg draw and OpenCV's encoder: savefig's pixels exactly (savefig on the same
    line-at-a-time canvas, see test_line_text), RGB instead of RGBA (charts filtered
    differently, the same pixels)."""
    import io

    from PIL import Image

    from wbclf.tracking import plots
    from wbclf.tracking.line_text import LineCanvasAgg

    for k, (ours, theirs) in enumerate(zip(_grid_and_curves(), _grid_and_curves())):
        path = getattr(plots, saver)(ours, tmp_path / f"{k}.png", dpi=dpi)
        LineCanvasAgg(theirs)  # savefig prints with the figure's canvas
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


@pytest.mark.parametrize("dpi", [40, 110])
def test_grid_as_svg_and_pdf_embeds_its_pictures_at_the_save_dpi(tmp_path, dpi):
    """Vector formats get each picture as an image resampled at the dpi savefig was given."""
    import base64
    import io
    import re

    from PIL import Image

    from wbclf.tracking.plots import save_figure_atomic

    samples = make_samples(PLANT, n=3, size=32, cams=True)
    svg = save_figure_atomic(samples_grid(samples, title="t"), tmp_path / "g.svg", dpi=dpi)
    embedded = re.findall(r'<image xlink:href="data:image/png;base64,([^"]+)"', svg.read_text())
    assert len(embedded) == 3
    for data in embedded:
        with Image.open(io.BytesIO(base64.b64decode(data))) as picture:
            assert picture.width == pytest.approx((3.3 - 0.08) * dpi, abs=1.5)
    pdf = save_figure_atomic(samples_grid(samples, title="t"), tmp_path / "g.pdf", dpi=dpi)
    assert pdf.read_bytes().startswith(b"%PDF")
    assert pdf.read_bytes().count(b"/Subtype /Image") == 3
