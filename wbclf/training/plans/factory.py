"""``build_plan``: the model for a RunConfig and the plan that trains it."""

from __future__ import annotations

import torch
from torch import nn

from wbclf.config import RunConfig
from wbclf.data.datasets import DataBundle
from wbclf.data.transforms import AugmentPipeline
from wbclf.device import Hardware
from wbclf.models import create_model, freeze_backbone, model_data_config
from wbclf.training.plans.base import TrainingPlan
from wbclf.training.plans.features import FeaturePlan, supports_feature_cache
from wbclf.training.plans.image import FinetunePlan, FrozenImagePlan, ImagePlan


def _create(cfg: RunConfig, num_classes: int) -> tuple[nn.Module, dict[str, str]]:
    """The model for ``cfg`` and where its weights came from."""
    model = create_model(cfg.model, num_classes, cfg)
    source = getattr(model, "wbclf_weight_source", None)
    if source is None:
        return model, {"kind": "random", "detail": "random initialization"}
    return model, {"kind": source.kind, "detail": source.detail}


def build_plan(cfg: RunConfig, data: DataBundle, hw: Hardware, *, progress: bool = False,
               augment: AugmentPipeline | None = None) -> TrainingPlan:
    """Create the model for ``cfg`` and the plan that trains it (``augment``: the resolved
    ``cfg.augment``; resolved here when not given)."""
    model, source = _create(cfg, len(data.classes))
    data_config = {k: (list(v) if isinstance(v, tuple) else v)
                   for k, v in model_data_config(model).items()}
    if any(t.device != hw.device for t in (*model.parameters(), *model.buffers())):
        # a walk over every module even when nothing moves (~0.04 s in a warm trial)
        model = model.to(hw.device)
    # both ways: a kept pretrained build (wbclf.models.prebuilt) is already channels_last
    model = model.to(memory_format=torch.channels_last if hw.channels_last
                     else torch.contiguous_format)
    if cfg.strategy == "frozen":
        freeze_backbone(model)
        if cfg.cache_images:
            if supports_feature_cache(model):
                return FeaturePlan(cfg, data, hw, model, data_config, source, progress=progress,
                                   augment=augment)
            print(f"frozen {cfg.model}: no single classifier module on the pooled features; "
                  "the backbone runs on every batch (no feature cache)", flush=True)
        plan_cls: type[ImagePlan] = FrozenImagePlan
    elif cfg.strategy == "finetune":
        plan_cls = FinetunePlan
    else:
        plan_cls = ImagePlan
    if cfg.compile and hw.is_cuda:
        model = torch.compile(model)
    return plan_cls(cfg, data, hw, model, data_config, source, progress=progress,
                    augment=augment)
