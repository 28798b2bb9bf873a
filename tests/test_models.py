"""Model registry and scratch CNN: every registered model plus a few timm ones, tiny inputs."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before timm / huggingface_hub are imported: no network

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from wbclf.models import (
    ScratchCNN,
    UnknownModelError,
    build_head,
    build_scratch_cnn,
    count_flops,
    count_params,
    create_model,
    list_models,
    model_data_config,
    register_model,
)
from wbclf.models import registry

NUM_CLASSES = 3
IMAGE_SIZE = 64


def make_cfg(**overrides) -> SimpleNamespace:
    """A RunConfig stand-in with small scratch settings."""
    fields = dict(
        model="scratch",
        strategy="scratch",
        width=8,
        depth=3,
        blocks_per_stage=1,
        batch_norm=True,
        residual=False,
        dropout=0.0,
        head_hidden=0,
        image_size=IMAGE_SIZE,
        pretrained_file="",
    )
    fields.update(overrides)
    return SimpleNamespace(**fields)


def is_batch_norm(module: nn.Module) -> bool:
    return isinstance(module, nn.modules.batchnorm._BatchNorm)


CASES = [pytest.param(name, {}, id=name) for name in list_models()] + [
    pytest.param("scratch", {"batch_norm": False}, id="scratch-no-bn"),
    pytest.param("scratch", {"residual": True}, id="scratch-residual"),
    pytest.param("scratch", {"residual": True, "batch_norm": False}, id="scratch-residual-no-bn"),
    pytest.param("scratch", {"blocks_per_stage": 2, "residual": True}, id="scratch-2-blocks"),
    pytest.param("scratch", {"blocks_per_stage": 2, "dropout": 0.2}, id="scratch-dropout"),
    pytest.param("resnet18", {}, id="timm-resnet18"),
    pytest.param("tf_efficientnet_lite0", {}, id="timm-tf_efficientnet_lite0"),
    pytest.param("test_resnet", {"head_hidden": 16, "dropout": 0.1}, id="timm-mlp-head"),
]


@pytest.mark.parametrize("name, overrides", CASES)
def test_forward_backward(name, overrides):
    torch.manual_seed(0)
    model = create_model(name, NUM_CLASSES, make_cfg(model=name, **overrides))
    model.train()
    x = torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE)
    logits = model(x)
    assert logits.shape == (2, NUM_CLASSES)
    assert torch.isfinite(logits).all()

    F.cross_entropy(logits, torch.tensor([0, 2])).backward()
    for param_name, param in model.named_parameters():
        if param.requires_grad:
            assert param.grad is not None, f"{param_name} got no gradient"
            assert torch.isfinite(param.grad).all(), f"{param_name} has a non-finite gradient"


@pytest.mark.parametrize("batch_norm", [True, False])
@pytest.mark.parametrize("residual", [False, True])
def test_batch_norm_is_one_switch(batch_norm, residual):
    model = build_scratch_cnn(num_classes=NUM_CLASSES, width=4, depth=2, batch_norm=batch_norm,
                              residual=residual)
    assert any(is_batch_norm(m) for m in model.modules()) == batch_norm
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    # A conv has a bias exactly when no norm follows it.
    assert all((conv.bias is None) == batch_norm for conv in convs)


def test_residual_adds_projection_shortcuts():
    plain = build_scratch_cnn(num_classes=NUM_CLASSES, width=4, depth=3, blocks_per_stage=2)
    residual = build_scratch_cnn(
        num_classes=NUM_CLASSES, width=4, depth=3, blocks_per_stage=2, residual=True
    )

    def projections(model):
        return [
            m for name, m in model.named_modules()
            if name.endswith("shortcut") and isinstance(m, nn.Sequential)
        ]

    assert projections(plain) == []
    assert not any(isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) for m in plain.modules())
    # Each stage's first block changes shape (stride 2): one projection per stage.
    assert len(projections(residual)) == 3
    assert count_params(residual)[0] > count_params(plain)[0]


def test_residual_blocks_start_as_their_shortcut():
    model = build_scratch_cnn(num_classes=NUM_CLASSES, width=4, depth=2, residual=True)
    gammas = [block.norm2.weight for block in model.modules() if hasattr(block, "norm2")]
    assert gammas and all(torch.count_nonzero(g) == 0 for g in gammas)


def test_stages_double_width_and_halve_resolution():
    model = build_scratch_cnn(num_classes=NUM_CLASSES, width=8, depth=3)
    features = model.forward_features(torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE))
    assert features.shape == (2, 8 * 2**2, IMAGE_SIZE // 8, IMAGE_SIZE // 8)


@pytest.mark.parametrize("small, large", [
    ({"width": 4}, {"width": 8}),
    ({"depth": 2}, {"depth": 3}),
    ({"blocks_per_stage": 1}, {"blocks_per_stage": 2}),
])
def test_params_grow_with_size(small, large):
    def total(**kw):
        return count_params(build_scratch_cnn(num_classes=NUM_CLASSES, **kw))[0]

    assert total(**large) > total(**small)


def test_count_flops_grows_with_image_size_and_keeps_mode():
    model = build_scratch_cnn(num_classes=NUM_CLASSES, width=4, depth=2)
    model.train()
    small, large = count_flops(model, 32), count_flops(model, 64)
    assert 0 < small < large
    assert all(m.training for m in model.modules())
    model.eval()
    count_flops(model, 32)
    assert not any(m.training for m in model.modules())


def test_count_params_counts_trainable():
    model = build_scratch_cnn(num_classes=NUM_CLASSES, width=4, depth=2)
    total, trainable = count_params(model)
    assert total == trainable == sum(p.numel() for p in model.parameters())
    model.stem.requires_grad_(False)
    assert count_params(model)[1] == total - sum(p.numel() for p in model.stem.parameters())


def test_scratch_has_timm_interface():
    model = create_model("scratch", NUM_CLASSES, make_cfg())
    assert isinstance(model, ScratchCNN)
    x = torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE)
    pooled = model.forward_head(model.forward_features(x), pre_logits=True)
    assert pooled.shape == (2, model.num_features)
    assert model.get_classifier() is model.head
    model.reset_classifier(5)
    assert model(x).shape == (2, 5)
    model.reset_classifier(0)
    assert model(x).shape == (2, model.num_features)


def test_data_config_for_scratch_is_imagenet_at_training_size():
    config = model_data_config(create_model("scratch", NUM_CLASSES, make_cfg(image_size=96)))
    assert config["mean"] == pytest.approx((0.485, 0.456, 0.406))
    assert config["std"] == pytest.approx((0.229, 0.224, 0.225))
    assert config["input_size"] == (3, 96, 96)
    assert isinstance(config["interpolation"], str)


def test_data_config_for_timm_comes_from_its_pretrained_cfg():
    model = create_model("tf_efficientnet_lite0", NUM_CLASSES, make_cfg())
    config = model_data_config(model)
    assert config["mean"] == pytest.approx((0.5, 0.5, 0.5))
    assert config["input_size"] == (3, 224, 224)
    assert model.wbclf_weight_source.kind == "random"


@pytest.mark.parametrize("kwargs, field", [
    ({"width": 0}, "width"),
    ({"depth": 0}, "depth"),
    ({"blocks_per_stage": 0}, "blocks_per_stage"),
    ({"dropout": 1.0}, "dropout"),
    ({"num_classes": -1}, "num_classes"),
])
def test_scratch_rejects_bad_arguments(kwargs, field):
    kwargs = {"num_classes": NUM_CLASSES, **kwargs}
    with pytest.raises(ValueError, match=field) as info:
        build_scratch_cnn(**kwargs)
    assert "\n" not in str(info.value)


def test_build_scratch_cnn_is_keyword_only():
    with pytest.raises(TypeError):
        build_scratch_cnn(NUM_CLASSES)


def test_duplicate_registration_raises(monkeypatch):
    monkeypatch.setattr(registry, "_BUILDERS", dict(registry._BUILDERS))
    with pytest.raises(ValueError, match="scratch"):
        register_model("scratch")(lambda *, num_classes: nn.Linear(1, num_classes))

    @register_model("tiny-test")
    def build_tiny(*, num_classes, width=1):
        return nn.Linear(width, num_classes)

    assert "tiny-test" in list_models()
    # Builders get the config fields named by their parameters.
    assert create_model("tiny-test", 2, make_cfg(width=5)).in_features == 5
    with pytest.raises(ValueError, match="already registered"):
        register_model("tiny-test")


def test_list_models_with_timm():
    names = list_models(include_timm=True)
    assert names[0] == "scratch" and "resnet18" in names
    assert len(names) == len(set(names))


def test_unknown_model_names_close_matches():
    with pytest.raises(UnknownModelError) as info:
        create_model("resnet18x", NUM_CLASSES, make_cfg())
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert "'resnet18x'" in message and "resnet18," in message
    assert "\n" not in message


def test_scratch_model_refuses_pretrained_strategies():
    with pytest.raises(ValueError, match="strategy"):
        create_model("scratch", NUM_CLASSES, make_cfg(strategy="frozen"))
    with pytest.raises(ValueError, match="strategy"):
        create_model("scratch", NUM_CLASSES, make_cfg(strategy="bogus"))


def test_build_head_variants():
    assert isinstance(build_head(8, 3), nn.Linear)
    with_dropout = build_head(8, 3, dropout=0.5)
    assert [type(m) for m in with_dropout] == [nn.Dropout, nn.Linear]
    mlp = build_head(8, 3, hidden=16, dropout=0.1)
    assert [type(m) for m in mlp] == [nn.Linear, nn.ReLU, nn.Dropout, nn.Linear]
    assert mlp(torch.randn(2, 8)).shape == (2, 3)
    with pytest.raises(ValueError, match="hidden"):
        build_head(8, 3, hidden=-1)
