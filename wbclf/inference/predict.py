"""``wbclf predict``: classify image files and folders with a trained run.

Images get exactly the run's evaluation preprocessing (decode, short side to ``image_size``,
centre crop, the run's mean/std), and a two-class run applies the decision threshold it chose
on val. So on the run's own test folder the accuracy printed equals its ``test/acc``.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from wbclf.atomic import replacing, write_bytes_atomic
from wbclf.data.cache import load_image
from wbclf.data.integrity import check_image_file
from wbclf.data.layouts import IMAGE_EXTENSIONS
from wbclf.errors import UserError
from wbclf.inference.model import LoadedModel, batched, load_run_model

CAM_DISPLAY_SIZE = 256  # overlays are drawn at least this large, whatever the model's input
CAPTION_HEIGHT = 28


class PredictUsageError(UserError):
    """A bad ``wbclf predict`` argument (one line, exit 2)."""


@dataclass
class Prediction:
    """What the model said about one readable image."""

    path: str
    probs: np.ndarray  # (C,)
    pred: int
    true: int | None = None  # from a parent folder named after a class


@dataclass
class PredictionResult:
    """Predictions for every readable input and the reasons the others were skipped."""

    class_names: list[str]
    predictions: list[Prediction] = field(default_factory=list)
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    threshold: float | None = None
    seconds: float = 0.0

    @property
    def labelled(self) -> list[Prediction]:
        return [p for p in self.predictions if p.true is not None]

    @property
    def accuracy(self) -> float | None:
        known = self.labelled
        return sum(p.pred == p.true for p in known) / len(known) if known else None


# --------------------------------------------------------------------------- inputs


def _is_hidden(name: str) -> bool:
    return name.startswith(".") or name.startswith("__MACOSX")


def collect_images(inputs: Sequence[str | os.PathLike]) -> list[str]:
    """Image files named by ``inputs``: files as given, folders searched recursively.

    Folders contribute files with an image extension (hidden files and folders skipped), in
    sorted order; a file named explicitly is kept whatever its extension, so that a mislabelled
    file is reported as unreadable rather than silently ignored. Duplicates are dropped.

    Raises:
        FileNotFoundError: An input does not exist (a typo, not an unreadable image).
    """
    found: list[str] = []
    for item in inputs:
        path = Path(item)
        if path.is_file():
            found.append(str(path))
        elif path.is_dir():
            for folder, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not _is_hidden(d))
                found.extend(os.path.join(folder, name) for name in sorted(files)
                             if not _is_hidden(name)
                             and Path(name).suffix.lower() in IMAGE_EXTENSIONS)
        else:
            raise FileNotFoundError(f"no such file or folder: '{item}'")
    seen: set[str] = set()
    unique = []
    for name in found:
        key = os.path.abspath(name)
        if key not in seen:
            seen.add(key)
            unique.append(name)
    return unique


def label_from_path(path: str, class_names: Sequence[str]) -> int | None:
    """The class of ``path`` when its parent folder is named exactly like a class."""
    parent = Path(path).parent.name
    try:
        return list(class_names).index(parent)
    except ValueError:
        return None


def read_image(path: str, size: int) -> tuple[np.ndarray | None, str]:
    """The image as the run's evaluation saw it, or (None, why it cannot be used)."""
    problem = check_image_file(path)  # the same cheap checks that indexed the run's data
    if problem:
        return None, problem
    image = load_image(path, size)
    return (image, "") if image is not None else (None, "could not be decoded")


def _decoded_batches(paths: Sequence[str], size: int, batch_size: int, workers: int
                     ) -> Iterator[list[tuple[str, np.ndarray | None, str]]]:
    """Decoded batches in order; the next batch decodes (OpenCV frees the GIL) while the
    current one runs through the model."""
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        def submit(chunk: Sequence[str]) -> list[tuple[str, Future]]:
            return [(p, pool.submit(read_image, p, size)) for p in chunk]

        chunks = list(batched(paths, batch_size))
        pending = submit(chunks[0]) if chunks else []
        for k in range(len(chunks)):
            current = pending
            pending = submit(chunks[k + 1]) if k + 1 < len(chunks) else []
            yield [(p, *fut.result()) for p, fut in current]


# --------------------------------------------------------------------------- prediction


def predict_paths(loaded: LoadedModel, paths: Sequence[str], *, batch_size: int = 64,
                  tta: bool = False, cam_dir: str | os.PathLike | None = None,
                  progress: bool | None = None, workers: int | None = None
                  ) -> PredictionResult:
    """Predict every file in ``paths`` (unreadable ones are recorded, not fatal).

    Args:
        loaded: The run's model (from :func:`wbclf.inference.model.load_run_model`).
        paths: Image files.
        batch_size: Images per forward pass.
        tta: Average over flips (see :data:`wbclf.inference.model.TTA_FLIPS`).
        cam_dir: Write a Grad-CAM overlay of the predicted class for each image here.
        progress: Show a progress bar (default: when stderr is a terminal).
        workers: Decoding threads (default: the CPU count, at most 8).
    """
    from tqdm.auto import tqdm

    start = time.perf_counter()
    result = PredictionResult(class_names=loaded.class_names, threshold=loaded.threshold)
    show = sys.stderr.isatty() if progress is None else progress
    workers = workers or min(8, os.cpu_count() or 1)
    cam_base = _common_folder(paths) if cam_dir is not None else None
    bar = tqdm(total=len(paths), desc="predicting", unit="img", disable=not show,
               dynamic_ncols=True, leave=False)
    try:
        for batch in _decoded_batches(paths, loaded.image_size, batch_size, workers):
            good = [(p, img) for p, img, _ in batch if img is not None]
            result.unreadable.extend((p, why) for p, img, why in batch if img is None)
            if good:
                images = np.stack([img for _, img in good])
                probs = loaded.predict_probs(images, tta=tta)
                preds = loaded.decide(probs)
                for (p, _), row, pred in zip(good, probs, preds):
                    result.predictions.append(Prediction(
                        path=p, probs=row, pred=int(pred),
                        true=label_from_path(p, loaded.class_names)))
                if cam_dir is not None:
                    write_cam_overlays(loaded, result.predictions[-len(good):], images,
                                       Path(cam_dir), cam_base)
            bar.update(len(batch))
    finally:
        bar.close()
    result.seconds = time.perf_counter() - start
    return result


def _common_folder(paths: Sequence[str]) -> str:
    if not paths:
        return "."
    return os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in paths])


def write_cam_overlays(loaded: LoadedModel, predictions: Sequence[Prediction],
                       images: np.ndarray, out_dir: Path, base: str | None) -> list[Path]:
    """Save ``image | Grad-CAM of the predicted class`` PNGs, captioned with the prediction.

    The files mirror the inputs' folders (relative to ``base``) under ``out_dir``.
    """
    import cv2

    from wbclf.data.transforms import DeviceNormalizer
    from wbclf.models.gradcam import gradcam_for_images
    from wbclf.tracking.plots import cam_overlay

    classes = np.array([p.pred for p in predictions])
    normalizer = DeviceNormalizer(loaded.data_config["mean"], loaded.data_config["std"])
    cams = gradcam_for_images(loaded.model, images, classes, normalizer, loaded.device)
    if cams is None:
        return []
    display = max(CAM_DISPLAY_SIZE, loaded.image_size)
    names = loaded.class_names
    written = []
    for pred, image, cam in zip(predictions, images, cams):
        # Short-side resize + centre crop commutes with scale: a larger load of the same file
        # is the same square the model saw, only sharper.
        picture = load_image(pred.path, display) if display != loaded.image_size else None
        picture = picture if picture is not None else cv2.resize(
            image, (display, display), interpolation=cv2.INTER_CUBIC)
        gap = np.full((display, 8, 3), 255, np.uint8)
        panel = np.concatenate([picture, gap, cam_overlay(picture, cam)], axis=1)
        caption = f"pred {names[pred.pred]} {pred.probs[pred.pred]:.2f}"
        if pred.true is not None:
            caption += f"   true {names[pred.true]}"
        band = np.full((CAPTION_HEIGHT, panel.shape[1], 3), 255, np.uint8)
        color = (0, 0, 0) if pred.true in (None, pred.pred) else (200, 0, 0)
        cv2.putText(band, caption, (6, CAPTION_HEIGHT - 9), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                    color, 1, cv2.LINE_AA)
        panel = np.concatenate([panel, band], axis=0)
        rel = os.path.relpath(os.path.abspath(pred.path), base or ".")
        target = out_dir / Path(rel).with_suffix(".png")
        ok, png = cv2.imencode(".png", cv2.cvtColor(panel, cv2.COLOR_RGB2BGR))
        if not ok:  # pragma: no cover -- OpenCV always encodes a uint8 RGB panel
            raise RuntimeError(f"could not encode the Grad-CAM overlay for {pred.path}")
        write_bytes_atomic(target, png.tobytes())
        written.append(target)
    return written


# --------------------------------------------------------------------------- output


def write_predictions_csv(path: str | os.PathLike, result: PredictionResult, top_k: int = 3
                          ) -> Path:
    """One row per input: ``path, pred, prob, [true, correct,] top1, top1_prob, ..., error``.

    ``prob`` is the probability of ``pred``. With a binary threshold ``pred`` can differ from
    ``top1`` (the argmax). Unreadable files have an empty ``pred`` and the reason in ``error``.
    """
    names = result.class_names
    k = max(1, min(top_k, len(names)))
    with_truth = bool(result.labelled)
    header = ["path", "pred", "prob"] + (["true", "correct"] if with_truth else [])
    for i in range(1, k + 1):
        header += [f"top{i}", f"top{i}_prob"]
    header.append("error")
    out = Path(path)
    with replacing(out) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        for p in result.predictions:
            row: list[object] = [p.path, names[p.pred], f"{p.probs[p.pred]:.6f}"]
            if with_truth:
                known = p.true is not None
                row += [names[p.true] if known else "", int(p.pred == p.true) if known else ""]
            for c in np.argsort(-p.probs, kind="stable")[:k]:
                row += [names[int(c)], f"{p.probs[int(c)]:.6f}"]
            writer.writerow(row + [""])
        blank = [""] * (len(header) - 2)
        for file, reason in result.unreadable:
            writer.writerow([file, *blank, reason])
    return out


def render_summary(result: PredictionResult, loaded: LoadedModel) -> str:
    """A few lines for the terminal: counts per class, threshold, accuracy, skipped files."""
    n = len(result.predictions)
    speed = n / result.seconds if result.seconds > 0 else 0.0
    lines = [f"predicted {n} image(s) in {result.seconds:.1f}s ({speed:.0f} img/s) with "
             f"{loaded.checkpoint_path}"]
    counts = Counter(p.pred for p in result.predictions)
    if counts:
        parts = [f"{result.class_names[c]}: {counts[c]}" for c in sorted(counts)]
        lines.append("  predicted classes: " + ", ".join(parts))
    if result.threshold is not None:
        positive = result.class_names[1]
        lines.append(f"  decision: {positive} iff p({positive}) >= {result.threshold:.4f} "
                     "(threshold chosen on val)")
    acc = result.accuracy
    if acc is not None:
        known = len(result.labelled)
        scope = "" if known == n else f" ({known} of {n} in a folder named after a class)"
        reference = loaded.summary.get("test/acc")
        ref = f"; the run's test/acc is {reference:.4f}" \
            if isinstance(reference, (int, float)) else ""
        lines.append(f"  accuracy {acc:.4f} on {known} labelled image(s){scope}{ref}")
    if result.unreadable:
        lines.append(f"  {len(result.unreadable)} unreadable file(s) skipped:")
        shown = result.unreadable[:20]
        lines += [f"    {path}: {why}" for path, why in shown]
        if len(result.unreadable) > len(shown):
            lines.append(f"    ... and {len(result.unreadable) - len(shown)} more (see the CSV)")
    return "\n".join(lines)


# --------------------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wbclf predict",
        description="Classify images with a trained run (its best checkpoint, preprocessing "
                    "and, for two classes, the threshold chosen on val).")
    parser.add_argument("run_dir", help="run directory (out_dir/run_name)")
    parser.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR",
                        help="image files and folders (searched recursively)")
    parser.add_argument("-o", "--output", default="predictions.csv", help="CSV to write")
    parser.add_argument("--top-k", type=int, default=3, help="classes listed per image")
    parser.add_argument("--tta", action="store_true", help="average over flips")
    parser.add_argument("--cam", metavar="DIR", default=None,
                        help="write Grad-CAM overlays of the predicted class to DIR")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, mps")
    parser.add_argument("--checkpoint", default="best", choices=["best", "last"])
    return parser


def main(argv: Sequence[str]) -> int:
    """Entry point of ``wbclf predict``."""
    args = build_parser().parse_args(list(argv))
    if args.top_k < 1:
        raise PredictUsageError(f"--top-k {args.top_k} must be at least 1")
    if args.batch_size < 1:
        raise PredictUsageError(f"--batch-size {args.batch_size} must be at least 1")
    paths = collect_images(args.inputs)
    if not paths:
        raise PredictUsageError(f"no image files in {', '.join(args.inputs)} (looked for "
                                f"{', '.join(sorted(IMAGE_EXTENSIONS))})")
    loaded = load_run_model(args.run_dir, args.device, checkpoint=args.checkpoint)
    result = predict_paths(loaded, paths, batch_size=args.batch_size, tta=args.tta,
                           cam_dir=args.cam)
    out = write_predictions_csv(args.output, result, args.top_k)
    print(render_summary(result, loaded))
    if args.cam:
        print(f"Grad-CAM overlays in {args.cam}")
    print(f"wrote {out}")
    return 0
