"""W&B parameter forms -> grid points and Optuna distributions.

Grid points follow W&B's own grid engine: parameters sorted by name, ``itertools.product``
of their values (the first name varies slowest), ``int_uniform`` as ``range(min, max + 1)``
and ``q_uniform`` as ``numpy.arange(min, max, q)`` (so ``max`` itself is *not* a point).

For random and bayes, each form maps to the Optuna distribution with the same support:

============================  ====================================================
W&B form                      Optuna
============================  ====================================================
values                        CategoricalDistribution(values)
value                         (a constant, not sampled)
int_uniform                   IntDistribution(min, max)
uniform                       FloatDistribution(min, max)
q_uniform                     Int/FloatDistribution(round(min/q)q, round(max/q)q, step=q)
log_uniform_values            FloatDistribution(min, max, log=True)
inv_log_uniform_values        FloatDistribution(min, max, log=True) (1/X of a log-uniform
                              X is log-uniform on the same bounds)
log_uniform (exponents)       FloatDistribution(exp(min), exp(max), log=True)
inv_log_uniform (exponents)   FloatDistribution(exp(-max), exp(-min), log=True)
q_log_uniform_values          IntDistribution(min, max, log=True) for an integer field with
                              q=1, else FloatDistribution(min, max, log=True) rounded to a
                              multiple of q when rendered (Optuna has no log + step)
q_log_uniform (exponents)     as above with exp(min), exp(max)
============================  ====================================================
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from wbclf.config import FIELDS, RunConfig, coerce
from wbclf.sweeps.spec import ParamSpec, SweepSpec


def clean(value: Any) -> Any:
    """Drop float noise (0.30000000000000004 -> 0.3); other values pass through."""
    if isinstance(value, float) and math.isfinite(value):
        return float(f"{value:.12g}")
    return value


def _is_int_field(name: str) -> bool:
    kind = FIELDS[name].type
    return (kind if isinstance(kind, str) else kind.__name__) == "int"


def grid_values(p: ParamSpec) -> list[Any]:
    """The values a grid search takes for one parameter (W&B's rules)."""
    c = p.config
    if p.form == "constant":
        return [c["value"]]
    if p.form == "categorical":
        return list(c["values"])
    if p.form == "int_uniform":
        return list(range(c["min"], c["max"] + 1))
    if p.form == "q_uniform":
        import numpy as np

        return [clean(v) for v in np.arange(c["min"], c["max"], c["q"]).tolist()]
    raise ValueError(f"{p.name}: {p.form} has no grid values")


def grid_size(params: Iterable[ParamSpec]) -> int:
    return math.prod(len(grid_values(p)) for p in params)


def grid_points(params: Iterable[ParamSpec]) -> Iterator[dict[str, Any]]:
    """Every combination, in W&B's order (names sorted, the first varies slowest)."""
    ordered = sorted(params, key=lambda p: p.name)
    names = [p.name for p in ordered]
    for combo in itertools.product(*(grid_values(p) for p in ordered)):
        yield dict(zip(names, combo))


def grid_key(point: dict[str, Any]) -> str:
    """A stable identity for a grid point (stored with each trial)."""
    return json.dumps(point, sort_keys=True)


@dataclass(frozen=True)
class Dimension:
    """A sampled parameter: its Optuna distribution and how a sample is rendered."""

    name: str
    distribution: Any  # optuna.distributions.BaseDistribution
    q: int | float | None = None  # round samples to a multiple of q (log + step forms)

    def render(self, raw: Any) -> Any:
        """The value the trial gets for an Optuna sample ``raw``."""
        if self.q is not None:
            value = round(raw / self.q) * self.q
            # like W&B: a whole-number q gives ints, a float q gives floats
            return int(round(value)) if isinstance(self.q, int) else clean(float(value))
        return clean(raw)


def dimension(p: ParamSpec) -> Dimension:
    """The Optuna distribution for a non-constant parameter (see the module table)."""
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    c, form = p.config, p.form
    if form == "categorical":
        return Dimension(p.name, CategoricalDistribution(list(c["values"])))
    if form == "int_uniform":
        return Dimension(p.name, IntDistribution(c["min"], c["max"]))
    if form == "uniform":
        return Dimension(p.name, FloatDistribution(float(c["min"]), float(c["max"])))
    if form == "q_uniform":
        q = c["q"]
        low, high = round(c["min"] / q) * q, round(c["max"] / q) * q
        if isinstance(q, int) or (_is_int_field(p.name) and float(q).is_integer()):
            step = int(q)
            dist = IntDistribution(int(low), int(high), step=step)
            # an int q gives ints already; a float q makes W&B render floats (16.0)
            return Dimension(p.name, dist, None if isinstance(q, int) else float(q))
        return Dimension(p.name, FloatDistribution(clean(float(low)), clean(float(high)),
                                                   step=float(q)), float(q))
    low, high = float(c["min"]), float(c["max"])
    if form in ("log_uniform", "q_log_uniform"):
        low, high = math.exp(low), math.exp(high)
    elif form == "inv_log_uniform":
        low, high = math.exp(-high), math.exp(-low)
    if form in ("log_uniform_values", "inv_log_uniform_values", "log_uniform",
                "inv_log_uniform"):
        return Dimension(p.name, FloatDistribution(low, high, log=True))
    if form in ("q_log_uniform", "q_log_uniform_values"):
        q = c["q"]
        if _is_int_field(p.name) and q == 1 and form == "q_log_uniform_values":
            dist = IntDistribution(max(1, round(low)), round(high), log=True)
            return Dimension(p.name, dist)
        return Dimension(p.name, FloatDistribution(low, high, log=True), q)
    raise ValueError(f"{p.name}: no Optuna distribution for {form}")


def search_space(spec: SweepSpec) -> dict[str, Dimension]:
    """The sampled dimensions of a random/bayes study (grid: categorical over grid values)."""
    from optuna.distributions import CategoricalDistribution

    if spec.method == "grid":
        return {name: Dimension(name, CategoricalDistribution(grid_values(p)))
                for name, p in spec.varying.items()}
    return {name: dimension(p) for name, p in spec.varying.items()}


def candidate_values(p: ParamSpec) -> list[Any]:
    """Representative values of a parameter for validation: all categories, or the bounds."""
    if p.form in ("constant", "categorical"):
        return grid_values(p)
    if p.form in ("int_uniform", "q_uniform"):
        values = grid_values(p)
        return [values[0], values[-1]] if values else []
    dim = dimension(p)
    dist = dim.distribution
    return [dim.render(dist.low), dim.render(dist.high)]


def max_epochs(spec: SweepSpec) -> int:
    """The most epochs any trial of the study trains (hyperband's max resource)."""
    p = spec.parameters.get("epochs")
    if p is None:
        return RunConfig.__dataclass_fields__["epochs"].default
    if p.form in ("constant", "categorical"):
        values = grid_values(p)
    else:
        values = candidate_values(p)
    return max(coerce("epochs", str(v)) for v in values)


def pruner_settings(spec: SweepSpec) -> dict[str, int] | None:
    """HyperbandPruner arguments for the study's ``early_terminate`` (None: no pruning).

    ``min_iter`` is the first rung; ``max_iter`` with ``s`` puts the first rung at
    ``max_iter / eta**s`` like W&B's bands. The max resource is the study's largest
    ``epochs``; a trial reports its metric after each epoch with ``step = epoch`` (1-based).
    """
    et = spec.early_terminate
    if not et:
        return None
    eta = int(et.get("eta", 3))
    if "min_iter" in et:
        min_resource, max_resource = int(et["min_iter"]), max_epochs(spec)
    else:
        max_resource = int(et["max_iter"])
        min_resource = max(1, int(max_resource / eta ** int(et["s"])))
    return {"min_resource": min_resource, "max_resource": max(max_resource, min_resource),
            "reduction_factor": eta}
