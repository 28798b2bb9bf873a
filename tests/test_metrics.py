"""Hand-made cases for wbclf.metrics; every expected number is worked out here by hand."""

from __future__ import annotations

import json
import math
import re
import warnings

import numpy as np
import pytest

from wbclf import metrics as M

SAFE = re.compile(r"[A-Za-z0-9_.\-]+")


def one_hot_probs(y_pred, num_classes, high=0.7):
    """Probabilities whose argmax is y_pred (the rest of the mass spread evenly)."""
    low = (1.0 - high) / (num_classes - 1)
    probs = np.full((len(y_pred), num_classes), low)
    probs[np.arange(len(y_pred)), y_pred] = high
    return probs


def labels_from_cm(cm):
    """y_true, y_pred that reproduce a confusion matrix (rows true, columns predicted)."""
    y_true, y_pred = [], []
    for t, row in enumerate(cm):
        for p, count in enumerate(row):
            y_true += [t] * count
            y_pred += [p] * count
    return np.array(y_true), np.array(y_pred)


@pytest.fixture(autouse=True)
def no_warnings():
    """Every metric here must be computed without a single warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def assert_python_scalars(metrics):
    for key, value in metrics.items():
        assert type(value) in (float, int), f"{key}: {type(value)}"


# --------------------------------------------------------------------------- basics


def test_confusion_matrix_rows_are_true_columns_predicted():
    cm = M.confusion_matrix([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 0, 2], 3)
    assert cm.dtype == np.int64
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]
    assert M.confusion_matrix([], [], 2).tolist() == [[0, 0], [0, 0]]


def test_perfect_classifier():
    names = ["cat", "dog", "bird"]
    y = [0, 1, 2, 2, 1, 0, 2]
    m = M.compute_metrics(y, one_hot_probs(y, 3), names)
    assert m["acc"] == 1.0 and m["balanced_acc"] == 1.0 and m["macro_f1"] == 1.0
    for key in ("cat", "dog", "bird"):
        assert m[f"precision/{key}"] == m[f"recall/{key}"] == m[f"f1/{key}"] == 1.0
    assert (m["support/cat"], m["support/dog"], m["support/bird"]) == (2, 2, 3)
    assert "auc" not in m and "threshold" not in m  # binary-only keys
    assert_python_scalars(m)


# The 3-class case used below:     predicted 0  1  2   support
CM3 = [[3, 1, 0],  # true 0                 3  1  0   4
       [1, 2, 1],  # true 1                 1  2  1   4
       [1, 1, 3]]  # true 2                 1  1  3   5
# column sums (predicted counts):           5  4  4   N = 13, trace = 8


def test_known_three_class_confusion_matrix():
    y_true, y_pred = labels_from_cm(CM3)
    probs = one_hot_probs(y_pred, 3)
    names = ["a", "b", "c"]
    assert M.confusion_matrix(y_true, M.predict_labels(probs), 3).tolist() == CM3
    m = M.compute_metrics(y_true, probs, names)

    precision = [3 / 5, 2 / 4, 3 / 4]  # diagonal / column sum
    recall = [3 / 4, 2 / 4, 3 / 5]  # diagonal / row sum
    f1 = [2 * 3 / (4 + 5), 2 * 2 / (4 + 4), 2 * 3 / (5 + 4)]  # 2TP / (support + predicted)
    assert f1 == pytest.approx([2 / 3, 1 / 2, 2 / 3])
    assert m["acc"] == pytest.approx(8 / 13)
    assert m["balanced_acc"] == pytest.approx((3 / 4 + 1 / 2 + 3 / 5) / 3)  # 37/60
    assert m["macro_f1"] == pytest.approx(11 / 18)  # (2/3 + 1/2 + 2/3) / 3
    for i, key in enumerate(names):
        assert m[f"precision/{key}"] == pytest.approx(precision[i])
        assert m[f"recall/{key}"] == pytest.approx(recall[i])
        assert m[f"f1/{key}"] == pytest.approx(f1[i])
    assert [m[f"support/{k}"] for k in names] == [4, 4, 5]
    assert_python_scalars(m)

    rows = M.per_class_rows(y_true, probs, ["A x", "B", "C"])
    assert [r["class"] for r in rows] == ["A x", "B", "C"]
    assert [r["key"] for r in rows] == ["A_x", "B", "C"]
    assert [r["precision"] for r in rows] == pytest.approx(precision)
    assert [r["recall"] for r in rows] == pytest.approx(recall)
    assert [r["f1"] for r in rows] == pytest.approx(f1)
    assert [r["support"] for r in rows] == [4, 4, 5]
    assert all(type(r["support"]) is int and type(r["f1"]) is float for r in rows)


def test_class_never_predicted_gives_zero_without_warning():
    # class 2 is in y_true but never predicted; class 3 is neither in y_true nor predicted.
    y_true = [0, 0, 1, 1, 2]
    y_pred = [0, 0, 1, 1, 1]
    m = M.compute_metrics(y_true, one_hot_probs(y_pred, 4), ["a", "b", "c", "d"])
    assert m["precision/c"] == 0.0 and m["recall/c"] == 0.0 and m["f1/c"] == 0.0
    assert m["precision/d"] == m["recall/d"] == m["f1/d"] == 0.0 and m["support/d"] == 0
    assert m["precision/b"] == pytest.approx(2 / 3)  # 2 of 3 predicted b are b
    assert m["recall/b"] == 1.0
    assert m["f1/b"] == pytest.approx(4 / 5)  # 2*2 / (2 + 3)
    assert m["acc"] == pytest.approx(4 / 5)
    # recall over the classes present in y_true (a, b, c), not over d
    assert m["balanced_acc"] == pytest.approx((1 + 1 + 0) / 3)
    # F1 over classes present or predicted (a, b, c): (1 + 4/5 + 0) / 3
    assert m["macro_f1"] == pytest.approx(0.6)


def test_single_class_batch_binary():
    y_true = [0, 0, 0]
    probs = [[0.8, 0.2], [0.3, 0.7], [0.9, 0.1]]  # argmax -> 0, 1, 0
    m = M.compute_metrics(y_true, probs, ["Benign", "Malignant"])
    assert math.isnan(m["auc"])
    assert m["acc"] == pytest.approx(2 / 3)
    assert m["specificity"] == pytest.approx(2 / 3)
    assert m["sensitivity"] == 0.0  # no positives: zero-division rule
    assert m["balanced_acc"] == pytest.approx(2 / 3)  # only Benign is present
    assert m["precision/Malignant"] == 0.0  # the one positive call is wrong
    assert m["f1/Benign"] == pytest.approx(4 / 5)  # 2*2 / (3 + 2)
    assert m["macro_f1"] == pytest.approx((4 / 5 + 0) / 2)  # Malignant was predicted
    assert m["threshold"] == 0.5
    assert_python_scalars(m)


# --------------------------------------------------------------------------- binary


# Scores of the positive class; worked out below.
NEG = [0.1, 0.3, 0.45, 0.6]
POS = [0.35, 0.7, 0.8, 0.9]


def binary_case():
    y = np.array([0] * len(NEG) + [1] * len(POS))
    p = np.array(NEG + POS)
    return y, p, np.column_stack([1 - p, p])


def test_choose_threshold_youden_on_hand_made_set():
    # positive iff p >= t. Splits (sens, spec, J):
    #   t in (0.30, 0.35]: 4/4, 2/4 -> 0.50
    #   t in (0.35, 0.45]: 3/4, 2/4 -> 0.25
    #   t in (0.45, 0.60] (holds 0.5): 3/4, 3/4 -> 0.50
    #   t in (0.60, 0.70]: 3/4, 4/4 -> 0.75   <- best, represented by its midpoint 0.65
    #   t in (0.70, 0.80]: 2/4, 4/4 -> 0.50
    y, p, _ = binary_case()
    assert M.choose_threshold(y, p) == pytest.approx(0.65)


def test_threshold_changes_predictions_and_sens_spec():
    y, p, probs = binary_case()
    names = ["Benign", "Malignant"]
    default = M.compute_metrics(y, probs, names)
    # argmax == 0.5: negatives 0.6 is a false positive, positive 0.35 a false negative
    assert default["sensitivity"] == pytest.approx(3 / 4)
    assert default["specificity"] == pytest.approx(3 / 4)
    assert default["acc"] == pytest.approx(6 / 8)
    assert default["threshold"] == 0.5
    # AUC = ordered (pos, neg) pairs / 16: 0.35 beats 2 negatives, the others beat all 4
    assert default["auc"] == pytest.approx((2 + 4 + 4 + 4) / 16)

    t = M.choose_threshold(y, p)
    assert M.predict_labels(probs).tolist() == [0, 0, 0, 1, 0, 1, 1, 1]
    assert M.predict_labels(probs, t).tolist() == [0, 0, 0, 0, 0, 1, 1, 1]
    tuned = M.compute_metrics(y, probs, names, threshold=t)
    assert tuned["sensitivity"] == pytest.approx(3 / 4)
    assert tuned["specificity"] == 1.0  # the 0.6 negative is now negative
    assert tuned["acc"] == pytest.approx(7 / 8)
    assert tuned["threshold"] == pytest.approx(0.65)
    assert tuned["auc"] == default["auc"]  # AUC does not depend on the threshold
    assert_python_scalars(tuned)


def test_predict_labels_threshold_is_inclusive():
    probs = [[0.6, 0.4], [0.5, 0.5], [0.3, 0.7]]
    assert M.predict_labels(probs, 0.4).tolist() == [1, 1, 1]
    assert M.predict_labels(probs, 0.7).tolist() == [0, 0, 1]
    assert M.predict_labels(probs).tolist() == [0, 0, 1]  # argmax: a 0.5/0.5 tie is class 0


def test_choose_threshold_ties_go_closest_to_half():
    # separable around 0.5: every t in (0.2, 0.8] has J = 1, and 0.5 is one of them
    assert M.choose_threshold([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 0.5
    # separable above 0.5 only: t in (0.6, 0.8], midpoint 0.7
    assert M.choose_threshold([0, 0, 1, 1], [0.55, 0.6, 0.8, 0.9]) == pytest.approx(0.7)
    # neg 0.1 0.3 0.62 / pos 0.4 0.7 0.9: J = 2/3 for t in (0.3, 0.4] (sens 1, spec 2/3) and
    # for t in (0.62, 0.7] (sens 2/3, spec 1); midpoints 0.35 and 0.66 -> 0.35 is closer
    y = [0, 0, 0, 1, 1, 1]
    assert M.choose_threshold(y, [0.1, 0.3, 0.62, 0.4, 0.7, 0.9]) == pytest.approx(0.35)
    # with 0.6 instead of 0.62 the midpoints are 0.35 and 0.65, equally close: the lower wins
    assert M.choose_threshold(y, [0.1, 0.3, 0.6, 0.4, 0.7, 0.9]) == pytest.approx(0.35)


def test_choose_threshold_degenerate_inputs():
    assert M.choose_threshold([1, 1, 1], [0.2, 0.9, 0.4]) == 0.5
    assert M.choose_threshold([0, 0], [0.2, 0.9]) == 0.5
    assert M.choose_threshold([], []) == 0.5
    # no split beats chance (scores inverted): keep 0.5
    assert M.choose_threshold([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1]) == 0.5


def test_roc_and_pr_points():
    y, p = [0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]
    fpr, tpr, thr = M.roc_points(y, p)
    points = set(zip(fpr.tolist(), tpr.tolist()))
    # t=0.8: (0, .5); t=0.4: (.5, .5); t=0.35: (.5, 1); t=0.1: (1, 1)
    assert {(0.0, 0.0), (0.0, 0.5), (0.5, 1.0), (1.0, 1.0)} <= points
    assert np.isinf(thr[0]) and len(fpr) == len(tpr) == len(thr)
    area = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    assert area == pytest.approx(3 / 4)  # pairs: 0.35 beats 0.1; 0.8 beats both

    precision, recall, thr = M.pr_points(y, p)
    pairs = set(zip(np.round(precision, 9).tolist(), recall.tolist()))
    # t=0.35: 2 of 3 predicted are positive, all positives found; t=0.4: 1/2, 1/2; t=0.8: 1, 1/2
    assert {(round(2 / 3, 9), 1.0), (0.5, 0.5), (1.0, 0.5), (1.0, 0.0)} <= pairs
    assert len(precision) == len(recall) == len(thr) + 1

    for curve in (M.roc_points([0, 0], [0.1, 0.2]), M.pr_points([0, 0], [0.1, 0.2])):
        assert all(len(a) == 0 for a in curve)
    assert all(len(a) == 0 for a in M.roc_points([1, 1], [0.1, 0.2]))


# --------------------------------------------------------------------------- names, helpers

PLANT_CLASSES = [
    "Apple___Apple_scab",
    "Cherry_(including_sour)___Powdery_mildew",
    "Cherry_(including_sour)___healthy",
    "Corn_(maize)___Cercospora_leaf_spot Gray_leaf_spot",
    "Corn_(maize)___Common_rust_",
    "Pepper,_bell___Bacterial_spot",
    "Pepper,_bell___healthy",
    "Tomato___Spider_mites Two-spotted_spider_mite",
    "Tomato___Tomato_Yellow_Leaf_Curl_Virus",
]


def test_safe_names_of_plant_classes():
    assert M.safe_metric_name("Corn_(maize)___Common_rust_") == "Corn__maize____Common_rust_"
    assert M.safe_metric_name("Pepper,_bell___Bacterial_spot") == "Pepper__bell___Bacterial_spot"
    assert (
        M.safe_metric_name("Cherry_(including_sour)___Powdery_mildew")
        == "Cherry__including_sour____Powdery_mildew"
    )
    assert (
        M.safe_metric_name("Tomato___Spider_mites Two-spotted_spider_mite")
        == "Tomato___Spider_mites_Two-spotted_spider_mite"
    )
    keys = M.safe_class_keys(PLANT_CLASSES)
    assert all(SAFE.fullmatch(k) for k in keys)
    assert len(set(keys)) == len(keys)
    assert M.safe_class_keys(["Benign", "Malignant"]) == ["Benign", "Malignant"]


def test_safe_names_rule_details():
    assert M.safe_metric_name("a, (b)") == "a_b_"  # a run of disallowed chars -> one "_"
    assert M.safe_metric_name("a__b") == "a__b"  # existing underscores are kept
    assert M.safe_metric_name("v1.2-x") == "v1.2-x"
    assert M.safe_metric_name("Café/Crème") == "Caf_Cr_me"  # ASCII only; "/" splits keys
    assert M.safe_metric_name("") == "_"


def test_safe_class_keys_resolve_clashes():
    # "a b", "a_b" and "a,b" all map to "a_b"; "a_b_2" is a real class and keeps its name
    keys = M.safe_class_keys(["a b", "a_b", "a,b", "a_b_2"])
    assert keys == ["a_b", "a_b_3", "a_b_4", "a_b_2"]
    assert M.safe_class_keys(["x", "x"]) == ["x", "x_2"]


def test_clashing_class_names_keep_separate_metrics():
    m = M.compute_metrics([0, 1], [[0.9, 0.1], [0.2, 0.8]], ["a b", "a,b"])
    assert m["support/a_b"] == 1 and m["support/a_b_2"] == 1


def test_prefixed():
    assert M.prefixed({"acc": 0.5, "f1/x": 1.0}, "test") == {"test/acc": 0.5, "test/f1/x": 1.0}
    assert M.prefixed({"acc": 0.5}, "val/") == {"val/acc": 0.5}
    with pytest.raises(ValueError, match="prefix"):
        M.prefixed({"acc": 0.5}, "")


def test_top_confusions():
    cm = np.array([[5, 3, 0], [0, 4, 2], [2, 0, 9]])
    names = ["a", "b", "c"]
    assert M.top_confusions(cm, names, k=2) == [("a", "b", 3), ("b", "c", 2)]
    # all non-zero off-diagonal cells, ties in row-major order, zeros left out
    assert M.top_confusions(cm, names, k=10) == [("a", "b", 3), ("b", "c", 2), ("c", "a", 2)]
    assert M.top_confusions(np.eye(3, dtype=int), names) == []
    assert M.top_confusions(M.confusion_matrix([0, 1], [1, 0], 2), ["x", "y"], k=1) == [
        ("x", "y", 1)
    ]


def test_json_safe():
    raw = {
        "auc": float("nan"),
        "acc": np.float32(0.5),
        "support/a": np.int64(3),
        "inf": np.inf,
        "flag": np.bool_(True),
        "name": "x",
        "none": None,
        "curve": np.array([0.0, np.nan]),
        "nested": {"v": np.float64(-np.inf), "t": (np.int32(1), 2.5)},
    }
    out = M.json_safe(raw)
    assert out["auc"] is None and out["inf"] is None and out["none"] is None
    assert out["acc"] == 0.5 and type(out["acc"]) is float
    assert out["support/a"] == 3 and type(out["support/a"]) is int
    assert out["flag"] is True and out["name"] == "x"
    assert out["curve"] == [0.0, None]
    assert out["nested"] == {"v": None, "t": [1, 2.5]}
    json.dumps(out, allow_nan=False)  # would raise on NaN / numpy types
    assert math.isnan(raw["auc"])  # input untouched

    m = M.compute_metrics([0, 0], [[0.9, 0.1], [0.8, 0.2]], ["Benign", "Malignant"])
    assert M.json_safe(M.prefixed(m, "test"))["test/auc"] is None


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "y_true, probs, names, match",
    [
        ([0, 1], [0.2, 0.8], ["a", "b"], r"probs must be 2-D .*column_stack"),
        ([0, 1], [[0.2, 0.3, 0.5], [0.1, 0.1, 0.8]], ["a", "b"], "3 columns but there are 2"),
        ([0, 1, 1], [[0.2, 0.8], [0.1, 0.9]], ["a", "b"], "3 labels but probs has 2 rows"),
        ([0, 2], [[0.2, 0.8], [0.1, 0.9]], ["a", "b"], r"outside 0\.\.1.*\[2\]"),
        ([0, -1], [[0.2, 0.8], [0.1, 0.9]], ["a", "b"], r"outside 0\.\.1"),
        ([0, 0.5], [[0.2, 0.8], [0.1, 0.9]], ["a", "b"], "whole-number"),
        (["a", "b"], [[0.2, 0.8], [0.1, 0.9]], ["a", "b"], "integer class indices"),
        ([[0, 1]], [[0.2, 0.8], [0.1, 0.9]], ["a", "b"], r"y_true must be 1-D"),
        ([0, 1], [[0.2, np.nan], [0.1, 0.9]], ["a", "b"], "non-finite"),
        ([0, 1], [[0.2, 0.8], [0.1]], ["a", "b"], "numeric"),
        ([0, 1], [[0.2, 0.8], [0.1, 0.9]], "ab", "class_names must be a list"),
        ([0, 1], [[0.2, 0.8], [0.1, 0.9]], [], "class_names is empty"),
        ([], np.zeros((0, 2)), ["a", "b"], "no samples"),
    ],
)
def test_bad_inputs_raise_one_line_value_error(y_true, probs, names, match):
    with pytest.raises(ValueError, match=match) as info:
        M.compute_metrics(y_true, probs, names)
    assert "\n" not in str(info.value)


def test_bad_inputs_of_the_smaller_functions():
    with pytest.raises(ValueError, match="2 classes only"):
        M.predict_labels(np.full((2, 3), 1 / 3), threshold=0.5)
    with pytest.raises(ValueError, match="finite"):
        M.predict_labels([[0.5, 0.5]], threshold=float("nan"))
    with pytest.raises(ValueError, match="2 labels but y_pred has 3"):
        M.confusion_matrix([0, 1], [0, 1, 1], 2)
    with pytest.raises(ValueError, match="y_pred has labels outside"):
        M.confusion_matrix([0, 1], [0, 5], 2)
    with pytest.raises(ValueError, match=r"p_positive must be 1-D .*probs\[:, 1\]"):
        M.choose_threshold([0, 1], [[0.8, 0.2], [0.1, 0.9]])
    with pytest.raises(ValueError, match="outside 0..1"):
        M.choose_threshold([0, 2], [0.1, 0.9])
    with pytest.raises(ValueError, match="3 scores"):
        M.roc_points([0, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match=r"\(3, 3\)"):
        M.top_confusions(np.zeros((2, 2), dtype=int), ["a", "b", "c"])
    with pytest.raises(ValueError, match="threshold applies"):
        M.compute_metrics([0, 1, 2], np.eye(3), ["a", "b", "c"], threshold=0.5)


def test_accepts_lists_float_labels_and_float32():
    probs32 = np.array([[0.9, 0.1], [0.2, 0.8]], dtype=np.float32)
    m = M.compute_metrics(np.array([0.0, 1.0]), probs32, ("Benign", "Malignant"))
    assert m["acc"] == 1.0 and m["auc"] == 1.0
    assert_python_scalars(m)
