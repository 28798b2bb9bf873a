"""Sample-prediction grids (samples.png, mistakes.png, the report's best-run grid) have
captions that can be read at the HTML report's page width."""

from __future__ import annotations

import io
import re

import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.text import Text
from PIL import Image

from tests.test_loggers import make_samples
from wbclf.reporting.document import MAX_IMAGE_WIDTH
from wbclf.tracking.plots import samples_grid

PAGE_PX = 1124  # the HTML report's text column: max-width 1180 px less 2 x 28 px padding
MIN_CAPTION_PX = 11.5  # smallest caption height we call readable on a screen
SAVE_DPI = 110  # what the run-directory logger saves samples.png at
PLANT = ["Apple___Apple_scab", "Corn_(maize)___Northern_Leaf_Blight",
         "Tomato___Spider_mites Two-spotted_spider_mite", "Grape___healthy"]


def _shown_width(png_width: int) -> float:
    """The width a PNG gets in the report: scaled to MAX_IMAGE_WIDTH, then to the page."""
    return min(png_width, MAX_IMAGE_WIDTH, PAGE_PX)


@pytest.mark.parametrize("names,cams,n", [(["benign", "malignant"], True, 32),
                                          (PLANT, True, 32), (PLANT, False, 32),
                                          (["benign", "malignant"], True, 16)])
def test_captions_are_readable_at_page_width(names, cams, n):
    fig = samples_grid(make_samples(names, n=n, size=64, cams=cams), title="Best model")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=SAVE_DPI, facecolor="white")
    with Image.open(io.BytesIO(buf.getvalue())) as png:
        width = png.width
    scale = _shown_width(width) / width
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    boxes = []
    captions = [t for t in fig.findobj(Text) if t.get_text().startswith("true: ")]
    for title in captions:
        shown_px = title.get_fontsize() / 72 * SAVE_DPI * scale
        assert shown_px >= MIN_CAPTION_PX, f"caption {shown_px:.1f} px tall at page width"
        # true class, predicted class and confidence are all in the caption
        assert re.search(r"\npred [01]\.\d\d: ", title.get_text())
        boxes.append(title.get_window_extent(renderer))
    assert len(boxes) == n
    # captions stay inside the figure and never run into each other
    fig_box = fig.bbox
    for i, a in enumerate(boxes):
        assert a.x0 >= fig_box.x0 - 1 and a.x1 <= fig_box.x1 + 1
        for b in boxes[i + 1:]:
            assert not a.overlaps(b), "two captions overlap"
