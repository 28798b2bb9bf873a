"""RunConfig: the one typed, validated description of a run.

Everything that starts a run goes through :func:`parse_tokens` / :func:`build_config`: the
command line, ``--config FILE.yaml``, the W&B sweep agent (``--key=value`` with booleans as
``True``/``False``, ``None`` for nulls, ``${args_json}``) and local sweeps. Inner code only ever
sees the frozen :class:`RunConfig`.

Precedence: dataclass defaults < config file < agent parameter file < command line.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A bad configuration value; its message is one line meant for the user."""


def default_data_dir() -> str:
    """Where named datasets live: ``$WBCLF_DATA_DIR`` or the user cache dir."""
    env = os.environ.get("WBCLF_DATA_DIR")
    if env:
        return env
    from platformdirs import user_cache_dir

    return str(Path(user_cache_dir("wbclf")) / "datasets")


def _choice(*values: str) -> dict:
    return {"choices": values}


NAMED_DATASETS = ("plant-disease", "melanoma", "toy-lesions", "toy-leaves")


@dataclass(frozen=True)
class RunConfig:
    """Every knob of a run. Each field can be a sweep parameter (DESIGN §4.1)."""

    # data
    dataset: str = "toy-lesions"  # a named dataset or a path to a dataset root
    data_dir: str = field(default_factory=default_data_dir)
    image_size: int = 128
    # model
    model: str = "scratch"  # "scratch" (the CNN factory) or any timm model name
    strategy: str = field(default="scratch", metadata=_choice("scratch", "frozen", "finetune"))
    pretrained_file: str = ""  # explicit weights file (timm checkpoint format)
    width: int = 32
    depth: int = 4
    blocks_per_stage: int = 1
    batch_norm: bool = True
    residual: bool = False
    dropout: float = 0.0
    head_hidden: int = 0
    backbone_lr_mult: float = 0.1
    unfreeze_epoch: int = 0
    # optimisation
    optimizer: str = field(default="adamw", metadata=_choice("adamw", "sgd"))
    lr: float = 1.0e-3
    weight_decay: float = 1.0e-4
    scheduler: str = field(
        default="cosine", metadata=_choice("cosine", "onecycle", "step", "none")
    )
    warmup_epochs: int = 0
    epochs: int = 10
    batch_size: int = 64
    label_smoothing: float = 0.0
    class_weighting: str = field(default="none", metadata=_choice("none", "balanced"))
    grad_clip: float = 1.0  # max gradient norm (0 = off)
    augment: str = field(default="light", metadata=_choice("none", "light", "strong"))
    val_fraction: float = 0.15
    limit_per_class: int = 0
    early_stopping: int = 0
    seed: int = 0
    # hardware
    device: str = "auto"
    precision: str = field(default="auto", metadata=_choice("auto", "32", "bf16", "16"))
    compile: bool = False  # torch.compile the model (CUDA only; ignored on CPU)
    num_workers: str = "auto"  # "auto" or a count
    cache_images: bool = True
    # logging
    log_samples: int = 32
    wandb_mode: str = field(
        default="auto", metadata=_choice("auto", "online", "offline", "disabled")
    )
    project: str = "wbclf"
    out_dir: str = "runs"
    run_name: str = ""  # empty: generated from the settings and a timestamp

    def to_dict(self) -> dict[str, Any]:
        """Plain dict in field order (what ``config.yaml`` and W&B receive)."""
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> RunConfig:
        """A copy with ``changes`` applied, coerced and validated like any other input."""
        return build_config(self.to_dict(), changes)

    @property
    def pretrained(self) -> bool:
        return self.strategy in ("frozen", "finetune")


FIELDS: dict[str, dataclasses.Field] = {f.name: f for f in dataclasses.fields(RunConfig)}

# Names people type for the fields (and what other tools call them): used for suggestions.
ALIASES = {
    "learning_rate": "lr",
    "lr_rate": "lr",
    "bs": "batch_size",
    "batch": "batch_size",
    "wd": "weight_decay",
    "num_epochs": "epochs",
    "n_epochs": "epochs",
    "epoch": "epochs",
    "arch": "model",
    "architecture": "model",
    "backbone": "model",
    "img_size": "image_size",
    "size": "image_size",
    "resolution": "image_size",
    "bn": "batch_norm",
    "batchnorm": "batch_norm",
    "norm": "batch_norm",
    "optim": "optimizer",
    "sched": "scheduler",
    "lr_scheduler": "scheduler",
    "workers": "num_workers",
    "name": "run_name",
    "output_dir": "out_dir",
    "data": "dataset",
    "smoothing": "label_smoothing",
    "augmentation": "augment",
    "aug": "augment",
    "patience": "early_stopping",
    "amp": "precision",
    "channels": "width",
    "layers": "depth",
    "stages": "depth",
    "pretrained_path": "pretrained_file",
    "weights": "pretrained_file",
}

_TRUE = {"true", "1"}
_FALSE = {"false", "0"}
_NULLS = {"none", "null", ""}
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def closest_field(key: str) -> str | None:
    """The RunConfig field a mistyped ``key`` most likely meant, if any."""
    norm = key.strip().lstrip("-").replace("-", "_").lower()
    if norm in FIELDS:
        return norm
    if norm in ALIASES:
        return ALIASES[norm]
    candidates = list(FIELDS) + list(ALIASES)
    match = difflib.get_close_matches(norm, candidates, n=1, cutoff=0.6)
    if not match:
        return None
    return ALIASES.get(match[0], match[0])


def unknown_key_message(key: str) -> str:
    guess = closest_field(key)
    hint = f"; did you mean {guess}?" if guess else "; run `wbclf train --help` for the fields"
    return f"unknown config key '{key}'{hint}"


def _type_name(f: dataclasses.Field) -> str:
    return f.type if isinstance(f.type, str) else f.type.__name__


def coerce(name: str, value: Any) -> Any:
    """Parse ``value`` (text from the agent or YAML, or a Python value) as field ``name``."""
    if name not in FIELDS:
        raise ConfigError(unknown_key_message(name))
    f = FIELDS[name]
    kind = _type_name(f)
    shown = value if not isinstance(value, str) else repr(value)
    if isinstance(value, str):
        value = value.strip()
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, (int, float)) and value in (0, 1):
            return bool(value)
        text = str(value).lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ConfigError(f"{name}={shown} is not a boolean; allowed: true/false/True/False/1/0")
    if kind == "int":
        if isinstance(value, bool):
            raise ConfigError(f"{name}={shown} is not an integer")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name}={shown} is not an integer") from None
        if not math.isfinite(number) or number != int(number):
            raise ConfigError(f"{name}={shown} is not an integer")
        return int(number)
    if kind == "float":
        if isinstance(value, bool):
            raise ConfigError(f"{name}={shown} is not a number")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name}={shown} is not a number (write e.g. 1e-3 or 0.001)"
                              ) from None
        if not math.isfinite(number):
            raise ConfigError(f"{name}={shown} must be a finite number")
        return number
    # strings; the agent renders a null as "None": only optional (empty-default) fields take it
    if value is None or (isinstance(value, str) and value.lower() in _NULLS):
        if f.default == "":
            return ""
        if value is None:
            raise ConfigError(f"{name}=None is not allowed; give a value")
    # whole-number floats from YAML (precision: 32.0) become "32", not "32.0"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value)
    choices = f.metadata.get("choices")
    if choices and text not in choices:
        lowered = {c.lower(): c for c in choices}
        if text.lower() in lowered:
            return lowered[text.lower()]
        raise ConfigError(f"{name}={shown} is not allowed; allowed: {', '.join(choices)}")
    return text


def _check_ranges(cfg: RunConfig) -> None:
    """Field-level bounds and cross-field combinations that can never work."""
    positive = ("image_size", "width", "depth", "blocks_per_stage", "epochs", "batch_size")
    for name in positive:
        if getattr(cfg, name) < 1:
            raise ConfigError(f"{name}={getattr(cfg, name)} must be at least 1")
    non_negative = ("head_hidden", "unfreeze_epoch", "warmup_epochs", "limit_per_class",
                    "early_stopping", "log_samples", "weight_decay", "grad_clip", "seed")
    for name in non_negative:
        if getattr(cfg, name) < 0:
            raise ConfigError(f"{name}={getattr(cfg, name)} must be >= 0")
    if cfg.lr <= 0:
        raise ConfigError(f"lr={cfg.lr} must be > 0")
    if cfg.backbone_lr_mult < 0:
        raise ConfigError(f"backbone_lr_mult={cfg.backbone_lr_mult} must be >= 0")
    for name in ("dropout", "label_smoothing"):
        if not 0.0 <= getattr(cfg, name) < 1.0:
            raise ConfigError(f"{name}={getattr(cfg, name)} must be in [0, 1)")
    if not 0.0 < cfg.val_fraction < 1.0:
        raise ConfigError(f"val_fraction={cfg.val_fraction} must be in (0, 1)")
    if cfg.image_size < 16:
        raise ConfigError(f"image_size={cfg.image_size} is too small; allowed: 16 or more")
    if not _DEVICE.match(cfg.device):
        raise ConfigError(f"device='{cfg.device}' is not allowed; allowed: auto, cpu, cuda, "
                          "cuda:N, mps")
    if cfg.num_workers != "auto" and not cfg.num_workers.isdigit():
        raise ConfigError(f"num_workers='{cfg.num_workers}' is not allowed; allowed: auto or "
                          "a count >= 0")
    if not cfg.model:
        raise ConfigError("model='' is empty; allowed: scratch or a timm model name")
    if cfg.model == "scratch" and cfg.strategy != "scratch":
        raise ConfigError(f"model=scratch with strategy={cfg.strategy} is impossible: the "
                          "scratch CNN has no pretrained weights; use a timm model name "
                          "(e.g. resnet18) or strategy=scratch")
    if cfg.model == "scratch" and cfg.image_size < 2 ** cfg.depth:
        raise ConfigError(f"depth={cfg.depth} halves the image {cfg.depth} times, more than "
                          f"image_size={cfg.image_size} allows; allowed: depth <= "
                          f"{int(math.log2(cfg.image_size))}")
    if cfg.warmup_epochs >= cfg.epochs and cfg.warmup_epochs > 0:
        raise ConfigError(f"warmup_epochs={cfg.warmup_epochs} must be less than "
                          f"epochs={cfg.epochs}")
    if cfg.device == "cpu" and cfg.precision in ("16", "bf16"):
        raise ConfigError(f"precision={cfg.precision} with device=cpu: mixed precision is "
                          "for CUDA; allowed on CPU: auto or 32")
    if cfg.dataset == "":
        raise ConfigError("dataset='' is empty; allowed: " + ", ".join(NAMED_DATASETS)
                          + " or a path to a dataset root")


def unwrap(values: Mapping[str, Any]) -> dict[str, Any]:
    """Accept W&B's ``{key: {value: x}}`` form (config-defaults.yaml, sweep param files)."""
    out = {}
    for key, value in values.items():
        if isinstance(value, Mapping) and "value" in value:
            value = value["value"]
        out[key] = value
    return out


def build_config(*layers: Mapping[str, Any]) -> RunConfig:
    """Merge ``layers`` (later wins) over the defaults, coerce every value and validate."""
    merged: dict[str, Any] = {}
    for layer in layers:
        for key, value in unwrap(layer).items():
            name = key.replace("-", "_")
            if name not in FIELDS:
                raise ConfigError(unknown_key_message(key))
            merged[name] = coerce(name, value)
    cfg = RunConfig(**merged)
    _check_ranges(cfg)
    return cfg


def load_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON config file into a flat dict."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file '{path}' does not exist")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as err:
        first = str(err).splitlines()[0] if str(err) else "syntax error"
        raise ConfigError(f"config file '{path}' is not valid YAML: {first}") from None
    if not isinstance(data, Mapping):
        raise ConfigError(f"config file '{path}' must hold a mapping of field: value")
    data = {k: v for k, v in data.items() if k not in ("wandb_version", "_wandb")}
    return unwrap(data)


@dataclass
class ParsedArgs:
    """Result of parsing ``wbclf train`` / ``scripts/train.py`` arguments."""

    config: RunConfig
    overrides: dict[str, Any]  # what the command line itself set (for --resume)
    print_config: bool = False
    resume: str = ""
    config_file: str = ""


def _split_tokens(tokens: Iterable[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """Turn argv tokens into (field values, control options)."""
    values: dict[str, Any] = {}
    control: dict[str, str] = {}
    items = list(tokens)
    i = 0
    while i < len(items):
        token = items[i]
        i += 1
        if token.lstrip().startswith("{") and "args_json" not in control:
            # the agent renders `${args_json}` as one bare JSON argument
            control["args_json"] = token
            continue
        if not token.startswith("--"):
            raise ConfigError(f"unexpected argument '{token}'; expected --key=value")
        body = token[2:]
        key, has_value, value = body.partition("=")
        key = key.replace("-", "_")
        if key in ("config", "resume", "args_json", "args_json_file"):
            if not has_value:
                if i >= len(items):
                    raise ConfigError(f"--{key} needs a value")
                value, i = items[i], i + 1
            control[key] = value
            continue
        if key == "print_config":
            control[key] = "1"
            continue
        if key not in FIELDS:
            raise ConfigError(unknown_key_message(key))
        if not has_value:
            if _type_name(FIELDS[key]) == "bool":
                # `${args_no_boolean_flags}` gives a bare flag, `${args_no_equals}` `--x True`
                is_literal = i < len(items) and items[i].strip().lower() in _TRUE | _FALSE
                value, i = (items[i], i + 1) if is_literal else ("true", i)
            elif i < len(items) and not items[i].startswith("--"):
                value, i = items[i], i + 1
            else:
                raise ConfigError(f"--{key} needs a value (--{key}=VALUE)")
        values[key] = value
    return values, control


def _json_args(text: str, source: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"{source} is not valid JSON: {err.msg}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source} must be a JSON object")
    return unwrap(data)


def sweep_param_file_values() -> dict[str, Any]:
    """Parameters the W&B agent wrote to ``$WANDB_SWEEP_PARAM_PATH`` (if set)."""
    path = os.environ.get("WANDB_SWEEP_PARAM_PATH")
    if not path or not Path(path).is_file():
        return {}
    data = yaml.safe_load(Path(path).read_text()) or {}
    data = {k: v for k, v in unwrap(data).items() if k in FIELDS}
    return data


def parse_tokens(tokens: Iterable[str], *, base: Mapping[str, Any] | None = None) -> ParsedArgs:
    """Parse ``--key=value`` tokens (and --config/--print-config/--resume) into a RunConfig."""
    values, control = _split_tokens(tokens)
    if "args_json" in control:
        values = {**_json_args(control["args_json"], "--args_json"), **values}
    if "args_json_file" in control:
        text = Path(control["args_json_file"]).read_text()
        values = {**_json_args(text, "--args_json_file"), **values}
    file_values = load_file(control["config"]) if "config" in control else {}
    cfg = build_config(base or {}, file_values, sweep_param_file_values(), values)
    return ParsedArgs(
        config=cfg,
        overrides={k: coerce(k, v) for k, v in values.items()},
        print_config="print_config" in control,
        resume=control.get("resume", ""),
        config_file=control.get("config", ""),
    )


def field_help() -> str:
    """One line per field: name, type, default (for --help)."""
    lines = []
    defaults = RunConfig()
    for name, f in FIELDS.items():
        kind = "|".join(f.metadata["choices"]) if f.metadata.get("choices") else _type_name(f)
        lines.append(f"  --{name}={getattr(defaults, name)!s:<14} ({kind})")
    return "\n".join(lines)
