"""Evaluation as pure functions: labels and probabilities in, named metrics out.

Everything here takes plain sequences or numpy arrays (no torch), validates them at the edge
and returns Python scalars, so the engine, the report and the tests share one definition of
every figure that ends up in ``summary.json`` (see docs/ARCHITECTURE.md).

Conventions:
    * ``probs`` is ``(N, C)``, one column per entry of ``class_names``. Rows need not sum to
      one (the argmax works on any scores), but a binary threshold is compared with column 1
      as it is, so pass probabilities when you use one.
    * With two classes, index 1 is the positive class (e.g. ``Malignant``).
    * Undefined ratios (a class never predicted, a class absent) are 0.0, never a warning.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import ArrayLike
from sklearn.metrics import precision_recall_curve, roc_auc_score, roc_curve

__all__ = [
    "BOOT_CHUNK_CELLS",
    "CALIBRATION_BINS",
    "auc_of",
    "bootstrap_interval",
    "choose_threshold",
    "compute_metrics",
    "confusion_matrix",
    "expected_calibration_error",
    "interval_figures",
    "json_safe",
    "macro_f1_of",
    "per_class_rows",
    "pr_points",
    "predict_labels",
    "prefixed",
    "reliability_bins",
    "roc_points",
    "safe_class_keys",
    "safe_metric_name",
    "top_confusions",
    "wilson_interval",
]

DEFAULT_THRESHOLD = 0.5

_DISALLOWED_RUN = re.compile(r"[^A-Za-z0-9_.\-]+")


# --------------------------------------------------------------------------- class names


def safe_metric_name(name: str) -> str:
    """Turns a class name into a name that is safe inside a metric key.

    Rule: each maximal run of characters outside ``[A-Za-z0-9_.-]`` becomes one ``"_"``;
    everything else, existing underscores included, is kept and nothing is stripped. Keeping
    the original underscores keeps distinct class names distinct in practice
    (``safe_class_keys`` settles the rare clash). The empty name becomes ``"_"`` so that a key
    never ends in ``/``.

    Example: ``"Pepper,_bell___Bacterial_spot"`` -> ``"Pepper__bell___Bacterial_spot"``.

    Args:
        name: A class name, e.g. a dataset folder name.

    Returns:
        The safe name.
    """
    if not isinstance(name, str):
        raise ValueError(f"class name must be a str, got {type(name).__name__}: {name!r}")
    return _DISALLOWED_RUN.sub("_", name) or "_"


def safe_class_keys(class_names: Sequence[str]) -> list[str]:
    """Safe names for all classes, made unique.

    When several class names map to the same safe name, the first keeps it and the others get
    ``_2``, ``_3``, ... (skipping any key that another class has naturally), in class order.

    Args:
        class_names: Class names in label-index order.

    Returns:
        One unique safe key per class, in the same order.
    """
    bases = [safe_metric_name(n) for n in _check_class_names(class_names)]
    # A suffixed key must never take the natural key of a later class, or that class would
    # be the one renamed and keys would depend on what else is in the list.
    natural = set(bases)
    taken: set[str] = set()
    keys = []
    for base in bases:
        key = base
        if key in taken:
            n = 2
            while f"{base}_{n}" in taken or f"{base}_{n}" in natural:
                n += 1
            key = f"{base}_{n}"
        taken.add(key)
        keys.append(key)
    return keys


# --------------------------------------------------------------------------- predictions


def confusion_matrix(y_true: ArrayLike, y_pred: ArrayLike, num_classes: int) -> np.ndarray:
    """Counts of (true, predicted) pairs.

    Args:
        y_true: True class indices, shape ``(N,)``.
        y_pred: Predicted class indices, shape ``(N,)``.
        num_classes: Number of classes ``C``.

    Returns:
        ``(C, C)`` int64 array; rows are true classes, columns predicted classes.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)):
        raise ValueError(f"num_classes must be an int, got {num_classes!r}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    t = _as_labels(y_true, "y_true", num_classes)
    p = _as_labels(y_pred, "y_pred", num_classes)
    if len(t) != len(p):
        raise ValueError(f"y_true has {len(t)} labels but y_pred has {len(p)}")
    counts = np.bincount(t * num_classes + p, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).astype(np.int64)


def predict_labels(probs: ArrayLike, threshold: float | None = None) -> np.ndarray:
    """Predicted class indices.

    Args:
        probs: ``(N, C)`` class probabilities (or scores).
        threshold: Two classes only: predict the positive class (index 1) iff
            ``probs[:, 1] >= threshold``. ``None`` means plain argmax (ties go to the lower
            index, so for two classes a row at exactly 0.5/0.5 is negative).

    Returns:
        ``(N,)`` int64 array.
    """
    p = _as_probs(probs)
    if threshold is None:
        return p.argmax(axis=1).astype(np.int64)
    if p.shape[1] != 2:
        raise ValueError(f"a threshold applies to 2 classes only, probs has {p.shape[1]} columns")
    return (p[:, 1] >= _check_threshold(threshold)).astype(np.int64)


def choose_threshold(y_true: ArrayLike, p_positive: ArrayLike) -> float:
    """Binary decision threshold that maximizes Youden's J on these labels.

    J = sensitivity + specificity - 1, with "positive iff ``p >= threshold``". Every way of
    splitting the sorted scores is represented by one threshold: 0.5 for the split that 0.5
    makes, and the midpoint between the two neighbouring distinct scores for every other split
    (a midpoint leaves a margin on both sides, unlike a threshold sitting on a sample's score).
    Among the splits with the largest J, the threshold closest to 0.5 wins, then the lower one
    (it favours sensitivity, the costly error in screening). Degenerate input -- one class only,
    no samples, or no split better than chance (J <= 0) -- gives 0.5.

    Args:
        y_true: Binary labels, shape ``(N,)``, 1 = positive.
        p_positive: Scores of the positive class, shape ``(N,)``, e.g. ``probs[:, 1]``.

    Returns:
        The threshold, a Python float.
    """
    y, s = _binary_scores(y_true, p_positive)
    pos, neg = np.sort(s[y == 1]), np.sort(s[y == 0])
    n_pos, n_neg = len(pos), len(neg)
    if n_pos == 0 or n_neg == 0:
        return DEFAULT_THRESHOLD
    distinct = np.unique(s)
    candidates = np.concatenate([[DEFAULT_THRESHOLD], (distinct[:-1] + distinct[1:]) / 2])
    tp = n_pos - np.searchsorted(pos, candidates, side="left")  # positives with p >= t
    tn = np.searchsorted(neg, candidates, side="left")  # negatives with p < t
    # J * n_pos * n_neg in integers, so equal J values compare equal (no float round-off).
    score = tp.astype(np.int64) * n_neg + tn.astype(np.int64) * n_pos - n_pos * n_neg
    best = score.max()
    if best <= 0:
        return DEFAULT_THRESHOLD
    tied = candidates[score == best]
    distance = np.abs(tied - DEFAULT_THRESHOLD)
    closest = tied[distance <= distance.min() + 1e-12]
    return float(closest.min())


# --------------------------------------------------------------------------- metrics


def compute_metrics(
    y_true: ArrayLike,
    probs: ArrayLike,
    class_names: Sequence[str],
    *,
    threshold: float | None = None,
) -> dict[str, float]:
    """All named metrics of one evaluation.

    Keys: ``acc``, ``balanced_acc`` (mean recall over the classes present in ``y_true``),
    ``macro_f1`` (mean F1 over the classes present in ``y_true`` or predicted, as
    scikit-learn does by default: a class absent from both is not counted against the model),
    and ``precision/<key>``, ``recall/<key>``, ``f1/<key>``, ``support/<key>`` for every class,
    ``<key>`` from ``safe_class_keys``. With exactly two classes also ``auc`` (ROC-AUC of
    ``probs[:, 1]``; NaN when ``y_true`` holds one class only), ``sensitivity`` (recall of
    class 1), ``specificity`` (recall of class 0) and ``threshold`` (the one used; 0.5 for
    argmax). Undefined precision/recall/F1 are 0.0.

    Args:
        y_true: True class indices, shape ``(N,)``, N >= 1.
        probs: ``(N, C)`` class probabilities, ``C == len(class_names)``.
        class_names: Class names in label-index order.
        threshold: Binary only; see ``predict_labels``.

    Returns:
        Metric name -> Python float (supports are Python ints).
    """
    ev = _evaluate(y_true, probs, class_names, threshold)
    present = ev.support > 0
    seen = present | (ev.predicted > 0)
    metrics: dict[str, float] = {
        "acc": float(np.trace(ev.cm) / ev.cm.sum()),
        "balanced_acc": float(ev.recall[present].mean()),
        "macro_f1": float(ev.f1[seen].mean()),
    }
    if len(ev.keys) == 2:
        metrics["auc"] = (
            float(roc_auc_score(ev.y_true, ev.probs[:, 1])) if present.all() else math.nan
        )
        metrics["sensitivity"] = float(ev.recall[1])
        metrics["specificity"] = float(ev.recall[0])
        metrics["threshold"] = DEFAULT_THRESHOLD if threshold is None else float(threshold)
    for name, values in (("precision", ev.precision), ("recall", ev.recall), ("f1", ev.f1)):
        for key, value in zip(ev.keys, values):
            metrics[f"{name}/{key}"] = float(value)
    for key, count in zip(ev.keys, ev.support):
        metrics[f"support/{key}"] = int(count)
    return metrics


def per_class_rows(
    y_true: ArrayLike,
    probs: ArrayLike,
    class_names: Sequence[str],
    *,
    threshold: float | None = None,
) -> list[dict[str, Any]]:
    """Per-class figures as rows, for ``per_class.csv`` and W&B tables.

    Args:
        y_true: True class indices, shape ``(N,)``, N >= 1.
        probs: ``(N, C)`` class probabilities.
        class_names: Class names in label-index order.
        threshold: Binary only; see ``predict_labels``.

    Returns:
        One dict per class, in class order, with ``class`` (the original name), ``key`` (its
        safe key), ``precision``, ``recall``, ``f1`` (floats) and ``support`` (int).
    """
    ev = _evaluate(y_true, probs, class_names, threshold)
    return [
        {
            "class": name,
            "key": key,
            "precision": float(ev.precision[i]),
            "recall": float(ev.recall[i]),
            "f1": float(ev.f1[i]),
            "support": int(ev.support[i]),
        }
        for i, (name, key) in enumerate(zip(ev.names, ev.keys))
    ]


def prefixed(metrics: Mapping[str, float], prefix: str) -> dict[str, float]:
    """Puts every key under a prefix: ``{"acc": x}``, ``"test"`` -> ``{"test/acc": x}``.

    A trailing ``/`` on the prefix is optional.
    """
    head = prefix.rstrip("/")
    if not head:
        raise ValueError(f"prefix must be a non-empty name such as 'test', got {prefix!r}")
    return {f"{head}/{key}": value for key, value in metrics.items()}


# --------------------------------------------------------------------------- curves


def roc_points(
    y_true: ArrayLike, p_positive: ArrayLike
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC curve of a binary problem.

    Args:
        y_true: Binary labels, shape ``(N,)``, 1 = positive.
        p_positive: Scores of the positive class, shape ``(N,)``.

    Returns:
        ``(fpr, tpr, thresholds)`` as scikit-learn's ``roc_curve`` gives them (the first
        threshold is ``inf``). All three are empty when ``y_true`` lacks one of the classes,
        where the curve is undefined.
    """
    y, s = _binary_scores(y_true, p_positive)
    if not ((y == 0).any() and (y == 1).any()):
        return _empty_curve()
    fpr, tpr, thresholds = roc_curve(y, s)
    return fpr.astype(np.float64), tpr.astype(np.float64), thresholds.astype(np.float64)


def pr_points(
    y_true: ArrayLike, p_positive: ArrayLike
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision-recall curve of a binary problem.

    Args:
        y_true: Binary labels, shape ``(N,)``, 1 = positive.
        p_positive: Scores of the positive class, shape ``(N,)``.

    Returns:
        ``(precision, recall, thresholds)`` as scikit-learn's ``precision_recall_curve`` gives
        them (thresholds ascending; precision and recall have one more point, ``(1, 0)``).
        All three are empty when ``y_true`` has no positive, where recall is undefined.
    """
    y, s = _binary_scores(y_true, p_positive)
    if not (y == 1).any():
        return _empty_curve()
    precision, recall, thresholds = precision_recall_curve(y, s)
    return (
        precision.astype(np.float64),
        recall.astype(np.float64),
        thresholds.astype(np.float64),
    )


def top_confusions(
    cm: ArrayLike, class_names: Sequence[str], k: int = 5
) -> list[tuple[str, str, int]]:
    """The most frequent mistakes in a confusion matrix.

    Args:
        cm: ``(C, C)`` counts, rows true, columns predicted (see ``confusion_matrix``).
        class_names: Class names in label-index order.
        k: How many to return at most.

    Returns:
        Up to ``k`` ``(true name, predicted name, count)`` for the non-zero off-diagonal
        cells, largest count first; equal counts in row-major order.
    """
    names = _check_class_names(class_names)
    m = np.asarray(cm)
    c = len(names)
    if m.shape != (c, c):
        raise ValueError(f"cm must be ({c}, {c}) for {c} class names, got shape {m.shape}")
    if not (np.issubdtype(m.dtype, np.integer) or np.issubdtype(m.dtype, np.floating)):
        raise ValueError(f"cm must hold counts, got dtype {m.dtype}")
    if not (np.isfinite(m).all() and (m == np.round(m)).all() and (m >= 0).all()):
        raise ValueError("cm must hold non-negative whole counts")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
        raise ValueError(f"k must be an int >= 0, got {k!r}")
    off = m.astype(np.int64)
    np.fill_diagonal(off, 0)
    rows, cols = np.nonzero(off)  # row-major order, kept for ties by the stable sort
    counts = off[rows, cols]
    order = np.argsort(-counts, kind="stable")[:k]
    return [(names[rows[i]], names[cols[i]], int(counts[i])) for i in order]


# --------------------------------------------------------------------------- serialization


def json_safe(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """A copy that ``json.dump(..., allow_nan=False)`` accepts, for ``summary.json``.

    NaN and infinities become ``None``; numpy scalars become Python ``float``/``int``/``bool``;
    numpy arrays become lists; nested dicts, lists and tuples are converted too. Other values
    (str, None, ...) are kept as they are.
    """
    if not isinstance(metrics, Mapping):
        raise ValueError(f"metrics must be a mapping, got {type(metrics).__name__}")
    return {key: _json_value(value) for key, value in metrics.items()}


def _json_value(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: _json_value(item) for key, item in value.items()}
    if isinstance(value, np.ndarray):
        return _json_value(value.tolist())
    if isinstance(value, (list, tuple)):
        return [_json_value(item) for item in value]
    # bool before int: bool is an int subclass, and True must stay True, not 1.
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        number = float(value)
        return number if math.isfinite(number) else None
    return value


# --------------------------------------------------------------------------- uncertainty


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion (no continuity correction).

    Unlike the textbook ``p ± z·se`` it stays inside [0, 1] and keeps its coverage near 0 and
    1, where small test sets put accuracy, sensitivity and specificity.

    Args:
        successes: Count of successes, ``0 <= successes <= n``.
        n: Number of trials; ``n == 0`` gives ``(nan, nan)``.
        confidence: Two-sided confidence level.

    Returns:
        ``(low, high)``.
    """
    if n < 0 or not 0 <= successes <= max(n, 0):
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    if n == 0:
        return math.nan, math.nan
    from scipy.stats import norm

    z = float(norm.ppf(0.5 + confidence / 2))
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    # at 0 or n successes the bound is exactly 0 or 1; say so instead of 0.9999999999999999
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high


# Resamples are drawn and scored a chunk at a time, each chunk's arrays (resample indices,
# counts per resample) holding at most this many cells. 1000 resamples of 20,000 test images
# at once would be 160 MB of indices; 256K int64 cells (2 MiB) stay in cache, which measured
# ~1.8x faster than 4M-cell chunks, and more chunks cost next to nothing.
BOOT_CHUNK_CELLS = 1 << 18


def bootstrap_interval(
    statistic: Callable[[np.ndarray], float],
    n: int,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of a statistic over ``n`` items (images).

    Calls ``statistic`` once per resample; ``interval_figures`` scores all resamples of its
    figures at once instead, with the same resamples and so the same intervals.

    Args:
        statistic: Takes an index array (a resample of ``range(n)``) and returns the figure;
            NaN for a resample where it is undefined (e.g. AUC with one class), which is
            left out.
        n: Number of items.
        n_boot: Number of resamples.
        seed: Seeds the resampling, so the same data give the same interval.
        confidence: Two-sided confidence level.

    Returns:
        ``(low, high)``; ``(nan, nan)`` when fewer than half the resamples are defined.
    """
    if n < 1:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    values = np.array([statistic(rng.integers(0, n, n)) for _ in range(n_boot)], np.float64)
    return _percentile_interval(values, n_boot, confidence)


def macro_f1_of(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> float:
    """Macro F1 exactly as ``compute_metrics`` defines it, fast enough for a bootstrap."""
    cm = confusion_matrix(y_true, y_pred, num_classes)
    tp = np.diag(cm).astype(np.float64)
    support, predicted = cm.sum(axis=1), cm.sum(axis=0)
    f1 = _ratio(2 * tp, support + predicted)
    seen = (support > 0) | (predicted > 0)
    return float(f1[seen].mean()) if seen.any() else math.nan


def auc_of(y_true: np.ndarray, p_positive: np.ndarray) -> float:
    """ROC-AUC of a binary problem; NaN when one class is missing."""
    positive = np.asarray(y_true) == 1
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    from scipy.stats import rankdata

    # Mann-Whitney form (ties count half): equals roc_auc_score, ~20x faster in a bootstrap
    ranks = rankdata(p_positive)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def interval_figures(
    y_true: ArrayLike,
    probs: ArrayLike,
    *,
    threshold: float | None = None,
    seed: int = 0,
    n_boot: int = 1000,
    confidence: float = 0.95,
) -> dict[str, float]:
    """95% intervals of one evaluation's headline figures, for ``summary.json``.

    Keys (each ``<name>_ci_low`` / ``<name>_ci_high``): ``acc`` (Wilson); ``macro_f1``
    (bootstrap over images); with two classes also ``auc`` (bootstrap), ``sensitivity`` and
    ``specificity`` (Wilson over the positives and the negatives). Also ``ece`` (15 bins) and
    ``n`` (images). The bootstrap intervals equal ``bootstrap_interval`` with ``macro_f1_of``
    and ``auc_of``, computed for all resamples at once.
    """
    p = _as_probs(probs)
    y = _as_labels(y_true, "y_true", p.shape[1])
    pred = predict_labels(p, threshold)
    correct = int((pred == y).sum())
    out: dict[str, float] = {"n": int(len(y)), "ece": expected_calibration_error(y, p)}
    out["acc_ci_low"], out["acc_ci_high"] = wilson_interval(correct, len(y), confidence)
    c = p.shape[1]
    boot = {"macro_f1": _macro_f1_batch(y, pred, c)}
    if c == 2:
        boot["auc"] = _auc_batch(y, p[:, 1])
        for name, cls in (("sensitivity", 1), ("specificity", 0)):
            mask = y == cls
            hits = int((pred[mask] == cls).sum())
            out[f"{name}_ci_low"], out[f"{name}_ci_high"] = wilson_interval(
                hits, int(mask.sum()), confidence)
    for name, statistic in boot.items():
        out[f"{name}_ci_low"], out[f"{name}_ci_high"] = _batched_bootstrap_interval(
            statistic, len(y), n_boot=n_boot, seed=seed, confidence=confidence)
    return out


class _BatchStatistic(NamedTuple):
    """A bootstrap statistic that scores a whole chunk of resamples at once."""

    values: Callable[[np.ndarray], np.ndarray]  # (k, n) resample indices -> (k,) figures
    row_cells: int  # array cells one resample takes (indices or counts), to size the chunks


def _batched_bootstrap_interval(
    statistic: _BatchStatistic, n: int, *, n_boot: int, seed: int, confidence: float
) -> tuple[float, float]:
    """``bootstrap_interval`` for a batched statistic: the same resamples, the same interval."""
    if n < 1:
        return math.nan, math.nan
    rows = max(1, BOOT_CHUNK_CELLS // statistic.row_cells)
    chunks = [statistic.values(idx) for idx in _resample_chunks(n, n_boot, seed, rows)]
    values = np.concatenate(chunks) if chunks else np.zeros(0)
    return _percentile_interval(values, n_boot, confidence)


def _resample_chunks(n: int, n_boot: int, seed: int, rows: int) -> Iterator[np.ndarray]:
    """``bootstrap_interval``'s resamples, up to ``rows`` at a time as ``(k, n)`` arrays."""
    # Row r of integers(0, n, (k, n)) is what the r-th of k calls integers(0, n, n) draws,
    # and the generator's stream runs on across calls, so chunking keeps every resample.
    rng = np.random.default_rng(seed)
    for start in range(0, n_boot, rows):
        yield rng.integers(0, n, (min(rows, n_boot - start), n))


def _percentile_interval(
    values: np.ndarray, n_boot: int, confidence: float
) -> tuple[float, float]:
    """Percentile interval of the defined (finite) figures among ``n_boot`` resamples.

    ``(nan, nan)`` when fewer than half are defined: the rest would describe only the
    resamples that happen to allow the figure (e.g. hold both classes), not the data.
    """
    defined = values[np.isfinite(values)]
    if len(defined) < n_boot / 2:
        return math.nan, math.nan
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(defined, [tail, 100 - tail])
    return float(low), float(high)


def _macro_f1_batch(y: np.ndarray, pred: np.ndarray, num_classes: int) -> _BatchStatistic:
    """``macro_f1_of`` for a chunk of resamples: one confusion matrix per resample."""
    cells = num_classes * num_classes
    cell_of = y * num_classes + pred  # each image's confusion-matrix cell, row-major

    def values(idx: np.ndarray) -> np.ndarray:
        cm = _row_bincount(cell_of[idx], cells).reshape(len(idx), num_classes, num_classes)
        tp = np.diagonal(cm, axis1=1, axis2=2).astype(np.float64)
        support, predicted = cm.sum(axis=2), cm.sum(axis=1)
        f1 = _ratio(2 * tp, support + predicted)
        seen = (support > 0) | (predicted > 0)
        out = np.full(len(idx), math.nan)
        # The mean over the seen classes, taken as macro_f1_of takes it: summing the unseen
        # zeros too changes numpy's pairwise grouping past 8 classes, hence the last bit.
        for row in range(len(idx)):
            if seen[row].any():
                out[row] = f1[row, seen[row]].mean()
        return out

    return _BatchStatistic(values, max(len(y), cells))


def _auc_batch(y: np.ndarray, p_positive: np.ndarray) -> _BatchStatistic:
    """``auc_of`` for a chunk of resamples, counting per score instead of ranking."""
    # Sort the scores once: each image falls in bin 2 * (rank of its score among the unique
    # scores) + (1 if positive), so per resample one bincount gives, for every unique score,
    # the negatives and the positives there.
    unique, place = np.unique(p_positive, return_inverse=True)
    bins = 2 * len(unique)
    bin_of = 2 * place.reshape(-1) + (y == 1)

    def values(idx: np.ndarray) -> np.ndarray:
        counts = _row_bincount(bin_of[idx], bins).reshape(len(idx), -1, 2)
        neg, pos = counts[..., 0], counts[..., 1]
        neg_below = np.cumsum(neg, axis=1) - neg
        # Mann-Whitney: a positive wins over each negative scored below it and half wins each
        # tie. Doubled, the count stays an exact integer until the one division.
        twice_wins = (pos * (2 * neg_below + neg)).sum(axis=1)
        return _ratio_or_nan(twice_wins, 2 * pos.sum(axis=1) * neg.sum(axis=1))

    return _BatchStatistic(values, max(len(y), bins))


def _row_bincount(codes: np.ndarray, width: int) -> np.ndarray:
    """Counts per row: ``(k, n)`` codes in ``0..width-1`` -> ``(k, width)`` int64."""
    # Shift row r's codes into a block of their own, so one bincount counts all rows.
    k = len(codes)
    shifted = codes + np.arange(k, dtype=np.int64)[:, None] * width
    return np.bincount(shifted.ravel(), minlength=k * width).reshape(k, width)


def _ratio_or_nan(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """Element-wise ``numerator / denominator`` with NaN (undefined) where the denominator is 0."""
    out = np.full(numerator.shape, math.nan)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


# --------------------------------------------------------------------------- calibration

CALIBRATION_BINS = 15


def reliability_bins(
    y_true: ArrayLike, probs: ArrayLike, bins: int = CALIBRATION_BINS
) -> list[tuple[float, float, int, float, float]]:
    """The reliability table: confidence (top probability) in equal-width bins over [0, 1].

    Returns:
        One ``(low, high, count, mean confidence, accuracy)`` per non-empty bin; a bin holds
        confidences in ``(low, high]`` (the first also holds 0).
    """
    p = _as_probs(probs)
    y = _as_labels(y_true, "y_true", p.shape[1])
    confidence = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    rows = []
    for b in range(bins):
        mask = which == b
        if mask.any():
            rows.append((float(edges[b]), float(edges[b + 1]), int(mask.sum()),
                         float(confidence[mask].mean()), float(correct[mask].mean())))
    return rows


def expected_calibration_error(
    y_true: ArrayLike, probs: ArrayLike, bins: int = CALIBRATION_BINS
) -> float:
    """ECE: the count-weighted mean gap between confidence and accuracy over the bins."""
    rows = reliability_bins(y_true, probs, bins)
    total = sum(count for _, _, count, _, _ in rows)
    if total == 0:
        return math.nan
    return float(sum(count * abs(conf - acc) for _, _, count, conf, acc in rows) / total)


# --------------------------------------------------------------------------- internals


@dataclass(frozen=True)
class _Evaluation:
    names: list[str]
    keys: list[str]
    y_true: np.ndarray
    probs: np.ndarray
    cm: np.ndarray
    support: np.ndarray  # true count per class
    predicted: np.ndarray  # predicted count per class
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray


def _evaluate(
    y_true: ArrayLike, probs: ArrayLike, class_names: Sequence[str], threshold: float | None
) -> _Evaluation:
    names = _check_class_names(class_names)
    keys = safe_class_keys(names)
    p = _as_probs(probs, len(names))
    y = _as_labels(y_true, "y_true", len(names))
    if len(y) != len(p):
        raise ValueError(f"y_true has {len(y)} labels but probs has {len(p)} rows")
    if len(y) == 0:
        raise ValueError("no samples to evaluate: y_true and probs are empty")
    cm = confusion_matrix(y, predict_labels(p, threshold), len(names))
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    return _Evaluation(
        names=names,
        keys=keys,
        y_true=y,
        probs=p,
        cm=cm,
        support=support,
        predicted=predicted,
        precision=_ratio(tp, predicted),
        recall=_ratio(tp, support),
        # 2TP / (2TP + FP + FN): the harmonic mean of precision and recall, and 0 (not 0/0)
        # whenever either of them is 0 or undefined.
        f1=_ratio(2 * tp, support + predicted),
    )


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """Element-wise ``numerator / denominator`` with 0.0 where the denominator is 0."""
    out = np.zeros(numerator.shape, dtype=np.float64)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def _check_class_names(class_names: Sequence[str]) -> list[str]:
    # A bare str is a Sequence[str] too; "Benign" must not become five one-letter classes.
    if isinstance(class_names, (str, bytes)) or not isinstance(class_names, Sequence):
        raise ValueError(f"class_names must be a list of str, got {type(class_names).__name__}")
    names = list(class_names)
    if not names:
        raise ValueError("class_names is empty")
    bad = [n for n in names if not isinstance(n, str)]
    if bad:
        raise ValueError(f"class_names must all be str, got {bad[0]!r}")
    return names


def _check_threshold(threshold: float) -> float:
    try:
        value = float(threshold)
    except (TypeError, ValueError):
        raise ValueError(f"threshold must be a number, got {threshold!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"threshold must be finite, got {threshold!r}")
    return value


def _as_labels(y: ArrayLike, what: str, num_classes: int) -> np.ndarray:
    """Validated ``(N,)`` int64 class indices in ``0..num_classes-1``."""
    try:
        arr = np.asarray(y)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{what} is not an array of labels: {err}") from None
    if arr.ndim != 1:
        raise ValueError(f"{what} must be 1-D (N,), got shape {arr.shape}")
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.dtype == np.bool_ or np.issubdtype(arr.dtype, np.integer):
        arr = arr.astype(np.int64)
    elif np.issubdtype(arr.dtype, np.floating):
        # Labels read back from float arrays (e.g. a CSV) are fine if they are whole numbers.
        if not (np.isfinite(arr).all() and (arr == np.round(arr)).all()):
            raise ValueError(f"{what} must hold whole-number class indices, got fractions/NaN")
        arr = arr.astype(np.int64)
    else:
        raise ValueError(f"{what} must hold integer class indices, got dtype {arr.dtype}")
    outside = (arr < 0) | (arr >= num_classes)
    if outside.any():
        examples = sorted(set(arr[outside].tolist()))[:5]
        raise ValueError(
            f"{what} has labels outside 0..{num_classes - 1} ({num_classes} classes): {examples}"
        )
    return arr


def _as_probs(probs: ArrayLike, num_classes: int | None = None) -> np.ndarray:
    """Validated ``(N, C)`` float64 probabilities, C == num_classes when given."""
    try:
        arr = np.asarray(probs, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"probs must be a numeric (N, C) array: {err}") from None
    if arr.ndim != 2:
        hint = "; for 2 classes pass np.column_stack([1 - p, p])" if arr.ndim == 1 else ""
        raise ValueError(f"probs must be 2-D (N, C), got shape {arr.shape}{hint}")
    if arr.shape[1] < 1:
        raise ValueError(f"probs has no class columns, shape {arr.shape}")
    if num_classes is not None and arr.shape[1] != num_classes:
        raise ValueError(
            f"probs has {arr.shape[1]} columns but there are {num_classes} class names"
        )
    if not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).sum())
        raise ValueError(f"probs holds {bad} non-finite values (NaN/inf); did training diverge?")
    return arr


def _binary_scores(y_true: ArrayLike, p_positive: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Validated binary labels and 1-D finite positive-class scores of the same length."""
    y = _as_labels(y_true, "y_true", 2)
    try:
        s = np.asarray(p_positive, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"p_positive must be a numeric (N,) array: {err}") from None
    if s.ndim != 1:
        hint = "; pass probs[:, 1] for (N, 2) probabilities" if s.ndim == 2 else ""
        raise ValueError(f"p_positive must be 1-D (N,), got shape {s.shape}{hint}")
    if len(s) != len(y):
        raise ValueError(f"y_true has {len(y)} labels but p_positive has {len(s)} scores")
    if not np.isfinite(s).all():
        raise ValueError("p_positive holds non-finite values (NaN/inf)")
    return y, s


def _empty_curve() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.zeros(0), np.zeros(0), np.zeros(0)
