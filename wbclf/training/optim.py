"""Optimizers and learning-rate schedules, chosen from small maps (no if/elif ladders)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, OneCycleLR

ParamGroups = list[dict]


def _adamw(groups: ParamGroups, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)


def _sgd(groups: ParamGroups, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    return torch.optim.SGD(groups, lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)


OPTIMIZERS: dict[str, Callable[[ParamGroups, float, float], torch.optim.Optimizer]] = {
    "adamw": _adamw,
    "sgd": _sgd,
}


def param_groups(named: Iterable[tuple[str, nn.Parameter]], lr: float, weight_decay: float,
                 *, name: str = "all") -> ParamGroups:
    """Two groups: weights with decay; biases and norm parameters (1-d) without it."""
    decay, no_decay = [], []
    for _, p in named:
        (no_decay if p.ndim <= 1 else decay).append(p)
    groups = []
    if decay:
        groups.append({"params": decay, "lr": lr, "weight_decay": weight_decay, "name": name})
    if no_decay:
        groups.append({"params": no_decay, "lr": lr, "weight_decay": 0.0, "name": name})
    return groups


def build_optimizer(kind: str, groups: ParamGroups, lr: float, weight_decay: float
                    ) -> torch.optim.Optimizer:
    if kind not in OPTIMIZERS:
        raise ValueError(f"optimizer='{kind}' is not allowed; allowed: {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[kind](groups, lr, weight_decay)


def _warmup(step: int, warmup_steps: int) -> float:
    return (step + 1) / warmup_steps if step < warmup_steps else 1.0


def lr_factor(kind: str, step: int, total_steps: int, warmup_steps: int) -> float:
    """Multiplier of the peak lr at optimizer step ``step`` (0-based) for schedule ``kind``."""
    if step < warmup_steps:
        return _warmup(step, warmup_steps)
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    progress = min(1.0, progress)
    if kind == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if kind == "step":
        # divide by 10 at 1/2 and 3/4 of training (the classic ImageNet recipe, scaled)
        return 0.1 ** (int(progress >= 0.5) + int(progress >= 0.75))
    return 1.0


SCHEDULES = ("cosine", "onecycle", "step", "none")


def build_scheduler(kind: str, optimizer: torch.optim.Optimizer, *, total_steps: int,
                    warmup_steps: int) -> LRScheduler:
    """A per-step scheduler; ``onecycle`` brings its own warm-up (30% of the steps)."""
    if kind not in SCHEDULES:
        raise ValueError(f"scheduler='{kind}' is not allowed; allowed: {', '.join(SCHEDULES)}")
    if kind == "onecycle":
        max_lrs = [g["lr"] for g in optimizer.param_groups]
        return OneCycleLR(optimizer, max_lr=max_lrs, total_steps=max(1, total_steps),
                          pct_start=0.3, cycle_momentum=False)
    return LambdaLR(optimizer, lambda step: lr_factor(kind, step, total_steps, warmup_steps))


def current_lrs(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """``{"lr": head/main lr, "lr/backbone": ...}`` from the optimizer's named groups."""
    out: dict[str, float] = {}
    for group in optimizer.param_groups:
        name = group.get("name", "all")
        key = "lr" if name in ("all", "head") else f"lr/{name}"
        out.setdefault(key, float(group["lr"]))
    return out
