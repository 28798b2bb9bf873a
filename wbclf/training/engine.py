"""The training loop: ``train_one_epoch``, ``evaluate`` and ``fit``.

Each function takes what it uses and returns plain numbers; logging, checkpoints and pruning
happen in the ``on_epoch_end`` callback that the caller passes to :func:`fit`.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from wbclf.device import Hardware
from wbclf.errors import DivergedError
from wbclf.training.optim import current_lrs


def _bar(iterable, *, total: int | None, desc: str, enabled: bool, leave: bool = False):
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=leave, disable=not enabled,
                dynamic_ncols=True, unit="batch")


def progress_enabled() -> bool:
    """Bars only for a person at a terminal; logs and CI get one line per epoch."""
    return sys.stderr.isatty()


_CHECK_EVERY = 32  # CUDA steps between host reads of the loss


def train_one_epoch(model: nn.Module, batches: Iterable, *, optimizer: torch.optim.Optimizer,
                    scheduler, criterion: nn.Module, normalizer: nn.Module, hw: Hardware,
                    epoch: int, grad_clip: float = 0.0, scaler=None, progress: bool = False,
                    total: int | None = None) -> dict[str, float]:
    """One pass over ``batches`` of uint8 images; returns train loss, accuracy and speed.

    Loss and accuracy are summed on the device: on CUDA the host reads them (and checks the
    loss is finite) only every ``_CHECK_EVERY`` steps, so it can queue work ahead of the GPU
    instead of waiting for every step. A divergence is still reported at its first step.
    """
    model.train()
    device = hw.device
    loss_sum = torch.zeros((), dtype=torch.float32, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    seen = 0
    pending: list[tuple[int, torch.Tensor]] = []  # (step, loss) not yet checked
    check_every = _CHECK_EVERY if hw.is_cuda else 1  # a CPU "sync" costs nothing
    step = 0
    start = time.perf_counter()
    for step, (images, labels) in enumerate(
            _bar(batches, total=total, desc=f"epoch {epoch}", enabled=progress), start=1):
        if labels.numel() == 0:
            continue
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        with hw.autocast():
            logits = model(normalizer(images))
        loss = criterion(logits.float(), labels)
        pending.append((step, loss.detach()))
        if len(pending) >= check_every:
            _check_losses(pending, epoch, optimizer)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        else:
            loss.backward()
        if grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        scheduler.step()
        batch = labels.shape[0]
        loss_sum += loss.detach() * batch
        correct += (logits.detach().argmax(1) == labels).sum()
        seen += batch
    _check_losses(pending, epoch, optimizer)  # also waits for the device's last step
    elapsed = time.perf_counter() - start
    # The last step can leave NaN/inf weights behind a finite loss: check before evaluating.
    if seen and not _all_finite(model.parameters()):
        lr = current_lrs(optimizer).get("lr", float("nan"))
        raise DivergedError(f"diverged at epoch {epoch}, step {step} (lr={lr:.3g}): the "
                            "weights became NaN/inf; lower lr or enable batch_norm")
    return {"train/loss": float(loss_sum) / max(1, seen),
            "train/acc": int(correct) / max(1, seen), "train/images": float(seen),
            "train/epoch_time_s": elapsed,
            "train/epoch_images_per_s": seen / elapsed if elapsed > 0 else 0.0}


def _check_losses(pending: list[tuple[int, torch.Tensor]], epoch: int,
                  optimizer: torch.optim.Optimizer) -> None:
    """Raise :class:`DivergedError` at the first non-finite loss among ``pending`` steps.

    ``pending`` holds (step, loss) pairs not yet checked; one device-to-host copy reads
    them all, and the list is emptied.
    """
    if not pending:
        return
    values = torch.stack([loss for _, loss in pending]).tolist()
    steps = [step for step, _ in pending]
    pending.clear()
    for step, value in zip(steps, values, strict=True):
        if not math.isfinite(value):
            lr = current_lrs(optimizer).get("lr", float("nan"))
            raise DivergedError(f"diverged at epoch {epoch}, step {step} (lr={lr:.3g}): the "
                                f"loss became {value}; lower lr or enable batch_norm")


def _all_finite(tensors: Iterable[torch.Tensor]) -> bool:
    """Whether every element of every tensor is finite (one host sync in all)."""
    flags = [torch.isfinite(t).all() for t in tensors]
    return bool(torch.stack(flags).all()) if flags else True


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable, *, criterion: nn.Module, normalizer: nn.Module,
             hw: Hardware) -> tuple[float, np.ndarray, np.ndarray]:
    """Loss, labels and softmax probabilities of ``model`` over un-augmented ``batches``.

    Results stay on the device until the end: one host sync per evaluation, not per batch.
    """
    model.eval()
    losses, sizes, all_labels, all_probs = [], [], [], []
    for images, labels in batches:
        images = images.to(hw.device, non_blocking=True)
        labels = labels.to(hw.device, non_blocking=True)
        with hw.autocast():
            logits = model(normalizer(images)).float()
        losses.append(criterion(logits, labels))
        sizes.append(labels.shape[0])
        all_labels.append(labels)
        all_probs.append(torch.softmax(logits, dim=1))
    count = sum(sizes)
    if count == 0:
        raise ValueError("evaluation got no images")
    values = torch.stack(losses).tolist()
    loss = sum(value * size for value, size in zip(values, sizes, strict=True))
    return (loss / count, torch.cat(all_labels).cpu().numpy(),
            torch.cat(all_probs).cpu().numpy().astype(np.float64))


@dataclass
class FitState:
    """Progress of :func:`fit` that a checkpoint must carry to resume exactly."""

    epoch: int = 0  # last completed epoch (1-based)
    best_acc: float = -1.0
    best_epoch: int = 0
    stale_epochs: int = 0  # epochs since the last improvement (early stopping)
    stopped: str = ""  # "", "early_stopping", "pruned"
    train_time_s: float = 0.0
    train_images: float = 0.0
    history: list[dict[str, float]] = field(default_factory=list)


EpochHook = Callable[[int, dict[str, float], bool], bool]


def fit(*, epochs: int, state: FitState, run_epoch: Callable[[int], dict[str, float]],
        validate: Callable[[int], dict[str, float]], on_epoch_end: EpochHook,
        early_stopping: int = 0) -> FitState:
    """Train from ``state.epoch + 1`` to ``epochs``, validating after each epoch.

    Args:
        run_epoch: trains one epoch and returns its ``train/...`` figures.
        validate: returns ``val/...`` figures (``val/acc`` is the selection metric).
        on_epoch_end: called with (epoch, metrics, improved); logs and checkpoints; returns
            True to stop now (a pruned sweep trial).
        early_stopping: stop after this many epochs without a better ``val/acc`` (0 = off).
    """
    for epoch in range(state.epoch + 1, epochs + 1):
        start = time.perf_counter()
        metrics = run_epoch(epoch)
        metrics.update(validate(epoch))
        state.train_time_s += metrics.get("train/epoch_time_s", 0.0)
        state.train_images += metrics.get("train/images", 0.0)
        improved = metrics["val/acc"] > state.best_acc
        if improved:
            state.best_acc, state.best_epoch, state.stale_epochs = metrics["val/acc"], epoch, 0
        else:
            state.stale_epochs += 1
        metrics["epoch"] = epoch
        metrics["time_s"] = time.perf_counter() - start
        state.epoch = epoch
        state.history.append(metrics)
        if on_epoch_end(epoch, metrics, improved):
            state.stopped = "pruned"
            break
        if early_stopping and state.stale_epochs >= early_stopping:
            state.stopped = "early_stopping"
            break
    return state
