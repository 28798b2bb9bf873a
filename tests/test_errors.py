"""User-caused failures are one line, ``wbclf: error: ...``, exit 2 (never a traceback).

Rows of the bad-input matrix in docs/RELIABILITY.md: an unavailable device or precision, a
pretrained file with the wrong strategy, a backbone whose features do not fit the feature
cache, CUDA out of memory at each place a run can hit it, and a resume that asks to change
what the run trains.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch
import yaml

from wbclf.cli import main
from wbclf.config import build_config
from wbclf.device import resolve_hardware
from wbclf.errors import RunError
from wbclf.training.plans import features as feature_plan
from wbclf.training.plans.image import ImagePlan
from wbclf.training.run import RESUMABLE_FIELDS, resume_config

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
FAST = ("--image_size=32", "--width=8", "--depth=2", "--limit_per_class=8", "--batch_size=8",
        "--log_samples=0", "--num_workers=0", "--wandb_mode=disabled")


def _train(capsys, *args: str) -> tuple[int, str]:
    """``wbclf train ARGS`` in this process: (exit code, the error line)."""
    code = main(["train", *args])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("wbclf: error: ")]
    assert len(lines) == 1, err
    return code, lines[0]


# --------------------------------------------------------------------------- device, precision


@NO_CUDA
@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_cuda_device_without_cuda_is_one_line(device, toy_lesions, tmp_path, capsys):
    code, line = _train(capsys, f"--dataset={toy_lesions}", f"--device={device}", *FAST,
                        f"--out_dir={tmp_path}", "--run_name=r")
    assert code == 2
    assert f"device={device} but CUDA is not available here; allowed: auto, cpu" in line
    assert not (tmp_path / "r").exists()  # refused before anything is written


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="needs a machine without MPS")
def test_mps_device_without_mps_is_one_line(toy_lesions, tmp_path, capsys):
    code, line = _train(capsys, f"--dataset={toy_lesions}", "--device=mps", *FAST,
                        f"--out_dir={tmp_path}")
    assert code == 2 and "MPS is not available here" in line


@NO_CUDA
@pytest.mark.parametrize("precision", ["16", "bf16"])
def test_half_precision_on_a_cpu_machine_is_one_line(precision, toy_lesions, tmp_path, capsys):
    # device=auto: only resolving the device shows that this run would be on the CPU
    code, line = _train(capsys, f"--dataset={toy_lesions}", f"--precision={precision}", *FAST,
                        f"--out_dir={tmp_path}")
    assert code == 2
    assert f"precision={precision} needs a CUDA device; this run is on cpu" in line
    assert line.endswith("allowed here: auto, 32")


def test_half_precision_with_device_cpu_is_one_line(toy_lesions, tmp_path, capsys):
    # an explicit device=cpu is caught by the config parser already
    code, line = _train(capsys, f"--dataset={toy_lesions}", "--device=cpu", "--precision=16",
                        *FAST, f"--out_dir={tmp_path}")
    assert code == 2 and "precision=16 with device=cpu" in line


def test_pretrained_file_with_scratch_strategy_is_one_line(toy_lesions, tmp_path, capsys):
    code, line = _train(capsys, f"--dataset={toy_lesions}", "--model=resnet18",
                        "--strategy=scratch", f"--pretrained_file={tmp_path / 'w.pth'}", *FAST,
                        f"--out_dir={tmp_path}")
    assert code == 2 and "needs strategy=frozen or finetune" in line


def test_named_dataset_not_downloaded_is_one_line(tmp_path, capsys):
    code, line = _train(capsys, "--dataset=melanoma", f"--data_dir={tmp_path / 'empty'}",
                        *FAST, f"--out_dir={tmp_path}")
    assert code == 2
    assert f"dataset 'melanoma' is not under {tmp_path / 'empty'}; run `wbclf data download " \
           "melanoma`" in line


# --------------------------------------------------------------------------- feature cache


def _overflowing_resnet18(path: Path) -> Path:
    """resnet18 weights whose last batch norm scales features far past float16's 65504."""
    model = timm.create_model("resnet18", pretrained=False)
    state = model.state_dict()
    state["layer4.1.bn2.weight"] = torch.full_like(state["layer4.1.bn2.weight"], 1e6)
    state["layer4.1.bn2.bias"] = torch.full_like(state["layer4.1.bn2.bias"], 1e6)
    torch.save(state, path)
    return path


@pytest.mark.slow
def test_features_beyond_float16_are_one_line(toy_lesions, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WBCLF_CACHE_DIR", str(tmp_path / "cache"))
    weights = _overflowing_resnet18(tmp_path / "big.pth")
    code, line = _train(capsys, f"--dataset={toy_lesions}", "--model=resnet18",
                        "--strategy=frozen", f"--pretrained_file={weights}", "--augment=none",
                        *FAST, f"--out_dir={tmp_path}")
    assert code == 2
    assert "backbone features exceed the float16 range; train with cache_images=false" in line


def test_classifier_not_fed_by_pre_logits_is_refused():
    model = timm.create_model("resnet18", pretrained=False, num_classes=2).eval()
    hw = resolve_hardware("cpu", "32")
    # a head that is not the model's classifier: its logits differ from forward_head's
    other_head = torch.nn.Linear(model.num_features, 2)
    encoder = feature_plan.BackboneEncoder(model, other_head, {"mean": (0.5,) * 3,
                                                               "std": (0.5,) * 3}, hw)
    images = torch.randint(0, 255, (2, 3, 32, 32), dtype=torch.uint8)  # NCHW, as loaded
    with pytest.raises(RunError, match="classifier does not take forward_head"):
        encoder(images)
    good = feature_plan.BackboneEncoder(model, model.get_classifier(),
                                        {"mean": (0.5,) * 3, "std": (0.5,) * 3}, hw)
    assert good(images).shape == (2, model.num_features)


# --------------------------------------------------------------------------- out of memory
# No GPU in CI: the error torch raises when CUDA runs out of memory is raised on CPU at the
# place a run would hit it, and the run must turn it into the one-line advice.


def _oom(*args, **kwargs):
    raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def _assert_oom_line(code: int, line: str) -> None:
    assert code == 2
    assert line.startswith("wbclf: error: CUDA out of memory with batch_size=8 at image_size=32")
    assert "lower batch_size (e.g. 4)" in line


def test_oom_during_feature_extraction(toy_lesions, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WBCLF_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(feature_plan.BackboneEncoder, "__call__", _oom)
    code, line = _train(capsys, f"--dataset={toy_lesions}", "--model=tf_efficientnet_lite0",
                        "--strategy=frozen", "--augment=none", *FAST, f"--out_dir={tmp_path}")
    _assert_oom_line(code, line)
    assert "model tf_efficientnet_lite0" in line


def test_oom_during_a_training_step(toy_lesions, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(ImagePlan, "train_epoch", _oom)
    code, line = _train(capsys, f"--dataset={toy_lesions}", *FAST, f"--out_dir={tmp_path}",
                        "--run_name=r")
    _assert_oom_line(code, line)
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["error"] == line[len("wbclf: error: "):]


@pytest.mark.slow
def test_oom_during_the_final_evaluation(toy_lesions, tmp_path, capsys, monkeypatch):
    original = ImagePlan.evaluate

    def evaluate(self, split, **kwargs):
        if split == "test":  # the epoch's validation works; the final test pass runs out
            _oom()
        return original(self, split, **kwargs)

    monkeypatch.setattr(ImagePlan, "evaluate", evaluate)
    code, line = _train(capsys, f"--dataset={toy_lesions}", *FAST, "--epochs=1",
                        f"--out_dir={tmp_path}", "--run_name=r")
    _assert_oom_line(code, line)
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["status"] == "failed"
    assert (tmp_path / "r" / "checkpoints" / "last.pt").is_file()


# --------------------------------------------------------------------------- resume


def _unfinished_run(dataset: Path, out: Path, name: str) -> Path:
    """A run directory as a run killed before its first checkpoint leaves it."""
    cfg = build_config({"dataset": str(dataset), "image_size": 32, "width": 8, "depth": 2,
                        "limit_per_class": 8, "batch_size": 8, "epochs": 1, "log_samples": 0,
                        "num_workers": "0", "wandb_mode": "disabled", "out_dir": str(out),
                        "run_name": name})
    run_dir = out / name
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict()))
    return run_dir


def test_resume_refuses_changes_to_what_the_run_trains(toy_lesions, tmp_path, capsys):
    run_dir = _unfinished_run(toy_lesions, tmp_path, "r")
    code, line = _train(capsys, "--resume", str(run_dir), "--epochs=20", "--lr=0.1")
    assert code == 2
    assert "cannot change epochs=20 (the run has 1), lr=0.1 (the run has 0.001)" in line
    assert "it may change only " + ", ".join(RESUMABLE_FIELDS) in line
    assert not (run_dir / "checkpoints").exists()


def test_resume_accepts_allowed_and_unchanged_fields(toy_lesions, tmp_path, capsys):
    run_dir = _unfinished_run(toy_lesions, tmp_path, "r")
    # what the sweep runner passes on a retry: every value again, plus where the run is
    code = main(["train", "--resume", str(run_dir), "--epochs=1", "--lr=0.001",
                 f"--out_dir={tmp_path}", "--run_name=r", "--num_workers=1"])
    assert code == 0
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "finished"
    assert saved["epochs"] == 1


def test_resume_config_refuses_another_run_location(tmp_path):
    saved = build_config({"out_dir": str(tmp_path), "run_name": "a"}).to_dict()
    assert resume_config(saved, {"run_name": "a"}, tmp_path / "a").run_name == "a"
    with pytest.raises(RunError, match="cannot change run_name=b"):
        resume_config(saved, {"run_name": "b"}, tmp_path / "a")
    assert resume_config(saved, {"device": "cpu"}, tmp_path / "a").device == "cpu"
