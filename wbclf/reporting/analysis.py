"""What varied between the runs of a study, what it did, and the findings in words.

Every number in a finding is computed here from the runs' ``summary.json``; nothing is
hand-written. Only finished runs enter a comparison: a failed or pruned trial has no final
figures (a zero would be a lie), so it is listed instead.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from wbclf.reporting.collect import RunRecord, Study
from wbclf.reporting.intervals import interval

__all__ = [
    "Param",
    "Stat",
    "StudyAnalysis",
    "aggregate",
    "analyze",
    "best_runs",
    "fmt_value",
    "is_fraction_metric",
    "rank_runs",
    "strategy_rows",
    "varied_params",
]

# RunConfig fields that differ between runs without changing what is studied.
IGNORED_FIELDS = frozenset({
    "out_dir", "run_name", "data_dir", "device", "num_workers", "wandb_mode", "project",
    "cache_images", "log_samples", "compile", "precision",
})
REPLICATE = "seed"  # runs that differ only in this are repeats: mean ± std
FACET = "dataset"  # runs on different datasets are never averaged together
MAX_LEVELS = 8  # more distinct numeric values than this: a continuous parameter
NOUNS = {  # parameter -> (singular, plural) for findings
    "lr": ("learning rate", "learning rates"),
    "batch_norm": ("batch norm", "batch-norm settings"),
    "residual": ("residual blocks", "block types"),
    "width": ("width", "widths"),
    "depth": ("depth", "depths"),
    "blocks_per_stage": ("blocks per stage", "block counts"),
    "optimizer": ("optimizer", "optimizers"),
    "strategy": ("strategy", "strategies"),
    "model": ("model", "models"),
    "dataset": ("dataset", "datasets"),
    "seed": ("seed", "seeds"),
    "dropout": ("dropout", "dropout rates"),
    "weight_decay": ("weight decay", "weight decays"),
    "batch_size": ("batch size", "batch sizes"),
    "image_size": ("image size", "image sizes"),
    "head_hidden": ("head width", "head widths"),
    "unfreeze_epoch": ("unfreeze epoch", "unfreeze epochs"),
    "backbone_lr_mult": ("backbone lr multiplier", "backbone lr multipliers"),
    "augment": ("augmentation pipeline", "augmentation pipelines"),
    "scheduler": ("scheduler", "schedulers"),
    "epochs": ("epoch budget", "epoch budgets"),
}
LOG_FIELDS = frozenset({"lr", "weight_decay"})


def noun(name: str, plural: bool = False) -> str:
    single, many = NOUNS.get(name, (name, f"values of {name}"))
    return many if plural else single


def _sort_key(value: Any) -> tuple:
    if value is None:
        return (2, "")
    if isinstance(value, (bool, int, float)):
        return (0, float(value))
    return (1, str(value))


def fmt_float(value: float) -> str:
    """A parameter value as text: ``0.01`` -> ``1.0e-2``, ``0.25`` -> ``0.25``."""
    if value == 0 or 1e-2 <= abs(value) < 1e4:
        text = f"{value:.4g}"
        return text if "e" not in text else fmt_float_exp(value)
    return fmt_float_exp(value)


def fmt_float_exp(value: float) -> str:
    mantissa, exponent = f"{value:.1e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def fmt_value(value: Any, *, log: bool = False) -> str:
    """A configuration value as the report writes it (``lr=1.0e-2``, ``batch_norm=True``)."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return fmt_float_exp(value) if log else fmt_float(value)
    return str(value)


def dataset_name(dataset: Any) -> str:
    """A dataset path as its folder name (the full path is in every run's config.yaml)."""
    text = str(dataset)
    return Path(text).name if "/" in text or "\\" in text else text


def is_fraction_metric(metric: str) -> bool:
    """Metrics in [0, 1] whose differences read as points (x100)."""
    tail = metric.rsplit("/", 1)[-1]
    return any(k in tail for k in ("acc", "f1", "auc", "precision", "recall", "sensitivity",
                                   "specificity"))


@dataclass(frozen=True)
class Param:
    """A configuration field that took more than one value in a study.

    Attributes:
        name: The RunConfig field.
        values: Its distinct values, sorted.
        numeric: Every value is a number (not a bool).
        log: Numeric and spread over orders of magnitude: plotted on a log axis.
    """

    name: str
    values: tuple[Any, ...]
    numeric: bool
    log: bool

    @property
    def continuous(self) -> bool:
        """Too many distinct values to draw a line per value (e.g. a Bayesian search)."""
        return self.numeric and len(self.values) > MAX_LEVELS

    @property
    def boolean(self) -> bool:
        return all(isinstance(v, bool) for v in self.values)

    def fmt(self, value: Any) -> str:
        return fmt_value(value, log=self.log)

    def label(self, value: Any) -> str:
        return f"{self.name}={self.fmt(value)}"


def make_param(name: str, values: Iterable[Any]) -> Param:
    distinct = sorted(set(values), key=_sort_key)
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in distinct)
    positive = numeric and all(v > 0 for v in distinct)
    spread = positive and max(distinct) / min(distinct) >= 20
    # A grid spread over orders of magnitude (width 8..128) reads best on a log axis; a
    # continuous search of a linear field (dropout 0..0.5) does not.
    log = positive and (name in LOG_FIELDS or (spread and len(distinct) <= MAX_LEVELS))
    return Param(name=name, values=tuple(distinct), numeric=numeric, log=log)


def _hashable(value: Any) -> Any:
    return value if isinstance(value, (str, int, float, bool, type(None))) else repr(value)


def varied_params(runs: Sequence[RunRecord], order: Sequence[str] = ()) -> list[Param]:
    """Fields whose value differs between runs (missing counts as a value), in ``order`` first.

    Fields that never change what is studied (``IGNORED_FIELDS``) are left out.
    """
    keys: list[str] = list(dict.fromkeys([*order, *(k for r in runs for k in r.config)]))
    params = []
    for key in keys:
        if key in IGNORED_FIELDS:
            continue
        values = [_hashable(r.config.get(key)) for r in runs]
        if len(set(values)) > 1:
            params.append(make_param(key, values))
    return params


# --------------------------------------------------------------------------- aggregation


@dataclass
class Stat:
    """Mean, sample standard deviation (0 for one run) and count of a metric over runs."""

    mean: float
    std: float
    n: int
    runs: list[RunRecord] = field(default_factory=list, repr=False)


def stat(runs: Sequence[RunRecord], metric: str) -> Stat | None:
    pairs = [(r, r.value(metric)) for r in runs]
    pairs = [(r, v) for r, v in pairs if v is not None]
    if not pairs:
        return None
    values = np.array([v for _, v in pairs])
    std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    return Stat(float(values.mean()), std, len(values), [r for r, _ in pairs])


def aggregate(runs: Sequence[RunRecord], by: Sequence[str], metric: str
              ) -> dict[tuple[Any, ...], Stat]:
    """``metric`` over the runs of each combination of the ``by`` fields (sorted keys)."""
    groups: dict[tuple[Any, ...], list[RunRecord]] = {}
    for run in runs:
        key = tuple(_hashable(run.config.get(k)) for k in by)
        groups.setdefault(key, []).append(run)
    out = {}
    for key in sorted(groups, key=lambda k: tuple(_sort_key(v) for v in k)):
        s = stat(groups[key], metric)
        if s is not None:
            out[key] = s
    return out


def rank_runs(runs: Sequence[RunRecord], metric: str, goal: str = "maximize"
              ) -> list[RunRecord]:
    """Runs best first by ``metric``; runs without it last, in name order."""
    sign = -1.0 if goal == "maximize" else 1.0

    def key(run: RunRecord) -> tuple[int, float, str]:
        value = run.value(metric)
        return (value is None, sign * value if value is not None else 0.0, run.name)

    return sorted(runs, key=key)


def best_runs(runs: Sequence[RunRecord], by: str, metric: str, goal: str = "maximize"
              ) -> dict[Any, RunRecord]:
    """The best run for each value of the field ``by``."""
    out: dict[Any, RunRecord] = {}
    for run in rank_runs(runs, metric, goal):
        if run.value(metric) is None:
            continue
        out.setdefault(_hashable(run.config.get(by)), run)
    return dict(sorted(out.items(), key=lambda kv: _sort_key(kv[0])))


# --------------------------------------------------------------------------- a study


@dataclass
class StudyAnalysis:
    """What the report needs to know about one study.

    Attributes:
        study: The study.
        metric: The compared metric (the sweep's), ``val/acc`` by default.
        goal: ``maximize`` or ``minimize``.
        params: Every varied field (over all runs, failed ones included).
        factors: The fields that vary between finished runs and are compared (not seed,
            not dataset); their values are those of the finished runs.
        seed: The seed, when it varied between finished runs.
        dataset: The dataset, when it varied between finished runs.
        finished: Finished runs with the metric, best first.
        not_plotted: The other runs (failed, diverged, pruned, incomplete), in name order.
        binary: Two-class task (``test/auc`` present).
        constants: Fields the sweep file (or a plain study) held fixed, with their value.
    """

    study: Study
    metric: str
    goal: str
    params: list[Param]
    factors: list[Param]
    seed: Param | None
    dataset: Param | None
    finished: list[RunRecord]
    not_plotted: list[RunRecord]
    binary: bool
    constants: dict[str, Any]

    @property
    def best(self) -> RunRecord | None:
        return self.finished[0] if self.finished else None

    def param(self, name: str) -> Param | None:
        return next((p for p in self.params if p.name == name), None)

    def dataset_groups(self) -> list[tuple[str | None, list[RunRecord]]]:
        """``(dataset or None, finished runs)`` per dataset when it varied, else one group."""
        if self.dataset is None:
            return [(None, self.finished)]
        return [(dataset_name(v), [r for r in self.finished if r.config.get(FACET) == v])
                for v in self.dataset.values]

    def label(self, run: RunRecord, exclude: Sequence[str] = ()) -> str:
        """The run's varied values, ``batch_norm=True lr=1.0e-2``."""
        parts = [p.label(run.config.get(p.name)) for p in self.params
                 if p.name not in exclude]
        return " ".join(parts) or run.short_name


SHOWN_CONSTANTS = ("dataset", "model", "strategy", "width", "depth", "batch_norm", "residual",
                   "optimizer", "lr", "epochs", "image_size", "batch_size")


def analyze(study: Study) -> StudyAnalysis:
    """Varied fields, finished and not-plotted runs of a study."""
    metric = study.metric
    params = varied_params(study.runs, study.parameter_order)
    done = [r for r in study.runs if r.finished and r.value(metric) is not None]
    finished = rank_runs(done, metric, study.goal)
    not_plotted = [r for r in study.runs if r not in done]
    # Compared values come from finished runs only: a value tried only by failed trials
    # (lr=10 that diverged) gets no point on an axis, it is listed with the failed trials.
    compared = varied_params(finished, [p.name for p in params])
    named = {p.name: p for p in compared}
    factors = [p for p in compared if p.name not in (REPLICATE, FACET)]
    binary = any(r.value("test/auc") is not None for r in finished)
    varied = set(named)
    shown = [k for k in study.parameter_order if k not in IGNORED_FIELDS] or list(SHOWN_CONSTANTS)
    source = study.runs[0].config if study.runs else {}
    constants = {k: source[k] for k in shown if k in source and k not in varied}
    return StudyAnalysis(study=study, metric=metric, goal=study.goal, params=params,
                         factors=factors, seed=named.get(REPLICATE), dataset=named.get(FACET),
                         finished=finished, not_plotted=not_plotted, binary=binary,
                         constants=constants)


# --------------------------------------------------------------------------- findings


def _diff_text(diff: float, metric: str, signed: bool = False) -> str:
    if is_fraction_metric(metric):
        return f"{100 * diff:+.1f} points" if signed else f"{100 * abs(diff):.1f} points"
    return f"{diff:+.3g}" if signed else f"{abs(diff):.3g}"


def _value_text(value: float, metric: str) -> str:
    return f"{value:.3f}" if is_fraction_metric(metric) else f"{value:.4g}"


def _second_factor(factor: Param, factors: Sequence[Param]) -> Param | None:
    """The factor to compare ``factor`` across: the first other non-continuous one."""
    return next((p for p in factors if p.name != factor.name and not p.continuous), None)


def _interval_text(low: float, high: float, metric: str) -> str:
    if is_fraction_metric(metric):
        return f"95% CI {100 * low:+.1f} to {100 * high:+.1f} points"
    return f"95% CI {low:+.3g} to {high:+.3g}"


def _welch_interval(b: Sequence[float], a: Sequence[float]) -> tuple[float, float]:
    """95% interval of mean(b) - mean(a), Welch's t (unequal variances); two or more each."""
    from scipy.stats import t as student_t

    vb, va = np.var(b, ddof=1) / len(b), np.var(a, ddof=1) / len(a)
    diff = float(np.mean(b) - np.mean(a))
    if vb + va <= 1e-24:
        return diff, diff  # no spread on either side (rounding aside)
    df = (vb + va) ** 2 / (vb ** 2 / (len(b) - 1) + va ** 2 / (len(a) - 1))
    half = float(student_t.ppf(0.975, df) * math.sqrt(vb + va))
    return diff - half, diff + half


def _excludes_zero(low: float, high: float) -> bool:
    return low > 0 or high < 0


def _two_level_sentence(an: StudyAnalysis, runs: list[RunRecord], p: Param,
                        q: Param | None) -> str | None:
    """How the second level of a two-level factor moved the metric, with a 95% interval.

    Across the levels of another factor: the mean of the paired differences, with the t
    interval over those levels. Alone: the difference of the two means, with Welch's interval
    over the runs. "raised"/"lowered" only when the interval excludes 0.
    """
    from wbclf.reporting.stats import paired_over_seeds

    metric = an.metric
    low, high = p.values
    subject = noun(p.name) if p.boolean else f"{p.label(high)} (vs {p.fmt(low)})"
    if q is not None:
        cells = aggregate(runs, (p.name, q.name), metric)
        pairs = {}
        for level in q.values:
            a, b = cells.get((_hashable(low), level)), cells.get((_hashable(high), level))
            if a is not None and b is not None:
                pairs[level] = (b.mean, a.mean)
        if not pairs:
            # the two levels never ran at the same setting of q (batch_norm exists only
            # for scratch CNNs, say): a difference of means would be q's effect as much
            return (f"{subject}: its levels ran at different {noun(q.name, plural=True)}, so "
                    "their means are not compared")
        if len(pairs) == 1:
            # one setting of q in common: compare there, not over unmatched runs
            (level,) = pairs
            runs = [r for r in runs if _hashable(r.config.get(q.name)) == level]
            subject = f"at {q.label(level)}, the one {noun(q.name)} both ran, {subject}"
        else:
            # the levels of q are the pairs: the interval says whether the effect is
            # consistent across them, beyond how much it varies from one to the next
            paired = paired_over_seeds([b for b, _ in pairs.values()],
                                       [a for _, a in pairs.values()])
            mean, ci = paired.effect, _interval_text(paired.ci_low, paired.ci_high, metric)
            ups = sum(1 for b, a in pairs.values() if b > a)
            downs = sum(1 for b, a in pairs.values() if b < a)
            over = f"{len(pairs)} {noun(q.name, plural=True)}"
            split = f"higher at {ups}, lower at {downs}"
            if not math.isfinite(paired.ci_low):
                return (f"{subject} changed mean {metric} by "
                        f"{_diff_text(mean, metric, signed=True)} at each of {over}: no spread "
                        "between them to judge noise by (see the tested differences)")
            if _excludes_zero(paired.ci_low, paired.ci_high):
                return (f"{subject} {'raised' if mean > 0 else 'lowered'} mean {metric} by "
                        f"{_diff_text(mean, metric)} across {over} ({ci} over them; {split})")
            return (f"{subject} changed mean {metric} by {_diff_text(mean, metric, signed=True)} "
                    f"across {over}, within noise ({ci} over them; {split}; per "
                    f"{noun(q.name)}: see the tested differences)")
    cells = aggregate(runs, (p.name,), metric)
    a, b = cells.get((_hashable(low),)), cells.get((_hashable(high),))
    if a is None or b is None:
        return None
    diff = b.mean - a.mean
    counts = f"{a.n} vs {b.n} runs"
    moved = (f"mean {metric} from {_value_text(a.mean, metric)} to "
             f"{_value_text(b.mean, metric)} ({_diff_text(diff, metric, signed=True)}")
    if a.n < 2 or b.n < 2:
        return (f"{subject} changed {moved}; {counts}, too few for an interval: see the "
                "tested differences)")
    ci_low, ci_high = _welch_interval([r.value(metric) for r in b.runs],
                                      [r.value(metric) for r in a.runs])
    if ci_low == ci_high:
        return (f"{subject} changed {moved}; {counts}, no spread between the runs of a level "
                "to judge noise by: see the tested differences)")
    ci = _interval_text(ci_low, ci_high, metric)
    if _excludes_zero(ci_low, ci_high):
        return f"{subject} {'raised' if diff > 0 else 'lowered'} {moved}; {counts}; {ci})"
    return f"{subject} changed {moved}, within noise; {counts}; {ci})"


def _levels_sentence(an: StudyAnalysis, runs: list[RunRecord], p: Param,
                     q: Param | None) -> str | None:
    metric = an.metric
    balance = ""
    if q is not None:
        # A level whose runs at one q setting all failed would be averaged over the other
        # settings only: compare the levels over the q settings that every level has.
        seen: dict[Any, set[Any]] = {}
        for qv, pv in aggregate(runs, (q.name, p.name), metric):
            seen.setdefault(pv, set()).add(qv)
        common = set.intersection(*seen.values()) if seen else set()
        everything = set().union(*seen.values()) if seen else set()
        if not common and len(seen) >= 2:
            return (f"the {noun(p.name, plural=True)} ran at different "
                    f"{noun(q.name, plural=True)} (no {noun(q.name)} is shared by all), so their "
                    "means are not compared")
        if common and common != everything:
            runs = [r for r in runs if _hashable(r.config.get(q.name)) in common]
            balance = (f" (over the {noun(q.name, plural=True)} every "
                       f"{noun(p.name)} ran with: "
                       + ", ".join(q.fmt(v) for v in sorted(common, key=_sort_key)) + ")")
    cells = aggregate(runs, (p.name,), metric)
    if len(cells) < 2:
        return None
    better = max if an.goal == "maximize" else min
    worse = min if an.goal == "maximize" else max
    top = better(cells, key=lambda k: cells[k].mean)
    bottom = worse(cells, key=lambda k: cells[k].mean)
    over = f"mean over {cells[top].n} runs" if cells[top].n > 1 else "one run"
    text = (f"across {noun(p.name, plural=True)}{balance}, {metric} was "
            f"{'highest' if an.goal == 'maximize' else 'lowest'} at {p.label(top[0])} "
            f"({over}: {_value_text(cells[top].mean, metric)}) and "
            f"{'lowest' if an.goal == 'maximize' else 'highest'} at {p.label(bottom[0])} "
            f"({_value_text(cells[bottom].mean, metric)})")
    if q is not None:
        pairs = aggregate(runs, (q.name, p.name), metric)
        best_for: dict[Any, Any] = {}
        for qv in q.values:
            options = {pv: s.mean for (a, pv), s in pairs.items() if a == _hashable(qv)}
            if len(options) >= 2:
                best_for[qv] = better(options, key=lambda k: options[k])
        # "highest mean", not "best" nor "depended on": whether one level beats another, at
        # any setting, is for the tests to say
        if len(best_for) >= 2 and len(set(best_for.values())) > 1:
            text += (f"; the {noun(p.name)} with the highest mean differed between "
                     f"{noun(q.name, plural=True)}: " + ", ".join(
                         f"{p.fmt(pv)} with {q.label(qv)}" for qv, pv in best_for.items()))
        elif len(best_for) >= 2:
            every = "both" if len(best_for) == 2 else f"all {len(best_for)}"
            text += (f"; {p.label(next(iter(best_for.values())))} had the highest mean for "
                     f"{every} {noun(q.name, plural=True)}")
    return text + " (untested here; see the tested differences)"


def _trend_sentence(an: StudyAnalysis, runs: list[RunRecord], p: Param) -> str | None:
    pairs = [(r.config.get(p.name), r.value(an.metric)) for r in runs]
    pairs = [(x, y) for x, y in pairs if isinstance(x, (int, float)) and y is not None]
    if len(pairs) < 4:
        return None
    from scipy.stats import spearmanr

    result = spearmanr([x for x, _ in pairs], [y for _, y in pairs])
    rho, p_value = float(result.statistic), float(result.pvalue)
    if not (math.isfinite(rho) and math.isfinite(p_value)):
        return None
    # "rose"/"fell" only where a rank correlation that strong is unlikely without a trend
    trend = ("rose" if rho > 0 else "fell") if p_value < 0.05 else "showed no significant trend"
    return (f"over {len(pairs)} runs, {an.metric} {trend} with {p.name} (Spearman ρ = "
            f"{rho:+.2f}, p = {p_value:.2g})")


def _best_sentence(an: StudyAnalysis, best: RunRecord, exclude: Sequence[str],
                   among: int = 1, costs: Mapping[str, Any] | None = None) -> str:
    """The best of ``among`` runs with its figures (and its cost in all, from ``costs``)."""
    metric = an.metric
    extras = []
    for key, words in (("test/acc", "test/acc"), ("test/macro_f1", "test macro-F1"),
                       ("test/auc", "test AUC")):
        value, ci = best.value(key), interval(best, key)
        if value is not None:
            extras.append(f"{words} {value:.3f}"
                          + (f" (95% CI {ci[0]:.3f}-{ci[1]:.3f})" if ci else ""))
    size = best.value("model/params")
    took = best.value("train/time_s")
    tail = ", ".join(x for x in extras if x)
    which = f" ({an.label(best, exclude)})" if any(p.name not in exclude for p in an.params) \
        else ""
    text = (f"The best run is {best.short_name}{which}: {metric} "
            f"{_value_text(best.value(metric), metric)}")
    if among > 1:
        # the maximum of several noisy figures overstates the run; test played no part
        best_word, bias = ("highest", "upward") if an.goal == "maximize" else ("lowest",
                                                                              "downward")
        text += (f" (the {best_word} of {among} runs, so biased {bias}"
                 + ("; the test figures are not)" if tail else ")"))
    text += f"; {tail}" if tail else ""
    if size is not None:
        text += f"; {int(size):,} parameters"
    if took is not None:
        text += f", {took:.1f} s of training"
        cost = (costs or {}).get(best.name)
        if cost is not None and (cost.eval_s or cost.features_s):
            # a frozen run's epochs take no time; its backbone pass went into the store
            parts = "evaluation" + (" and feature extraction" if cost.features_s else "")
            text += f" ({cost.total_s:.1f} s with {parts})"
    return text


def _seed_sentence(an: StudyAnalysis, runs: list[RunRecord]) -> str | None:
    if an.seed is None:
        return None
    keys = [p.name for p in an.factors]
    cells = [s for s in aggregate(runs, keys, an.metric).values() if s.n > 1]
    if not cells:
        return None
    from scipy.stats import t as student_t

    spread = float(np.mean([s.std for s in cells]))
    seeds = len({r.config.get(REPLICATE) for r in runs})
    n = min(s.n for s in cells)
    # Half the width of the 95% interval of a difference between two settings of n seeds
    # each at that spread (unpaired): a difference below it cannot be told from noise. One
    # standard deviation, the rule of thumb, is too small a bar.
    bar = float(student_t.ppf(0.975, 2 * n - 2)) * spread * math.sqrt(2 / n)
    return (f"each setting ran with {seeds} seeds; the standard deviation of {an.metric} "
            f"between seeds averaged {_diff_text(spread, an.metric)}, so with {n} seeds a "
            f"difference between two settings below about {_diff_text(bar, an.metric)} "
            "cannot be told from noise (the tested differences pair the seeds)")


def _size_sentence(an: StudyAnalysis, runs: list[RunRecord]) -> str | None:
    sized = [r for r in runs if r.value("model/params") is not None]
    if not sizes_differ(sized):
        return None
    best = rank_runs(sized, an.metric, an.goal)[0]
    tolerance = 0.01 if is_fraction_metric(an.metric) else 0.01 * abs(best.value(an.metric))
    sign = 1 if an.goal == "maximize" else -1
    close = [r for r in sized
             if sign * (best.value(an.metric) - r.value(an.metric)) <= tolerance + 1e-12]
    small = min(close, key=lambda r: (r.value("model/params"), r.name))
    if small is best:
        return (f"no smaller model came within {_diff_text(tolerance, an.metric)} of the best "
                f"({int(best.value('model/params')):,} parameters; single runs, untested)")
    ratio = best.value("model/params") / small.value("model/params")
    return (f"the smallest model within {_diff_text(tolerance, an.metric)} of the best, "
            f"{small.short_name} ({an.label(small, (FACET,))}), has "
            f"{int(small.value('model/params')):,} parameters, {ratio:.1f}x fewer than the best "
            f"({an.metric} {_value_text(small.value(an.metric), an.metric)}; single runs, "
            "untested)")


def sizes_differ(runs: Sequence[RunRecord], ratio: float = 1.2) -> bool:
    """Model sizes span at least ``ratio`` (batch norm alone adds a few hundred parameters:
    not a size comparison)."""
    sizes = [v for r in runs if (v := r.value("model/params")) is not None and v > 0]
    return len(sizes) >= 2 and max(sizes) / min(sizes) >= ratio


def _time_sentence(an: StudyAnalysis, runs: list[RunRecord],
                   costs: Mapping[str, Any] | None = None) -> str | None:
    """How long the runs trained, and, where the report knows it, what each run cost in all.

    Training time alone makes a frozen run look free (its backbone pass is in the feature
    store's build), so the cost per run (``reporting.costs``) follows whenever it adds more.
    """
    timed = sorted((r for r in runs if r.value("train/time_s") is not None),
                   key=lambda r: (r.value("train/time_s"), r.name))
    if len(timed) < 2:
        return None
    fast, slow = timed[0], timed[-1]
    total = sum(r.value("train/time_s") for r in timed)
    text = (f"training epochs took {fast.value('train/time_s'):.1f} s "
            f"({an.label(fast, (FACET,))}) to {slow.value('train/time_s'):.1f} s "
            f"({an.label(slow, (FACET,))}) per run, {total:.0f} s in all")
    costed = [costs[r.name] for r in timed if costs and r.name in costs]
    if len(costed) < len(timed) or not any(c.eval_s or c.features_s for c in costed):
        return text + " (training alone)"
    parts = "evaluation" + (" and feature extraction (amortized)"
                            if any(c.features_s for c in costed) else "")
    totals = sorted(c.total_s for c in costed)
    return (text + f"; with {parts}, a run cost {totals[0]:.1f} s to {totals[-1]:.1f} s, "
            f"{sum(totals):.0f} s in all")


def _failed_sentence(an: StudyAnalysis) -> str | None:
    if not an.not_plotted:
        return None
    counts: dict[str, int] = {}
    for run in an.not_plotted:
        counts[run.status] = counts.get(run.status, 0) + 1
    what = ", ".join(f"{n} {status}" for status, n in counts.items())
    which = "; ".join(f"{r.short_name} ({an.label(r)})" for r in an.not_plotted[:6])
    more = f" and {len(an.not_plotted) - 6} more" if len(an.not_plotted) > 6 else ""
    return (f"{len(an.not_plotted)} of {len(an.study.runs)} trials have no final figures "
            f"({what}): {which}{more}; they are listed, not plotted")


def findings(an: StudyAnalysis, costs: Mapping[str, Any] | None = None) -> list[str]:
    """Sentences about the study, every number computed from its runs.

    ``costs``: each run's ``reporting.costs.Cost`` by name, for the time sentence.
    """
    out: list[str] = []
    total = len(an.study.runs)
    varied = ", ".join(f"{p.name} ({len(p.values)} values)" for p in an.params) or "nothing"
    out.append(f"{total} run{'s' if total != 1 else ''}, {len(an.finished)} finished; "
               f"varied: {varied}.")
    for dataset, runs in an.dataset_groups():
        if not runs:
            continue
        prefix = f"On {dataset}: " if dataset is not None else ""
        sentences = [_best_sentence(an, runs[0], exclude=(FACET,), among=len(runs),
                                    costs=costs)]
        for p in an.factors:
            q = _second_factor(p, an.factors)
            if p.continuous:
                sentence = _trend_sentence(an, runs, p)
            elif len(p.values) == 2:
                sentence = _two_level_sentence(an, runs, p, q)
            else:
                sentence = _levels_sentence(an, runs, p, q)
            sentences.append(sentence)
        sentences += [_seed_sentence(an, runs), _size_sentence(an, runs),
                      _time_sentence(an, runs, costs)]
        out += [prefix + _capital(s) + "." for s in sentences if s]
    failed = _failed_sentence(an)
    if failed:
        out.append(_capital(failed) + ".")
    return out


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


# --------------------------------------------------------------------------- across studies


@dataclass
class StrategyRow:
    """The best configuration of one strategy on one dataset (mean ± std over its seeds).

    Attributes:
        dataset: The dataset.
        strategy: ``scratch``, ``frozen`` or ``finetune``.
        runs: The runs of the best configuration (one per seed).
        label: The configuration, e.g. ``scratch CNN lr=1.0e-2``, with every setting that
            differs from another strategy's row of the same dataset (epochs, image size...).
        stats: ``{metric: Stat}`` for the compared figures.
        configs: How many configurations of the strategy were candidates (the most-seeded).
        tried: How many configurations of the strategy finished in all.
    """

    dataset: str
    strategy: str
    runs: list[RunRecord]
    label: str
    stats: dict[str, Stat]
    configs: int = 1
    tried: int = 1


STRATEGY_ORDER = {"scratch": 0, "frozen": 1, "finetune": 2}
STRATEGY_FIGURES = ("test/acc", "test/macro_f1", "test/auc", "train/time_s", "model/params",
                    "model/trainable_params")
# shown in every row's label already, or no setting of the comparison
_LABELLED = {"model", "lr", "width", "depth", "batch_norm", "strategy", FACET, REPLICATE}


def strategy_rows(analyses: Sequence[StudyAnalysis],
                  metric: str = "val/acc") -> list[StrategyRow]:
    """Per dataset and strategy, the configuration with the best mean ``metric``.

    Runs from every study take part, so the best scratch CNN of a scratch study stands next
    to the frozen and fine-tuned backbones of a transfer study. Only the configurations with
    the most seeds compete: a lucky single run does not outrank a mean over three seeds (a
    sweep, then its best settings repeated over seeds, keeps the repeated ones). Empty when
    only one strategy finished anywhere.
    """
    runs = [r for an in analyses for r in an.finished]
    if len({r.config.get("strategy") for r in runs}) < 2:
        return []
    keys = sorted({k for r in runs for k in r.config} - IGNORED_FIELDS - {REPLICATE})
    rows = []
    for dataset in sorted({str(r.config.get(FACET)) for r in runs}):
        for strategy in sorted({str(r.config.get("strategy")) for r in runs},
                               key=lambda s: (STRATEGY_ORDER.get(s, 9), s)):
            pool = [r for r in runs if str(r.config.get(FACET)) == dataset
                    and str(r.config.get("strategy")) == strategy]
            if not pool:
                continue
            cells = aggregate(pool, keys, metric)
            if not cells:
                continue
            most = max(s.n for s in cells.values())
            candidates = [s for s in cells.values() if s.n == most]
            top = max(candidates, key=lambda s: s.mean)
            chosen = top.runs
            stats = {k: s for k in STRATEGY_FIGURES if (s := stat(chosen, k)) is not None}
            rows.append(StrategyRow(dataset_name(dataset), strategy, chosen,
                                    _config_label(chosen[0]), stats, len(candidates),
                                    len(cells)))
    _label_differences(rows)
    return rows


def _label_differences(rows: list[StrategyRow]) -> None:
    """Add to each label the settings that differ between rows of one dataset: a strategy
    trained for 15 epochs at 128 px must not read as the same budget as one at 224 px."""
    for dataset in dict.fromkeys(r.dataset for r in rows):
        mine = [r for r in rows if r.dataset == dataset]
        names = sorted({k for r in mine for k in r.runs[0].config} - IGNORED_FIELDS - _LABELLED)
        differ = [k for k in names
                  if len({_hashable(r.runs[0].config.get(k)) for r in mine}) > 1]
        for row in mine:
            extra = [f"{k}={fmt_value(row.runs[0].config.get(k), log=k in LOG_FIELDS)}"
                     if row.runs[0].config.get(k) is not None else f"{k} unset"
                     for k in differ]
            row.label = " ".join([row.label, *extra])


def _config_label(run: RunRecord) -> str:
    cfg = run.config
    model = "scratch CNN" if cfg.get("model") == "scratch" else str(cfg.get("model"))
    parts = [model, f"lr={fmt_value(cfg.get('lr'), log=True)}"]
    if cfg.get("model") == "scratch":
        parts += [f"width={cfg.get('width')}", f"depth={cfg.get('depth')}",
                  f"batch_norm={cfg.get('batch_norm')}"]
    return " ".join(parts)


def per_class_f1(run: RunRecord) -> dict[str, float]:
    """``{class key: test F1}`` from the summary's ``test/f1/<class>`` keys."""
    prefix = "test/f1/"
    return {k[len(prefix):]: v for k in run.summary if k.startswith(prefix)
            and (v := run.value(k)) is not None}
