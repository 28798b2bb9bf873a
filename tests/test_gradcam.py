"""Grad-CAM: maps of the image's size, finite, class-specific, for scratch and timm models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from tests.test_predict import train_toy_run
from wbclf.data.transforms import DeviceNormalizer
from wbclf.models.gradcam import gradcam, gradcam_for_images
from wbclf.inference.model import load_run_model
from wbclf.inference.predict import collect_images, read_image

IMAGENET = DeviceNormalizer((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
IDENTITY = DeviceNormalizer([0] * 3, [1] * 3)


def _images(n: int = 4, size: int = 64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def _check_maps(maps: np.ndarray, n: int, height: int, width: int) -> None:
    assert maps.shape == (n, height, width) and maps.dtype == np.float32
    assert np.isfinite(maps).all()
    assert maps.min() >= 0.0 and maps.max() <= 1.0


class BrightSpotModel(nn.Module):
    """Class 1 = "bright", class 0 = "dark": evidence is exactly where the pixels are bright."""

    def __init__(self) -> None:
        super().__init__()
        self.num_features = 1
        self.conv = nn.Conv2d(3, 1, 1, bias=False)
        nn.init.constant_(self.conv.weight, 1.0 / 3)
        self.head = nn.Linear(1, 2)
        with torch.no_grad():
            self.head.weight.copy_(torch.tensor([[-1.0], [1.0]]))
            self.head.bias.zero_()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x))

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x.mean(dim=(2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def test_evidence_is_located_and_class_specific():
    image = np.zeros((1, 32, 32, 3), np.uint8)
    image[0, 4:12, 20:28] = 255  # a bright square, top right
    model = BrightSpotModel()
    bright = gradcam_for_images(model, image, np.array([1]), IDENTITY, "cpu")
    dark = gradcam_for_images(model, image, np.array([0]), IDENTITY, "cpu")
    _check_maps(bright, 1, 32, 32)
    assert bright[0, 4:12, 20:28].min() == pytest.approx(1.0)
    assert bright[0, 20:, :12].max() == pytest.approx(0.0)
    # the square is evidence *against* "dark": no positive evidence anywhere
    assert dark.max() == 0.0


@pytest.fixture(scope="module")
def lesion_run(toy_lesions, tmp_path_factory) -> Path:
    return train_toy_run(toy_lesions, tmp_path_factory.mktemp("gradcam-run"), epochs=1)


@pytest.mark.slow
def test_trained_run_maps_have_image_size_and_differ_between_classes(lesion_run, toy_lesions):
    loaded = load_run_model(lesion_run, "cpu")
    paths = collect_images([toy_lesions / "test"])[::5]
    images = np.stack([read_image(p, loaded.image_size)[0] for p in paths])
    n = len(images)
    normalizer = DeviceNormalizer(loaded.data_config["mean"], loaded.data_config["std"])
    per_class = [gradcam_for_images(loaded.model, images, np.full(n, c), normalizer,
                                    "cpu") for c in (0, 1)]
    for maps in per_class:
        _check_maps(maps, n, loaded.image_size, loaded.image_size)
    difference = np.abs(per_class[0] - per_class[1]).mean(axis=(1, 2))
    assert (difference > 0.05).all(), difference


@pytest.mark.parametrize("name", ["resnet10t", "mobilenetv3_small_050", "convnext_atto"])
@pytest.mark.parametrize("frozen", [False, True])
def test_timm_backbones_pick_their_last_stage(name, frozen):
    from wbclf.models import create_backbone, freeze_backbone

    torch.manual_seed(0)
    model, _ = create_backbone(name, 3, pretrained=False)
    if frozen:
        freeze_backbone(model)
    model.train()
    images = _images(n=3, size=64)
    maps = [gradcam_for_images(model, images, np.full(3, c), IMAGENET, "cpu") for c in (0, 2)]
    for m in maps:
        _check_maps(m, 3, 64, 64)
    assert not np.allclose(maps[0], maps[1])
    # the model is left as it was: mode, and no gradients accumulated on any parameter
    assert model.training
    assert all(p.grad is None for p in model.parameters())
    if frozen:
        assert not any(p.requires_grad for n, p in model.named_parameters()
                       if not n.startswith(("fc", "classifier", "head")))


def test_scratch_cnn_and_non_square_input():
    from wbclf.models import build_scratch_cnn

    torch.manual_seed(0)
    model = build_scratch_cnn(num_classes=4, width=8, depth=3).eval()
    x = torch.randn(2, 3, 48, 40)
    maps = gradcam(model, x, [1, 3]).numpy()
    _check_maps(maps, 2, 48, 40)
    assert gradcam(model, x, [1, 3], size=(12, 10)).shape == (2, 12, 10)


def test_models_without_forward_features_use_their_last_conv():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2),
                          nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))
    for p in model.parameters():
        p.requires_grad_(False)
    maps = gradcam_for_images(model, _images(2, 24), np.array([0, 1]), IMAGENET, "cpu")
    _check_maps(maps, 2, 24, 24)
    assert maps.max() > 0


def test_no_feature_map_gives_none_with_a_warning():
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2))
    with pytest.warns(UserWarning, match="Grad-CAM unavailable"):
        assert gradcam_for_images(model, _images(2, 8), np.array([0, 1]), IMAGENET, "cpu") \
            is None


@pytest.mark.slow
def test_training_logs_cams_in_samples_png_and_the_wandb_table(toy_lesions, tmp_path):
    from wbclf.config import build_config
    from wbclf.tracking.loggers import LocalRunLogger, MemoryLogger
    from wbclf.training.run import train_run
    from wbclf.tracking.wandb_logger import WandbLogger
    from wbclf.tracking.wandb_offline import read_offline_run

    cfg = build_config({"dataset": str(toy_lesions), "image_size": 32, "width": 8, "depth": 3,
                        "epochs": 1, "limit_per_class": 20, "num_workers": "0",
                        "out_dir": str(tmp_path), "run_name": "cam", "log_samples": 6,
                        "wandb_mode": "offline"})
    memory = MemoryLogger()
    train_run(cfg, loggers=[LocalRunLogger(), WandbLogger(mode="offline", project="wbclf"),
                            memory])
    for _, _, samples in memory.samples:
        assert samples.cams is not None
        _check_maps(samples.cams, len(samples.images), 32, 32)
    assert (tmp_path / "cam" / "samples.png").is_file()
    wb = read_offline_run(tmp_path / "cam")
    table = next(p for p in wb.files if p.name.startswith("best_samples")
                 and p.name.endswith(".table.json"))
    data = json.loads(table.read_text())
    assert data["columns"][-1] == "cam" and len(data["data"]) == 6


@pytest.mark.slow
def test_training_computes_cams_only_for_the_tables_that_show_them(toy_lesions, tmp_path):
    """Sample tables every epoch of a short run, Grad-CAM once mid-run and for the best model
    and the mistakes; the metrics are those of a run that computes no CAM at all."""
    from wbclf.config import build_config
    from wbclf.tracking.loggers import MemoryLogger
    from wbclf.training.run import cam_epoch, train_run

    base = {"dataset": str(toy_lesions), "image_size": 32, "width": 8, "depth": 3,
            "epochs": 4, "limit_per_class": 20, "num_workers": "0", "out_dir": str(tmp_path),
            "wandb_mode": "disabled"}
    memory = MemoryLogger()
    train_run(build_config({**base, "run_name": "cams", "log_samples": 6}), loggers=[memory])
    tables = [(epoch, samples.cams is not None) for epoch, tag, samples in memory.samples
              if tag == "val_samples"]
    assert tables == [(1, False), (2, True), (3, False), (4, False)]
    assert cam_epoch(4) == 2 and cam_epoch(10) == 4 and cam_epoch(1) == 1
    best = [s for _, tag, s in memory.samples if tag == "best_samples"]
    assert len(best) == 1 and best[0].cams is not None
    assert memory.mistakes[0].cams is not None or len(memory.mistakes[0].images) == 0
    plain = MemoryLogger()
    train_run(build_config({**base, "run_name": "plain", "log_samples": 0}), loggers=[plain])
    assert [e["val/acc"] for e in plain.history] == [e["val/acc"] for e in memory.history]
    assert plain.summary["test/acc"] == memory.summary["test/acc"]


def test_remembered_feature_maps_give_the_same_maps_with_one_backbone_pass(tmp_path):
    """A frozen backbone's feature maps of the same images are reused: identical maps for
    either class, one backbone pass; other images (or ones pushed out) pass again. With a
    folder, another process's memo reads them back; a torn file is computed again."""
    from wbclf.models import create_backbone, freeze_backbone
    from wbclf.models.gradcam import FeatureMaps

    torch.manual_seed(0)
    model, _ = create_backbone("resnet10t", 3, pretrained=False)
    freeze_backbone(model)
    model.train()
    passes: list[int] = []
    model.conv1.register_forward_hook(lambda _m, inputs, _o: passes.append(len(inputs[0])))
    images, others = _images(n=5, size=48), _images(n=5, size=48, seed=1)
    memo = FeatureMaps(limit=1)
    for c in (0, 2):
        fresh = gradcam_for_images(model, images, np.full(5, c), IMAGENET, "cpu")
        again = gradcam_for_images(model, images, np.full(5, c), IMAGENET, "cpu",
                                   feature_maps=memo)
        assert np.array_equal(fresh, again)
    assert memo.computed == 5 and passes == [5, 5, 5]  # 2 fresh, 1 remembered for both
    assert model.training and all(p.grad is None for p in model.parameters())
    gradcam_for_images(model, others, np.zeros(5), IMAGENET, "cpu", feature_maps=memo)
    gradcam_for_images(model, images, np.zeros(5), IMAGENET, "cpu", feature_maps=memo)
    assert memo.computed == 15  # limit 1: the first batch was dropped for the second

    folder = tmp_path / "maps"
    first = FeatureMaps(folder=folder)
    expected = gradcam_for_images(model, images[:3], np.ones(3), IMAGENET, "cpu",
                                  feature_maps=first)
    assert (first.computed, first.loaded, len(list(folder.glob("*.npy")))) == (3, 0, 3)
    later = FeatureMaps(folder=folder)  # another trial of the study
    passes.clear()
    read_back = gradcam_for_images(model, images[:3], np.ones(3), IMAGENET, "cpu",
                                   feature_maps=later)
    assert np.allclose(read_back, expected, atol=1e-5)  # the same maps, laid out anew
    assert (later.computed, later.loaded, passes) == (0, 3, [])
    torn, emptied = sorted(folder.glob("*.npy"))[:2]
    torn.write_bytes(torn.read_bytes()[:50])
    emptied.write_bytes(b"")  # np.load raises EOFError on it
    mixed = gradcam_for_images(model, images, np.ones(5), IMAGENET, "cpu",
                               feature_maps=FeatureMaps(folder=folder))
    assert passes == [4]  # the torn, the empty and the two new ones, in one batch
    assert all(p.stat().st_size > 100 for p in folder.glob("*.npy"))  # rewritten whole
    assert np.allclose(mixed, gradcam_for_images(model, images, np.ones(5), IMAGENET, "cpu"),
                       atol=1e-5)


def test_frozen_runs_pass_their_sample_images_through_the_backbone_once(toy_lesions, tmp_path,
                                                                        cache_dir):
    """The mid-run Grad-CAM and the best model's show the same val images: a frozen run
    passes them through the backbone once (the mistakes are test images), and the next run
    of the study reads their maps back; its maps are those of a plain Grad-CAM of its best
    model. A fine-tuned backbone remembers nothing."""
    from wbclf.config import build_config
    from wbclf.tracking.loggers import MemoryLogger
    from wbclf.training.run import Run, _execute

    base = {"dataset": str(toy_lesions), "model": "tf_efficientnet_lite0", "image_size": 48,
            "epochs": 2, "batch_size": 8, "limit_per_class": 8, "log_samples": 4,
            "out_dir": str(tmp_path), "wandb_mode": "disabled", "num_workers": "0",
            "strategy": "frozen"}
    counts = []
    for lr in (1e-3, 3e-2):
        memory = MemoryLogger()
        run = Run(build_config({**base, "lr": lr, "run_name": f"lr{lr}"}),
                  tmp_path / f"lr{lr}", memory)
        _execute(run, resume=False)
        maps = run.plan.frozen_feature_maps
        counts.append((maps.computed, maps.loaded, len(memory.mistakes[0].images)))
        best = next(s for _, tag, s in memory.samples if tag == "best_samples")
        inner = getattr(run.plan.model, "_orig_mod", run.plan.model)
        normalizer = DeviceNormalizer(run.plan.data_config["mean"], run.plan.data_config["std"])
        plain = gradcam_for_images(inner, best.images, best.preds, normalizer, "cpu")
        assert np.allclose(best.cams, plain, atol=1e-5)
    (computed, loaded, mistakes), (computed2, loaded2, mistakes2) = counts
    assert (computed, loaded) == (4 + mistakes, 0)  # val samples once, then the mistakes
    assert loaded2 >= 4 and computed2 + loaded2 == 4 + mistakes2
    tuned = Run(build_config({**base, "strategy": "finetune", "epochs": 1}),
                tmp_path / "tuned", MemoryLogger())
    assert tuned.plan.frozen_feature_maps is None
