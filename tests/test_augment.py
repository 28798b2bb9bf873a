"""Augmentation is albumentations, declared as data: presets, user files, runs, preview.

Issue 18: one definition of each preset (a packaged albumentations file), ``augment=FILE``
trains with a user's pipeline and writes it back, broken files exit 2 naming the transform,
resume refuses a changed pipeline, the frozen strategy's views come from the same pipeline,
and ``wbclf data preview`` draws the grid.
"""

from __future__ import annotations

import re
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import pytest
import torch
import yaml

from wbclf.cli import main as cli_main
from wbclf.config import AUGMENT_PRESETS, ConfigError, build_config
from wbclf.data.datasets import prepare_data
from wbclf.data.preview import preview_grid
from wbclf.data.transforms import PRESET_DIR, AugmentError, resolve_augment
from wbclf.errors import RunError
from wbclf.sweeps.schema import check_sweep
from wbclf.sweeps.spec import SweepError
from wbclf.tracking.loggers import MemoryLogger
from wbclf.tracking.wandb_offline import read_offline_run
from wbclf.training.run import resume_run, train_run

SIZE = 32
PACKAGE = Path(__file__).resolve().parents[1] / "wbclf"


@pytest.fixture(scope="module")
def bundle(toy_lesions):
    cfg = build_config({"dataset": str(toy_lesions), "image_size": SIZE, "limit_per_class": 16})
    return prepare_data(cfg, progress=False)


def _write(path: Path, transforms: list, fmt: str = "yaml") -> Path:
    """A pipeline file in albumentations' own format, written by ``A.save``."""
    A.save(A.Compose(transforms), str(path), data_format=fmt)
    return path


# --------------------------------------------------------------------------- presets


def test_each_preset_is_one_packaged_albumentations_file():
    files = sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))
    assert files == sorted(AUGMENT_PRESETS)
    transforms = set()
    for name in AUGMENT_PRESETS:
        text = (PRESET_DIR / f"{name}.yaml").read_text()
        transforms |= set(re.findall(r"__class_fullname__:\s*(\w+)", text)) - {"Compose"}
        A.load(str(PRESET_DIR / f"{name}.yaml"), data_format="yaml")  # albumentations reads it
    assert {"HorizontalFlip", "Affine", "RandomResizedCrop", "CoarseDropout"} <= transforms
    # no second definition in Python: no package module builds any of the presets' transforms
    for module in PACKAGE.rglob("*.py"):
        source = module.read_text()
        built = {t for t in transforms if re.search(rf"\bA\.{t}\(", source)}
        assert not built, f"{module} defines {built} again"


@pytest.mark.parametrize("preset", ["light", "strong"])
def test_presets_change_pixels_keep_labels_and_repeat_per_seed(bundle, preset):
    plain = bundle.dataset("train")
    ds = bundle.dataset("train", resolve_augment(preset, SIZE).compose)
    items = [(i, 1000 + i) for i in range(len(ds))]
    images, labels = ds.read_batch(items)
    originals, plain_labels = plain.read_batch([i for i, _ in items])
    np.testing.assert_array_equal(labels.numpy(), plain_labels.numpy())
    changed = (images != originals).flatten(1).any(dim=1).float().mean().item()
    assert changed > 0.5, f"{preset} changed only {changed:.0%} of the images"
    again, _ = ds.read_batch(items[::-1])
    torch.testing.assert_close(images, again.flip(0), rtol=0, atol=0)
    other, _ = ds.read_batch([(i, s + 7) for i, s in items])
    assert not torch.equal(images, other)


def test_none_is_an_empty_pipeline_and_crop_sizes_follow_image_size():
    assert resolve_augment("none", SIZE).compose is None
    strong = resolve_augment("strong", 48)
    crop = strong.serialized["transform"]["transforms"][0]
    assert crop["__class_fullname__"] == "RandomResizedCrop" and list(crop["size"]) == [48, 48]
    assert resolve_augment("strong", 48).fingerprint == strong.fingerprint
    assert resolve_augment("strong", 64).fingerprint != strong.fingerprint


def test_augment_accepts_presets_and_pipeline_files_only():
    assert build_config({"augment": "Strong"}).augment == "strong"
    assert build_config({"augment": "pipes/my.json"}).augment == "pipes/my.json"
    with pytest.raises(ConfigError, match="allowed: none, light, strong or the path"):
        build_config({"augment": "medium"})
    sweep = {"program": "scripts/train.py", "method": "grid",
             "metric": {"name": "val/acc", "goal": "maximize"},
             "parameters": {"augment": {"values": ["none", "strong", "my_pipeline.yaml"]}}}
    spec = check_sweep(sweep, "s.yaml")
    assert spec.parameters["augment"].config["values"][2] == "my_pipeline.yaml"
    sweep["parameters"]["augment"]["values"].append("medium")
    with pytest.raises(SweepError, match="augment='medium' is not allowed"):
        check_sweep(sweep, "s.yaml")


# --------------------------------------------------------------------------- broken files


@pytest.mark.parametrize("break_it, expected", [
    (lambda d: d["transforms"][0].update(__class_fullname__="HorizontalFlipp"),
     "unknown transform 'HorizontalFlipp'; did you mean HorizontalFlip"),
    (lambda d: d["transforms"][1].update(rotat=3), "'rotat' are not valid for transform Affine"),
    (lambda d: d["transforms"][1].update(p=7), "transform Affine: p: Input should be less"),
    (lambda d: d["transforms"].append({"__class_fullname__": "CenterCrop", "height": 16,
                                       "width": 16}), "a pipeline must keep image_size"),
])
def test_a_broken_pipeline_file_exits_2_naming_the_transform(tmp_path, capsys, toy_lesions,
                                                             break_it, expected):
    data = yaml.safe_load((PRESET_DIR / "light.yaml").read_text())
    break_it(data["transform"])
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(data))
    code = cli_main(["train", f"--dataset={toy_lesions}", f"--augment={path}",
                     f"--image_size={SIZE}", f"--out_dir={tmp_path / 'runs'}",
                     "--wandb_mode=disabled"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and expected in err, err
    # refused before the data: the run got no further than its config.yaml
    assert not list(tmp_path.rglob("splits.json")) and not list(tmp_path.rglob("*.pt"))


def test_a_file_that_is_not_a_pipeline_is_refused(tmp_path):
    (tmp_path / "x.yaml").write_text("lr: 0.1\n")
    with pytest.raises(AugmentError, match="not an albumentations pipeline file"):
        resolve_augment(str(tmp_path / "x.yaml"), SIZE)
    with pytest.raises(AugmentError, match="no such file"):
        resolve_augment(str(tmp_path / "missing.yaml"), SIZE)


# --------------------------------------------------------------------------- runs


def _run_cfg(dataset: Path, tmp_path: Path, augment: str, **kw):
    base = {"dataset": str(dataset), "image_size": SIZE, "limit_per_class": 10, "epochs": 2,
            "batch_size": 8, "width": 8, "depth": 2, "augment": augment, "log_samples": 2,
            "out_dir": str(tmp_path / "runs"), "run_name": "user", "wandb_mode": "offline",
            "num_workers": "0"}
    base.update(kw)
    return build_config(base)


def test_train_with_a_users_file_writes_it_back_and_logs_it(toy_lesions, tmp_path, cache_dir):
    user = _write(tmp_path / "my_pipeline.json",
                  [A.VerticalFlip(p=1.0), A.RandomBrightnessContrast(p=0.5)], fmt="json")
    cfg = _run_cfg(toy_lesions, tmp_path, str(user), epochs=1)
    summary = train_run(cfg)
    assert summary["status"] == "finished"
    run_dir = tmp_path / "runs" / "user"
    saved = A.load(str(run_dir / "augment.yaml"), data_format="yaml")
    assert A.to_dict(saved) == A.to_dict(A.load(str(user), data_format="json"))
    preview = cv2.imread(str(run_dir / "augment_preview.png"))
    assert preview is not None and preview.shape[1] == 7 * (SIZE + 2) - 2
    wandb_run = read_offline_run(run_dir)
    assert wandb_run.config["augment_name"] == "my_pipeline.json"
    names = [t["__class_fullname__"]
             for t in wandb_run.config["augment_pipeline"]["transform"]["transforms"]]
    assert names == ["VerticalFlip", "RandomBrightnessContrast"]
    (row,) = wandb_run.rows_with("augment/preview")
    assert row["epoch"] == 1 and row["augment/preview"]["_type"] == "image-file"


def test_no_preview_with_log_samples_0(toy_lesions, tmp_path, cache_dir):
    logger = MemoryLogger()
    cfg = _run_cfg(toy_lesions, tmp_path, "strong", epochs=1, log_samples=0,
                   wandb_mode="disabled")
    train_run(cfg, loggers=[logger])
    assert logger.previews == [] and "log_augment_preview" not in logger.calls
    assert logger.config["augment_name"] == "strong"
    logger = MemoryLogger()
    train_run(cfg.replace(log_samples=1, run_name="with"), loggers=[logger])
    ((grid, caption),) = logger.previews
    assert grid.shape == (8 * (SIZE + 2) - 2, 7 * (SIZE + 2) - 2, 3)
    assert caption.startswith("augment=strong on ") and "RandomResizedCrop" in caption


def test_resume_refuses_a_pipeline_that_changed(toy_lesions, tmp_path, cache_dir):
    user = _write(tmp_path / "mine.yaml", [A.HorizontalFlip(p=0.5)])
    cfg = _run_cfg(toy_lesions, tmp_path, str(user), wandb_mode="disabled")

    def stop_after_first(epoch, figures):
        raise KeyboardInterrupt  # as if killed after epoch 1's checkpoint

    with pytest.raises(KeyboardInterrupt):
        train_run(cfg, epoch_callback=stop_after_first)
    run_dir = tmp_path / "runs" / "user"
    _write(user, [A.HorizontalFlip(p=0.9)])
    with pytest.raises(RunError, match=r"transform\.transforms\[0\]\.p: 0\.5 -> 0\.9"):
        resume_run(run_dir)
    _write(user, [A.HorizontalFlip(p=0.5)])
    assert resume_run(run_dir)["epochs_run"] == 2


def test_frozen_views_come_from_the_runs_pipeline(toy_lesions, tmp_path, cache_dir):
    """With a flip-only pipeline every cached view is the backbone on the mirrored image."""
    from wbclf.training.run import Run

    user = _write(tmp_path / "flip.yaml", [A.HorizontalFlip(p=1.0)])
    cfg = build_config({
        "dataset": str(toy_lesions), "model": "tf_efficientnet_lite0", "strategy": "frozen",
        "image_size": SIZE, "epochs": 1, "batch_size": 8, "limit_per_class": 6,
        "log_samples": 0, "augment": str(user), "out_dir": str(tmp_path),
        "wandb_mode": "disabled", "num_workers": "0"})
    run = Run(cfg, tmp_path / "frozen", MemoryLogger())
    plan = run.plan
    train = plan.data.dataset("train")
    images = torch.from_numpy(np.stack([train.image(i) for i in range(len(train))]))
    mirrored = torch.from_numpy(plan.encoder(images.flip(2).permute(0, 3, 1, 2)))
    for view in range(1, plan.views):
        torch.testing.assert_close(plan._train[view].float(), mirrored.float(), atol=2e-2,
                                   rtol=1e-2)
    # an edited file is another pipeline: new views, never the old ones under its name
    _write(user, [A.VerticalFlip(p=1.0)])
    again = Run(cfg, tmp_path / "frozen2", MemoryLogger())
    assert not again.plan.reused
    assert not torch.allclose(again.plan._train[1].float(), plan._train[1].float())


# --------------------------------------------------------------------------- preview


def test_preview_grid_is_originals_then_views(bundle):
    images = np.stack([bundle.dataset("train").image(i) for i in range(3)])
    grid = preview_grid(images, resolve_augment("strong", SIZE), views=4, seed=1)
    step = SIZE + 2
    assert grid.shape == (3 * step - 2, 5 * step - 2, 3) and grid.dtype == np.uint8
    for r in range(3):
        np.testing.assert_array_equal(grid[r * step:r * step + SIZE, :SIZE], images[r])
        views = [grid[r * step:r * step + SIZE, c * step:c * step + SIZE] for c in range(1, 5)]
        assert sum(not np.array_equal(v, images[r]) for v in views) >= 3
    np.testing.assert_array_equal(
        grid, preview_grid(images, resolve_augment("strong", SIZE), views=4, seed=1))


def test_data_preview_command_writes_the_grid(toy_leaves, tmp_path, capsys):
    out = tmp_path / "p.png"
    code = cli_main(["data", "preview", str(toy_leaves), "--augment", "strong", "--n", "3",
                     "--views", "4", "--image-size", str(SIZE), "-o", str(out)])
    assert code == 0 and str(out) in capsys.readouterr().out
    image = cv2.imread(str(out))
    assert image is not None and image.shape[0] > 3 * SIZE and image.shape[1] > 5 * SIZE
    code = cli_main(["data", "preview", str(toy_leaves), "--augment", "nope.yaml"])
    assert code == 2 and "nope.yaml': no such file" in capsys.readouterr().err


def test_the_report_names_each_runs_pipeline(tmp_path):
    from wbclf.reporting.collect import collect_studies

    for name, augment in (("a", "strong"), ("b", str(tmp_path / "pipes" / "mine.yaml"))):
        run_dir = tmp_path / "study" / name
        run_dir.mkdir(parents=True)
        (run_dir / "config.yaml").write_text(yaml.safe_dump({"augment": augment, "lr": 0.1}))
        (run_dir / "summary.json").write_text('{"status": "finished", "test/acc": 0.5}')
    (study,) = collect_studies(tmp_path / "study")
    assert sorted(run.config["augment"] for run in study.runs) == ["mine.yaml", "strong"]
