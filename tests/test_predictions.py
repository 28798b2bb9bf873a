"""Per-image predictions, summary intervals and calibration of a real (tiny) training run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from wbclf import metrics as M
from wbclf.config import build_config
from wbclf.tracking.predictions import read_predictions
from wbclf.tracking.wandb_offline import read_offline_run
from wbclf.training.calibration import apply_temperature
from wbclf.training.run import train_run


def _cfg(dataset: Path, out: Path, **kw):
    base = {"dataset": str(dataset), "image_size": 32, "width": 8, "depth": 3, "epochs": 2,
            "batch_size": 32, "limit_per_class": 40, "log_samples": 0, "out_dir": str(out),
            "wandb_mode": "offline", "num_workers": "0"}
    return build_config({**base, **kw})


@pytest.mark.slow
def test_run_writes_predictions_intervals_and_calibration(toy_lesions, tmp_path):
    summary = train_run(_cfg(toy_lesions, tmp_path, run_name="cal", calibrate=True))
    run_dir = tmp_path / "cal"
    splits = json.loads((run_dir / "splits.json").read_text())
    test = read_predictions(run_dir, "test")
    val = read_predictions(run_dir, "val")
    assert test is not None and val is not None
    # every test image once, with the summary's own figures recomputed from the file
    assert len(test.paths) == summary["data/test_images"] == len(splits["splits"]["test"])
    assert test.class_names == ["Benign", "Malignant"]
    assert test.threshold == pytest.approx(summary["test/threshold"])
    assert np.allclose(test.probs.sum(axis=1), 1.0, atol=1e-4)
    assert (test.preds == M.predict_labels(test.probs, test.threshold)).all()
    assert test.correct.mean() == pytest.approx(summary["test/acc"])
    assert M.auc_of(test.labels, test.probs[:, 1]) == pytest.approx(summary["test/auc"],
                                                                     abs=1e-6)
    # intervals: Wilson for accuracy (from the counts), bootstrap ones around their figure
    n, correct = len(test.labels), int(test.correct.sum())
    assert (summary["test/acc_ci_low"], summary["test/acc_ci_high"]) == \
        pytest.approx(M.wilson_interval(correct, n))
    for name in ("acc", "macro_f1", "auc", "sensitivity", "specificity"):
        low, high = summary[f"test/{name}_ci_low"], summary[f"test/{name}_ci_high"]
        assert low <= summary[f"test/{name}"] <= high, name
    # calibration: a temperature fitted on val, ECE before and after on both splits
    assert summary["calibration/temperature"] > 0
    # Temperature scaling minimizes the val negative log-likelihood (not ECE, which can move
    # either way on a small split): undo it on the stored val probabilities and compare.
    temperature = summary["calibration/temperature"]
    before = apply_temperature(val.probs, 1.0 / temperature)
    rows = np.arange(len(val.labels))
    nll = [float(-np.log(np.clip(p[rows, val.labels], 1e-12, 1)).mean()) for p in (before,
                                                                                     val.probs)]
    assert nll[1] <= nll[0] + 1e-6
    # The file stores float32 probabilities: an absolute tolerance (a relative one fails
    # when the ECE itself is ~1e-3 and float32 rounding moves it by ~1e-9)
    assert summary["val/ece"] == pytest.approx(M.expected_calibration_error(val.labels,
                                                                           val.probs), abs=1e-5)
    assert summary["test/ece"] == pytest.approx(M.expected_calibration_error(test.labels,
                                                                            test.probs), abs=1e-5)
    assert "val/sensitivity_ci_low" not in summary  # val's figures are at the argmax
    assert summary["val/acc_ci_low"] <= summary["val/acc"] <= summary["val/acc_ci_high"]
    assert (run_dir / "reliability.png").is_file()
    on_disk = json.loads((run_dir / "summary.json").read_text())
    assert on_disk["test/acc_ci_high"] == pytest.approx(summary["test/acc_ci_high"])
    # the same predictions reached W&B as a table, one row per test image
    wb = read_offline_run(run_dir)
    tables = [p for p in wb.files if p.name.endswith(".table.json")
              and p.name.startswith("predictions_") and p.parent.name == "test"]
    assert tables, [p.as_posix() for p in wb.files if p.name.endswith(".table.json")]
    table = json.loads(tables[0].read_text())
    assert table["columns"] == ["path", "label", "pred", "p/Benign", "p/Malignant"]
    assert len(table["data"]) == n
    assert [row[0] for row in table["data"]] == test.paths


def _count_passes(monkeypatch) -> list[str]:
    """The splits the model is passed over, in order (the real evaluation still runs)."""
    from wbclf.training.plans.image import ImagePlan

    passes: list[str] = []
    evaluate = ImagePlan.evaluate

    def counted(self, split, **kwargs):
        passes.append(split)
        return evaluate(self, split, **kwargs)

    monkeypatch.setattr(ImagePlan, "evaluate", counted)
    return passes


@pytest.mark.slow
@pytest.mark.parametrize(("epochs", "lr"), [(1, 1e-3), (2, 0.1)])
def test_the_best_model_passes_over_each_split_once(toy_lesions, tmp_path, monkeypatch, epochs,
                                                    lr):
    """The final evaluation reads val at the argmax, calibrated and at the chosen threshold,
    and test uncalibrated and at the threshold: one model pass per split serves them all, and
    none for val when the best epoch is the last one validated (its pass ran on the weights
    best.pt holds). The summary is the one that a fresh pass for every evaluation gives."""
    from wbclf.training.run import Run

    passes = _count_passes(monkeypatch)
    kept = train_run(_cfg(toy_lesions, tmp_path, run_name="kept", calibrate=True,
                          epochs=epochs, lr=lr))
    final = ["test"] if kept["best_epoch"] == epochs else ["val", "test"]
    assert passes == ["val"] * epochs + final

    # every evaluation computed afresh, as before the outputs were kept
    split_evaluation = Run.evaluate_split

    def afresh(self, split, threshold=None, **kwargs):
        if self._best_outputs is not None:
            self._best_outputs.clear()
        return split_evaluation(self, split, threshold, **kwargs)

    monkeypatch.setattr(Run, "evaluate_split", afresh)
    passes.clear()
    fresh = train_run(_cfg(toy_lesions, tmp_path, run_name="fresh", calibrate=True,
                           epochs=epochs, lr=lr))
    assert passes == ["val"] * epochs + ["val", "test", "val", "val", "test"]
    varies = ("time/", "model/latency_ms", "model/throughput", "model/speed_reused",
              "train/time_s", "train/images_per_s", "run_dir", "run_name")
    same = {k: v for k, v in kept.items() if not k.startswith(varies)}
    assert same == {k: v for k, v in fresh.items() if not k.startswith(varies)}
    # both cases happen: one epoch is its own best (val's pass reused); lr 0.1 overshoots
    # after the first epoch, so the best model is an earlier one and val passes again
    assert kept["best_epoch"] == 1
