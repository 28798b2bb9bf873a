"""`wbclf export`: ONNX and TorchScript files agree with PyTorch on real toy images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import run_cli
from tests.test_predict import _timm_checkpoint, train_toy_run
from wbclf.inference.export import ExportError, export_run
from wbclf.inference.model import ImageClassifier, InferenceError
from wbclf.inference.model import load_run_model
from wbclf.inference.predict import collect_images, read_image

ATOL = 1e-4


@pytest.fixture(scope="module")
def lesion_run(toy_lesions, tmp_path_factory) -> Path:
    return train_toy_run(toy_lesions, tmp_path_factory.mktemp("export-run"), epochs=1)


def _real_batch(dataset: Path, size: int, n: int = 7) -> np.ndarray:
    """``n`` toy test images of both classes, preprocessed like the run: NCHW uint8."""
    paths = collect_images([dataset / "test"])
    picked = paths[:: max(1, len(paths) // n)][:n]
    return np.stack([read_image(p, size)[0] for p in picked]).transpose(0, 3, 1, 2).copy()


@pytest.mark.slow
def test_onnx_runs_in_onnxruntime_and_matches_pytorch(lesion_run, toy_lesions):
    import onnx
    import onnxruntime as ort

    report = export_run(lesion_run, "onnx")
    assert report.path == lesion_run / "model.onnx" and report.real_images
    assert report.max_abs_diff <= ATOL
    loaded = load_run_model(lesion_run, "cpu")
    session = ort.InferenceSession(str(report.path), providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    assert inp.name == "images" and inp.type == "tensor(uint8)"
    assert inp.shape[1:] == [3, 32, 32] and not isinstance(inp.shape[0], int)  # dynamic batch
    images = _real_batch(toy_lesions, loaded.image_size)
    expected = loaded.predict_probs(torch.from_numpy(images))
    for batch in (images, images[:1], images[:5]):
        probs, label = session.run(["probs", "label"], {"images": batch})
        assert np.abs(probs - expected[: len(batch)]).max() <= ATOL
        np.testing.assert_array_equal(label, loaded.decide(expected[: len(batch)]))
    meta = json.loads(onnx.load(str(report.path)).metadata_props[0].value)
    assert meta["class_names"] == ["Benign", "Malignant"]
    assert meta["threshold"] == loaded.threshold
    sidecar = json.loads((lesion_run / "model.onnx.json").read_text())
    assert sidecar["input"]["dtype"] == "uint8" and sidecar["verification"]["images"] > 0


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_torchscript_matches_pytorch(lesion_run, toy_lesions):
    report = export_run(lesion_run, "torchscript")
    assert report.path == lesion_run / "model.ts" and report.max_abs_diff <= ATOL
    loaded = load_run_model(lesion_run, "cpu")
    extra = {"wbclf.json": ""}
    module = torch.jit.load(str(report.path), _extra_files=extra)
    assert json.loads(extra["wbclf.json"])["class_names"] == loaded.class_names
    images = _real_batch(toy_lesions, loaded.image_size)
    expected = loaded.predict_probs(torch.from_numpy(images))
    with torch.no_grad():
        for batch in (images, images[:1]):
            probs, label = module(torch.from_numpy(batch))
            assert np.abs(probs.numpy() - expected[: len(batch)]).max() <= ATOL
            np.testing.assert_array_equal(label.numpy(), loaded.decide(expected[: len(batch)]))


@pytest.mark.slow
def test_float_input_onnx(lesion_run, toy_lesions, tmp_path):
    import onnxruntime as ort

    out = tmp_path / "float.onnx"
    report = export_run(lesion_run, "onnx", input_kind="float", output=str(out))
    assert report.path == out and (tmp_path / "float.onnx.json").is_file()
    loaded = load_run_model(lesion_run, "cpu")
    images = _real_batch(toy_lesions, loaded.image_size)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].type == "tensor(float)"
    probs, _ = session.run(None, {"images": images.astype(np.float32) / 255})
    assert np.abs(probs - loaded.predict_probs(torch.from_numpy(images))).max() <= ATOL


@pytest.mark.slow
def test_cli_export_prints_the_difference(lesion_run):
    proc = run_cli("export", str(lesion_run), "--format", "onnx")
    assert proc.returncode == 0, proc.stderr
    assert "max abs difference from PyTorch" in proc.stdout
    assert (lesion_run / "model.onnx").is_file()
    proc = run_cli("export", str(lesion_run), "--format", "tflite")
    assert proc.returncode == 2 and "invalid choice" in proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_timm_backbone_exports(fmt, tmp_path):
    _timm_checkpoint(tmp_path, "finetune")  # no splits.json: verified on random pixels
    report = export_run(tmp_path, fmt)
    assert report.max_abs_diff <= ATOL and not report.real_images
    assert report.labels_agree == report.images


def test_a_mismatch_is_refused_and_leaves_no_file(tmp_path, monkeypatch):
    import wbclf.inference.export as export

    _timm_checkpoint(tmp_path, "frozen")

    def wrong(path, inputs):
        probs, label = original(path, inputs)
        return probs + 0.01, label

    original = export._run_torchscript
    monkeypatch.setattr(export, "_run_torchscript", wrong)
    with pytest.raises(ExportError, match="differ from PyTorch by up to 0.01"):
        export_run(tmp_path, "torchscript")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoints"]


def test_wrapper_folds_preprocessing():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 2)).eval()
    images = torch.randint(0, 256, (5, 3, 4, 4), dtype=torch.uint8)
    mean, std = [0.4, 0.5, 0.6], [0.2, 0.3, 0.4]
    x = (images.float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) \
        / torch.tensor(std).view(1, 3, 1, 1)
    expected = torch.softmax(model(x), dim=1)
    probs, label = ImageClassifier(model, mean, std)(images)
    torch.testing.assert_close(probs, expected)
    torch.testing.assert_close(label, expected.argmax(dim=1))
    probs_f, _ = ImageClassifier(model, mean, std, input_kind="float")(images.float() / 255)
    torch.testing.assert_close(probs_f, expected)
    _, thresholded = ImageClassifier(model, mean, std, threshold=0.0)(images)
    assert thresholded.tolist() == [1] * 5
    with pytest.raises(InferenceError, match="allowed: uint8, float"):
        ImageClassifier(model, mean, std, input_kind="int16")
