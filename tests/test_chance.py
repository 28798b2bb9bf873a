"""Chance-level runs: the verdict on hand-made figures, and a real run that learns nothing."""

from __future__ import annotations

import json
import math

import pytest

from wbclf.training.chance import (CHANCE_LEVEL, auc_limit, balanced_acc_limit,
                                   chance_verdict)


def test_majority_class_predictor_is_at_chance():
    # 200 test images, 100 per class; predicting one class gives balanced accuracy 0.5
    verdict = chance_verdict(0.5, [100, 100], auc=0.53)
    assert verdict.at_chance
    keys = verdict.summary_keys()
    assert keys["status_note"] == CHANCE_LEVEL
    assert "balanced accuracy 0.500" in keys["chance/reason"]
    assert "AUC 0.530 is within noise" in keys["chance/reason"]


def test_a_run_that_learned_is_not_flagged():
    verdict = chance_verdict(0.81, [100, 100], auc=0.88)
    assert not verdict.at_chance
    keys = verdict.summary_keys()
    assert "status_note" not in keys and "chance/reason" not in keys
    assert keys["chance/balanced_acc_limit"] == pytest.approx(verdict.balanced_acc_limit)


def test_either_figure_at_chance_flags_the_run():
    # ranks well but every decision is the majority class: does not beat the baseline
    assert chance_verdict(0.5, [100, 100], auc=0.9).at_chance
    # decisions a little above 1/2, but no ranking signal
    assert chance_verdict(0.62, [100, 100], auc=0.51).at_chance


def test_noise_margins_shrink_with_the_test_set():
    # a uniform guesser's balanced accuracy: SE = sqrt(sum_c (1/C)(1-1/C)/n_c) / C
    assert balanced_acc_limit([100, 100]) == pytest.approx(0.5 + 1.645 * math.sqrt(0.005) / 2)
    assert balanced_acc_limit([1000, 1000]) < balanced_acc_limit([100, 100])
    # AUC under no signal: variance (n0 + n1 + 1) / (12 n0 n1)
    assert auc_limit(100, 100) == pytest.approx(0.5 + 1.645 * math.sqrt(201 / 120000))
    # 38 classes: chance is 1/38, not 1/2
    assert balanced_acc_limit([50] * 38) < 0.05
    assert not chance_verdict(0.30, [50] * 38).at_chance


@pytest.mark.slow
def test_a_run_that_cannot_learn_is_marked_in_its_summary(toy_lesions, tmp_path):
    from wbclf.config import build_config
    from wbclf.training.run import train_run

    cfg = build_config({"dataset": str(toy_lesions), "model": "scratch", "width": 4,
                        "depth": 2, "image_size": 32, "epochs": 1, "lr": 1e-9,
                        "limit_per_class": 12, "log_samples": 0, "wandb_mode": "disabled",
                        "num_workers": "0", "out_dir": str(tmp_path), "run_name": "dead"})
    summary = train_run(cfg)
    saved = json.loads((tmp_path / "dead" / "summary.json").read_text())
    assert summary["status"] == saved["status"] == "finished"
    assert saved["status_note"] == CHANCE_LEVEL
    assert saved["test/balanced_acc"] <= saved["chance/balanced_acc_limit"] \
        or saved["test/auc"] <= saved["chance/auc_limit"]
    assert saved["chance/reason"].startswith("test ")


def test_findings_name_the_chance_level_runs_of_each_setting():
    from pathlib import Path

    from wbclf.reporting.analysis import analyze
    from wbclf.reporting.chance import chance_findings
    from wbclf.reporting.collect import RunRecord, Study

    runs = []
    for strategy, dead in (("scratch", (0, 1, 2)), ("finetune", (2,)), ("frozen", ())):
        for seed in (0, 1, 2):
            summary = {"status": "finished", "val/acc": 0.5 + seed / 100,
                       "test/balanced_acc": 0.5 if seed in dead else 0.8, "test/auc": 0.7}
            if seed in dead:
                summary["status_note"] = CHANCE_LEVEL
            runs.append(RunRecord(name=f"{strategy}-{seed}", path=None, study="s",
                                  config={"strategy": strategy, "seed": seed, "lr": 1e-3,
                                          "epochs": 3}, summary=summary))
    text = chance_findings(analyze(Study("s", Path("."), runs)))
    assert len(text) == 2
    scratch = next(t for t in text if t.startswith("strategy=scratch"))
    assert scratch.startswith("strategy=scratch did not learn in 3 epochs at lr=1.0e-3: 3 of 3 "
                              "seeds did not beat the majority-class baseline")
    assert "scratch-0, scratch-1, scratch-2" in scratch and "They are marked" in scratch
    finetune = next(t for t in text if t.startswith("strategy=finetune"))
    assert finetune.startswith("strategy=finetune: 1 of 3 seeds did not learn in 3 epochs")
    assert "finetune-2)" in finetune and "It is marked" in finetune
