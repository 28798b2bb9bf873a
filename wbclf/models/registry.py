"""Models by name: wbclf's own registered builders first, then any timm model.

A registered builder is a keyword-only function ``builder(*, num_classes, **fields)`` whose
other parameter names are RunConfig fields; :func:`create_model` fills them from the config
(missing attributes keep the builder's defaults), so a builder never sees the whole config.
"""

from __future__ import annotations

import difflib
import inspect
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .backbones import WeightSource, create_backbone, freeze_backbone

from wbclf.errors import UserError

STRATEGIES = ("scratch", "frozen", "finetune")

_BUILDERS: dict[str, Callable[..., nn.Module]] = {}


class UnknownModelError(UserError):
    """A model name that is neither registered in wbclf nor a timm model."""


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a model builder under ``name`` (decorator).

    Raises:
        ValueError: ``name`` is already registered, or the builder takes no ``num_classes``.
    """
    if name in _BUILDERS:
        raise ValueError(f"model {name!r} is already registered")

    def decorator(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if "num_classes" not in inspect.signature(builder).parameters:
            raise ValueError(f"builder for {name!r} must take a num_classes keyword argument")
        if name in _BUILDERS:  # registered between the call and the decoration
            raise ValueError(f"model {name!r} is already registered")
        _BUILDERS[name] = builder
        return builder

    return decorator


def list_models(include_timm: bool = False) -> list[str]:
    """Names :func:`create_model` accepts: wbclf's own (sorted), then optionally timm's."""
    names = sorted(_BUILDERS)
    if include_timm:
        import timm  # imported where timm models are used: a scratch run never needs it

        names += [n for n in timm.list_models() if n not in _BUILDERS]
    return names


def _unknown_model(name: str) -> UnknownModelError:
    import timm

    candidates = sorted(_BUILDERS) + timm.list_models()
    close = difflib.get_close_matches(name.lower(), candidates, n=5, cutoff=0.6)
    if close:
        hint = f"did you mean {', '.join(close)}?"
    else:
        hint = "use 'scratch' or a timm model name (see timm.list_models())"
    return UnknownModelError(f"unknown model {name!r}; {hint}")


def _builder_kwargs(builder: Callable[..., nn.Module], cfg: Any) -> dict[str, Any]:
    params = inspect.signature(builder).parameters
    return {p: getattr(cfg, p) for p in params if p != "num_classes" and hasattr(cfg, p)}


def create_model(name: str, num_classes: int, cfg: Any) -> nn.Module:
    """Build the model a run asks for.

    Registered names (e.g. "scratch") go to their builder; any other timm model name goes to
    :func:`create_backbone`: random init for strategy "scratch", pretrained weights for
    "frozen" and "finetune", and "frozen" also freezes the backbone. The same head
    (``head_hidden``, ``dropout``) is used in every strategy, so strategies differ only in
    initialization and in what is trained.

    Args:
        name: Registered name or timm model name.
        num_classes: Number of output logits.
        cfg: RunConfig-like object; read with getattr, so a SimpleNamespace works.

    Returns:
        The model; ``model.wbclf_weight_source`` says where its weights came from.

    Raises:
        UnknownModelError: ``name`` is neither registered nor a timm model.
        ValueError: Unknown strategy, or a combination the model cannot honour.
        WeightsNotFoundError: A pretrained strategy and no weight source worked.
    """
    strategy = getattr(cfg, "strategy", "scratch")
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; expected one of {', '.join(STRATEGIES)}")
    pretrained_file = getattr(cfg, "pretrained_file", "") or ""

    if name in _BUILDERS:
        if strategy != "scratch" or pretrained_file:
            raise UserError(
                f"model {name!r} has no pretrained weights: use strategy=scratch without "
                f"pretrained_file, or a timm model for strategy={strategy}"
            )
        builder = _BUILDERS[name]
        model = builder(num_classes=num_classes, **_builder_kwargs(builder, cfg))
        image_size = getattr(cfg, "image_size", None)
        model_cfg = getattr(model, "pretrained_cfg", None)
        if image_size and isinstance(model_cfg, dict):
            # No native resolution: the data config reports the training one.
            model_cfg["input_size"] = (model_cfg.get("input_size", (3,))[0], image_size, image_size)
        model.wbclf_weight_source = WeightSource("random")
        return model

    import timm

    if not timm.is_model(name):
        raise _unknown_model(name)
    if strategy == "scratch" and pretrained_file:
        raise UserError(
            f"pretrained_file={pretrained_file!r} needs strategy=frozen or finetune, "
            "not scratch (random init)"
        )
    model, _ = create_backbone(
        name,
        num_classes,
        pretrained=strategy != "scratch",
        pretrained_file=pretrained_file,
        head_hidden=getattr(cfg, "head_hidden", 0),
        dropout=getattr(cfg, "dropout", 0.0),
    )
    if strategy == "frozen":
        freeze_backbone(model)
    return model


DATA_CONFIG_KEYS = ("mean", "std", "interpolation", "input_size", "crop_pct", "crop_mode")


def model_data_config(model: nn.Module) -> dict[str, Any]:
    """Preprocessing the model's weights expect, resolved by timm from ``pretrained_cfg``.

    Returns:
        ``mean``, ``std`` (3-tuples of floats), ``interpolation``, ``input_size`` (C, H, W),
        plus timm's ``crop_pct`` and ``crop_mode`` for eval-time resizing.
    """
    cfg = getattr(model, "pretrained_cfg", None) or {}
    if cfg.get("architecture") not in _BUILDERS or not all(k in cfg for k in DATA_CONFIG_KEYS):
        # wbclf's own models carry every key (what timm would return for them); others need
        # timm's resolution
        from timm.data import resolve_model_data_config

        cfg = resolve_model_data_config(model)
    return {
        "mean": tuple(float(v) for v in cfg["mean"]),
        "std": tuple(float(v) for v in cfg["std"]),
        "interpolation": str(cfg["interpolation"]),
        "input_size": tuple(int(v) for v in cfg["input_size"]),
        "crop_pct": float(cfg["crop_pct"]),
        "crop_mode": str(cfg["crop_mode"]),
    }


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode for the block; its training mode put back after (a frozen
    backbone's ``train`` keeps its BatchNorm in eval, see ``freeze_backbone``)."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def count_params(model: nn.Module) -> tuple[int, int]:
    """Return (total, trainable) parameter counts."""
    params = list(model.parameters())
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


FLOPS_METHOD = 1  # bump when count_flops changes what it counts: remembered counts expire


# Layers that pass their input through in eval mode: torch's Dropout family (any rate,
# in place or not), timm's DropPath / DropBlock, and Identity.
_EVAL_IDENTITY = re.compile(r"\w*Dropout\w*|DropPath|DropBlock\w*|Identity")


def _passes_through(module: nn.Module) -> bool:
    return not module._parameters and not module._buffers and not module._modules \
        and _EVAL_IDENTITY.fullmatch(type(module).__name__) is not None


def _eval_layers(module: nn.Module, path: str) -> Iterator[str]:
    """One line per layer that computes in eval mode: its path, class, settings, and its own
    parameters' and buffers' names, shapes and dtypes. Pass-through layers are left out, and
    a plain ``Sequential`` left with one layer is that layer (``Sequential(Dropout, Linear)``
    runs as the ``Linear``); a subclass may compute otherwise, so it stays itself."""
    children = [(name, child) for name, child in module.named_children()
                if not _passes_through(child)]
    own = [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]
    if type(module) is nn.Sequential and len(children) == 1 and not own:
        yield from _eval_layers(children[0][1], path)
        return
    kind = type(module)
    yield f"{path} {kind.__module__}.{kind.__qualname__}({module.extra_repr()})"
    for name, tensor in own:
        yield f"{path}.{name}:{tuple(tensor.shape)}:{tensor.dtype}"
    for name, child in children:
        yield from _eval_layers(child, f"{path}.{name}")


def model_digest(model: nn.Module) -> str:
    """A digest of a model's architecture as it runs in eval mode: every layer that computes
    (its class and settings) and every parameter's and buffer's name, shape and dtype.

    Dropout layers are left out, whatever their rate: in eval mode they pass their input
    through, so models that differ only there (a head with dropout 0 or 0.3) have the same
    speed and FLOPs, which the digest keys.
    """
    import hashlib

    h = hashlib.sha256(b"eval-layers-1")
    for line in _eval_layers(model, ""):
        h.update(f"\n{line}".encode())
    return h.hexdigest()[:24]


def count_flops(model: nn.Module, image_size: int) -> int:
    """Forward FLOPs for one ``image_size`` square image (a multiply-add counts as 2).

    Runs one forward pass in eval mode without gradients, then restores every module's
    train/eval flag as it was.
    """
    modes = [(module, module.training) for module in model.modules()]
    first = next(model.parameters(), None)
    in_chans = (getattr(model, "pretrained_cfg", None) or {}).get("input_size", (3,))[0]
    x = torch.zeros(
        1,
        in_chans,
        image_size,
        image_size,
        device=first.device if first is not None else None,
        dtype=first.dtype if first is not None else None,
    )
    counter = FlopCounterMode(display=False)
    model.eval()
    try:
        with torch.no_grad(), counter:
            model(x)
    finally:
        for module, training in modes:
            module.training = training
    return int(counter.get_total_flops())
