"""Tested findings: each a paired comparison with its effect, interval, p-value and sentence.

For every study (and dataset within it) the best configuration is compared with the
runner-up, and each studied factor's levels are compared at each setting of the other
factors. Settings that share seeds are compared over seeds (the test of a *setting*); single
runs are compared on the test images both saw (the test of two *models*). All p-values of a
study are adjusted together (Benjamini-Hochberg), and only an adjusted p below ``ALPHA``
earns "beats"; everything else reads "no significant difference". The intervals are widened
to match (``stats.adjusted_confidence``): a claim's interval excludes 0 exactly when it is
significant. The same objects become ``findings.json``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from wbclf.metrics import auc_of, macro_f1_of
from wbclf.reporting import analysis as A
from wbclf.reporting.collect import RunRecord
from wbclf.reporting.stats import (TestResult, adjust_bh, adjusted_confidence, paired_accuracy,
                                   paired_bootstrap, paired_over_seeds)
from wbclf.tracking.predictions import Predictions, read_predictions

__all__ = ["ALPHA", "Claim", "strategy_claims", "study_claims"]

ALPHA = 0.05
METRIC_WORDS = {"test/acc": "test accuracy", "test/macro_f1": "test macro-F1",
                "test/auc": "test AUC"}
UNAVAILABLE = "unavailable"


@dataclass
class Claim:
    """One tested statement (a row of ``findings.json``)."""

    study: str
    kind: str  # best (best vs runner-up), factor_effect or strategy
    factor: str | None
    a: str
    b: str
    metric: str
    effect: float | None  # a minus b, in the metric's units (fractions for accuracy)
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    p_adjusted: float | None
    significant: bool
    n_images: int
    n_seeds: int
    test: str  # mcnemar_exact, paired_bootstrap, paired_t_over_seeds or unavailable
    at: str = ""  # the other factors' setting of a factor comparison
    text: str = ""
    why: str = ""  # for an unavailable claim: why there is no test (in the sentence)
    ci_level: float | None = None  # the confidence of ci_low..ci_high, after adjustment
    compared: int = 0  # how many claims of the study were tested and adjusted together
    result: TestResult | None = field(default=None, repr=False, compare=False)
    pair: frozenset = field(default=frozenset(), repr=False, compare=False)  # see _pair

    def to_json(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)
               if f.name not in ("result", "pair", "why")}
        for key in ("effect", "ci_low", "ci_high", "ci_level", "p_value", "p_adjusted"):
            value = out[key]
            out[key] = value if value is not None and math.isfinite(value) else None
        return out


# --------------------------------------------------------------------------- comparisons


class _PredictionCache:
    def __init__(self) -> None:
        self._seen: dict[str, Predictions | None] = {}

    def get(self, run: RunRecord) -> Predictions | None:
        if run.name not in self._seen:
            self._seen[run.name] = read_predictions(run.path, "test") if run.path else None
        return self._seen[run.name]


def _aligned(pa: Predictions, pb: Predictions) -> tuple[np.ndarray, np.ndarray] | None:
    """Row indices of the images both runs saw, in the same order; None if they differ."""
    if pa.class_names != pb.class_names:
        return None
    if all(pa.paths) and all(pb.paths):
        where = {p: i for i, p in enumerate(pb.paths)}
        ia = [i for i, p in enumerate(pa.paths) if p in where]
        ib = [where[pa.paths[i]] for i in ia]
    elif len(pa.labels) == len(pb.labels):
        ia = ib = list(range(len(pa.labels)))
    else:
        return None
    ia_arr, ib_arr = np.array(ia, np.int64), np.array(ib, np.int64)
    if not len(ia_arr) or not (pa.labels[ia_arr] == pb.labels[ib_arr]).all():
        return None
    return ia_arr, ib_arr


def _per_image(pa: Predictions, pb: Predictions, metric: str, seed: int
               ) -> TestResult | None:
    rows = _aligned(pa, pb)
    if rows is None:
        return None
    ia, ib = rows
    y = pa.labels[ia]
    if metric == "test/acc":
        return paired_accuracy(pa.correct[ia], pb.correct[ib])
    c = len(pa.class_names)
    if metric == "test/macro_f1":
        return paired_bootstrap(lambda i: macro_f1_of(y[i], pa.preds[ia][i], c),
                                lambda i: macro_f1_of(y[i], pb.preds[ib][i], c), len(y),
                                seed=seed)
    if metric == "test/auc" and c == 2:
        return paired_bootstrap(lambda i: auc_of(y[i], pa.probs[ia, 1][i]),
                                lambda i: auc_of(y[i], pb.probs[ib, 1][i]), len(y), seed=seed)
    return None


def _by_seed(runs: Sequence[RunRecord]) -> dict[Any, RunRecord]:
    return {A._hashable(r.config.get(A.REPLICATE)): r for r in runs}


def compare(runs_a: Sequence[RunRecord], runs_b: Sequence[RunRecord], metric: str,
            cache: _PredictionCache, seed: int = 0) -> TestResult | None:
    """The paired test of setting A against setting B on ``metric``; None when impossible.

    Two or more shared seeds: a paired t-test over seeds on the summaries' figures; when
    every seed moved by the same amount (no spread to test against), the first shared seed's
    two models on their test images instead, else the t-test's NaN result (the claim then
    says why it has no test). One run each (or one shared seed): the per-image test on the
    test predictions.
    """
    sa, sb = _by_seed(runs_a), _by_seed(runs_b)
    shared = sorted(set(sa) & set(sb), key=A._sort_key)
    if len(shared) >= 2:
        a = [sa[s].value(metric) for s in shared]
        b = [sb[s].value(metric) for s in shared]
        if any(v is None for v in a + b):
            return None
        result = paired_over_seeds(a, b)
        result.n_images = int(sa[shared[0]].value("data/test_images") or 0)
        if math.isfinite(result.p_value):
            return result
        # no spread between the seeds to test against: the first seed's two models, on the
        # images both saw
        pa, pb = cache.get(sa[shared[0]]), cache.get(sb[shared[0]])
        fallback = _per_image(pa, pb, metric, seed) if pa is not None and pb is not None \
            else None
        return fallback if fallback is not None else result
    if shared:
        ra, rb = sa[shared[0]], sb[shared[0]]
    elif len(runs_a) == 1 and len(runs_b) == 1:
        ra, rb = runs_a[0], runs_b[0]
    else:
        return None
    pa, pb = cache.get(ra), cache.get(rb)
    if pa is None or pb is None:
        return None
    return _per_image(pa, pb, metric, seed)


# --------------------------------------------------------------------------- words


def _test_words(claim: Claim) -> str:
    # per-image tests compare two trained models (one run each), not two settings
    if claim.test == "mcnemar_exact":
        return f"McNemar's exact test on {claim.n_images} test images, one run each"
    if claim.test == "paired_bootstrap":
        return f"paired bootstrap over {claim.n_images} test images, one run each"
    return f"paired t-test over {claim.n_seeds} seeds"


def _points(value: float, signed: bool = True) -> str:
    return f"{100 * value:+.1f}" if signed else f"{100 * abs(value):.1f}"


def _ci_words(claim: Claim, low: float, high: float) -> str:
    level = claim.ci_level if claim.ci_level is not None else 1 - ALPHA
    for decimals in (1, 2, 3, 4):  # as many as it takes not to round up to "100%"
        percent = f"{100 * level:.{decimals}f}"
        if not percent.startswith("100"):
            break
    percent = percent.rstrip("0").rstrip(".")
    widened = f", widened for {claim.compared} comparisons" \
        if claim.compared > 1 and level > 1 - ALPHA + 1e-12 else ""
    return f"{percent}% CI {_points(low)} to {_points(high)} points{widened}"


def claim_text(claim: Claim) -> str:
    """The sentence shown for a claim (also stored in ``findings.json``)."""
    what = METRIC_WORDS.get(claim.metric, claim.metric)
    where = f"at {claim.at}: " if claim.at else ""
    if claim.test == UNAVAILABLE:
        why = claim.why or "no shared seeds, and no per-image predictions of one run each"
        return f"{where}{claim.a} vs {claim.b} on {what}: no paired test ({why})"
    ci = _ci_words(claim, claim.ci_low, claim.ci_high)
    p = f"p = {claim.p_value:.2g}, adjusted {claim.p_adjusted:.2g}"
    if claim.significant:
        a, b, lo, hi = claim.a, claim.b, claim.ci_low, claim.ci_high
        if claim.effect < 0:
            a, b, lo, hi = claim.b, claim.a, -claim.ci_high, -claim.ci_low
        ci = _ci_words(claim, lo, hi)
        return (f"{where}{a} beats {b} on {what} by {_points(claim.effect, False)} points "
                f"({ci}, {p}; {_test_words(claim)})")
    return (f"{where}no significant difference between {claim.a} and {claim.b} on {what} "
            f"({_points(claim.effect)} points, {ci}, {p}; {_test_words(claim)})")


# --------------------------------------------------------------------------- a study


def _config_key(run: RunRecord, factors: Sequence[A.Param]) -> tuple[Any, ...]:
    return tuple(A._hashable(run.config.get(p.name)) for p in factors)


def _label(values: tuple[Any, ...], factors: Sequence[A.Param], fallback: str) -> str:
    return " ".join(p.label(v) for p, v in zip(factors, values)) or fallback


def _mean(runs: Sequence[RunRecord], metric: str) -> float:
    values = [v for r in runs if (v := r.value(metric)) is not None]
    return float(np.mean(values)) if values else -math.inf


def _metrics(an: A.StudyAnalysis) -> list[str]:
    return ["test/acc", "test/macro_f1"] + (["test/auc"] if an.binary else [])


def _new_claim(study: str, kind: str, factor: str | None, a: str, b: str, metric: str,
               result: TestResult | None, at: str = "", pair: frozenset = frozenset()
               ) -> Claim:
    if result is None:
        return Claim(study, kind, factor, a, b, metric, None, None, None, None, None, False, 0,
                     0, UNAVAILABLE, at, pair=pair)
    return Claim(study, kind, factor, a, b, metric, result.effect, result.ci_low,
                 result.ci_high, result.p_value, None, False, result.n_images,
                 result.n_seeds, result.test, at, result=result, pair=pair)


def _pair(runs_a: Sequence[RunRecord], runs_b: Sequence[RunRecord]) -> frozenset:
    """Which two groups of runs a comparison sets against each other, in either order."""
    return frozenset((frozenset(r.name for r in runs_a), frozenset(r.name for r in runs_b)))


def _tested_pairs(claims: Sequence[Claim]) -> set[frozenset]:
    """The run groups ``claims`` compared on test accuracy: the same test twice would read as
    two pieces of evidence (and weigh twice in an adjustment)."""
    return {c.pair for c in claims if c.metric == "test/acc" and c.pair}


def _best_claims(an: A.StudyAnalysis, runs: list[RunRecord], prefix: str,
                 cache: _PredictionCache) -> list[Claim]:
    groups: dict[tuple[Any, ...], list[RunRecord]] = {}
    for run in runs:
        groups.setdefault(_config_key(run, an.factors), []).append(run)
    if len(groups) < 2:
        return []
    sign = 1.0 if an.goal == "maximize" else -1.0
    ranked = sorted(groups, key=lambda k: -sign * _mean(groups[k], an.metric))
    best, second = ranked[0], ranked[1]
    a = prefix + _label(best, an.factors, groups[best][0].short_name)
    b = prefix + _label(second, an.factors, groups[second][0].short_name)
    # settings one factor apart: this is also that factor's test (its own copy is skipped)
    apart = [p.name for p, x, y in zip(an.factors, best, second) if x != y]
    factor = apart[0] if len(apart) == 1 else None
    pair = _pair(groups[best], groups[second])
    return [_new_claim(an.study.name, "best", factor, a, b, m,
                       compare(groups[best], groups[second], m, cache), pair=pair)
            for m in _metrics(an)]


def _factor_claims(an: A.StudyAnalysis, runs: list[RunRecord], prefix: str,
                   cache: _PredictionCache, done: set[frozenset]) -> list[Claim]:
    """Each factor's levels at each setting of the others, on test accuracy; pairs of run
    groups in ``done`` (best vs runner-up) are not tested again."""
    claims = []
    for p in an.factors:
        if p.continuous:
            continue
        others = [q for q in an.factors if q.name != p.name]
        cells: dict[tuple[Any, ...], dict[Any, list[RunRecord]]] = {}
        for run in runs:
            cell = cells.setdefault(_config_key(run, others), {})
            cell.setdefault(A._hashable(run.config.get(p.name)), []).append(run)
        for where, levels in cells.items():
            if len(levels) < 2:
                continue
            if len(levels) == 2:
                low, high = sorted(levels, key=A._sort_key)
            else:
                sign = 1.0 if an.goal == "maximize" else -1.0
                high, low = sorted(levels, key=lambda v: -sign * _mean(levels[v], an.metric))[:2]
            pair = _pair(levels[high], levels[low])
            if pair in done:
                continue
            at = prefix + _label(where, others, "")
            claims.append(_new_claim(an.study.name, "factor_effect", p.name, p.label(high),
                                     p.label(low), "test/acc",
                                     compare(levels[high], levels[low], "test/acc", cache),
                                     at.strip(), pair))
    return claims


def study_claims(an: A.StudyAnalysis) -> list[Claim]:
    """Every tested claim of one study, p-values adjusted together, sentences filled in."""
    cache = _PredictionCache()
    claims: list[Claim] = []
    for dataset, runs in an.dataset_groups():
        if not runs:
            continue
        prefix = f"{dataset} " if dataset is not None else ""
        best = _best_claims(an, runs, prefix, cache)
        claims += best + _factor_claims(an, runs, prefix, cache, _tested_pairs(best))
    return _settle(claims)


def strategy_claims(rows: Sequence[A.StrategyRow], tested: Sequence[Claim] = ()
                    ) -> list[Claim]:
    """Each pair of strategies' chosen configurations on one dataset, on test accuracy.

    The same tests as within a study (paired over shared seeds, else per image for one run
    each), adjusted together as one family. The configurations may differ in more than the
    strategy (the labels say how); the test compares them as they are. A pair of run groups
    that a study's claims in ``tested`` already compared on test accuracy is left out.
    """
    cache = _PredictionCache()
    claims: list[Claim] = []
    done = _tested_pairs(tested)
    for dataset in dict.fromkeys(r.dataset for r in rows):
        mine = [r for r in rows if r.dataset == dataset]
        for i, first in enumerate(mine):
            for second in mine[i + 1:]:
                if _pair(first.runs, second.runs) in done:
                    continue
                # the better one on val first: the claim is about it
                a, b = sorted((first, second), key=lambda r: -_mean(r.runs, "val/acc"))
                claims.append(_new_claim(
                    "strategies", "strategy", "strategy", f"{dataset} {a.strategy}",
                    f"{dataset} {b.strategy}", "test/acc",
                    compare(a.runs, b.runs, "test/acc", cache), pair=_pair(a.runs, b.runs)))
    return _settle(claims)


# why a test that ran gave no p-value
_NO_TEST = {
    "paired_t_over_seeds": "every seed moved by the same amount: no spread to test against, "
                           "and no per-image predictions to compare the models on instead",
    "paired_bootstrap": "the metric is undefined on too many resamples of these test images",
}


def _settle(claims: list[Claim]) -> list[Claim]:
    """Adjust the family's p-values together, widen its intervals to match, word it."""
    tested = [c for c in claims if c.test != UNAVAILABLE and c.p_value is not None
              and math.isfinite(c.p_value)]
    for claim, adjusted in zip(tested, adjust_bh([c.p_value for c in tested])):
        claim.p_adjusted = adjusted
        # an adjusted p a rounding error below ALPHA is ALPHA (a discrete bootstrap p can
        # land exactly on a Benjamini-Hochberg step): not below it
        claim.significant = bool(adjusted < ALPHA * (1 - 1e-9))
    # A 95% interval beside an adjusted verdict can exclude 0 while the claim is not
    # significant; at the adjusted confidence, interval and verdict agree.
    level = adjusted_confidence(len(tested), sum(c.significant for c in tested), ALPHA)
    for claim in tested:
        claim.ci_level, claim.compared = level, len(tested)
        if claim.result is not None and claim.result.at_confidence is not None:
            claim.ci_low, claim.ci_high = claim.result.interval(level)
    for claim in claims:
        if claim.test != UNAVAILABLE and claim.p_adjusted is None:
            claim.why = _NO_TEST.get(claim.test, "")
            claim.test = UNAVAILABLE
        claim.text = claim_text(claim) + "."
    return claims


def adjustment_note(claims: Sequence[Claim]) -> str:
    """How many comparisons were adjusted together, and how."""
    tested = sum(c.test != UNAVAILABLE for c in claims)
    if not tested:
        return "No paired test was possible on these runs."
    note = (f"{tested} comparison{'s' if tested != 1 else ''}; p-values adjusted together for "
            f"the false discovery rate (Benjamini-Hochberg); significant = adjusted p < "
            f"{ALPHA:g}.")
    if tested > 1:
        note += (" Intervals are widened to match (false coverage rate, Benjamini-Yekutieli): "
                 "an interval excludes 0 exactly when its difference is significant.")
    return note
