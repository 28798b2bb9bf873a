#!/usr/bin/env python
"""What a run's end-of-training figures cost: the sample grids, the PNG encoders, and the
run-directory logger's whole evaluation sequence (best of ``--repeat``, seconds).

* ``grids``: ``samples_grid`` + ``save_figure_atomic`` of 32 samples with Grad-CAM and 16
  without (96 px images, plant-disease class names), build and save timed apart.
* ``encoders``: the 32-sample grid drawn once by Agg, then encoded by PIL (RGBA, as
  ``fig.savefig`` does) and by OpenCV (RGB), at zlib level 1; ``savefig`` in full beside them.
* ``logger``: ``LocalRunLogger`` log_evaluation(val), log_evaluation(test) (binary, 400
  images each), log_samples(best_samples, 32 with Grad-CAM), log_mistakes(16), finish.
* ``eval_38``: log_evaluation(val), log_evaluation(test) alone for 38 classes with long
  plant-disease names (1520 images each, 40 per class).

The images are smooth synthetic pictures (blobs plus a little noise) rather than pure noise,
which would make PNG compression look slower than on photographs.

    python scripts/bench_figures.py [--repeat 3] [--json]
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wbclf.config import build_config  # noqa: E402
from wbclf.tracking.loggers import LocalRunLogger  # noqa: E402
from wbclf.tracking.plots import samples_grid, save_figure_atomic  # noqa: E402
from wbclf.tracking.records import Evaluation, SamplePredictions  # noqa: E402

PLANT = ["Apple___Apple_scab", "Corn_(maize)___Northern_Leaf_Blight",
         "Tomato___Spider_mites Two-spotted_spider_mite", "Grape___healthy"]
LESIONS = ["Benign", "Malignant"]
# 38 classes with names as long as PlantVillage's (the confusion matrix's largest case).
PLANT_38 = [f"{name}_{k}" for k in range(10) for name in PLANT][:38]
DPI = 110  # LocalRunLogger's default


def smooth_images(n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """``(n, size, size, 3)`` uint8: a few coloured Gaussian blobs plus mild noise."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = np.empty((n, size, size, 3), np.float32)
    for i in range(n):
        img = np.full((size, size, 3), rng.uniform(60, 200, 3), np.float32)
        for _ in range(4):
            cy, cx, r = rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.9), rng.uniform(0.08, 0.3)
            blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
            img += blob[..., None] * rng.uniform(-90, 90, 3)
        out[i] = img + rng.normal(0, 4, img.shape)
    return np.clip(out, 0, 255).astype(np.uint8)


def make_samples(n: int, cams: bool, names: list[str], seed: int = 0) -> SamplePredictions:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % len(names)
    preds = labels.copy()
    preds[::3] = (preds[::3] + 1) % len(names)
    return SamplePredictions(
        images=smooth_images(n, 96, rng), labels=labels, preds=preds,
        confidences=rng.uniform(0.3, 1.0, n), class_names=list(names),
        paths=[f"img{i}.jpg" for i in range(n)],
        cams=rng.uniform(0, 1, (n, 12, 12)) if cams else None)


def make_evaluation(split: str, n: int = 400, seed: int = 0,
                    names: list[str] | None = None) -> Evaluation:
    names = list(names or LESIONS)
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % len(names)
    logits = rng.normal(size=(n, len(names)))
    logits[np.arange(n), labels] += 1.5 if len(names) == 2 else 4.0
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return Evaluation(split=split, labels=labels, probs=probs, loss=0.5, metrics={"acc": 0.8},
                      class_names=names, threshold=0.5 if len(names) == 2 else None)


def best_of(repeat: int, fn: Callable[[], dict[str, float]]) -> dict[str, float]:
    """Each timing's minimum over ``repeat`` calls of ``fn`` (which returns named timings)."""
    runs = [fn() for _ in range(repeat)]
    return {key: round(min(r[key] for r in runs), 4) for key in runs[0]}


def time_grid(samples: SamplePredictions, out: Path) -> dict[str, float]:
    t0 = time.perf_counter()
    fig = samples_grid(samples, title="Best model (epoch 5): sample predictions")
    t1 = time.perf_counter()
    save_figure_atomic(fig, out, dpi=DPI)
    t2 = time.perf_counter()
    return {"build_s": t1 - t0, "save_s": t2 - t1, "total_s": t2 - t0}


def time_encoders(samples: SamplePredictions) -> dict[str, float]:
    import cv2
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from PIL import Image

    fig = samples_grid(samples, title="Best model (epoch 5): sample predictions")
    fig.set_layout_engine("none")  # time the encoders, not the layout
    t0 = time.perf_counter()
    fig.savefig(io.BytesIO(), format="png", dpi=DPI, facecolor="white",
                pil_kwargs={"compress_level": 1})
    t1 = time.perf_counter()
    fig.set_dpi(DPI)
    fig.set_facecolor("white")
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())
    t2 = time.perf_counter()
    Image.fromarray(rgba).save(io.BytesIO(), format="png", compress_level=1)
    t3 = time.perf_counter()
    Image.fromarray(np.ascontiguousarray(rgba[..., :3])).save(io.BytesIO(), format="png",
                                                              compress_level=1)
    t4 = time.perf_counter()
    bgr = cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGR)
    cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    t5 = time.perf_counter()
    return {"savefig_pil_s": t1 - t0, "agg_draw_s": t2 - t1, "pil_rgba_s": t3 - t2,
            "pil_rgb_s": t4 - t3, "cv2_rgb_s": t5 - t4, "pixels": float(rgba.shape[0]
                                                                       * rgba.shape[1])}


def time_logger(root: Path) -> dict[str, float]:
    cfg = build_config({"data_dir": str(root / "data")})
    logger = LocalRunLogger(dpi=DPI)
    logger.start(cfg=cfg, run_dir=root / f"run{time.perf_counter_ns()}",
                 class_names=list(LESIONS), resume=False, start_epoch=1)
    val, test = make_evaluation("val"), make_evaluation("test", seed=1)
    best, mistakes = make_samples(32, True, LESIONS), make_samples(16, False, LESIONS, seed=1)
    marks = [("start", time.perf_counter())]
    logger.log_evaluation(val)
    marks.append(("eval_val_s", time.perf_counter()))
    logger.log_evaluation(test)
    marks.append(("eval_test_s", time.perf_counter()))
    logger.log_samples(5, best, "best_samples")
    marks.append(("samples_s", time.perf_counter()))
    logger.log_mistakes(mistakes)
    marks.append(("mistakes_s", time.perf_counter()))
    logger.finish("finished")
    marks.append(("finish_s", time.perf_counter()))
    timings = {name: t - marks[i][1] for i, (name, t) in enumerate(marks[1:])}
    timings["total_s"] = marks[-1][1] - marks[0][1]
    return timings


def time_evaluations(root: Path, names: list[str], n: int) -> dict[str, float]:
    """``LocalRunLogger`` log_evaluation(val), log_evaluation(test) alone, ``n`` images each."""
    cfg = build_config({"data_dir": str(root / "data")})
    logger = LocalRunLogger(dpi=DPI)
    logger.start(cfg=cfg, run_dir=root / f"run{time.perf_counter_ns()}", class_names=names,
                 resume=False, start_epoch=1)
    val, test = make_evaluation("val", n, names=names), make_evaluation("test", n, 1, names)
    t0 = time.perf_counter()
    logger.log_evaluation(val)
    t1 = time.perf_counter()
    logger.log_evaluation(test)
    t2 = time.perf_counter()
    return {"eval_val_s": t1 - t0, "eval_test_s": t2 - t1, "total_s": t2 - t0}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cam32, plain16 = make_samples(32, True, PLANT), make_samples(16, False, PLANT, seed=1)
        time_grid(cam32, root / "warm.png")  # imports, font cache
        result = {
            "grid_32_cam": best_of(args.repeat, lambda: time_grid(cam32, root / "a.png")),
            "grid_16_plain": best_of(args.repeat, lambda: time_grid(plain16, root / "b.png")),
            "encoders_32_cam": best_of(args.repeat, lambda: time_encoders(cam32)),
            "logger_sequence": best_of(args.repeat, lambda: time_logger(root)),
            "eval_38": best_of(args.repeat, lambda: time_evaluations(root, PLANT_38, 1520)),
        }
    if args.json:
        print(json.dumps(result))
    else:
        for case, timings in result.items():
            print(f"{case:16s} " + "  ".join(f"{k} {v:g}" for k, v in timings.items()))
    return result


if __name__ == "__main__":
    main()
