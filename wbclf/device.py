"""Device and precision choices, with clean CPU fallbacks."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from wbclf.errors import UserError


@dataclass(frozen=True)
class Hardware:
    """Resolved device settings for a run."""

    device: torch.device
    autocast_dtype: torch.dtype | None  # None: full fp32
    channels_last: bool
    pin_memory: bool

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    def autocast(self):
        """The autocast context for forward passes (a no-op in fp32)."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)


def resolve_device(setting: str) -> torch.device:
    """``auto`` picks CUDA, then MPS, then CPU; an unavailable explicit device is an error."""
    if setting == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(setting)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device={setting} but CUDA is not available here; allowed: auto, cpu")
    if device.type == "cuda" and device.index is not None \
            and device.index >= torch.cuda.device_count():
        raise UserError(f"device={setting} but only {torch.cuda.device_count()} CUDA "
                         "device(s) exist")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"device={setting} but MPS is not available here; allowed: auto, cpu")
    return device


def resolve_hardware(device_setting: str, precision: str) -> Hardware:
    """Device, autocast dtype, memory format and pinning for a RunConfig's settings."""
    device = resolve_device(device_setting)
    cuda = device.type == "cuda"
    if precision == "auto":
        dtype = torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else None
    elif precision == "32":
        dtype = None
    elif not cuda:
        raise UserError(f"precision={precision} needs a CUDA device; this run is on "
                         f"{device.type}: allowed here: auto, 32")
    else:
        dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    if cuda:
        torch.backends.cudnn.benchmark = True  # fixed input size: let cuDNN pick kernels
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    # channels_last also on CPU: oneDNN's convolutions are faster in NHWC (training images/s
    # on a 2-core EPYC: scratch CNN 1.7x, efficientnet-lite0 1.65x, resnet18 1.1x; see
    # docs/BENCHMARKS.md), and the loader already delivers NHWC memory.
    channels_last = device.type in ("cuda", "cpu")
    return Hardware(device=device, autocast_dtype=dtype, channels_last=channels_last,
                    pin_memory=cuda)
