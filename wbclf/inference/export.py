"""``wbclf export``: the trained model as ONNX or TorchScript, preprocessing folded in.

The exported graph takes images, not tensors a user has to prepare:

- input ``images``: ``(batch, 3, S, S)`` RGB, ``uint8`` in [0, 255] (default) or, with
  ``--input float``, ``float32`` in [0, 1]; ``S`` is the run's ``image_size`` and the batch
  size is dynamic. Resizing is left to the caller (short side to ``S``, centre crop: the run's
  evaluation transform), because every image library does it its own way.
- outputs ``probs``: ``(batch, C)`` float32 softmax probabilities, and ``label``: ``(batch,)``
  int64 class index -- for two classes with the threshold the run chose on val, else argmax.

The file is written next to a JSON description (``model.onnx.json`` / ``model.ts.json``: class
names, threshold, input, normalization) that is also embedded in the file (ONNX metadata
``wbclf``, TorchScript extra file ``wbclf.json``). Before it replaces any previous export, the
file is loaded back (onnxruntime / ``torch.jit.load``) and run on real images of the run; the
maximum absolute difference from PyTorch is printed, and a difference above ``--atol`` fails.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from wbclf.atomic import replacing, write_text_atomic
from wbclf.errors import UserError
from wbclf.inference.model import INPUTS, ImageClassifier, LoadedModel, load_run_model

FORMATS = {"onnx": "model.onnx", "torchscript": "model.ts"}


class ExportError(UserError):
    """An export that failed or does not reproduce PyTorch (one-line message)."""


@dataclass
class ExportReport:
    """Where the export went and how closely it reproduces PyTorch."""

    path: Path
    format: str
    max_abs_diff: float
    labels_agree: int
    images: int
    real_images: bool
    seconds: float


def describe(loaded: LoadedModel, fmt: str, input_kind: str) -> dict[str, Any]:
    """The JSON that documents an exported file's input and outputs."""
    size = loaded.image_size
    dtype, value_range = ("uint8", [0, 255]) if input_kind == "uint8" else ("float32", [0, 1])
    return {
        "format": fmt,
        "input": {"name": "images", "dtype": dtype, "shape": ["batch", 3, size, size],
                  "layout": "NCHW", "channels": "RGB", "range": value_range,
                  "resize": f"short side to {size} px, then a centre crop to {size}x{size}"},
        "outputs": {
            "probs": {"dtype": "float32", "shape": ["batch", len(loaded.class_names)],
                      "meaning": "softmax probabilities, in class_names order"},
            "label": {"dtype": "int64", "shape": ["batch"],
                      "meaning": "predicted class index (binary: p1 >= threshold)"}},
        "class_names": loaded.class_names,
        "threshold": loaded.threshold,
        "normalization": {"mean": list(loaded.data_config["mean"]),
                          "std": list(loaded.data_config["std"]), "applied_inside": True},
        "model": loaded.config.model,
        "checkpoint": str(loaded.checkpoint_path),
    }


def verification_images(run_dir: Path, size: int, count: int = 16) -> tuple[np.ndarray, bool]:
    """Up to ``count`` real images of the run (test split, then val) as NCHW uint8.

    Falls back to random pixels when the run's files are gone; the flag says which.
    """
    from wbclf.data.splits import load_splits
    from wbclf.inference.predict import read_image

    images: list[np.ndarray] = []
    splits_file = run_dir / "splits.json"
    if splits_file.is_file():
        try:
            _, splits = load_splits(splits_file)
        except (OSError, ValueError, KeyError):
            splits = {}
        candidates = [s.path for name in ("test", "val") for s in splits.get(name, [])]
        # every k-th file, so that each class is likely among the images
        step = max(1, len(candidates) // max(1, count * 2))
        for path in candidates[::step]:
            if len(images) >= count:
                break
            if os.path.isfile(path):
                image, _ = read_image(path, size)
                if image is not None:
                    images.append(image)
    if images:
        return np.stack(images).transpose(0, 3, 1, 2).copy(), True
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (count, 3, size, size), dtype=np.uint8), False


def _as_input(images_u8: np.ndarray, input_kind: str) -> np.ndarray:
    return images_u8 if input_kind == "uint8" else (images_u8.astype(np.float32) / 255.0)


@contextlib.contextmanager
def _quiet():
    """Silence the exporters' progress prints and tracer/deprecation warnings."""
    sink = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(sink):
        warnings.simplefilter("ignore")
        yield sink


def _export_onnx(wrapper: nn.Module, example: torch.Tensor, path: Path,
                 meta: dict[str, Any]) -> None:
    import onnx

    kwargs = {"input_names": ["images"], "output_names": ["probs", "label"]}
    try:
        with _quiet():
            batch = torch.export.Dim("batch", min=1, max=65536)
            torch.onnx.export(wrapper, (example,), str(path), dynamo=True, external_data=False,
                              dynamic_shapes={"images": {0: batch}}, **kwargs)
    except Exception as err:  # noqa: BLE001 -- some graphs only the legacy exporter takes
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"torch.export-based ONNX export failed ({first[:120]}); using the "
              "TorchScript-based exporter")
        with _quiet():
            torch.onnx.export(wrapper, (example,), str(path), dynamo=False, opset_version=17,
                              dynamic_axes={"images": {0: "batch"}, "probs": {0: "batch"},
                                            "label": {0: "batch"}}, **kwargs)
    proto = onnx.load(str(path))
    entry = proto.metadata_props.add()
    entry.key, entry.value = "wbclf", json.dumps(meta)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))


def _run_onnx(path: Path, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    probs, label = session.run(["probs", "label"], {"images": inputs})
    return np.asarray(probs), np.asarray(label)


def _export_torchscript(wrapper: nn.Module, example: torch.Tensor, path: Path,
                        meta: dict[str, Any]) -> None:
    # Traced, not scripted: timm models are not all scriptable, and a trace of a fixed-size
    # CNN is exact; the batch dimension stays symbolic because nothing branches on it.
    with _quiet(), torch.no_grad():
        traced = torch.jit.trace(wrapper, example, check_trace=False)
        torch.jit.save(traced, str(path), _extra_files={"wbclf.json": json.dumps(meta)})


def _run_torchscript(path: Path, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with _quiet(), torch.no_grad():
        module = torch.jit.load(str(path), map_location="cpu")
        probs, label = module(torch.from_numpy(inputs))
    return probs.numpy(), label.numpy()


def export_run(run_dir: str | os.PathLike, fmt: str = "onnx", *, input_kind: str = "uint8",
               atol: float = 1e-4, checkpoint: str = "best", output: str | None = None,
               verify_count: int = 16) -> ExportReport:
    """Export a run's model and verify the file against PyTorch.

    Args:
        run_dir: The run directory.
        fmt: ``onnx`` or ``torchscript``.
        input_kind: ``uint8`` or ``float`` input (see the module docstring).
        atol: Largest allowed absolute difference between the file's and PyTorch's
            probabilities.
        checkpoint: ``best`` or ``last``.
        output: Path of the file (default ``RUN_DIR/model.onnx`` or ``RUN_DIR/model.ts``).
        verify_count: Real images to verify on.

    Raises:
        ExportError: Unknown format, failed export, or outputs that differ from PyTorch.
    """
    if fmt not in FORMATS:
        raise ExportError(f"format '{fmt}' is not allowed; allowed: {', '.join(FORMATS)}")
    start = time.perf_counter()
    loaded = load_run_model(run_dir, "cpu", checkpoint=checkpoint, precision="32")
    run_path = loaded.run_dir
    try:
        wrapper = ImageClassifier(loaded.model, loaded.data_config["mean"],
                                  loaded.data_config["std"], input_kind=input_kind,
                                  threshold=loaded.threshold).eval()
    except ValueError as err:
        raise ExportError(str(err)) from None
    meta = describe(loaded, fmt, input_kind)
    target = Path(output) if output else run_path / FORMATS[fmt]
    images, real = verification_images(run_path, loaded.image_size, verify_count)
    inputs = _as_input(images, input_kind)
    # batch 2 for tracing: a batch of 1 could be specialized into the graph
    example = torch.from_numpy(np.ascontiguousarray(inputs[:2] if len(inputs) >= 2
                                                    else np.repeat(inputs, 2, axis=0)))
    export, run = (_export_onnx, _run_onnx) if fmt == "onnx" \
        else (_export_torchscript, _run_torchscript)
    with replacing(target) as tmp:
        try:
            export(wrapper, example, tmp, meta)
        except Exception as err:  # noqa: BLE001 -- any exporter failure is one line for the user
            text = str(err).strip().splitlines()
            raise ExportError(f"{fmt} export of model '{loaded.config.model}' failed: "
                              f"{text[0] if text else type(err).__name__}") from err
        with torch.no_grad():
            ref_probs, ref_labels = (t.numpy() for t in wrapper(torch.from_numpy(inputs)))
        probs, labels = run(tmp, inputs)
        single, _ = run(tmp, inputs[:1])  # a different batch size: the batch axis is dynamic
        diff = float(max(np.abs(probs - ref_probs).max(), np.abs(single - ref_probs[:1]).max()))
        agree = int((labels == ref_labels).sum())
        if not np.isfinite(diff) or diff > atol:
            raise ExportError(f"{fmt} outputs differ from PyTorch by up to {diff:.3g} "
                              f"(> atol {atol:g}); the file was not written")
    meta["verification"] = {"max_abs_diff": diff, "labels_agree": agree, "images": len(inputs),
                            "real_images": real}
    sidecar = target.with_name(target.name + ".json")
    write_text_atomic(sidecar, json.dumps(meta, indent=2))
    return ExportReport(path=target, format=fmt, max_abs_diff=diff, labels_agree=agree,
                        images=len(inputs), real_images=real,
                        seconds=time.perf_counter() - start)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wbclf export",
        description="Write the run's model as ONNX or TorchScript (input: images; "
                    "preprocessing inside), verified against PyTorch.")
    parser.add_argument("run_dir", help="run directory (out_dir/run_name)")
    parser.add_argument("--format", required=True, choices=list(FORMATS))
    parser.add_argument("--input", default="uint8", choices=list(INPUTS),
                        help="uint8 NCHW RGB 0-255 (default) or float32 NCHW RGB 0-1")
    parser.add_argument("-o", "--output", default=None,
                        help="file to write (default RUN_DIR/model.onnx or RUN_DIR/model.ts)")
    parser.add_argument("--atol", type=float, default=1e-4,
                        help="largest allowed difference from PyTorch's probabilities")
    parser.add_argument("--checkpoint", default="best", choices=["best", "last"])
    return parser


def main(argv: Sequence[str]) -> int:
    """Entry point of ``wbclf export``."""
    args = build_parser().parse_args(list(argv))
    report = export_run(args.run_dir, args.format, input_kind=args.input, atol=args.atol,
                        checkpoint=args.checkpoint, output=args.output)
    source = "real images of the run" if report.real_images else "random images (the run's " \
        "files were not found)"
    print(f"verified on {report.images} {source} with "
          f"{'onnxruntime' if report.format == 'onnx' else 'torch.jit.load'}: max abs "
          f"difference from PyTorch {report.max_abs_diff:.2e}, labels agree "
          f"{report.labels_agree}/{report.images}")
    print(f"wrote {report.path} ({report.path.stat().st_size / 1e6:.1f} MB) in "
          f"{report.seconds:.1f}s; input and outputs described in {report.path.name}.json")
    return 0
