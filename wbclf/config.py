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

from wbclf.errors import UserError


class ConfigError(UserError):
    """A bad configuration value; its message is one line meant for the user."""


def default_data_dir() -> str:
    """Where named datasets live: ``$WBCLF_DATA_DIR`` or the user cache dir."""
    env = os.environ.get("WBCLF_DATA_DIR")
    if env:
        return env
    from platformdirs import user_cache_dir

    return str(Path(user_cache_dir("wbclf")) / "datasets")


def _field(default: Any, meaning: str, *choices: str, factory: Any = None) -> Any:
    """A RunConfig field with its one-line meaning (``--help``, docs) and allowed values."""
    metadata = {"help": meaning, "choices": choices} if choices else {"help": meaning}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


NAMED_DATASETS = ("plant-disease", "melanoma", "toy-lesions", "toy-leaves")
# The packaged augmentation pipelines (wbclf/data/presets/<name>.yaml); augment= also takes
# the path of a pipeline file, shown as this placeholder among the field's choices.
AUGMENT_PRESETS = ("none", "light", "strong")
AUGMENT_FILE = "FILE"
AUGMENT_SUFFIXES = (".yaml", ".yml", ".json")


@dataclass(frozen=True)
class RunConfig:
    """Every knob of a run; each field can be a sweep parameter. The table of fields with
    their meanings is ``wbclf train --help`` (from the ``help`` metadata below)."""

    dataset: str = _field("toy-lesions", "a named dataset (plant-disease, melanoma, toy-lesions, "
                          "toy-leaves) or a path to a dataset root")
    data_dir: str = _field(None, "where named datasets live (default $WBCLF_DATA_DIR or the user "
                           "cache dir)", factory=default_data_dir)
    image_size: int = _field(128, "training resolution in px (square)")
    model: str = _field("scratch", "scratch (the CNN factory) or any timm model name")
    strategy: str = _field("scratch", "scratch = random init; frozen = pretrained backbone + "
                           "trained head; finetune = all weights trained",
                           "scratch", "frozen", "finetune")
    pretrained_file: str = _field("", "explicit weights file (timm checkpoint format); empty = "
                                  "packaged or hub weights")
    width: int = _field(32, "scratch: channels of the first stage (doubles each stage)")
    depth: int = _field(4, "scratch: number of stages (each ends in a downsample)")
    blocks_per_stage: int = _field(1, "scratch: conv blocks per stage")
    batch_norm: bool = _field(True, "scratch: batch norm after each conv")
    residual: bool = _field(False, "scratch: residual blocks instead of plain conv blocks")
    dropout: float = _field(0.0, "dropout before the classifier")
    head_hidden: int = _field(0, "frozen/finetune: hidden units of the FC head (0 = one linear "
                              "layer)")
    backbone_lr_mult: float = _field(0.1, "finetune: backbone learning rate = lr x this")
    unfreeze_epoch: int = _field(0, "finetune: head-only epochs before the backbone trains")
    optimizer: str = _field("adamw", "adamw, or sgd (momentum 0.9, Nesterov)", "adamw", "sgd")
    lr: float = _field(1.0e-3, "peak learning rate (of the head, for finetune); auto = "
                       "pick it with the range test (`wbclf lr-find`) first")
    weight_decay: float = _field(1.0e-4, "decoupled weight decay (not on norms and biases)")
    scheduler: str = _field("cosine", "learning-rate schedule over all steps",
                            "cosine", "onecycle", "step", "none")
    warmup_epochs: int = _field(0, "epochs of linear warm-up to lr (from lr / warm-up "
                                "steps); onecycle has its own (30% of the steps) and "
                                "ignores this")
    epochs: int = _field(10, "training epochs")
    batch_size: int = _field(64, "images per training step")
    label_smoothing: float = _field(0.0, "cross-entropy label smoothing (0 = off)")
    class_weighting: str = _field("none", "balanced = loss weights from inverse train class "
                                  "counts", "none", "balanced")
    grad_clip: float = _field(1.0, "max gradient norm (0 = off)")
    augment: str = _field("light", "training augmentation: a preset or an albumentations "
                          "pipeline file (.yaml/.json)", *AUGMENT_PRESETS, AUGMENT_FILE)
    val_fraction: float = _field(0.15, "share of train carved out as val when the dataset has "
                                 "no val split (and first as test when it has no test split)")
    limit_per_class: int = _field(0, "keep at most N images per class and split (0 = all)")
    train_size: float = _field(1.0, "training images: a fraction of each class (0 < x <= 1) or "
                               "N per class (x > 1); nested across sizes for a seed; val and "
                               "test unchanged")
    early_stopping: int = _field(0, "stop after N epochs without a better val/acc (0 = off)")
    seed: int = _field(0, "seeds the val carve, initialization, augmentation and batch order")
    device: str = _field("auto", "auto, cpu, cuda, cuda:N or mps")
    precision: str = _field("auto", "auto = bf16 autocast on CUDA that supports it, fp32 elsewhere",
                            "auto", "32", "bf16", "16")
    compile: bool = _field(False, "torch.compile the model (CUDA only; ignored on CPU)")
    num_workers: str = _field("auto", "data-loading worker processes: auto or a count")
    cache_images: bool = _field(True, "decode images once into a shared memory-mapped cache "
                                "(frozen: also cache backbone features)")
    test_dedup: bool = _field(False, "drop test images that near-duplicate a train or val image "
                              "(as `wbclf data audit` finds them) before evaluation")
    log_samples: int = _field(32, "val sample predictions logged every epochs/4 epochs, at the "
                          "last and for the best model (0 = none)")
    calibrate: bool = _field(False, "temperature scaling: fit a softmax temperature on val "
                             "after training; ECE is reported before and after")
    wandb_mode: str = _field("auto", "auto = online when logged in, else offline",
                             "auto", "online", "offline", "disabled")
    project: str = _field("wbclf", "W&B project")
    out_dir: str = _field("runs", "parent folder of the run directories")
    run_name: str = _field("", "run directory name (empty: dataset-model-strategy-timestamp)")

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

# The fields by purpose: the sections of ``wbclf train --help`` and of the docs' field table.
GROUPS: dict[str, tuple[str, ...]] = {
    "data": ("dataset", "data_dir", "image_size", "augment", "val_fraction", "limit_per_class",
             "train_size", "cache_images", "test_dedup"),
    "model": ("model", "width", "depth", "blocks_per_stage", "batch_norm", "residual",
              "dropout", "calibrate"),
    "transfer": ("strategy", "pretrained_file", "head_hidden", "backbone_lr_mult",
                 "unfreeze_epoch"),
    "optimization": ("optimizer", "lr", "weight_decay", "scheduler", "warmup_epochs", "epochs",
                     "batch_size", "label_smoothing", "class_weighting", "grad_clip",
                     "early_stopping", "seed"),
    "run": ("device", "precision", "compile", "num_workers", "out_dir", "run_name"),
    "tracking": ("log_samples", "wandb_mode", "project"),
}

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

# number fields that also take "auto" (the value is then chosen at run time)
AUTO_FIELDS = {"lr"}

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
    if name in AUTO_FIELDS and isinstance(value, str) and value.lower() == "auto":
        return "auto"
    if kind == "float":
        if isinstance(value, bool):
            raise ConfigError(f"{name}={shown} is not a number")
        try:
            number = float(value)
        except (TypeError, ValueError):
            also = " or auto" if name in AUTO_FIELDS else ""
            raise ConfigError(f"{name}={shown} is not a number (write e.g. 1e-3 or 0.001"
                              f"{also})") from None
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
    if name == "augment":
        return _augment_value(text, shown)
    if choices and text not in choices:
        lowered = {c.lower(): c for c in choices}
        if text.lower() in lowered:
            return lowered[text.lower()]
        raise ConfigError(f"{name}={shown} is not allowed; allowed: {', '.join(choices)}")
    return text


def _augment_value(text: str, shown: Any) -> str:
    """A preset name (any case) or the path of a pipeline file (checked when a run starts)."""
    lowered = {p.lower(): p for p in AUGMENT_PRESETS}
    if text.lower() in lowered:
        return lowered[text.lower()]
    if Path(text).suffix.lower() in AUGMENT_SUFFIXES:
        return text
    raise ConfigError(f"augment={shown} is not allowed; allowed: {', '.join(AUGMENT_PRESETS)} "
                      f"or the path of an albumentations pipeline file "
                      f"({'/'.join(AUGMENT_SUFFIXES)})")


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
    if cfg.lr != "auto" and cfg.lr <= 0:
        raise ConfigError(f"lr={cfg.lr} must be > 0 (or auto)")
    if cfg.backbone_lr_mult < 0:
        raise ConfigError(f"backbone_lr_mult={cfg.backbone_lr_mult} must be >= 0")
    for name in ("dropout", "label_smoothing"):
        if not 0.0 <= getattr(cfg, name) < 1.0:
            raise ConfigError(f"{name}={getattr(cfg, name)} must be in [0, 1)")
    if cfg.train_size <= 0 or (cfg.train_size > 1 and not float(cfg.train_size).is_integer()):
        raise ConfigError(f"train_size={cfg.train_size} is not allowed; allowed: a fraction in "
                          "(0, 1] or a whole number of images per class (> 1)")
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


def field_rows() -> list[tuple[str, str, str, str, str]]:
    """(group, name, type, default, meaning) per field: ``--help`` and the docs' table."""
    defaults = RunConfig()
    rows = []
    for group, names in GROUPS.items():
        for name in names:
            f = FIELDS[name]
            kind = "|".join(f.metadata["choices"]) if f.metadata.get("choices") \
                else _type_name(f) + ("|auto" if name in AUTO_FIELDS else "")
            default = "(env/cache)" if name == "data_dir" else str(getattr(defaults, name))
            rows.append((group, name, kind, default, f.metadata["help"]))
    return rows


def field_help() -> str:
    """Every field grouped by purpose: ``--name=default  type  meaning``, aligned columns."""
    rows = field_rows()
    left = max(len(f"--{name}={default}") for _, name, _, default, _ in rows)
    width = max(len(kind) for _, _, kind, _, _ in rows)
    lines: list[str] = []
    for group, name, kind, default, meaning in rows:
        if f"{group}:" not in lines:
            lines += ([""] if lines else []) + [f"{group}:"]
        lines.append(f"  {f'--{name}={default}':<{left}}  {kind:<{width}}  {meaning}")
    return "\n".join(lines)
