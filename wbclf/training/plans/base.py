"""The interface between the run loop and a strategy's way of training.

The run loop (:mod:`wbclf.training.run`) calls only :class:`TrainingPlan`'s methods; each
strategy's plan (:mod:`.image`, :mod:`.features`) decides where batches come from and which
parameters train.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from wbclf.config import RunConfig
from wbclf.data.cache import remembered
from wbclf.data.datasets import DataBundle
from wbclf.data.transforms import AugmentPipeline, DeviceNormalizer, resolve_augment
from wbclf.device import Hardware
from wbclf.models import FLOPS_METHOD, count_flops, count_params, model_digest
from wbclf.models.gradcam import FeatureMaps, gradcam_for_images
from wbclf.training.optim import param_groups


class TrainingPlan:
    """Model + data path for one strategy; the run loop calls only these methods."""

    # Wall time this run spent on a one-off pass that precedes training (frozen: building or
    # loading the backbone features); 0 for plans that train on pixels.
    features_s: float = 0.0

    def __init__(self, cfg: RunConfig, data: DataBundle, hw: Hardware, model: nn.Module,
                 data_config: dict[str, Any], weight_source: dict[str, str],
                 *, progress: bool = False, augment: AugmentPipeline | None = None) -> None:
        self.cfg = cfg
        # the training augmentation (resolved by the run before the data, to fail early)
        self.augment = augment or resolve_augment(cfg.augment, cfg.image_size)
        self.data = data
        self.hw = hw
        self.model = model
        self.data_config = data_config
        self.weight_source = weight_source
        self.progress = progress
        self._flops: int | None = None

    # the optimizer's view
    @property
    def param_groups(self) -> list[dict]:
        return param_groups(self.model.named_parameters(), self.cfg.lr, self.cfg.weight_decay)

    @property
    def steps_per_epoch(self) -> int:
        raise NotImplementedError

    def before_epoch(self, epoch: int, optimizer: torch.optim.Optimizer) -> None:
        """Hook for phase changes (fine-tuning's unfreeze)."""

    def train_epoch(self, epoch: int, **kwargs) -> dict[str, float]:
        raise NotImplementedError

    def evaluate(self, split: str, **kwargs) -> tuple[float, np.ndarray, np.ndarray]:
        raise NotImplementedError

    # what the run reports and saves
    def load_model_state(self, state: dict[str, torch.Tensor]) -> None:
        getattr(self.model, "_orig_mod", self.model).load_state_dict(state)

    def param_counts(self) -> tuple[int, int]:
        return count_params(getattr(self.model, "_orig_mod", self.model))

    def flops(self) -> int:
        """Forward FLOPs of one image: counted once per architecture and input size (a
        forward pass under torch's FLOP counter) and remembered in the cache dir."""
        if self._flops is None:
            inner = getattr(self.model, "_orig_mod", self.model)
            key = {"model": model_digest(inner), "image_size": self.cfg.image_size,
                   "torch": torch.__version__, "method": FLOPS_METHOD}
            try:
                flops, _ = remembered("flops", key,
                                      lambda: int(count_flops(inner, self.cfg.image_size)))
                self._flops = int(flops)
            except Exception:  # FLOP counting is informative only; never fail a run for it
                self._flops = 0
        return self._flops

    def extra_summary(self) -> dict[str, Any]:
        """Strategy-specific figures for the run summary (e.g. the feature cache's)."""
        return {}

    # Plans whose backbone never changes during a run remember its feature maps here, so
    # that Grad-CAM of the same sample images twice (mid-run, best model) passes the backbone
    # once; None: every Grad-CAM runs the backbone (its weights may have moved).
    frozen_feature_maps: FeatureMaps | None = None

    def cams(self, images: np.ndarray, preds: np.ndarray) -> np.ndarray | None:
        """Grad-CAM maps for sample images (None when unavailable)."""
        inner = getattr(self.model, "_orig_mod", self.model)
        normalizer = DeviceNormalizer(self.data_config["mean"], self.data_config["std"])
        return gradcam_for_images(inner, images, preds, normalizer, self.hw.device,
                                  feature_maps=self.frozen_feature_maps)
