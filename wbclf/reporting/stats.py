"""Paired tests between two runs (same test images) or two settings (same seeds).

Every function returns a :class:`TestResult` whose ``effect`` is "A minus B" in the metric's
own units (a fraction for accuracy); the caller words it. The tests and their assumptions are
explained in docs/REPORTS.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import binom, binomtest, false_discovery_control, t as student_t, ttest_rel

__all__ = ["TestResult", "adjust_bh", "adjusted_confidence", "mcnemar_exact",
           "median_interval", "paired_accuracy", "paired_bootstrap", "paired_over_seeds"]

CONFIDENCE = 0.95
N_BOOT = 2000


@dataclass
class TestResult:
    """What a paired comparison found (``effect`` = A minus B)."""

    test: str  # mcnemar_exact, paired_bootstrap, paired_t_over_seeds
    effect: float
    ci_low: float
    ci_high: float
    p_value: float
    n_images: int = 0
    n_seeds: int = 1
    # The interval at any confidence, inverted from the same data as the p-value: at
    # confidence 1 - a it excludes 0 exactly when p < a (see interval).
    at_confidence: Callable[[float], tuple[float, float]] | None = field(
        default=None, repr=False, compare=False)

    def interval(self, confidence: float) -> tuple[float, float]:
        """The interval of ``effect`` at ``confidence`` (``ci_low``/``ci_high`` are at 95%)."""
        if self.at_confidence is None:
            raise ValueError(f"a {self.test} result has no interval at other confidences")
        return self.at_confidence(confidence)


def mcnemar_exact(a_correct: np.ndarray, b_correct: np.ndarray) -> tuple[int, int, float]:
    """McNemar's exact test on paired right/wrong outcomes.

    Only the discordant images count: ``only_a`` (A right, B wrong) and ``only_b``. Under
    "equal accuracy" each discordant image is a fair coin, so the two-sided p-value is the
    exact binomial one for ``only_a`` of ``only_a + only_b`` at 1/2 (1.0 when none differ).

    Returns:
        ``(only_a, only_b, p_value)``.
    """
    a, b = np.asarray(a_correct, bool), np.asarray(b_correct, bool)
    if a.shape != b.shape:
        raise ValueError(f"paired outcomes differ in length: {a.shape} vs {b.shape}")
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    if only_a + only_b == 0:
        return only_a, only_b, 1.0
    return only_a, only_b, float(binomtest(only_a, only_a + only_b, 0.5).pvalue)


def _order_interval(ordered: np.ndarray, confidence: float) -> tuple[float, float]:
    """The percentile interval of sorted resamples, taken at whole ranks.

    With ``k = ceil(a n / 2)`` for ``a = 1 - confidence``, the k-th smallest value is above 0
    exactly when fewer than ``a n / 2`` resamples are at or below 0, which is when the
    bootstrap p-value (twice the smaller tail) is below ``a``: interval and test agree. (An
    interpolated percentile can straddle that boundary.) Where ``a`` is at or below 1/n the
    p-value, floored at 1/n, can never be below it: the interval then holds 0 as well.
    """
    n = len(ordered)
    if (1 - confidence) * n <= 1 + 1e-9:
        return min(float(ordered[0]), 0.0), max(float(ordered[-1]), 0.0)
    k = max(1, math.ceil(round((1 - confidence) * n / 2, 9)))
    k = min(k, (n + 1) // 2)
    return float(ordered[k - 1]), float(ordered[n - k])


def _discordant_interval(only_a: int, only_b: int, n: int, confidence: float
                         ) -> tuple[float, float]:
    """Accuracy of A minus B from the images the two runs disagree on, exact.

    Of the ``d`` of ``n`` images the runs disagree on, A is right on a share ``s``; the
    accuracy difference is ``q (2 s - 1)`` for the disagreement rate ``q``. Both get their
    Clopper-Pearson interval, and each end of the difference takes the ``q`` that widens it
    (taking ``q = d / n`` as known would cover far less than it says). The sign of each end is
    that of ``2 s - 1``, and the interval of ``s`` inverts the same binomial test as McNemar's
    exact p: the difference's interval excludes 0 exactly when p is below ``1 - confidence``.
    """
    if n == 0:
        return math.nan, math.nan
    d = only_a + only_b
    rate = binomtest(d, n).proportion_ci(confidence_level=confidence, method="exact")
    if d == 0:
        return -rate.high, rate.high
    share = binomtest(only_a, d, 0.5).proportion_ci(confidence_level=confidence,
                                                     method="exact")
    low, high = 2 * share.low - 1, 2 * share.high - 1
    return (low * (rate.low if low > 0 else rate.high),
            high * (rate.high if high > 0 else rate.low))


def paired_accuracy(a_correct: np.ndarray, b_correct: np.ndarray) -> TestResult:
    """Accuracy of A minus B on the same images: McNemar's exact p and the exact interval
    that agrees with it (:func:`_discordant_interval`)."""
    only_a, only_b, p = mcnemar_exact(a_correct, b_correct)
    n = len(np.asarray(a_correct))
    effect = (only_a - only_b) / n if n else math.nan

    def at_confidence(confidence: float) -> tuple[float, float]:
        return _discordant_interval(only_a, only_b, n, confidence)

    low, high = at_confidence(CONFIDENCE)
    return TestResult("mcnemar_exact", effect, low, high, p, n_images=n,
                      at_confidence=at_confidence)


def paired_bootstrap(statistic_a: Callable[[np.ndarray], float],
                     statistic_b: Callable[[np.ndarray], float], n: int, *, seed: int = 0,
                     n_boot: int = N_BOOT) -> TestResult:
    """A metric of A minus the same metric of B, resampling the images both runs saw.

    The interval is the percentile interval of the resampled differences, at whole ranks
    (:func:`_order_interval`); the two-sided p-value is twice the share of resamples on the
    far side of zero (floored at 1/n_boot, the resolution of the bootstrap). Resamples where
    the metric is undefined are dropped.
    """
    effect = statistic_a(np.arange(n)) - statistic_b(np.arange(n))
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        draws.append(statistic_a(idx) - statistic_b(idx))
    values = np.array(draws, np.float64)
    values = np.sort(values[np.isfinite(values)])
    if not math.isfinite(effect) or len(values) < n_boot / 2:
        return TestResult("paired_bootstrap", math.nan, math.nan, math.nan, math.nan, n)
    below, above = float((values <= 0).mean()), float((values >= 0).mean())
    p = min(1.0, max(2 * min(below, above), 1.0 / len(values)))

    def at_confidence(confidence: float) -> tuple[float, float]:
        return _order_interval(values, confidence)

    low, high = at_confidence(CONFIDENCE)
    return TestResult("paired_bootstrap", float(effect), low, high, p, n_images=n,
                      at_confidence=at_confidence)


def paired_over_seeds(a_values: Sequence[float], b_values: Sequence[float]) -> TestResult:
    """Paired t-test over seeds: ``a_values[i]`` and ``b_values[i]`` share seed i.

    This is the test of a *setting*: it asks whether the difference is larger than the
    run-to-run spread that a new seed brings. The interval is the t interval of the mean
    difference. Needs two or more seeds.
    """
    a, b = np.asarray(a_values, np.float64), np.asarray(b_values, np.float64)
    if len(a) != len(b) or len(a) < 2:
        raise ValueError(f"need two or more paired seeds, got {len(a)} and {len(b)}")
    diff = a - b
    mean = float(diff.mean())
    se = float(diff.std(ddof=1) / math.sqrt(len(diff)))
    if np.allclose(diff, diff[0], rtol=0.0, atol=1e-12):
        # Every seed moved by the same amount (two seeds one test image apart each, say):
        # the t statistic is undefined, or huge from rounding alone. No spread, no test:
        # p is NaN, and the caller compares the models on the images instead.
        return TestResult("paired_t_over_seeds", mean, math.nan, math.nan, math.nan,
                          n_seeds=len(diff))

    def at_confidence(confidence: float) -> tuple[float, float]:
        half = float(student_t.ppf(0.5 + confidence / 2, len(diff) - 1)) * se
        return mean - half, mean + half

    p = float(ttest_rel(a, b).pvalue)
    low, high = at_confidence(CONFIDENCE)
    return TestResult("paired_t_over_seeds", mean, low, high, p, n_seeds=len(diff),
                      at_confidence=at_confidence)


def adjust_bh(p_values: Sequence[float]) -> list[float]:
    """Benjamini-Hochberg adjusted p-values (false discovery rate), NaN kept as NaN."""
    p = np.asarray(p_values, np.float64)
    out = np.full(p.shape, math.nan)
    ok = np.isfinite(p)
    if ok.any():
        out[ok] = false_discovery_control(p[ok], method="bh")
    return [float(x) for x in out]


def adjusted_confidence(compared: int, significant: int, alpha: float = 1 - CONFIDENCE
                        ) -> float:
    """The confidence at which a study's intervals agree with its Benjamini-Hochberg verdicts.

    Benjamini and Yekutieli (2005): with ``significant`` of ``compared`` claims selected at
    false discovery rate ``alpha``, intervals at ``1 - significant * alpha / compared`` keep
    the false coverage rate of the selected ones at ``alpha``. At that confidence every
    significant claim's interval excludes 0 (its p is below ``significant * alpha /
    compared``) and no other's does (a larger p would have been selected too). With nothing
    significant, one is counted: the Bonferroni level, at which no interval excludes 0.
    """
    if compared < 1:
        return 1 - alpha
    return 1 - max(1, significant) * alpha / compared


def median_interval(values: Sequence[float], confidence: float = CONFIDENCE
                    ) -> tuple[float, float, float]:
    """A distribution-free interval for the median of ``values``, and its coverage.

    The interval runs from the k-th smallest to the k-th largest value, with k as large as
    the confidence allows: each value falls below the median with probability 1/2, so the
    coverage is ``1 - 2 P(Binomial(n, 1/2) < k)`` whatever the values' distribution (timings
    are skewed: a busy machine only ever slows a repeat down). With too few values for
    ``confidence`` (fewer than 6 at 95 %) it is the whole range, and the coverage says how
    sure that is (75 % for 3 values).

    Returns:
        ``(low, high, coverage)``.
    """
    ordered = sorted(float(v) for v in values)
    n = len(ordered)
    if n == 0:
        raise ValueError("median_interval needs at least one value")
    if n == 1:
        return ordered[0], ordered[0], 0.0
    k = 1
    while k < n // 2 and 1 - 2 * binom.cdf(k, n, 0.5) >= confidence:
        k += 1  # k + 1 still covers: narrow the interval by one value on each side
    coverage = float(1 - 2 * binom.cdf(k - 1, n, 0.5))
    return ordered[k - 1], ordered[n - k], coverage
