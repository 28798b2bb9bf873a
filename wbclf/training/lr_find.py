"""The learning-rate range test (``wbclf lr-find``, ``lr=auto``).

The model trains from its initial weights for up to ``steps`` optimizer steps while the
learning rate grows exponentially from ``start`` to ``end``; the loss of each step, smoothed,
against the learning rate shows where training is fastest and where it blows up. It runs
through the run's own plan (:func:`wbclf.training.plans.factory.build_plan`): the same
model, batches, augmentation, optimizer, loss, grad clipping and parameter groups (a
fine-tune's backbone keeps its ``backbone_lr_mult``) as ``wbclf train``.

Suggestion rule ``min/10``: a tenth of the learning rate at the smoothed loss's minimum
(fastai's original rule; at the minimum itself the loss is about to diverge). The steepest
descent of the smoothed loss before the minimum is reported too.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import numpy as np
import torch

from wbclf.config import RunConfig
from wbclf.errors import DivergedError
from wbclf.training.optim import build_optimizer
from wbclf.training.plans.base import TrainingPlan

RULE = "min/10"
SMOOTHING = 0.9  # exponential moving average of the loss (debiased)
DIVERGE_FACTOR = 4.0  # stop when the smoothed loss exceeds this times its best
MIN_STEPS = 10  # fewer recorded steps cannot place a minimum


class _Stop(Exception):
    """The range test is over (enough steps, or the loss ran away)."""


@dataclass
class RangeTest:
    """What the range test saw and suggests."""

    lrs: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    smoothed: list[float] = field(default_factory=list)
    suggestion: float = float("nan")
    steepest: float = float("nan")
    min_loss_lr: float = float("nan")
    rule: str = RULE
    stopped: str = "steps"  # steps | diverged

    def to_dict(self) -> dict:
        return {"suggested_lr": self.suggestion, "rule": self.rule,
                "min_loss_lr": self.min_loss_lr, "steepest_lr": self.steepest,
                "stopped": self.stopped, "steps": len(self.lrs), "lrs": self.lrs,
                "losses": self.losses, "smoothed_losses": self.smoothed}


class _Ramp:
    """Stands in for the scheduler: after each step, the next lr on the exponential ramp
    (every group keeps its ratio to the first); records each step's loss."""

    def __init__(self, optimizer: torch.optim.Optimizer, start: float, end: float,
                 steps: int, result: RangeTest) -> None:
        self.optimizer = optimizer
        self.ratios = [g["lr"] / optimizer.param_groups[0]["lr"] for g in optimizer.param_groups]
        self.start, self.growth = start, (end / start) ** (1.0 / max(1, steps - 1))
        self.steps = steps
        self.result = result
        self.step_index = 0
        self._set(start)

    def _set(self, lr: float) -> None:
        for group, ratio in zip(self.optimizer.param_groups, self.ratios):
            group["lr"] = lr * ratio

    def record(self, loss: float) -> None:
        """Called by the loss wrapper with the loss at the current lr."""
        result = self.result
        lr = self.start * self.growth ** self.step_index
        result.lrs.append(lr)
        result.losses.append(loss)
        k = len(result.losses)
        previous = result.smoothed[-1] * (1 - SMOOTHING ** (k - 1)) if k > 1 else 0.0
        average = SMOOTHING * previous + (1 - SMOOTHING) * loss
        result.smoothed.append(average / (1 - SMOOTHING ** k))
        if not math.isfinite(loss) or (
                k > MIN_STEPS and result.smoothed[-1] > DIVERGE_FACTOR * min(result.smoothed)):
            result.stopped = "diverged"
            raise _Stop

    def step(self) -> None:
        self.step_index += 1
        if self.step_index >= self.steps:
            raise _Stop
        self._set(self.start * self.growth ** self.step_index)


class _RecordingLoss(torch.nn.Module):
    """The run's loss; hands each value to the ramp."""

    def __init__(self, criterion: torch.nn.Module, ramp: _Ramp) -> None:
        super().__init__()
        self.criterion = criterion
        self.ramp = ramp

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        loss = self.criterion(logits, labels)
        self.ramp.record(float(loss.detach()))
        return loss


def suggest(result: RangeTest) -> None:
    """Fill in the suggestion from the smoothed losses (``min/10`` and the steepest slope)."""
    smoothed = np.asarray(result.smoothed)
    lrs = np.asarray(result.lrs)
    if len(smoothed) < MIN_STEPS:
        raise DivergedError(f"the range test lost its loss after {len(smoothed)} steps (lr="
                            f"{lrs[-1] if len(lrs) else float('nan'):.3g}); lower the start lr")
    # the first steps' average is still mostly the initial loss: skip them
    skip = max(1, len(smoothed) // 10)
    best = skip + int(np.argmin(smoothed[skip:]))
    result.min_loss_lr = float(lrs[best])
    result.suggestion = float(lrs[best] / 10)
    if best - skip >= 2:
        slope = np.gradient(smoothed[skip:best + 1], np.log(lrs[skip:best + 1]))
        result.steepest = float(lrs[skip + int(np.argmin(slope))])


def range_test(plan: TrainingPlan, cfg: RunConfig, criterion: torch.nn.Module,
               normalizer: torch.nn.Module, *, start: float = 1e-7, end: float = 10.0,
               steps: int = 100) -> RangeTest:
    """Run the range test on ``plan``'s model and data; the model's weights (and the
    random state) are put back afterwards, so training can start from them."""
    if not 0 < start < end:
        raise ValueError(f"lr range needs 0 < start < end; got start={start}, end={end}")
    saved_model = copy.deepcopy(plan.model.state_dict())
    saved_rng = torch.get_rng_state(), np.random.get_state()
    saved_cfg = plan.cfg
    plan.cfg = cfg.replace(lr=1.0)  # parameter groups at their ratios to the main lr
    result = RangeTest()
    try:
        optimizer = build_optimizer(cfg.optimizer, plan.param_groups, 1.0, cfg.weight_decay)
        ramp = _Ramp(optimizer, start, end, steps, result)
        loss = _RecordingLoss(criterion, ramp)
        epoch = 0
        try:
            while True:
                epoch += 1
                plan.before_epoch(1, optimizer)
                plan.train_epoch(epoch, optimizer=optimizer, scheduler=ramp, criterion=loss,
                                 normalizer=normalizer)
        except _Stop:
            pass
        except DivergedError:  # a NaN loss or weights: the end of the ramp
            result.stopped = "diverged"
    finally:
        plan.cfg = saved_cfg
        plan.model.load_state_dict(saved_model)
        torch.set_rng_state(saved_rng[0])
        np.random.set_state(saved_rng[1])
    suggest(result)
    return result
