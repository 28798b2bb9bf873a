"""Plans that train on (augmented) pixels through the whole model.

- ``scratch``: random init, every weight trained on augmented pixels.
- ``finetune``: pretrained backbone + new head, all trained; backbone at ``lr x
  backbone_lr_mult``; the first ``unfreeze_epoch`` epochs train the head only.
- ``frozen`` with ``cache_images=false``: the backbone runs on every batch, only the head trains
  (with the cache, :mod:`.features` runs the backbone once instead).
"""

from __future__ import annotations

import numpy as np
import torch

from wbclf.data.datasets import iter_eval_batches, make_train_loader, resolve_workers
from wbclf.models import backbone_parameters, freeze_backbone, head_parameters, unfreeze_backbone
from wbclf.training.engine import evaluate, train_one_epoch
from wbclf.training.optim import param_groups
from wbclf.training.plans.base import TrainingPlan


class ImagePlan(TrainingPlan):
    """Train on (augmented) pixels through the whole model: scratch, finetune, frozen."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        cfg = self.cfg
        compose = self.augment.compose
        self.workers = resolve_workers(cfg.num_workers, augment="none" if compose is None
                                       else self.augment.name, device=self.hw.device)
        self.train_set = self.data.dataset("train", compose)
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
        if epoch <= self.cfg.unfreeze_epoch:
            freeze_backbone(self.model)
        else:
            unfreeze_backbone(self.model)


class FrozenImagePlan(ImagePlan):
    """Frozen backbone trained through pixels (used when the feature cache is off)."""

    @property
    def param_groups(self) -> list[dict]:
        head = [(str(i), p) for i, p in enumerate(head_parameters(self.model))]
        return param_groups(head, self.cfg.lr, self.cfg.weight_decay, name="head")
