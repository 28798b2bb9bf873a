"""Tested findings end to end: real tiny studies, their report and ``findings.json``.

A null study (a setting with no real effect, batch_size 63 vs 64, two seeds each) must be
reported as "no significant difference"; a study with a large real effect (1 vs 8 epochs)
as significant; and runs written before per-image predictions existed must still report.
"""

from __future__ import annotations

import json
import math
import shutil
from html import unescape
from pathlib import Path

import pytest

from wbclf.config import build_config
from wbclf.metrics import wilson_interval
from wbclf.reporting.main import write_local_report
from wbclf.training.run import train_run

TINY = {"image_size": 32, "width": 8, "depth": 3, "limit_per_class": 0, "log_samples": 0,
        "wandb_mode": "disabled", "num_workers": "0"}
FROZEN = {"model": "tf_efficientnet_lite0", "strategy": "frozen", "image_size": 64,
          "augment": "none"}
FIELDS = {"study", "kind", "factor", "a", "b", "metric", "effect", "ci_low", "ci_high",
          "ci_level", "compared", "p_value", "p_adjusted", "significant", "n_images", "n_seeds",
          "text"}


def _study(dataset: Path, folder: Path, grid: list[dict]) -> Path:
    for i, changes in enumerate(grid):
        train_run(build_config({**TINY, "dataset": str(dataset), "out_dir": str(folder),
                                "run_name": f"run-{i}", **changes}))
    return folder


def _findings(folder: Path) -> list[dict]:
    report = write_local_report(folder)
    return json.loads((report.html.parent / "findings.json").read_text())


@pytest.fixture(scope="module")
def null_study(toy_lesions, tmp_path_factory) -> Path:
    # a frozen backbone's head: the seed moves test accuracy by several points, batch size
    # 63 vs 64 by nothing real (a scratch CNN this small barely leaves its initial guess)
    grid = [{**FROZEN, "lr": 1e-3, "epochs": 6, "batch_size": b, "seed": s}
            for b in (63, 64) for s in (0, 1)]
    return _study(toy_lesions, tmp_path_factory.mktemp("null") / "batch", grid)


@pytest.fixture(scope="module")
def effect_study(toy_leaves, tmp_path_factory) -> Path:
    # the head on a frozen ImageNet backbone goes from near chance after one epoch at a low
    # learning rate to far above it after eight (the features are computed once)
    grid = [{**FROZEN, "batch_size": 32, "lr": 3e-4, "epochs": e} for e in (1, 8)]
    return _study(toy_leaves, tmp_path_factory.mktemp("effect") / "epochs", grid)


@pytest.mark.slow
def test_null_study_gets_a_null_answer(null_study):
    claims = _findings(null_study)
    accs = {json.loads((run / "summary.json").read_text())["test/acc"]
            for run in null_study.glob("run-*")}
    assert len(accs) > 1  # the runs differ: there is noise to be fooled by
    assert claims and all(FIELDS <= set(c) for c in claims)
    # one factor, two levels: best vs runner-up is the factor's test, stated once
    assert [c["kind"] for c in claims] == ["best"] * len(claims)
    assert {c["factor"] for c in claims} == {"batch_size"}
    factor = [c for c in claims if c["metric"] == "test/acc"]
    assert factor[0]["n_seeds"] == 2 and factor[0]["test"] == "paired_t_over_seeds"
    for claim in claims:
        assert claim["significant"] is False, claim["text"]
        assert claim["text"].startswith("no significant difference between"), claim["text"]
        assert claim["ci_low"] <= claim["effect"] <= claim["ci_high"]
        # nothing significant among n comparisons: intervals at the Bonferroni level, all
        # holding 0, and the sentence says so
        n = claim["compared"]
        assert n == len(claims) >= 3
        assert claim["ci_level"] == pytest.approx(1 - 0.05 / n)
        assert claim["ci_low"] <= 0 <= claim["ci_high"], claim["text"]
        assert f"widened for {n} comparisons" in claim["text"], claim["text"]
    html = (null_study / "report.html").read_text()
    for claim in claims:  # the report shows the sentences of findings.json word for word
        assert claim["text"] in unescape(html), claim["text"]
    assert "Benjamini-Hochberg" in html


@pytest.mark.slow
def test_large_real_effect_is_significant(effect_study):
    claims = _findings(effect_study)
    factor = next(c for c in claims if c["metric"] == "test/acc")
    assert factor["kind"] == "best" and factor["factor"] == "epochs"
    assert factor["test"] == "mcnemar_exact" and len(claims) == 2  # acc and macro-F1, once
    assert (factor["a"], factor["b"]) == ("epochs=8", "epochs=1")
    assert factor["significant"] is True, factor["text"]
    assert factor["effect"] > 0.2 and factor["ci_low"] > 0
    for claim in claims:  # each interval agrees with its verdict
        assert (claim["ci_low"] > 0 or claim["ci_high"] < 0) == claim["significant"], claim
    assert factor["p_adjusted"] < 0.05 and factor["p_adjusted"] >= factor["p_value"]
    assert factor["text"].startswith("epochs=8 beats epochs=1 on test accuracy by ")
    summary = json.loads((effect_study / "run-0" / "summary.json").read_text())
    assert factor["n_images"] == summary["data/test_images"]
    best = [c for c in claims if c["kind"] == "best"]
    assert {c["metric"] for c in best} == {"test/acc", "test/macro_f1"}  # 8 classes: no AUC


@pytest.mark.slow
def test_runs_written_before_predictions_still_report(effect_study, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(effect_study, old, ignore=shutil.ignore_patterns("report*", "findings*"))
    for run in old.glob("run-*"):
        for npz in run.glob("predictions_*.npz"):
            npz.unlink()
        path = run / "summary.json"
        summary = json.loads(path.read_text())
        path.write_text(json.dumps({k: v for k, v in summary.items()
                                    if "_ci_" not in k and "ece" not in k}))
    claims = _findings(old)
    assert claims and all(c["test"] == "unavailable" and c["significant"] is False
                          and c["p_value"] is None for c in claims)
    assert all("no paired test" in c["text"] for c in claims)
    # the accuracy interval is rebuilt from the summary's counts (Wilson)
    summary = json.loads((old / "run-1" / "summary.json").read_text())
    n = summary["data/test_images"]
    low, high = wilson_interval(round(summary["test/acc"] * n), n)
    assert f"[{low:.3f}, {high:.3f}]" in (old / "report.html").read_text()


def test_a_widened_interval_says_at_what_confidence():
    from dataclasses import replace

    from wbclf.reporting.claims import Claim, claim_text

    claim = Claim("s", "factor_effect", "batch_norm", "batch_norm=True", "batch_norm=False",
                  "test/acc", 0.057, -0.003, 0.117, 0.011, 0.099, False, 332, 1,
                  "mcnemar_exact", ci_level=1 - 0.05 / 9, compared=9)
    assert ("no significant difference between batch_norm=True and batch_norm=False on test "
            "accuracy (+5.7 points, 99.4% CI -0.3 to +11.7 points, widened for 9 comparisons, "
            "p = 0.011, adjusted 0.099; McNemar's exact test on 332 test images, one run each)"
            ) == claim_text(claim)
    alone = claim_text(replace(claim, ci_level=0.95, compared=1))
    assert "95% CI -0.3 to +11.7 points, p = " in alone and "widened" not in alone
    many = claim_text(replace(claim, ci_level=1 - 0.05 / 2000, compared=2000))
    assert "99.99" in many and "100%" not in many


def test_best_vs_runner_up_is_not_tested_twice(tmp_path):
    """A 2 x 2 study whose runner-up differs from the best in one factor: that pair is one
    claim per metric (kind best, the factor named), not a second factor claim beside it."""
    import numpy as np
    import yaml

    from wbclf.reporting.analysis import analyze
    from wbclf.reporting.claims import study_claims
    from wbclf.reporting.collect import collect_studies
    from wbclf.tracking.predictions import write_predictions
    from wbclf.tracking.records import Evaluation

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    for i, (bn, lr, skill) in enumerate(((True, 1e-3, 0.80), (True, 1e-2, 0.75),
                                         (False, 1e-3, 0.70), (False, 1e-2, 0.60))):
        run = tmp_path / "study" / f"trial-{i}"
        run.mkdir(parents=True)
        right = rng.random(200) < skill
        p1 = np.where(right == (labels == 1), 0.8, 0.2)
        write_predictions(run, Evaluation("test", labels, np.stack([1 - p1, p1], 1), 0.0, {},
                                          ["a", "b"], paths=[f"x/{k}.jpg" for k in range(200)]))
        (run / "config.yaml").write_text(yaml.safe_dump({"batch_norm": bn, "lr": lr}))
        (run / "summary.json").write_text(json.dumps({
            "status": "finished", "val/acc": skill, "test/acc": float(right.mean()),
            "test/auc": 0.7, "data/test_images": 200}))
    claims = study_claims(analyze(collect_studies(tmp_path / "study")[0]))
    pairs = [(c.at, frozenset((c.a, c.b))) for c in claims if c.metric == "test/acc"]
    assert len(pairs) == len(set(pairs)), [c.text for c in claims]
    best = [c for c in claims if c.kind == "best"]
    assert {c.factor for c in best} == {"lr"} and len(best) == 3  # acc, macro-F1, AUC
    # the other three factor comparisons remain: batch norm at each lr, lr without batch norm
    assert sorted(c.at for c in claims if c.kind == "factor_effect") == \
        ["batch_norm=False", "lr=1.0e-2", "lr=1.0e-3"]
    assert all(c.compared == len(claims) == 6 for c in claims)


def test_an_adjusted_p_on_the_step_is_not_significant():
    """25 claims; the 9th smallest p (0.018, a bootstrap's 18 of 2000 resamples at or below
    0 doubled) sits exactly on its Benjamini-Hochberg step 9 x 0.05 / 25: adjusted, it is
    0.05 up to rounding. It is not significant, and its interval holds 0 to match."""
    from wbclf.reporting.claims import Claim, _settle
    from wbclf.reporting.stats import TestResult, paired_bootstrap

    def claim(result: TestResult) -> Claim:
        return Claim("s", "best", None, "a", "b", "test/acc", result.effect, result.ci_low,
                     result.ci_high, result.p_value, None, False, 10, 1, result.test,
                     result=result)

    def fixed(p: float, low: float, high: float) -> TestResult:
        return TestResult("paired_bootstrap", (low + high) / 2, low, high, p, 10,
                          at_confidence=lambda confidence: (low, high))

    draws = iter([0.5] + [-0.001 * (k + 1) for k in range(18)]
                 + [0.001 * (k + 1) for k in range(1982)])
    edge = claim(paired_bootstrap(lambda i: next(draws), lambda i: 0.0, 10, n_boot=2000))
    assert edge.p_value == pytest.approx(0.018)
    claims = [claim(fixed(0.001, 0.1, 0.2)) for _ in range(8)] + [edge] \
        + [claim(fixed(0.9, -0.1, 0.1)) for _ in range(16)]
    _settle(claims)
    assert edge.p_adjusted == pytest.approx(0.05)
    assert edge.significant is False
    assert edge.ci_low <= 0 <= edge.ci_high
    assert sum(c.significant for c in claims) == 8


def test_seeds_without_spread_fall_back_to_the_images(tmp_path):
    """Two seeds per setting, each seed one image apart: the t-test over seeds has nothing
    to work with, so the first seed's two models are compared on their test images."""
    import numpy as np
    import yaml

    from wbclf.reporting.analysis import analyze
    from wbclf.reporting.claims import study_claims
    from wbclf.reporting.collect import collect_studies
    from wbclf.tracking.predictions import write_predictions
    from wbclf.tracking.records import Evaluation

    labels = np.array([0, 1] * 50)
    for i, (bn, seed, wrong) in enumerate(((True, 0, 20), (True, 1, 30), (False, 0, 21),
                                            (False, 1, 31))):
        run = tmp_path / "study" / f"trial-{i}"
        run.mkdir(parents=True)
        p1 = np.where(labels == 1, 0.8, 0.2)
        p1[:wrong] = 1 - p1[:wrong]  # the first `wrong` images predicted wrong
        write_predictions(run, Evaluation("test", labels, np.stack([1 - p1, p1], 1), 0.0, {},
                                          ["a", "b"], paths=[f"x/{k}.jpg" for k in range(100)]))
        (run / "config.yaml").write_text(yaml.safe_dump({"batch_norm": bn, "seed": seed}))
        (run / "summary.json").write_text(json.dumps({
            "status": "finished", "val/acc": 1 - wrong / 100, "test/acc": 1 - wrong / 100,
            "data/test_images": 100}))
    claims = study_claims(analyze(collect_studies(tmp_path / "study")[0]))
    acc = next(c for c in claims if c.metric == "test/acc")
    assert acc.test == "mcnemar_exact" and acc.n_images == 100
    assert acc.effect == pytest.approx(0.01) and acc.significant is False


def test_an_unavailable_claim_says_why():
    """Seeds that all moved by the same amount and no predictions to fall back on; an AUC
    that no resample defines: each claim says its own reason, not 'no shared seeds'."""
    from wbclf.reporting.claims import Claim, _PredictionCache, _settle, compare
    from wbclf.reporting.collect import RunRecord

    def run(name: str, seed: int, acc: float) -> RunRecord:
        return RunRecord(name=name, path=None, study="s", config={"seed": seed},
                         summary={"test/acc": acc})

    result = compare([run("a0", 0, 0.8), run("a1", 1, 0.7)],
                     [run("b0", 0, 0.79), run("b1", 1, 0.69)], "test/acc", _PredictionCache())
    assert result is not None and math.isnan(result.p_value)
    flat = Claim("s", "best", None, "A", "B", "test/acc", result.effect, result.ci_low,
                 result.ci_high, result.p_value, None, False, 0, 2, result.test, result=result)
    auc = Claim("s", "best", None, "A", "B", "test/auc", None, None, None, math.nan, None,
                False, 10, 1, "paired_bootstrap")
    _settle([flat, auc])
    assert flat.test == auc.test == "unavailable"
    assert "every seed moved by the same amount" in flat.text and "shared" not in flat.text
    assert "undefined on too many resamples" in auc.text
