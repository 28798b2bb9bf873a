"""Training options that change the numbers: schedules and warm-up, early stopping, balanced
class weights, label smoothing. Schedules are checked at known steps; the others in real runs
on toy JPEGs."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from wbclf.config import build_config
from wbclf.tracking.loggers import MemoryLogger
from wbclf.training.optim import build_scheduler, lr_factor
from wbclf.training.run import Run, train_run

PEAK = 0.1


def _lrs(kind: str, total: int, warmup: int) -> list[float]:
    """The lr of every optimizer step 0..total-1 under ``kind``."""
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=PEAK)
    scheduler = build_scheduler(kind, optimizer, total_steps=total, warmup_steps=warmup)
    seen = []
    for _ in range(total):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return seen


def test_cosine_with_warmup_at_known_steps():
    lrs = _lrs("cosine", 110, 10)
    assert lrs[0] == pytest.approx(PEAK / 10) and lrs[4] == pytest.approx(PEAK / 2)
    assert lrs[9] == pytest.approx(PEAK) and lrs[10] == pytest.approx(PEAK)  # warm-up done
    assert lrs[60] == pytest.approx(PEAK / 2)  # half-way through the cosine
    assert lrs[109] == pytest.approx(PEAK * 0.5 * (1 + math.cos(math.pi * 99 / 100)))
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))  # never rises after warm-up


def test_step_schedule_divides_by_ten_at_half_and_three_quarters():
    lrs = _lrs("step", 100, 0)
    assert lrs[49] == pytest.approx(PEAK) and lrs[50] == pytest.approx(PEAK / 10)
    assert lrs[74] == pytest.approx(PEAK / 10) and lrs[75] == pytest.approx(PEAK / 100)


def test_onecycle_peaks_at_thirty_percent():
    lrs = _lrs("onecycle", 100, 0)
    assert int(np.argmax(lrs)) in (29, 30) and max(lrs) == pytest.approx(PEAK)
    assert lrs[0] == pytest.approx(PEAK / 25)  # torch's default div_factor
    assert lrs[-1] < PEAK / 1000


def test_none_schedule_is_flat_after_warmup():
    lrs = _lrs("none", 20, 4)
    assert lrs[:4] == pytest.approx([PEAK / 4, PEAK / 2, 3 * PEAK / 4, PEAK])
    assert lrs[4:] == pytest.approx([PEAK] * 16)


def _cfg(dataset: Path, out: Path, **kw):
    base = {"dataset": str(dataset), "image_size": 32, "width": 8, "depth": 2, "epochs": 3,
            "batch_size": 16, "limit_per_class": 24, "log_samples": 0, "out_dir": str(out),
            "wandb_mode": "disabled", "num_workers": "0"}
    base.update(kw)
    return build_config(base)


def _rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_a_run_follows_its_schedule_per_step(toy_lesions, tmp_path):
    """The run hands total and warm-up steps to the schedule: the logged lr after each epoch
    is the schedule's value at that epoch's last step."""
    cfg = _cfg(toy_lesions, tmp_path, run_name="cos", scheduler="cosine", warmup_epochs=1,
               lr=0.01)
    train_run(cfg)
    rows = _rows(tmp_path / "cos")
    steps = math.ceil(int(json.loads((tmp_path / "cos" / "summary.json").read_text())[
        "data/train_images"]) / cfg.batch_size)
    for row in rows:
        expected = 0.01 * lr_factor("cosine", row["epoch"] * steps, 3 * steps, steps)
        assert row["lr"] == pytest.approx(expected), row["epoch"]


@pytest.mark.slow
def test_early_stopping_stops_after_n_epochs_without_a_better_val_acc(toy_lesions, tmp_path):
    # lr 1e-9, no batch norm: the weights (and so val/acc) do not move after epoch 1
    cfg = _cfg(toy_lesions, tmp_path, run_name="es", epochs=6, early_stopping=2, lr=1e-9,
               batch_norm=False, scheduler="none")
    summary = train_run(cfg)
    assert [r["epoch"] for r in _rows(tmp_path / "es")] == [1, 2, 3]
    assert summary["stopped"] == "early_stopping" and summary["epochs_run"] == 3
    assert summary["best_epoch"] == 1


@pytest.fixture
def imbalanced(toy_lesions, tmp_path) -> Path:
    """toy-lesions with 3 Benign train images for every Malignant one."""
    root = tmp_path / "imbalanced"
    for split, keep in (("train", {"Benign": 30, "Malignant": 10}),
                        ("test", {"Benign": 8, "Malignant": 8})):
        for cls, n in keep.items():
            (root / split / cls).mkdir(parents=True)
            for path in sorted((toy_lesions / split / cls).glob("*.jpg"))[:n]:
                shutil.copy(path, root / split / cls / path.name)
    return root


def test_balanced_class_weights_are_inverse_train_frequencies(imbalanced, tmp_path):
    run = Run(_cfg(imbalanced, tmp_path, class_weighting="balanced", limit_per_class=0),
              tmp_path / "r", MemoryLogger())
    counts = run.data.class_counts("train").astype(float)
    assert counts[0] > 2 * counts[1]  # still imbalanced after the val carve
    expected = counts.sum() / (2 * counts)
    np.testing.assert_allclose(run.criterion.weight.numpy(), expected, rtol=1e-6)
    # averaged over the training images, the weight is 1: the same loss scale as unweighted
    assert float((run.criterion.weight.numpy() * counts).sum() / counts.sum()) == \
        pytest.approx(1.0)
    # in a batch with one image of each class, missing the rare one costs more than missing
    # the common one (the weighted mean divides by the targets' weights)
    targets = torch.tensor([0, 1])
    rare_missed = run.criterion(torch.tensor([[2.0, 0.0], [2.0, 0.0]]), targets)
    common_missed = run.criterion(torch.tensor([[0.0, 2.0], [0.0, 2.0]]), targets)
    assert float(rare_missed) > float(common_missed)
    plain = Run(_cfg(imbalanced, tmp_path, limit_per_class=0), tmp_path / "p", MemoryLogger())
    assert plain.criterion.weight is None


def test_label_smoothing_reaches_the_loss(imbalanced, tmp_path):
    smooth = Run(_cfg(imbalanced, tmp_path, label_smoothing=0.2), tmp_path / "s",
                 MemoryLogger())
    plain = Run(_cfg(imbalanced, tmp_path), tmp_path / "p", MemoryLogger())
    confident = torch.tensor([[20.0, -20.0]])
    target = torch.tensor([0])
    assert float(plain.criterion(confident, target)) == pytest.approx(0.0, abs=1e-6)
    # smoothing 0.2 over 2 classes: the target is (0.9, 0.1), so a certain answer costs
    # 0.1 * 40 (the log-probability gap) = 4.0
    assert float(smooth.criterion(confident, target)) == pytest.approx(4.0, rel=1e-4)
