"""Training plans: how each strategy turns data and a model into epochs.

- ``scratch``: random init, every weight trained on augmented pixels.
- ``finetune``: pretrained backbone + new head, all trained; backbone at ``lr x
  backbone_lr_mult``; the first ``unfreeze_epoch`` epochs train the head only.
- ``frozen``: pretrained backbone in eval mode, only the head trained. With the feature cache
  (see :mod:`wbclf.features`) the backbone runs once and epochs train the head on stored
  features.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from wbclf.config import RunConfig
from wbclf.data.batch_augment import build_batch_augment
from wbclf.data.datasets import (DataBundle, iter_eval_batches, make_train_loader,
                                 resolve_workers)
from wbclf.device import Hardware
from wbclf.engine import evaluate, train_one_epoch
from wbclf.optim import param_groups


class TrainingPlan:
    """Model + data path for one strategy; the run loop calls only these methods."""

    def __init__(self, cfg: RunConfig, data: DataBundle, hw: Hardware, model: nn.Module,
                 data_config: dict[str, Any], weight_source: dict[str, str],
                 *, progress: bool = False) -> None:
        self.cfg = cfg
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
        from wbclf.models import count_params

        return count_params(getattr(self.model, "_orig_mod", self.model))

    def flops(self) -> int:
        if self._flops is None:
            from wbclf.models import count_flops

            inner = getattr(self.model, "_orig_mod", self.model)
            try:
                self._flops = int(count_flops(inner, self.cfg.image_size))
            except Exception:  # FLOP counting is informative only; never fail a run for it
                self._flops = 0
        return self._flops

    def extra_summary(self) -> dict[str, Any]:
        """Strategy-specific figures for the run summary (e.g. the feature cache's)."""
        return {}

    def cams(self, images: np.ndarray, preds: np.ndarray) -> np.ndarray | None:
        """Grad-CAM maps for sample images (None when unavailable)."""
        try:
            from wbclf.gradcam import gradcam_for_images
        except ImportError:
            return None
        inner = getattr(self.model, "_orig_mod", self.model)
        return gradcam_for_images(inner, images, preds, self.data_config, self.hw.device)


class ImagePlan(TrainingPlan):
    """Train on (augmented) pixels through the whole model: scratch, finetune, frozen."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        cfg = self.cfg
        augment = build_batch_augment(cfg.augment, cfg.image_size)
        self.workers = resolve_workers(cfg.num_workers, augment=cfg.augment,
                                       device=self.hw.device)
        self.train_set = self.data.dataset("train", augment)
        self.loader = make_train_loader(self.train_set, batch_size=cfg.batch_size,
                                        workers=self.workers, seed=cfg.seed,
                                        pin_memory=self.hw.pin_memory,
                                        channels_last=self.hw.channels_last)
        self._eval_sets = {split: self.data.dataset(split) for split in ("val", "test")}

    @property
    def steps_per_epoch(self) -> int:
        return len(self.loader)

    def train_epoch(self, epoch: int, *, optimizer, scheduler, criterion, normalizer,
                    scaler=None) -> dict[str, float]:
        self.loader.sampler.set_epoch(epoch)
        return train_one_epoch(self.model, self.loader, optimizer=optimizer,
                               scheduler=scheduler, criterion=criterion,
                               normalizer=normalizer, hw=self.hw, epoch=epoch,
                               grad_clip=self.cfg.grad_clip, scaler=scaler,
                               progress=self.progress, total=len(self.loader))

    def evaluate(self, split: str, *, criterion, normalizer) -> tuple[float, np.ndarray,
                                                                       np.ndarray]:
        batches = iter_eval_batches(self._eval_sets[split], max(64, self.cfg.batch_size * 2),
                                    pin_memory=self.hw.pin_memory)
        return evaluate(self.model, batches, criterion=criterion, normalizer=normalizer,
                        hw=self.hw)


class FinetunePlan(ImagePlan):
    """Discriminative learning rates and an optional head-only warm phase."""

    @property
    def param_groups(self) -> list[dict]:
        from wbclf.models import backbone_parameters, head_parameters

        cfg = self.cfg
        head_ids = {id(p) for p in head_parameters(self.model)}
        named = list(self.model.named_parameters())
        backbone = [(n, p) for n, p in named if id(p) not in head_ids]
        head = [(n, p) for n, p in named if id(p) in head_ids]
        assert len(backbone) == len(list(backbone_parameters(self.model)))
        return (param_groups(head, cfg.lr, cfg.weight_decay, name="head")
                + param_groups(backbone, cfg.lr * cfg.backbone_lr_mult, cfg.weight_decay,
                               name="backbone"))

    def before_epoch(self, epoch: int, optimizer: torch.optim.Optimizer) -> None:
        from wbclf.models import freeze_backbone, unfreeze_backbone

        if epoch <= self.cfg.unfreeze_epoch:
            freeze_backbone(self.model)
        else:
            unfreeze_backbone(self.model)


class FrozenImagePlan(ImagePlan):
    """Frozen backbone trained through pixels (used when the feature cache is off)."""

    @property
    def param_groups(self) -> list[dict]:
        from wbclf.models import head_parameters

        head = [(str(i), p) for i, p in enumerate(head_parameters(self.model))]
        return param_groups(head, self.cfg.lr, self.cfg.weight_decay, name="head")


def _create(cfg: RunConfig, num_classes: int) -> tuple[nn.Module, dict[str, str]]:
    """The model for ``cfg`` and where its weights came from."""
    from wbclf.models import create_model

    model = create_model(cfg.model, num_classes, cfg)
    source = getattr(model, "wbclf_weight_source", None)
    if source is None:
        return model, {"kind": "random", "detail": "random initialization"}
    return model, {"kind": source.kind, "detail": source.detail}


def _feature_cache_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("wbclf.features") is not None


def build_plan(cfg: RunConfig, data: DataBundle, hw: Hardware, *, progress: bool = False
               ) -> TrainingPlan:
    """Create the model for ``cfg`` and the plan that trains it."""
    from wbclf.models import freeze_backbone, model_data_config

    model, source = _create(cfg, len(data.classes))
    data_config = {k: (list(v) if isinstance(v, tuple) else v)
                   for k, v in model_data_config(model).items()}
    model = model.to(hw.device)
    if hw.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if cfg.strategy == "frozen":
        freeze_backbone(model)
        if cfg.cache_images and _feature_cache_available():
            from wbclf.features import FeaturePlan, supports_feature_cache

            if supports_feature_cache(model):
                return FeaturePlan(cfg, data, hw, model, data_config, source, progress=progress)
            print(f"frozen {cfg.model}: no single classifier module on the pooled features; "
                  "the backbone runs on every batch (no feature cache)", flush=True)
        plan_cls: type[ImagePlan] = FrozenImagePlan
    elif cfg.strategy == "finetune":
        plan_cls = FinetunePlan
    else:
        plan_cls = ImagePlan
    if cfg.compile and hw.is_cuda:
        model = torch.compile(model)
    return plan_cls(cfg, data, hw, model, data_config, source, progress=progress)
