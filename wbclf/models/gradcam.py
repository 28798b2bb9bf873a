"""Grad-CAM heat maps: where in the image the evidence for a class lies.

Grad-CAM (Selvaraju et al., 2017) weights each channel ``k`` of a convolutional feature map
``A`` by the spatial mean of the class score's gradient, ``alpha_k = mean(dy_c / dA_k)``, and
keeps the positive part of ``sum_k alpha_k A_k``, upsampled to the image size.

The feature map used is the output of ``model.forward_features`` -- the last stage of every
timm model and of the scratch CNN, the usual Grad-CAM layer -- and the class score is
``model.forward_head`` of it. The gradient is taken with respect to that map only, so nothing
flows back through the backbone: it is one forward pass plus a backward pass through the head,
and a frozen backbone (``requires_grad=False``) needs no special case, because the map itself
is made a leaf that requires grad. Models without that interface fall back to a hook on their
last ``nn.Conv2d``.

Written here rather than taken from the ``grad-cam`` package: the interface above makes it a
few dozen lines, and it avoids a dependency whose layer guessing would need per-model targets.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from wbclf.atomic import replacing
from wbclf.models.registry import eval_mode


def _as_nchw(features: torch.Tensor, model: nn.Module) -> torch.Tensor | None:
    """A (N, C, h, w) view of a forward_features output, or None when it has no grid."""
    channels = getattr(model, "num_features", None)
    if features.ndim == 4:
        if channels and features.shape[1] != channels and features.shape[-1] == channels:
            return features.permute(0, 3, 1, 2)  # NHWC stages (e.g. timm's Swin)
        return features
    if features.ndim == 3:  # transformer tokens: drop class/register tokens, keep the grid
        tokens = features[:, int(getattr(model, "num_prefix_tokens", 0) or 0):]
        side = math.isqrt(tokens.shape[1])
        if side * side == tokens.shape[1]:
            return tokens.transpose(1, 2).reshape(tokens.shape[0], -1, side, side)
    return None


def _last_conv(model: nn.Module) -> nn.Conv2d | None:
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    return convs[-1] if convs else None


def _has_feature_interface(model: nn.Module) -> bool:
    return hasattr(model, "forward_features") and hasattr(model, "forward_head")


def _activations_and_scores(model: nn.Module, x: torch.Tensor,
                            raw: torch.Tensor | None = None
                            ) -> tuple[torch.Tensor, torch.Tensor]:
    """(feature map that requires grad, logits computed from it); ``raw`` is
    ``model.forward_features(x)`` when the caller already has it."""
    if _has_feature_interface(model):
        if raw is None:
            with torch.no_grad():  # the backbone's own gradients are never needed
                raw = model.forward_features(x)
        leaf = raw.detach().requires_grad_(True)
        grid = _as_nchw(leaf, model)
        if grid is not None:
            return grid, model.forward_head(leaf)
    conv = _last_conv(model)
    if conv is None:
        raise ValueError(f"{type(model).__name__} has no convolutional feature map for Grad-CAM")
    captured: list[torch.Tensor] = []

    def swap_in_leaf(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> torch.Tensor:
        # Replacing the output by a leaf makes the gradient stop there (and exist even when
        # every parameter is frozen).
        leaf = output.detach().requires_grad_(True)
        captured.append(leaf)
        return leaf

    handle = conv.register_forward_hook(swap_in_leaf)
    try:
        logits = model(x)
    finally:
        handle.remove()
    return captured[-1], logits


class FeatureMaps:
    """Backbone feature maps remembered per input batch, for a model whose
    ``forward_features`` cannot change (a frozen backbone): Grad-CAM of images seen before is
    then a pass through the head only. A run shows the same val images mid-run and again for
    its best model; the backbone pass is most of a Grad-CAM's cost.

    With ``folder``, each image's map is also kept on disk (``<digest>.npy``, float32 as
    computed), so the trials of a study that share the frozen backbone pass each sample image
    through it once; the folder's name must say which backbone, weights and preprocessing
    made the maps. A map read back is laid out anew in memory (and may have been computed in
    another batch), which can move a heat map's last bits, not the picture.

    Args:
        limit: Batches kept in memory (the oldest is dropped first).
        folder: Where maps are kept across processes; None: memory only.
    """

    def __init__(self, limit: int = 4, folder: Path | None = None) -> None:
        self.limit = limit
        self.folder = folder
        self._maps: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.computed = 0  # images passed through the backbone
        self.loaded = 0  # images whose map was read from the folder

    def __call__(self, model: nn.Module, pixels: np.ndarray, x: torch.Tensor) -> torch.Tensor:
        """``model.forward_features(x)`` in eval mode, where ``x`` is the input made from the
        uint8 batch ``pixels`` (the key: the same pixels give the same input)."""
        key = _digest(pixels)
        if key in self._maps:
            self._maps.move_to_end(key)
            return self._maps[key]
        stored = self._read([_digest(image) for image in pixels])
        missing = [i for i, m in enumerate(stored) if m is None]
        if missing:
            with eval_mode(model), torch.no_grad():
                fresh = model.forward_features(x[missing] if len(missing) < len(x) else x)
            self.computed += len(missing)
            for row, i in enumerate(missing):
                stored[i] = fresh[row]
                self._write(_digest(pixels[i]), fresh[row])
        self.loaded += len(pixels) - len(missing)
        if len(missing) == len(x):
            raw = fresh  # as computed: its memory layout (hence its arithmetic) unchanged
        else:
            raw = torch.stack([m.to(x.device) for m in stored])  # type: ignore[union-attr]
        self._maps[key] = raw
        while len(self._maps) > self.limit:
            self._maps.popitem(last=False)
        return raw

    def _read(self, digests: list[str]) -> list[torch.Tensor | None]:
        if self.folder is None:
            return [None] * len(digests)
        maps: list[torch.Tensor | None] = []
        for digest in digests:
            path = self.folder / f"{digest}.npy"
            try:
                maps.append(torch.from_numpy(np.load(path)))
            except FileNotFoundError:
                maps.append(None)
            except Exception:  # noqa: BLE001 -- torn or emptied by a crash: compute it anew
                path.unlink(missing_ok=True)
                maps.append(None)
        return maps

    def _write(self, digest: str, feature_map: torch.Tensor) -> None:
        if self.folder is None:
            return
        try:
            with replacing(self.folder / f"{digest}.npy") as tmp, open(tmp, "wb") as fh:
                np.save(fh, feature_map.detach().cpu().numpy())
        except OSError:  # a full or read-only cache costs time, never the run
            pass


def _digest(pixels: np.ndarray) -> str:
    pixels = np.ascontiguousarray(pixels)
    return f"{'x'.join(map(str, pixels.shape))}-{hashlib.blake2b(pixels).hexdigest()[:40]}"


def gradcam(model: nn.Module, x: torch.Tensor, classes: Sequence[int] | torch.Tensor,
            size: tuple[int, int] | None = None, *, raw: torch.Tensor | None = None
            ) -> torch.Tensor:
    """Grad-CAM maps of ``classes`` for a normalized batch.

    Args:
        model: Classifier; put in eval mode for the call, its mode restored after.
        x: ``(N, 3, H, W)`` normalized float input.
        classes: The class to explain for each image, ``(N,)``.
        size: Output ``(height, width)``; default the input's.
        raw: ``model.forward_features(x)`` in eval mode, when the caller has it already.

    Returns:
        ``(N, height, width)`` float32 maps in [0, 1] on ``x``'s device; each map is divided by
        its maximum, and a map with no positive evidence is all zeros.
    """
    with eval_mode(model), torch.enable_grad():
        acts, logits = _activations_and_scores(model, x, raw)
        target = torch.as_tensor(classes, device=logits.device).long().view(-1, 1)
        score = logits.float().gather(1, target).sum()
        (grads,) = torch.autograd.grad(score, acts)
    weights = grads.float().mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * acts.detach().float()).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam, size=size or tuple(x.shape[-2:]), mode="bilinear",
                        align_corners=False)[:, 0]
    cam = torch.nan_to_num(cam, nan=0.0, posinf=0.0, neginf=0.0)
    peak = cam.flatten(1).amax(dim=1).view(-1, 1, 1)
    return torch.where(peak > 1e-12, cam / peak.clamp_min(1e-12), torch.zeros_like(cam))


def gradcam_for_images(model: nn.Module, images: np.ndarray, classes: np.ndarray,
                       normalizer: nn.Module, device: torch.device | str,
                       batch_size: int = 32, feature_maps: FeatureMaps | None = None
                       ) -> np.ndarray | None:
    """Grad-CAM maps for uint8 images, as the training loggers and ``wbclf predict`` use them.

    Args:
        model: The classifier (any device; inputs are moved to ``device``).
        images: ``(N, H, W, 3)`` uint8 RGB, as the model sees them before normalization.
        classes: ``(N,)`` class to explain per image (usually the prediction).
        normalizer: The run's preprocessing: uint8 NCHW -> the network's float input (a
            :class:`wbclf.data.transforms.DeviceNormalizer`).
        device: Where to compute.
        batch_size: Images per forward pass.
        feature_maps: Where to remember the backbone's feature maps, for a model whose
            backbone is frozen (see :class:`FeatureMaps`); None computes them every call.

    Returns:
        ``(N, H, W)`` float32 maps in [0, 1], or None when the model has no feature map to
        explain or the computation fails: a heat map is a picture in a report and must never
        stop a training run (a warning says why).
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be (N, H, W, 3) uint8, got shape {images.shape}")
    if len(images) == 0:
        return np.zeros((0, *images.shape[1:3]), np.float32)
    normalizer = normalizer.to(device)
    labels = np.asarray(classes, dtype=np.int64)
    out = []
    try:
        for start in range(0, len(images), batch_size):
            chunk = torch.from_numpy(np.ascontiguousarray(images[start:start + batch_size]))
            x = normalizer(chunk.permute(0, 3, 1, 2).to(device))
            raw = feature_maps(model, chunk.numpy(), x) \
                if feature_maps is not None and _has_feature_interface(model) else None
            cams = gradcam(model, x, torch.from_numpy(labels[start:start + batch_size]),
                           raw=raw)
            out.append(cams.cpu().numpy())
    except (RuntimeError, ValueError) as err:  # includes CUDA out-of-memory
        warnings.warn(f"Grad-CAM unavailable for {type(model).__name__}: {err}", stacklevel=2)
        return None
    return np.concatenate(out).astype(np.float32)
