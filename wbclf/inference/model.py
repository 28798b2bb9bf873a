"""Load a trained run for inference: the model, its classes, preprocessing and threshold.

Shared by ``wbclf predict`` and ``wbclf export``. The model is rebuilt from the config saved
in the checkpoint with random initialization (``strategy=scratch``, no ``pretrained_file``) and
then given the checkpoint's weights: a frozen or fine-tuned run never fetches its pretrained
weights again, so inference works offline and on a machine without the weight source.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn

from wbclf.checkpoint import load_checkpoint
from wbclf.config import FIELDS, ConfigError, RunConfig, build_config
from wbclf.device import Hardware, resolve_hardware
from wbclf.errors import UserError

CHECKPOINTS = ("best", "last")
INPUTS = ("uint8", "float")
# Test-time augmentation: the identity and the three flips (H, V, both = a 180-degree turn).
# Skin lesions and leaves have no canonical orientation, so each view is as valid as the
# original; more views (90-degree turns) would need square inputs and cost more.
TTA_FLIPS: tuple[tuple[int, ...], ...] = ((), (3,), (2,), (2, 3))


class InferenceError(UserError):
    """A run directory or checkpoint that cannot be used for inference (one-line message)."""


class ImageClassifier(nn.Module):
    """Images in, probabilities and decisions out: ``wbclf predict`` runs it, ``wbclf export``
    writes it to a file, so both apply the same preprocessing and decision rule.

    Args:
        model: The trained network (eval mode).
        mean: Per-channel mean of the run's normalization (for inputs in [0, 1]).
        std: Per-channel std of the run's normalization.
        input_kind: ``uint8`` (NCHW RGB, 0-255) or ``float`` (NCHW RGB, 0-1) input.
        threshold: Two classes: predict class 1 iff ``p1 >= threshold``; None = argmax.
    """

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float], *,
                 input_kind: str = "uint8", threshold: float | None = None) -> None:
        super().__init__()
        if input_kind not in INPUTS:
            raise InferenceError(f"input '{input_kind}' is not allowed; allowed: uint8, float")
        self.model = model
        # The same arithmetic as training's DeviceNormalizer (bit-identical inputs), with the
        # 0-255 scale folded into the constants so that uint8 input costs one cast.
        scale = 255.0 if input_kind == "uint8" else 1.0
        self.register_buffer("shift", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
                             * scale)
        self.register_buffer("scale", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
                             * scale)
        self.threshold = threshold

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Raw NCHW images -> the normalized float input of the network."""
        return (images.float() - self.shift) / self.scale

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        probs = torch.softmax(self.model(self.preprocess(images)).float(), dim=1)
        if self.threshold is None:
            label = probs.argmax(dim=1)
        else:
            label = (probs[:, 1] >= self.threshold).long()
        return probs, label


@dataclass
class LoadedModel:
    """A trained model ready for inference, with everything needed to use it like the run.

    Attributes:
        model: The network in eval mode on ``hw.device`` (fp32 weights).
        class_names: Class names in label-index order.
        data_config: Preprocessing of the run (``mean``, ``std``, ``input_size``, ...).
        image_size: Side of the square input the model was trained on.
        threshold: Two classes: the decision threshold chosen on val (positive = class 1 iff
            ``p1 >= threshold``); None for more classes or when the run has no summary.
        config: The run's resolved configuration.
        hw: Device, autocast and memory format used for forward passes.
        run_dir: The run directory.
        checkpoint_path: The checkpoint file the weights came from.
        summary: The run's ``summary.json`` (empty when the run has none).
    """

    model: nn.Module
    class_names: list[str]
    data_config: dict[str, Any]
    image_size: int
    threshold: float | None
    config: RunConfig
    hw: Hardware
    run_dir: Path
    checkpoint_path: Path
    summary: dict[str, Any]

    def __post_init__(self) -> None:
        self.pipeline = ImageClassifier(self.model, self.data_config["mean"],
                                        self.data_config["std"]).to(self.hw.device).eval()

    @property
    def device(self) -> torch.device:
        return self.hw.device

    @torch.inference_mode()
    def predict_probs(self, images: np.ndarray | torch.Tensor, *, tta: bool = False
                      ) -> np.ndarray:
        """Softmax probabilities for a batch of preprocessed images.

        Args:
            images: ``(N, H, W, 3)`` uint8 RGB at ``image_size`` (what :func:`load_image`
                returns, stacked) or an ``(N, 3, H, W)`` uint8 tensor.
            tta: Average the probabilities over the image and its flips.

        Returns:
            ``(N, C)`` float64 probabilities.
        """
        batch = torch.as_tensor(np.asarray(images)) if not isinstance(images, torch.Tensor) \
            else images
        if batch.ndim == 4 and batch.shape[-1] == 3 and batch.shape[1] != 3:
            batch = batch.permute(0, 3, 1, 2)
        batch = batch.to(self.hw.device)
        views = TTA_FLIPS if tta else ((),)
        total = None
        for dims in views:
            view = torch.flip(batch, dims) if dims else batch
            with self.hw.autocast():
                probs, _ = self.pipeline(view)
            total = probs if total is None else total + probs
        return (total / len(views)).cpu().numpy().astype(np.float64)

    def decide(self, probs: np.ndarray) -> np.ndarray:
        """Predicted class indices, with the run's binary threshold when it has one."""
        from wbclf.metrics import predict_labels

        return predict_labels(probs, self.threshold)


def _read_yaml(path: Path) -> dict[str, Any] | None:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None
    return data if isinstance(data, dict) else None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def find_checkpoint(run_dir: str | Path, which: str = "best") -> Path:
    """The checkpoint file of a run directory (``run_dir`` may also be a ``.pt`` file)."""
    path = Path(run_dir)
    if path.is_file() and path.suffix == ".pt":
        return path
    if not path.is_dir():
        raise InferenceError(f"run directory '{run_dir}' does not exist")
    if which not in CHECKPOINTS:
        raise InferenceError(f"checkpoint '{which}' is not allowed; allowed: best, last")
    ckpt = path / "checkpoints" / f"{which}.pt"
    if not ckpt.is_file():
        raise InferenceError(f"'{run_dir}' has no checkpoints/{which}.pt; is it a wbclf run "
                             "directory with at least one finished epoch?")
    return ckpt


def config_from_checkpoint(saved: dict[str, Any]) -> RunConfig:
    """The RunConfig stored in a checkpoint; keys this version does not know are dropped."""
    known = {k: v for k, v in saved.items() if k in FIELDS}
    try:
        return build_config(known)
    except ConfigError as err:
        raise InferenceError(f"checkpoint config is not valid here: {err}") from None


def _architecture(cfg: dict[str, Any]) -> dict[str, Any]:
    keys = ("model", "width", "depth", "blocks_per_stage", "batch_norm", "residual",
            "head_hidden", "image_size")
    return {k: cfg.get(k) for k in keys}


def _check_run_files(run_dir: Path, cfg: RunConfig, classes: list[str]) -> None:
    """The checkpoint must belong to the run directory it sits in (a copied-in file does not)."""
    saved = _read_yaml(run_dir / "config.yaml")
    if saved is not None:
        mine, theirs = _architecture(cfg.to_dict()), _architecture(saved)
        diff = [k for k in mine if theirs.get(k) is not None and str(theirs[k]) != str(mine[k])]
        if diff:
            key = diff[0]
            raise InferenceError(f"checkpoint was trained with {key}={mine[key]} but "
                                 f"{run_dir}/config.yaml says {key}={theirs[key]}: it belongs "
                                 "to another run")
    splits = _read_json(run_dir / "splits.json")
    if splits.get("classes") is not None and list(splits["classes"]) != classes:
        raise InferenceError(f"checkpoint classes {classes[:4]} do not match the run's "
                             f"splits.json classes {list(splits['classes'])[:4]}: it belongs to "
                             "another run")


def rebuild_model(cfg: RunConfig, num_classes: int) -> nn.Module:
    """The run's architecture with random weights (no pretrained download, no freezing)."""
    from wbclf.models import create_model

    # strategy/pretrained_file only choose the *initial* weights, which the checkpoint replaces
    blank = dataclasses.replace(cfg, strategy="scratch", pretrained_file="")
    return create_model(cfg.model, num_classes, blank)


def binary_threshold(summary: dict[str, Any], num_classes: int) -> float | None:
    """The decision threshold a binary run chose on val (from its summary), else None."""
    if num_classes != 2:
        return None
    for key in ("test/threshold", "val/threshold"):
        value = summary.get(key)
        if isinstance(value, (int, float)) and np.isfinite(value):
            return float(value)
    return None


def load_run_model(run_dir: str | Path, device: str = "auto", *, checkpoint: str = "best",
                   precision: str | None = None) -> LoadedModel:
    """Load a run's checkpoint into a model ready for inference.

    Args:
        run_dir: A run directory (``out_dir/run_name``) or a checkpoint file inside one.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        checkpoint: ``best`` (the best val/acc epoch, as evaluated on test) or ``last``.
        precision: Autocast setting; None = the run's own setting on CUDA, fp32 elsewhere
            (so predictions match the run's evaluation on the same kind of device).

    Raises:
        InferenceError: Missing or foreign checkpoint, or one that does not fit its model.
    """
    path = find_checkpoint(run_dir, checkpoint)
    folder = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    ckpt = load_checkpoint(path, "cpu")
    if not isinstance(ckpt, dict) or not {"model", "class_names", "config"} <= set(ckpt):
        raise InferenceError(f"'{path}' is not a wbclf checkpoint (no model, class_names and "
                             "config entries)")
    classes = [str(c) for c in ckpt["class_names"]]
    cfg = config_from_checkpoint(ckpt["config"])
    _check_run_files(folder, cfg, classes)
    model = rebuild_model(cfg, len(classes))
    state = {k.removeprefix("_orig_mod."): v for k, v in ckpt["model"].items()}
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        detail = next((line.strip() for line in str(err).splitlines()[1:] if line.strip()),
                      str(err).splitlines()[0])
        raise InferenceError(f"checkpoint '{path}' does not fit model '{cfg.model}' with "
                             f"{len(classes)} classes: {detail}") from None
    hw = _hardware(device, cfg, precision)
    model = model.to(hw.device).eval()
    if hw.channels_last:
        model = model.to(memory_format=torch.channels_last)
    data_config = dict(ckpt.get("data_config") or {})
    if "mean" not in data_config or "std" not in data_config:
        from wbclf.models import model_data_config

        data_config = {**model_data_config(model), **data_config}
    summary = _read_json(folder / "summary.json")
    return LoadedModel(model=model, class_names=classes, data_config=data_config,
                       image_size=cfg.image_size,
                       threshold=binary_threshold(summary, len(classes)), config=cfg, hw=hw,
                       run_dir=folder, checkpoint_path=path, summary=summary)


def _hardware(device: str, cfg: RunConfig, precision: str | None) -> Hardware:
    from wbclf.device import resolve_device

    target = resolve_device(device)
    if precision is None:
        precision = cfg.precision if target.type == "cuda" else "32"
    return resolve_hardware(str(target), precision)


def batched(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    """Consecutive slices of ``items`` of at most ``size`` elements."""
    for start in range(0, len(items), max(1, size)):
        yield items[start:start + size]
