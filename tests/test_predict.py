"""`wbclf predict` on a real toy run: test/acc reproduced, threshold, bad files, loading."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import run_cli
from wbclf.checkpoint import load_checkpoint
from wbclf.config import build_config
from wbclf.inference.model import InferenceError, load_run_model
from wbclf.metrics import predict_labels
from wbclf.inference.predict import (collect_images, label_from_path, predict_paths,
                           write_predictions_csv)


def train_toy_run(dataset: Path, out: Path, **kw) -> Path:
    """A tiny real run (2 epochs, 32 px); returns its directory."""
    from wbclf.training.run import train_run

    settings = {"dataset": str(dataset), "image_size": 32, "width": 8, "depth": 3, "epochs": 2,
                "limit_per_class": 40, "wandb_mode": "disabled", "num_workers": "0",
                "out_dir": str(out), "run_name": "r", "log_samples": 4}
    settings.update(kw)
    train_run(build_config(settings))
    return out / "r"


@pytest.fixture(scope="module")
def lesion_run(toy_lesions, tmp_path_factory) -> Path:
    return train_toy_run(toy_lesions, tmp_path_factory.mktemp("predict-run"))


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


@pytest.mark.slow
def test_cli_on_test_folder_reproduces_test_acc(lesion_run, toy_lesions, tmp_path):
    summary = _summary(lesion_run)
    test_dir = toy_lesions / "test"
    images = collect_images([test_dir])
    # limit_per_class=40 keeps every test image of this dataset: the folder is the test split
    assert len(images) == summary["data/test_images"]
    out = tmp_path / "p.csv"
    proc = run_cli("predict", str(lesion_run), str(test_dir), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    rows = _rows(out)
    assert len(rows) == len(images)
    assert {r["path"] for r in rows} == set(images)
    acc = np.mean([r["pred"] == r["true"] for r in rows])
    assert acc == pytest.approx(summary["test/acc"], abs=1e-12)
    assert f"accuracy {summary['test/acc']:.4f}" in proc.stdout
    assert all(r["error"] == "" for r in rows)


@pytest.mark.slow
def test_binary_threshold_from_the_run_is_applied(lesion_run, toy_lesions):
    summary = _summary(lesion_run)
    loaded = load_run_model(lesion_run, "cpu")
    assert loaded.threshold == summary["test/threshold"]
    paths = collect_images([toy_lesions / "test"])
    result = predict_paths(loaded, paths, batch_size=7)
    probs = np.stack([p.probs for p in result.predictions])
    preds = np.array([p.pred for p in result.predictions])
    np.testing.assert_array_equal(preds, (probs[:, 1] >= loaded.threshold).astype(int))
    np.testing.assert_array_equal(preds, predict_labels(probs, summary["test/threshold"]))
    # a different threshold changes the decisions, and only through p1 >= t
    loaded.threshold = float(np.median(probs[:, 1]))
    moved = predict_paths(loaded, paths).predictions
    np.testing.assert_array_equal([p.pred for p in moved],
                                  (probs[:, 1] >= loaded.threshold).astype(int))
    assert sum(p.pred for p in moved) == int((probs[:, 1] >= loaded.threshold).sum())


def _corrupt_folder(source: Path, target: Path) -> dict[str, Path]:
    """Real images in nested class folders plus files that are not usable images."""
    good = sorted((source / "test" / "Malignant").glob("*.jpg"))[:3]
    (target / "Malignant").mkdir(parents=True)
    (target / "nested" / "deeper").mkdir(parents=True)
    for p in good:
        shutil.copy(p, target / "Malignant" / p.name)
    shutil.copy(good[0], target / "nested" / "deeper" / "unlabelled.jpg")
    data = good[1].read_bytes()
    bad = {
        "truncated": target / "Malignant" / "truncated.jpg",
        "empty": target / "nested" / "empty.png",
        "text": target / "nested" / "notes.jpg",
    }
    bad["truncated"].write_bytes(data[: len(data) // 2])
    bad["empty"].write_bytes(b"")
    bad["text"].write_text("not an image")
    (target / "nested" / "readme.txt").write_text("ignored: not an image extension")
    (target / ".hidden.jpg").write_bytes(data)
    return bad


@pytest.mark.slow
def test_folder_with_corrupt_files_lists_them(lesion_run, toy_lesions, tmp_path):
    folder = tmp_path / "mixed"
    bad = _corrupt_folder(toy_lesions, folder)
    out = tmp_path / "mixed.csv"
    proc = run_cli("predict", str(lesion_run), str(folder), "-o", str(out), "--top-k", "5",
                   "--tta")
    assert proc.returncode == 0, proc.stderr
    rows = _rows(out)
    ok = [r for r in rows if not r["error"]]
    errors = {Path(r["path"]).name: r["error"] for r in rows if r["error"]}
    assert len(ok) == 4
    assert set(errors) == {p.name for p in bad.values()}
    assert "truncated" in errors["truncated.jpg"]
    assert "empty" in errors["empty.png"]
    assert "3 unreadable file(s)" in proc.stdout
    for p in bad.values():
        assert str(p) in proc.stdout
    # top-k is capped at the number of classes; probabilities are sorted
    assert "top2" in rows[0] and "top3" not in rows[0]
    for r in ok:
        assert float(r["top1_prob"]) >= float(r["top2_prob"])
        assert float(r["top1_prob"]) + float(r["top2_prob"]) == pytest.approx(1.0, abs=1e-5)
    # truth only where the parent folder is a class name
    truth = {Path(r["path"]).name: r["true"] for r in ok}
    assert truth["unlabelled.jpg"] == ""
    assert {v for k, v in truth.items() if k != "unlabelled.jpg"} == {"Malignant"}


@pytest.mark.slow
def test_tta_averages_flips(lesion_run, toy_lesions):
    loaded = load_run_model(lesion_run, "cpu")
    paths = collect_images([toy_lesions / "test" / "Benign"])[:6]
    from wbclf.inference.predict import read_image

    images = np.stack([read_image(p, loaded.image_size)[0] for p in paths])
    plain = loaded.predict_probs(images)
    tta = loaded.predict_probs(images, tta=True)
    views = [loaded.predict_probs(np.ascontiguousarray(v)) for v in
             (images, images[:, :, ::-1], images[:, ::-1], images[:, ::-1, ::-1])]
    np.testing.assert_allclose(tta, np.mean(views, axis=0), atol=1e-6)
    np.testing.assert_allclose(tta.sum(axis=1), 1.0, atol=1e-6)
    assert not np.allclose(plain, tta)


@pytest.mark.slow
def test_cam_overlays_mirror_the_input_folders(lesion_run, toy_lesions, tmp_path):
    import cv2

    cams = tmp_path / "cams"
    out = tmp_path / "p.csv"
    proc = run_cli("predict", str(lesion_run), str(toy_lesions / "test"), "-o", str(out),
                   "--cam", str(cams))
    assert proc.returncode == 0, proc.stderr
    written = sorted(cams.rglob("*.png"))
    assert len(written) == len(_rows(out))
    assert {p.parent.name for p in written} == {"Benign", "Malignant"}
    panel = cv2.imread(str(written[0]))
    assert panel.shape[:2] == (256 + 28, 2 * 256 + 8)


@pytest.mark.slow
def test_bad_checkpoints_are_one_line_errors(lesion_run, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(lesion_run, copy)
    ckpt_path = copy / "checkpoints" / "best.pt"
    ckpt = load_checkpoint(ckpt_path)
    # another class set: the head has 2 outputs, the checkpoint claims 3 classes
    ckpt["class_names"] = ["a", "b", "c"]
    (copy / "splits.json").unlink()
    torch.save(ckpt, ckpt_path)
    with pytest.raises(InferenceError, match="does not fit model 'scratch' with 3 classes"):
        load_run_model(copy, "cpu")
    proc = run_cli("predict", str(copy), str(tmp_path), "-o", str(tmp_path / "x.csv"))
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "does not fit" in proc.stderr
    # a checkpoint copied into a run of another architecture
    ckpt["class_names"] = ["Benign", "Malignant"]
    torch.save(ckpt, ckpt_path)
    config = (copy / "config.yaml").read_text().replace("width: 8", "width: 16")
    (copy / "config.yaml").write_text(config)
    with pytest.raises(InferenceError, match="width=8 but .*config.yaml says width=16"):
        load_run_model(copy, "cpu")
    with pytest.raises(InferenceError, match="no checkpoints/best.pt"):
        load_run_model(tmp_path, "cpu")
    proc = run_cli("predict", str(tmp_path / "nope"), str(tmp_path))
    assert proc.returncode == 2 and "does not exist" in proc.stderr


def _timm_checkpoint(run_dir: Path, strategy: str) -> torch.nn.Module:
    """A hand-made checkpoint of a timm model trained with a pretrained strategy."""
    from wbclf.inference.model import rebuild_model
    from wbclf.models import model_data_config

    cfg = build_config({"model": "resnet10t", "strategy": strategy, "image_size": 32,
                        "head_hidden": 16, "dropout": 0.1})
    model = rebuild_model(cfg, 3).eval()
    data_config = {**model_data_config(model), "mean": [0.5] * 3, "std": [0.25] * 3}
    (run_dir / "checkpoints").mkdir(parents=True)
    torch.save({"model": model.state_dict(), "class_names": ["x", "y", "z"],
                "config": cfg.to_dict(), "data_config": data_config, "format": 1},
               run_dir / "checkpoints" / "best.pt")
    return model


@pytest.mark.parametrize("strategy", ["frozen", "finetune"])
def test_pretrained_runs_load_without_fetching_weights(strategy, tmp_path, monkeypatch):
    import wbclf.models.backbones as backbones

    def no_download(name):
        raise AssertionError(f"pretrained weights for {name} were fetched again")

    monkeypatch.setattr(backbones, "_load_pretrained", no_download)
    model = _timm_checkpoint(tmp_path, strategy)
    loaded = load_run_model(tmp_path, "cpu")
    assert loaded.class_names == ["x", "y", "z"] and loaded.threshold is None
    assert loaded.data_config["std"] == [0.25] * 3
    images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    x = (torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.25
    with torch.no_grad():
        expected = torch.softmax(model(x), dim=1).numpy()
    np.testing.assert_allclose(loaded.predict_probs(images), expected, atol=1e-5)
    assert all(p.requires_grad for p in loaded.model.parameters())  # nothing frozen


def test_collect_and_label_helpers(tmp_path):
    (tmp_path / "Benign").mkdir()
    (tmp_path / "Benign" / "b.JPG").write_bytes(b"x")
    (tmp_path / "Benign" / "a.png").write_bytes(b"x")
    (tmp_path / "other.txt").write_text("x")
    explicit = tmp_path / "other.txt"
    found = collect_images([tmp_path, explicit, tmp_path / "Benign" / "a.png"])
    assert [Path(p).name for p in found] == ["a.png", "b.JPG", "other.txt"]
    assert label_from_path(found[0], ["Benign", "Malignant"]) == 0
    assert label_from_path(found[2], ["Benign", "Malignant"]) is None
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        collect_images([tmp_path / "missing"])


def test_csv_without_truth_has_no_true_column(tmp_path):
    from wbclf.inference.predict import Prediction, PredictionResult

    result = PredictionResult(class_names=["a", "b", "c"], predictions=[
        Prediction("x.jpg", np.array([0.2, 0.5, 0.3]), 1)], unreadable=[("y.jpg", "empty")])
    rows = _rows(write_predictions_csv(tmp_path / "p.csv", result, top_k=2))
    assert list(rows[0]) == ["path", "pred", "prob", "top1", "top1_prob", "top2", "top2_prob",
                             "error"]
    assert rows[0]["pred"] == "b" and rows[0]["top2"] == "c"
    assert rows[1] == {"path": "y.jpg", "pred": "", "prob": "", "top1": "", "top1_prob": "",
                       "top2": "", "top2_prob": "", "error": "empty"}
