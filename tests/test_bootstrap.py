"""The batched bootstrap in ``interval_figures`` against the one-resample-at-a-time loop."""

from __future__ import annotations

import math

import numpy as np
import pytest

from wbclf import metrics as M

BOOT_KEYS = ("macro_f1", "auc")


def _reference(y: np.ndarray, probs: np.ndarray, *, threshold: float | None = None,
               seed: int = 0, n_boot: int = 1000) -> dict[str, float]:
    """The intervals as ``bootstrap_interval`` gives them, one lambda call per resample."""
    pred = M.predict_labels(probs, threshold)
    c = probs.shape[1]
    statistics = {"macro_f1": lambda i: M.macro_f1_of(y[i], pred[i], c)}
    if c == 2:
        statistics["auc"] = lambda i: M.auc_of(y[i], probs[i, 1])
    out = {}
    for name, statistic in statistics.items():
        out[f"{name}_ci_low"], out[f"{name}_ci_high"] = M.bootstrap_interval(
            statistic, len(y), n_boot=n_boot, seed=seed)
    return out


def _assert_same_intervals(y: np.ndarray, probs: np.ndarray, **kwargs) -> dict[str, float]:
    """``interval_figures`` equals the reference exactly (NaN where it is NaN)."""
    figures = M.interval_figures(y, probs, **kwargs)
    expected = _reference(y, probs, **kwargs)
    assert [k for k in figures if k.startswith(BOOT_KEYS)] == list(expected)
    for key, want in expected.items():
        got = figures[key]
        if math.isnan(want):
            assert math.isnan(got), key
        else:
            assert got == want, (key, got, want)
    return figures


def _binary(n: int, seed: int, decimals: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p1 = np.round(np.clip(0.3 + 0.4 * y + rng.normal(0, 0.25, n), 0, 1), decimals)
    return y, np.stack([1 - p1, p1], axis=1)


def _multiclass(n: int, c: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    logits = rng.normal(0, 1, (n, c))
    logits[np.arange(n), y] += 1.5
    return y, np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)


@pytest.mark.parametrize("seed", [0, 7])
@pytest.mark.parametrize("threshold", [None, 0.4])
def test_binary_with_tied_scores_matches_the_loop(seed, threshold):
    y, probs = _binary(300, seed, decimals=1)  # 11 distinct scores: ties everywhere
    assert len(np.unique(probs[:, 1])) <= 11
    figures = _assert_same_intervals(y, probs, threshold=threshold, seed=seed)
    assert 0.5 < figures["auc_ci_low"] < figures["auc_ci_high"] < 1


def test_multiclass_with_a_class_missing_from_resamples_matches_the_loop():
    y, probs = _multiclass(80, 5, seed=1)
    y[y == 4] = 0
    y[:2] = 4  # class 4: two images only, predicted for those two only
    probs[:, 4] = np.where(y == 4, 5.0, 0.0)
    pred = probs.argmax(axis=1)
    assert ((pred == 4) == (y == 4)).all()
    # the case is real: some resamples hold no image of class 4 in truth or prediction
    rng = np.random.default_rng(3)
    resamples = rng.integers(0, len(y), (1000, len(y)))
    assert not ((y[resamples] == 4) | (pred[resamples] == 4)).any(axis=1).all()
    _assert_same_intervals(y, probs, seed=3)


@pytest.mark.parametrize("c", [12, 38])
def test_many_classes_some_unseen_in_a_resample_match_the_loop_exactly(c):
    """Past 8 classes numpy sums in pairs: a mean over the seen classes is not the sum over
    all classes divided by the seen ones, to the last bit; the loop's figure is kept."""
    y, probs = _multiclass(3 * c, c, seed=2)
    _assert_same_intervals(y, probs, seed=3)


def test_tiny_sample_where_many_aucs_are_undefined_matches_the_loop():
    y, probs = np.array([0, 1, 1]), np.array([[0.6, 0.4], [0.6, 0.4], [0.2, 0.8]])
    # a third of the resamples hold one class only: their AUC is NaN and left out
    auc = M._auc_batch(y, probs[:, 1]).values(np.random.default_rng(0).integers(0, 3, (1000, 3)))
    assert 200 < np.isnan(auc).sum() < 500
    figures = _assert_same_intervals(y, probs)
    assert not math.isnan(figures["auc_ci_low"])


def test_undefined_in_most_resamples_gives_nan_like_the_loop():
    y, probs = np.array([1]), np.array([[0.3, 0.7]])
    figures = _assert_same_intervals(y, probs)
    assert math.isnan(figures["auc_ci_low"]) and math.isnan(figures["auc_ci_high"])
    assert figures["macro_f1_ci_low"] == figures["macro_f1_ci_high"] == 1.0


@pytest.mark.parametrize("case", ["binary", "multiclass"])
def test_many_chunks_match_the_loop(monkeypatch, case):
    # 4096 cells a chunk: 8 resamples of 500 images each, and 999 leaves a short last chunk
    monkeypatch.setattr(M, "BOOT_CHUNK_CELLS", 4096)
    y, probs = _binary(500, 2, decimals=2) if case == "binary" else _multiclass(500, 6, 2)
    _assert_same_intervals(y, probs, seed=5, n_boot=999)


def test_default_chunks_of_a_larger_test_set_match_the_loop():
    y, probs = _multiclass(3000, 38, seed=4)
    assert M.BOOT_CHUNK_CELLS // 3000 < 1000  # more than one chunk
    _assert_same_intervals(y, probs, n_boot=300)


@pytest.mark.parametrize("n,rows", [(1, 7), (7, 3), (501, 64), (20, 1000)])
def test_resample_chunks_are_the_loops_resamples(n, rows):
    rng = np.random.default_rng(11)
    loop = np.stack([rng.integers(0, n, n) for _ in range(250)])
    chunks = list(M._resample_chunks(n, 250, 11, rows))
    assert [len(c) for c in chunks[:-1]] == [rows] * (len(chunks) - 1)
    assert np.array_equal(np.concatenate(chunks), loop)
