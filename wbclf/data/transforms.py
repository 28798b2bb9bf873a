"""Augmentation pipelines (albumentations, declared as data) and on-device normalization.

A run's augmentation is one albumentations pipeline in albumentations' own serialized format
(``A.save`` / ``A.load``, YAML or JSON): ``augment=light`` names a file packaged in
``wbclf/data/presets/``, ``augment=path/to/pipeline.yaml`` a user's file. :func:`resolve_augment`
loads it, checks it on a test image (an unknown transform, a bad argument or a pipeline that
changes the image size is one line, exit 2) and returns an :class:`AugmentPipeline`: the
pipeline, its canonical serialized form (written to the run directory as ``augment.yaml``,
put in the W&B config, compared on resume) and a fingerprint of that form (part of the frozen
strategy's feature-store key).

Images leave the loader as uint8 (4x less to copy than float32); conversion to float and
normalization with the model's mean/std happen on the device, in :class:`DeviceNormalizer`.
Evaluation applies no transform at all: the cache already holds images at training resolution
(short side resized, centre-cropped), which is the deterministic eval transform.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # never look for updates on import

import albumentations as A  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

from wbclf.config import AUGMENT_PRESETS  # noqa: E402
from wbclf.errors import UserError  # noqa: E402

PRESET_DIR = Path(__file__).resolve().parent / "presets"


class AugmentError(UserError):
    """An augmentation pipeline that cannot be used; one line naming what is wrong."""


@dataclass(frozen=True)
class AugmentPipeline:
    """A resolved ``augment=`` value.

    Attributes:
        spec: what the user wrote (a preset name or a file path).
        name: the short name reports and figure titles use (preset name or file name).
        compose: the albumentations pipeline; None when it has no transforms.
        serialized: ``A.to_dict(compose)``: every argument, defaults included.
    """

    spec: str
    name: str
    compose: A.Compose | None
    serialized: dict[str, Any]

    @property
    def fingerprint(self) -> str:
        """SHA-256 (16 hex) of the serialized pipeline: equal exactly when the pipelines are."""
        text = json.dumps(self.serialized, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def to_yaml(self) -> str:
        """The pipeline in albumentations' YAML format (``A.load(path, data_format="yaml")``)."""
        header = f"# augment={self.spec}: the pipeline this run trained with\n"
        return header + yaml.safe_dump(_plain(self.serialized), sort_keys=False)


def preset_path(name: str) -> Path:
    """The packaged file of preset ``name``."""
    return PRESET_DIR / f"{name}.yaml"


def resolve_augment(spec: str, size: int) -> AugmentPipeline:
    """Load, retarget to ``size`` and check the pipeline ``spec`` (a preset or a file)."""
    if spec in AUGMENT_PRESETS:
        path, name = preset_path(spec), spec
    else:
        path, name = Path(spec).expanduser(), Path(spec).name
        if not path.is_file():
            raise AugmentError(f"augment='{spec}': no such file; allowed: "
                               f"{', '.join(AUGMENT_PRESETS)} or an albumentations .yaml/.json "
                               "pipeline file")
    data = _read(path, spec)
    compose = _build(data, spec, size)
    if not compose.transforms:
        return AugmentPipeline(spec, name, None, A.to_dict(compose))
    _check_on_image(compose, spec, size)
    compose.wbclf_spec = spec  # for the one-line error if a later draw changes the size
    return AugmentPipeline(spec, name, compose, A.to_dict(compose))


def _read(path: Path, spec: str) -> dict[str, Any]:
    """The file's mapping (YAML is a superset of JSON, so one parser reads both)."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise AugmentError(f"augment='{spec}' cannot be read: {first}") from None
    if not isinstance(data, dict) or not isinstance(data.get("transform"), dict):
        raise AugmentError(f"augment='{spec}' is not an albumentations pipeline file: expected "
                           "a mapping with 'transform:' (what A.save writes)")
    return data


def _build(data: dict[str, Any], spec: str, size: int) -> A.Compose:
    """``A.from_dict`` with every problem as one line naming the transform."""
    root = _retarget(data["transform"], size)
    _check_names(root, spec)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            transform = A.from_dict({"transform": root})
        except Exception as err:  # noqa: BLE001 -- pydantic/TypeError/KeyError: say which
            raise AugmentError(f"augment='{spec}': {_culprit(root, err)}: "
                               f"{_first_line(err)}") from None
    for warning in caught:
        text = str(warning.message)
        # albumentations only warns about arguments a transform does not take: a typo in a
        # user's file would otherwise silently do nothing
        if "are not valid for transform" in text:
            raise AugmentError(f"augment='{spec}': {text}")
    if not isinstance(transform, A.Compose):
        transform = A.Compose([transform])
    return transform


def _retarget(node: dict[str, Any], size: int) -> dict[str, Any]:
    """A copy of ``node`` with every ``size`` (crop-and-resize output) set to ``size``.

    Pipelines are written once for any image_size: a RandomResizedCrop must return images of
    the run's resolution, whatever size the file was saved with.
    """
    out = dict(node)
    if "size" in out:
        out["size"] = [size, size]
    if isinstance(out.get("transforms"), list):
        out["transforms"] = [_retarget(t, size) if isinstance(t, dict) else t
                             for t in out["transforms"]]
    return out


def _check_names(node: dict[str, Any], spec: str) -> None:
    """Every ``__class_fullname__`` names an albumentations transform."""
    from albumentations.core.serialization import SERIALIZABLE_REGISTRY

    name = node.get("__class_fullname__")
    if not isinstance(name, str) or not name:
        raise AugmentError(f"augment='{spec}': a transform without __class_fullname__ "
                           f"({_short(node)})")
    if name not in SERIALIZABLE_REGISTRY:
        import difflib

        guess = difflib.get_close_matches(name, list(SERIALIZABLE_REGISTRY), n=1)
        hint = f"; did you mean {guess[0]}?" if guess else ""
        raise AugmentError(f"augment='{spec}': unknown transform '{name}'{hint}")
    for child in node.get("transforms") or []:
        if not isinstance(child, dict):
            raise AugmentError(f"augment='{spec}': {name}.transforms holds {child!r}, not a "
                               "transform mapping")
        _check_names(child, spec)


def _culprit(root: dict[str, Any], err: Exception) -> str:
    """The transform whose arguments failed: the first one that does not build alone."""
    for node in _walk(root):
        if node.get("transforms") is not None:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                A.from_dict({"transform": node})
            except Exception:  # noqa: BLE001 -- the one we are looking for
                return f"transform {node['__class_fullname__']}"
    return f"transform {root.get('__class_fullname__')}"


def _walk(node: dict[str, Any]):
    yield node
    for child in node.get("transforms") or []:
        yield from _walk(child)


CHECK_SEEDS = 16  # test draws: a transform with p=0.5 is skipped by all of them 1 in 65,536


def _check_on_image(compose: A.Compose, spec: str, size: int) -> None:
    """Run the pipeline on a test image: it must return uint8 RGB of the same size.

    Transforms apply with a probability, so it runs with several seeds; a draw that slips
    through is still caught per image in training (:func:`check_output`).
    """
    image = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    for seed in range(CHECK_SEEDS):
        compose.set_random_seed(seed)
        try:
            out = compose(image=image)["image"]
        except Exception as err:  # noqa: BLE001 -- e.g. a crop larger than the image
            raise AugmentError(f"augment='{spec}' fails on a {size}x{size} RGB image: "
                               f"{type(err).__name__}: {_first_line(err)}") from None
        check_output(out, spec, size)
    compose.set_random_seed(None)


def check_output(out: np.ndarray, spec: str, size: int) -> None:
    """A pipeline's output must be a ``size`` x ``size`` x 3 uint8 image."""
    if out.shape != (size, size, 3) or out.dtype != np.uint8:
        raise AugmentError(f"augment='{spec}' turns a {size}x{size}x3 uint8 image into "
                           f"{'x'.join(map(str, out.shape))} {out.dtype}; a pipeline must keep "
                           f"image_size (crop-and-resize transforms get size: [{size}, {size}])")


def pipeline_difference(saved_yaml: str, pipeline: AugmentPipeline) -> str | None:
    """Where ``pipeline`` differs from the one saved as ``saved_yaml`` (None: the same)."""
    try:
        saved = yaml.safe_load(saved_yaml)
    except yaml.YAMLError:
        return "the saved augment.yaml is not valid YAML"
    ours = json.loads(json.dumps(_plain(pipeline.serialized), default=str))
    return _first_difference(saved, ours, "")


def _first_difference(a: Any, b: Any, where: str) -> str | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            if key == "__version__":
                continue  # the library version alone does not change the pipeline
            found = _first_difference(a.get(key), b.get(key), f"{where}.{key}" if where
                                      else str(key))
            if found:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            found = _first_difference(x, y, f"{where}[{i}]")
            if found:
                return found
        return None
    return None if a == b else f"{where}: {_short(a)} -> {_short(b)}"


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    # pydantic: "N validation errors for InitSchema" / "field" / "message"
    if len(lines) >= 3 and "validation error" in lines[0]:
        return f"{lines[1]}: {lines[2]}"
    return lines[0] if lines else type(err).__name__


def _short(node: Any) -> str:
    text = json.dumps(node, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _plain(value: Any) -> Any:
    """Tuples -> lists, recursively: YAML that ``yaml.safe_load`` reads back."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


class DeviceNormalizer(torch.nn.Module):
    """uint8 NCHW batch on the device -> normalized float batch (optionally channels_last)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], *,
                 channels_last: bool = False, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        scale = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1) * 255.0
        shift = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1) * 255.0
        self.register_buffer("shift", shift, persistent=False)
        self.register_buffer("scale", scale, persistent=False)
        self.channels_last = channels_last
        self.dtype = dtype

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = (images.float() - self.shift) / self.scale
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x.to(self.dtype)
