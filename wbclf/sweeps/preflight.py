"""Pre-flight: check every input a study will use before any trial starts.

A sweep over a dataset that is not downloaded, or a pretrained model whose weights cannot be
had offline, would otherwise start trial after trial, each failing the same way after its
start-up. Here every distinct value of ``dataset`` (with ``data_dir``) and of ``model`` with
``strategy`` and ``pretrained_file`` is resolved once, by the same code a run uses.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from wbclf.config import RunConfig, default_data_dir
from wbclf.data.layouts import detect_layout
from wbclf.data.sources import KAGGLE_HANDLES, TOY_NAMES, resolve_dataset
from wbclf.sweeps.spec import SweepSpec

INPUT_FIELDS = ("dataset", "data_dir", "model", "strategy", "pretrained_file")


@dataclass(frozen=True)
class Missing:
    """One input a trial needs that is not there: which fields, their values, and why."""

    fields: tuple[tuple[str, Any], ...]  # e.g. (("dataset", "plant-disease"),)
    reason: str

    def matches(self, values: dict[str, Any]) -> bool:
        """Whether a trial with these field values needs this input."""
        return all(values.get(k) == v for k, v in self.fields)

    def line(self) -> str:
        what = ", ".join(f"{k}={v}" for k, v in self.fields)
        return f"{what}: {self.reason}"


def _options(spec: SweepSpec, name: str) -> list[Any]:
    """Every value field ``name`` takes in the study (the default when the file omits it)."""
    if name == "data_dir" and name not in spec.parameters:
        return [default_data_dir()]
    values = spec.field_values(name)
    if values is None:  # a numeric distribution: never one of these fields
        return [getattr(RunConfig(), name)]
    return list(dict.fromkeys(values))


def combinations(spec: SweepSpec) -> Iterable[dict[str, Any]]:
    """Every combination of the input fields' values the study can produce."""
    options = [_options(spec, name) for name in INPUT_FIELDS]
    for combo in itertools.product(*options):
        yield dict(zip(INPUT_FIELDS, combo))


def check_dataset(dataset: str, data_dir: str) -> str:
    """Why ``dataset`` cannot be read ('' when it can); toy datasets are made on first use."""
    if dataset in TOY_NAMES:
        return ""
    try:
        detect_layout(resolve_dataset(dataset, data_dir or default_data_dir()))
    except Exception as err:  # noqa: BLE001 -- DatasetError, or an OSError reading it
        # a sweep takes a dataset path as a pin, not as a train flag
        reason = str(err).splitlines()[0].replace("pass --dataset=", "use --set dataset=")
        if dataset in KAGGLE_HANDLES and "wbclf data download" not in reason:
            reason += f"; fix the folder or run `wbclf data download {dataset}`"
        return reason
    return ""


def check_model(model: str, strategy: str, pretrained_file: str) -> str:
    """Why the model's initial weights cannot be had offline ('' when they can)."""
    if model == "scratch":
        return ""  # wbclf's own CNN (config.py refuses it with a pretrained strategy)
    # Only now torch and timm: a sweep of scratch CNNs reports a missing dataset in a second.
    from wbclf.models.backbones import WeightsNotFoundError, create_backbone
    from wbclf.models.registry import list_models

    if model in list_models():
        return "" if strategy == "scratch" and not pretrained_file else \
            f"model {model} has no pretrained weights; use strategy=scratch or a timm model"
    import timm

    if not timm.is_model(model):
        return (f"unknown model {model!r}; use `--set model=NAME` with 'scratch' or a timm "
                "model name")
    if strategy == "scratch":
        return ""
    try:
        # The same loader a run uses: hub cache, then packaged weights, or the given file.
        create_backbone(model, 2, pretrained=True, pretrained_file=pretrained_file or "")
    except WeightsNotFoundError as err:
        if pretrained_file:
            why = next((w for s, w in err.attempts if s.kind == "file"), "")
            return f"pretrained_file cannot be loaded ({why[:200]}); fix the path"
        tried = ", ".join(s.kind for s, _ in err.attempts)
        return (f"no pretrained weights offline (tried {tried}); run it once online to fill "
                "the Hugging Face cache, `--set model=...` another model, or give "
                "pretrained_file=PATH")
    except Exception as err:  # noqa: BLE001 -- unreadable or wrong shapes: one story
        return f"{str(err).splitlines()[0][:200]}; `--set model=...` another model"
    return ""


def preflight(spec: SweepSpec) -> list[Missing]:
    """Every missing input of the study (each distinct value checked once)."""
    missing: list[Missing] = []
    seen_data: set[tuple[str, str]] = set()
    seen_model: set[tuple[str, str, str]] = set()
    for combo in combinations(spec):
        data = (str(combo["dataset"]), str(combo["data_dir"] or ""))
        if data not in seen_data:
            seen_data.add(data)
            reason = check_dataset(*data)
            if reason:
                keys = (("dataset", combo["dataset"]),)
                if "data_dir" in spec.parameters:
                    keys += (("data_dir", combo["data_dir"]),)
                missing.append(Missing(keys, reason))
        model = (str(combo["model"]), str(combo["strategy"]), str(combo["pretrained_file"] or ""))
        if model not in seen_model:
            seen_model.add(model)
            reason = check_model(*model)
            if reason:
                keys = (("model", combo["model"]), ("strategy", combo["strategy"]))
                if combo["pretrained_file"]:
                    keys += (("pretrained_file", combo["pretrained_file"]),)
                missing.append(Missing(keys, reason))
    return sorted(missing, key=lambda m: m.fields[0][0] != "dataset")  # datasets first


def trial_inputs(spec: SweepSpec, params: dict[str, Any]) -> dict[str, Any]:
    """The input fields' values of one trial (its parameters over the study's defaults)."""
    values = {name: _options(spec, name)[0] for name in INPUT_FIELDS}
    values.update({k: v for k, v in params.items() if k in INPUT_FIELDS})
    return values
