"""Inference speed of a run's model on its device: ``model/latency_ms`` (one image) and
``model/throughput`` (images/s in batches of 64), for the accuracy-against-cost report.

:func:`model_speed` measures once per model, input size, device, precision, thread count and
machine and reuses the figures after that (``model/speed_reused``): the trials of a study
differ in their learning rate, not in their model's speed, and each measurement costs a
second of a trial whose training may take less.
"""

from __future__ import annotations

import os
import platform
import time

import torch
from torch import nn

from wbclf.data.cache import remembered
from wbclf.device import Hardware
from wbclf.models import eval_mode, model_digest

BATCH = 64
REPEATS = 5  # timed calls at batch 1 (the median is kept); batch 64 is timed twice


def _timed(model: nn.Module, images: torch.Tensor, hw: Hardware, repeats: int) -> float:
    """Median seconds of ``repeats`` forward passes, after one untimed warm-up."""
    times = []
    with torch.inference_mode(), hw.autocast():
        for k in range(repeats + 1):
            if hw.is_cuda:
                torch.cuda.synchronize(hw.device)
            start = time.perf_counter()
            model(images)
            if hw.is_cuda:
                torch.cuda.synchronize(hw.device)
            if k:  # the first call pays for allocation and kernel selection
                times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def measure_speed(model: nn.Module, image_size: int, hw: Hardware) -> dict[str, float]:
    """Latency at batch 1 (ms) and throughput at batch 64 (images/s) of ``model`` in eval
    mode on ``hw``'s device and precision; the model's training mode is put back."""
    with eval_mode(model):
        one = torch.randn(1, 3, image_size, image_size, device=hw.device)
        batch = torch.randn(BATCH, 3, image_size, image_size, device=hw.device)
        if hw.channels_last:
            one = one.to(memory_format=torch.channels_last)
            batch = batch.to(memory_format=torch.channels_last)
        latency = _timed(model, one, hw, REPEATS)
        per_batch = _timed(model, batch, hw, 2)
    return {"model/latency_ms": 1000.0 * latency,
            "model/throughput": BATCH / per_batch if per_batch > 0 else 0.0}


def model_speed(model: nn.Module, image_size: int, hw: Hardware,
                cache_dir: str | None = None) -> dict[str, float | bool]:
    """:func:`measure_speed`'s figures, measured once per setting on this machine."""
    gpu = torch.cuda.get_device_name(hw.device) if hw.is_cuda else ""
    key = {"model": model_digest(model), "image_size": image_size, "device": str(hw.device),
           "gpu": gpu, "cudnn": torch.backends.cudnn.version() if hw.is_cuda else None,
           "method": [BATCH, REPEATS], "dtype": str(hw.autocast_dtype),
           "channels_last": hw.channels_last,
           "threads": torch.get_num_threads(), "torch": torch.__version__,
           "host": platform.node(), "cpus": len(os.sched_getaffinity(0))
           if hasattr(os, "sched_getaffinity") else os.cpu_count()}
    figures, reused = remembered("speed", key, lambda: measure_speed(model, image_size, hw),
                                 cache_dir)
    return {**figures, "model/speed_reused": reused}
