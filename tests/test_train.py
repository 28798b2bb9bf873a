"""`wbclf train` end to end on toy JPEGs, with the real wandb library in offline mode."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.conftest import run_cli
from wbclf.config import build_config
from wbclf.tracking.loggers import LocalRunLogger, MemoryLogger
from wbclf.metrics import safe_class_keys
from wbclf.training.run import pick_sample_indices, resume_run, train_run
from wbclf.tracking.wandb_offline import read_offline_run

CONTRACT = ["val/acc", "val/balanced_acc", "val/macro_f1", "val/loss", "best_epoch", "test/acc",
            "test/balanced_acc", "test/macro_f1", "test/loss", "model/params",
            "model/trainable_params", "train/time_s", "train/images_per_s"]
BINARY = ["test/auc", "test/sensitivity", "test/specificity", "test/threshold"]


def _cfg(dataset: Path, out: Path, **kw):
    base = {"dataset": str(dataset), "image_size": 32, "width": 8, "depth": 3, "epochs": 2,
            "batch_size": 32, "limit_per_class": 40, "log_samples": 8, "out_dir": str(out),
            "wandb_mode": "offline", "num_workers": "0"}
    base.update(kw)
    return build_config(base)


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_two_epoch_run_writes_contract_and_wandb(toy_lesions, tmp_path):
    cfg = _cfg(toy_lesions, tmp_path, run_name="lesions")
    summary = train_run(cfg)
    run_dir = tmp_path / "lesions"
    for key in CONTRACT + BINARY:
        assert key in summary, key
    for cls in ("Benign", "Malignant"):
        for m in ("precision", "recall", "f1"):
            assert f"test/{m}/{cls}" in summary
    on_disk = json.loads((run_dir / "summary.json").read_text())
    assert on_disk["test/acc"] == pytest.approx(summary["test/acc"])
    assert on_disk["status"] == "finished"
    assert [m["epoch"] for m in _lines(run_dir / "metrics.jsonl")] == [1, 2]
    for name in ("config.yaml", "splits.json", "per_class.csv", "confusion_matrix.png",
                 "samples.png", "checkpoints/best.pt", "checkpoints/last.pt"):
        assert (run_dir / name).is_file(), name
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["width"] == 8
    # what wandb itself wrote, read back from the offline run files
    wb = read_offline_run(run_dir)
    rows = wb.rows_with("val/acc")  # one row per epoch; sample tables have rows of their own
    assert [row["epoch"] for row in rows] == [1, 2]
    assert wb.summary["val/acc"] == pytest.approx(max(r["val/acc"] for r in rows))
    assert wb.summary["test/acc"] == pytest.approx(summary["test/acc"])
    assert wb.config["width"] == 8
    tables = [p.name for p in wb.files if p.name.endswith(".table.json")]
    assert any(name.startswith("best_samples") for name in tables)
    sample_table = next(p for p in wb.files if p.name.startswith("best_samples"))
    data = json.loads(sample_table.read_text())
    assert {"image", "true", "pred", "confidence", "correct"} <= set(data["columns"])
    assert len(data["data"]) == 8


@pytest.mark.slow
def test_toy_leaves_has_safe_per_class_keys(toy_leaves, tmp_path):
    cfg = _cfg(toy_leaves, tmp_path, run_name="leaves", epochs=1, wandb_mode="disabled")
    summary = train_run(cfg)
    classes = json.loads((tmp_path / "leaves" / "splits.json").read_text())["classes"]
    assert len(classes) >= 8
    for key in safe_class_keys(classes):
        assert all(ch.isalnum() or ch in "_.-" for ch in key)
        for m in ("precision", "recall", "f1"):
            assert f"test/{m}/{key}" in summary
    assert "test/auc" not in summary  # multi-class: no binary keys


@pytest.mark.slow
def test_resume_gives_each_epoch_once(toy_lesions, tmp_path):
    interrupted = _cfg(toy_lesions, tmp_path, run_name="resumed", epochs=3)
    # train one epoch as "the run that was killed": stop via the epoch callback after epoch 1
    # then strip its summary, as a kill would have left none
    train_run(interrupted, epoch_callback=lambda epoch, metrics: True)
    run_dir = tmp_path / "resumed"
    (run_dir / "summary.json").unlink()
    summary = resume_run(run_dir)
    assert summary["status"] == "finished" and summary["epochs_run"] == 3
    assert [m["epoch"] for m in _lines(run_dir / "metrics.jsonl")] == [1, 2, 3]
    wb = read_offline_run(run_dir)
    assert sorted(row["epoch"] for row in wb.rows_with("val/acc")) == [1, 2, 3]
    with pytest.raises(Exception, match="already finished"):
        resume_run(run_dir)


@pytest.mark.slow
def test_resumed_run_matches_uninterrupted(toy_lesions, tmp_path):
    """On CPU with a fixed seed, stop-after-1 + resume ends where a straight run ends."""
    straight = train_run(_cfg(toy_lesions, tmp_path, run_name="straight", epochs=2,
                              wandb_mode="disabled", augment="light"))
    train_run(_cfg(toy_lesions, tmp_path, run_name="split", epochs=2, wandb_mode="disabled",
                   augment="light"), epoch_callback=lambda e, m: True)
    (tmp_path / "split" / "summary.json").unlink()
    resumed = resume_run(tmp_path / "split")
    for key in ("val/acc", "test/acc", "test/loss"):
        assert resumed[key] == pytest.approx(straight[key], abs=1e-6), key


def test_divergence_is_a_clear_error(toy_lesions, tmp_path):
    result = run_cli("train", f"--dataset={toy_lesions}", "--image_size=32", "--width=8",
                     "--depth=3", "--epochs=2", "--limit_per_class=40", "--lr=1e12",
                     "--batch_norm=false", "--grad_clip=0", "--optimizer=sgd",
                     "--num_workers=0", "--wandb_mode=offline", f"--out_dir={tmp_path}",
                     "--run_name=boom")
    assert result.returncode == 3, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("wbclf: error: diverged at epoch 1, step ") and "lr=" in last
    assert json.loads((tmp_path / "boom" / "summary.json").read_text())["status"] == "diverged"
    wb = read_offline_run(tmp_path / "boom")  # the W&B run is marked, by wandb itself
    assert wb.summary["status"] == "diverged" and wb.exit_code == 1
    assert wb.summary["error"] == last[len("wbclf: error: "):]


def test_memory_logger_receives_everything(toy_lesions, tmp_path):
    """A logger passed to train_run gets every call, with what the run directory holds."""
    memory = MemoryLogger()
    cfg = _cfg(toy_lesions, tmp_path, run_name="mem", epochs=2, wandb_mode="disabled")
    summary = train_run(cfg, loggers=[LocalRunLogger(), memory])
    run_dir = tmp_path / "mem"
    assert memory.calls == ["start", "log_config", "log_augment_preview",
                            "log_epoch", "log_samples", "log_epoch", "log_samples",
                            "log_evaluation", "log_evaluation", "log_samples", "log_mistakes",
                            "log_summary", "finish"]
    assert memory.started["cfg"] == cfg and memory.started["run_dir"] == run_dir
    assert memory.started["class_names"] == ["Benign", "Malignant"]
    assert memory.config["weights_source"] == "random"
    assert memory.history == _lines(run_dir / "metrics.jsonl")  # the same epochs, same figures
    assert [(e, tag) for e, tag, _ in memory.samples] == [
        (1, "val_samples"), (2, "val_samples"), (summary["best_epoch"], "best_samples")]
    assert all(len(s.labels) == 8 for _, _, s in memory.samples)
    assert memory.evaluations["test"].metrics["acc"] == pytest.approx(summary["test/acc"])
    assert memory.evaluations["val"].split == "val"
    assert len(memory.mistakes) == 1 and (memory.mistakes[0].preds
                                          != memory.mistakes[0].labels).all()
    on_disk = json.loads((run_dir / "summary.json").read_text())
    assert memory.summary.keys() == on_disk.keys()
    for key, value in on_disk.items():
        assert memory.summary[key] == (pytest.approx(value) if isinstance(value, float)
                                       else value), key
    assert memory.status == "finished" and memory.summary["status"] == "finished"


def test_sample_indices_are_balanced_and_fixed():
    import numpy as np

    labels = np.array([0] * 50 + [1] * 10 + [2] * 40)
    chosen = pick_sample_indices(labels, 9, seed=0)
    assert np.bincount(labels[chosen], minlength=3).tolist() == [3, 3, 3]
    assert (chosen == pick_sample_indices(labels, 9, seed=0)).all()
