"""Intervals, paired tests, FDR and calibration against known values (no training)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from wbclf import metrics as M
from wbclf.reporting import stats as S
from wbclf.training.calibration import apply_temperature, fit_temperature


# --------------------------------------------------------------------------- intervals


@pytest.mark.parametrize("k,n,low,high", [
    # Newcombe (1998), Statistics in Medicine 17:857, Table I, method 3 (Wilson score)
    (81, 263, 0.2553, 0.3662),
    (15, 148, 0.0624, 0.1605),
    (0, 20, 0.0, 0.1611),
    (1, 29, 0.0061, 0.1718),
])
def test_wilson_interval_matches_newcombe(k, n, low, high):
    lo, hi = M.wilson_interval(k, n)
    assert (round(lo, 4), round(hi, 4)) == (low, high)


def test_wilson_interval_edges():
    assert all(math.isnan(x) for x in M.wilson_interval(0, 0))
    assert M.wilson_interval(10, 10)[1] == 1.0
    with pytest.raises(ValueError):
        M.wilson_interval(11, 10)


def test_bootstrap_interval_of_a_fixed_sample_is_reproducible():
    sample = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0])
    first = M.bootstrap_interval(lambda idx: float(sample[idx].mean()), len(sample), seed=0)
    again = M.bootstrap_interval(lambda idx: float(sample[idx].mean()), len(sample), seed=0)
    assert first == again
    # the mean of 1..10 is 5.5 with a standard error of 0.908: the percentile interval of
    # 1000 resamples lies near 5.5 ± 1.96 * 0.87 (the bootstrap uses the n-denominator sd)
    assert first[0] == pytest.approx(3.8, abs=0.3) and first[1] == pytest.approx(7.2, abs=0.3)
    other = M.bootstrap_interval(lambda idx: float(sample[idx].mean()), len(sample), seed=1)
    assert other != first


def test_interval_figures_cover_the_binary_headline_figures():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    p1 = np.clip(0.25 + 0.5 * y + rng.normal(0, 0.2, 200), 0.01, 0.99)
    probs = np.stack([1 - p1, p1], axis=1)
    figures = M.interval_figures(y, probs, threshold=0.5, n_boot=300)
    metrics = M.compute_metrics(y, probs, ["Benign", "Malignant"], threshold=0.5)
    for name in ("acc", "macro_f1", "auc", "sensitivity", "specificity"):
        assert figures[f"{name}_ci_low"] <= metrics[name] <= figures[f"{name}_ci_high"], name
    correct = int(round(metrics["acc"] * 200))
    assert (figures["acc_ci_low"], figures["acc_ci_high"]) == M.wilson_interval(correct, 200)


# --------------------------------------------------------------------------- paired tests


def test_mcnemar_exact_textbook_value():
    # 10 images only A got right, 2 only B: p = 2 * P(X <= 2), X ~ Bin(12, 1/2) = 158/4096
    a = np.array([1] * 10 + [0] * 2 + [1] * 30 + [0] * 8, bool)
    b = np.array([0] * 10 + [1] * 2 + [1] * 30 + [0] * 8, bool)
    only_a, only_b, p = S.mcnemar_exact(a, b)
    assert (only_a, only_b) == (10, 2)
    assert p == pytest.approx(158 / 4096)
    assert S.mcnemar_exact(a, a)[2] == 1.0


def test_paired_accuracy_effect_and_interval():
    a = np.array([1] * 10 + [0] * 2 + [1] * 30 + [0] * 8, bool)
    b = np.array([0] * 10 + [1] * 2 + [1] * 30 + [0] * 8, bool)
    result = S.paired_accuracy(a, b)
    assert result.effect == pytest.approx(8 / 50)
    # Clopper-Pearson (95%): 10 of 12 discordant images is s = 0.5159-0.9791, 12 of 50
    # images discordant is q = 0.1306-0.3817; the difference q (2 s - 1) at its widest
    assert result.ci_low == pytest.approx(0.1306 * (2 * 0.5159 - 1), abs=2e-4)
    assert result.ci_high == pytest.approx(0.3817 * (2 * 0.9791 - 1), abs=2e-4)
    assert result.p_value == pytest.approx(158 / 4096)
    assert result.n_images == 50
    # no disagreement: as wide as 0 of 50 discordant images allows (1 - 0.025 ** (1 / 50))
    assert S.paired_accuracy(a, a).interval(0.95) == pytest.approx((-0.0711, 0.0711), abs=1e-4)


def test_the_mcnemar_interval_covers_as_often_as_it_says():
    # 332 images; A alone right on 12%, B alone on 2%: a true difference of 10 points. An
    # interval that took the observed disagreement rate as known covered it ~86% of the time.
    rng = np.random.default_rng(0)
    covered = 0
    for _ in range(300):
        kind = rng.choice(3, size=332, p=[0.12, 0.02, 0.86])  # A only, B only, agree
        a = kind == 0
        b = kind == 1
        result = S.paired_accuracy(a, b)
        covered += result.ci_low <= 0.10 <= result.ci_high
    assert covered / 300 >= 0.95


@pytest.mark.parametrize("alpha", [0.05, 0.05 / 3, 0.01, 0.05 / 9, 0.2])
def test_every_interval_excludes_zero_exactly_when_its_p_is_below_alpha(alpha):
    # McNemar: every split of up to 24 discordant images
    for only_a in range(25):
        for only_b in range(25 - only_a):
            a = np.array([1] * only_a + [0] * only_b + [1] * 5, bool)
            b = np.array([0] * only_a + [1] * only_b + [1] * 5, bool)
            result = S.paired_accuracy(a, b)
            low, high = result.interval(1 - alpha)
            assert (low > 0 or high < 0) == (result.p_value < alpha), (only_a, only_b)
            assert low <= result.effect <= high
    rng = np.random.default_rng(1)
    for trial in range(12):
        # the paired bootstrap: accuracy-like statistics with a small shift, 400 resamples
        n, shift = 60, rng.uniform(-0.3, 0.3)
        x = rng.normal(0, 1, n)
        y = x + rng.normal(shift, 1, n)
        boot = S.paired_bootstrap(lambda i: float(y[i].mean()), lambda i: float(x[i].mean()),
                                  n, seed=trial, n_boot=400)
        low, high = boot.interval(1 - alpha)
        assert (low > 0 or high < 0) == (boot.p_value < alpha), trial
        # the t-test over 4 seeds
        t = S.paired_over_seeds(y[:4], x[:4])
        low, high = t.interval(1 - alpha)
        assert (low > 0 or high < 0) == (t.p_value < alpha), trial


def test_the_bootstrap_interval_holds_zero_where_its_p_cannot_reach_the_level():
    # every resample above 0: p is floored at 1/2000, which is not below a = 1/2000 (or
    # 1/4000), so the interval at 1 - a must hold 0 too
    for alpha in (1 / 2000, 1 / 4000):
        values = iter([0.5] + [0.001 * (k + 1) for k in range(2000)])
        result = S.paired_bootstrap(lambda i: next(values), lambda i: 0.0, 10, n_boot=2000)
        assert result.p_value == pytest.approx(1 / 2000)
        low, high = result.interval(1 - alpha)
        assert low <= 0 <= high


def test_no_spread_between_seeds_is_no_t_test():
    # each seed ten images (of 100) better: identical differences, but 0.8 - 0.7 and
    # 0.7 - 0.6 differ in the last bits, which made t ~ 1e14 and p ~ 1e-14
    result = S.paired_over_seeds([0.8, 0.7], [0.7, 0.6])
    assert math.isnan(result.p_value) and math.isnan(result.ci_low)
    assert result.effect == pytest.approx(0.1)


@pytest.mark.parametrize("at_or_below_zero", [48, 49, 50, 51])
def test_the_bootstrap_interval_and_p_agree_at_the_boundary(at_or_below_zero):
    # 2000 resampled differences, as given: at 95%, 49 at or below 0 is p = 0.049 and 50 is
    # p = 0.05; the interval must exclude 0 in the first case and hold it in the second
    draws = [-0.001 * (k + 1) for k in range(at_or_below_zero)]
    draws += [0.001 * (k + 1) for k in range(2000 - at_or_below_zero)]
    values = iter([0.5] + draws)  # the first call is the effect on all images

    result = S.paired_bootstrap(lambda i: next(values), lambda i: 0.0, 10, n_boot=2000)
    assert result.p_value == pytest.approx(2 * at_or_below_zero / 2000)
    low, high = result.interval(0.95)
    assert (low > 0) == (result.p_value < 0.05)


def test_adjusted_intervals_agree_with_the_benjamini_hochberg_verdicts():
    assert S.adjusted_confidence(1, 0) == pytest.approx(0.95)
    assert S.adjusted_confidence(9, 0) == pytest.approx(1 - 0.05 / 9)
    assert S.adjusted_confidence(9, 3) == pytest.approx(1 - 3 * 0.05 / 9)
    assert S.adjusted_confidence(9, 9) == pytest.approx(0.95)
    rng = np.random.default_rng(0)
    seen = set()
    for study in range(40):
        results = []
        for _ in range(int(rng.integers(2, 12))):
            n = 200
            a = rng.random(n) < 0.7
            b = np.where(rng.random(n) < rng.uniform(0, 0.3), ~a, a)  # b flips some of a
            results.append(S.paired_accuracy(a, b))
        adjusted = S.adjust_bh([r.p_value for r in results])
        significant = [p < 0.05 for p in adjusted]
        level = S.adjusted_confidence(len(results), sum(significant))
        for result, verdict in zip(results, significant):
            low, high = result.interval(level)
            assert (low > 0 or high < 0) == verdict, (study, result.p_value)
            # a plain 95% interval does not always agree: that is what the widening is for
            plain = result.ci_low > 0 or result.ci_high < 0
            seen.add(plain == verdict)
    assert seen == {True, False}


def test_paired_bootstrap_sees_a_real_difference_and_not_a_fake_one():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    good = np.clip(0.2 + 0.6 * y + rng.normal(0, 0.15, 300), 0, 1)
    noise = rng.uniform(0, 1, 300)
    real = S.paired_bootstrap(lambda i: M.auc_of(y[i], good[i]),
                              lambda i: M.auc_of(y[i], noise[i]), 300, seed=0, n_boot=500)
    assert real.effect > 0.3 and real.ci_low > 0 and real.p_value < 0.01
    same = S.paired_bootstrap(lambda i: M.auc_of(y[i], good[i]),
                              lambda i: M.auc_of(y[i], good[i]), 300, seed=0, n_boot=500)
    assert same.effect == 0 and same.p_value == 1.0


def test_paired_t_over_seeds_matches_the_t_distribution():
    result = S.paired_over_seeds([0.60, 0.70, 0.65], [0.50, 0.55, 0.60])
    # differences 0.10, 0.15, 0.05: mean 0.10, sd 0.05, se 0.0289, t = 3.464 with 2 df
    assert result.effect == pytest.approx(0.10)
    assert result.p_value == pytest.approx(0.0742, abs=1e-4)
    assert result.ci_low == pytest.approx(0.10 - 4.3027 * 0.05 / math.sqrt(3), abs=1e-4)
    assert result.n_seeds == 3
    with pytest.raises(ValueError):
        S.paired_over_seeds([0.5], [0.4])


def test_benjamini_hochberg_adjustment():
    adjusted = S.adjust_bh([0.01, 0.04, 0.03, 0.2, float("nan")])
    assert adjusted[:4] == pytest.approx([0.04, 0.04 * 4 / 3, 0.04 * 4 / 3, 0.2])
    assert math.isnan(adjusted[4])


# --------------------------------------------------------------------------- calibration


def test_ece_and_reliability_bins_hand_made_case():
    y = np.array([0, 1, 1, 0, 1])
    probs = np.array([[.8, .2], [.3, .7], [.6, .4], [.1, .9], [.05, .95]])
    rows = M.reliability_bins(y, probs)
    assert [r[2] for r in rows] == [1, 1, 1, 1, 1]
    # |0.8-1| + |0.7-1| + |0.6-0| + |0.9-0| + |0.95-1| over 5 images
    assert M.expected_calibration_error(y, probs) == pytest.approx((0.2 + .3 + .6 + .9 + .05) / 5)
    perfect = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert M.expected_calibration_error(np.array([0, 1]), perfect) == 0.0


def test_temperature_scaling_fixes_overconfidence_and_keeps_the_labels():
    rng = np.random.default_rng(0)
    n = 2000
    y = rng.integers(0, 3, n)
    logits = rng.normal(0, 1, (n, 3))
    logits[np.arange(n), y] += 1.0
    true_probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    y = np.array([rng.choice(3, p=p) for p in true_probs])  # labels drawn from the probs
    overconfident = apply_temperature(true_probs, 1 / 3)  # logits x 3
    t = fit_temperature(y, overconfident)
    assert t == pytest.approx(3.0, rel=0.15)
    fixed = apply_temperature(overconfident, t)
    assert (fixed.argmax(1) == overconfident.argmax(1)).all()
    assert M.expected_calibration_error(y, fixed) < M.expected_calibration_error(
        y, overconfident) / 2


def test_fast_auc_equals_scikit_learn_with_ties():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 500)
    scores = np.round(rng.uniform(0, 1, 500) + 0.3 * y, 1)  # rounded: many ties
    assert M.auc_of(y, scores) == pytest.approx(roc_auc_score(y, scores), abs=1e-12)
    assert math.isnan(M.auc_of(np.zeros(5, int), scores[:5]))


# --------------------------------------------------------------------------- median interval


def test_median_interval_order_statistics_and_coverage():
    """The k-th smallest to k-th largest value, k as large as 95 % allows (n=10: the 2nd
    and 9th, n=41: the 14th and 28th); too few values give the range and say how sure."""
    assert S.median_interval([3.0, 1.0, 2.0]) == (1.0, 3.0, 0.75)
    assert S.median_interval(range(1, 6)) == (1.0, 5.0, 0.9375)
    low, high, coverage = S.median_interval(range(1, 11))
    assert (low, high) == (2.0, 9.0) and coverage == pytest.approx(1 - 2 * 11 / 1024)
    low, high, coverage = S.median_interval(range(1, 42))
    assert (low, high) == (14.0, 28.0) and 0.95 <= coverage < 0.98
    assert S.median_interval([4.0]) == (4.0, 4.0, 0.0)
    with pytest.raises(ValueError, match="at least one value"):
        S.median_interval([])


def test_median_interval_covers_as_often_as_it_says_on_skewed_timings():
    """Lognormal 'timings' (a busy machine only slows repeats down): over 4000 seeded draws
    the interval holds the true median about as often as its stated coverage."""
    rng = np.random.default_rng(0)
    for n in (8, 20):
        draws = rng.lognormal(0.0, 0.8, size=(4000, n))  # true median exp(0) = 1
        hits, stated = 0, 0.0
        for row in draws:
            low, high, stated = S.median_interval(row)
            hits += low <= 1.0 <= high
        assert hits / len(draws) == pytest.approx(stated, abs=0.015)
