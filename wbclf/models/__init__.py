"""Models by name: the scratch CNN factory, timm backbones and their weight sources."""

from .backbones import (
    WeightSource,
    WeightsNotFoundError,
    backbone_parameters,
    classifier_names,
    create_backbone,
    freeze_backbone,
    head_parameters,
    is_backbone_frozen,
    unfreeze_backbone,
)
from .heads import build_head
from .packaged import (
    PackagedWeights,
    PackagedWeightsError,
    load_packaged_state_dict,
    packaged_weights_for,
)
from .registry import (
    FLOPS_METHOD,
    STRATEGIES,
    UnknownModelError,
    count_flops,
    count_params,
    model_digest,
    create_model,
    eval_mode,
    list_models,
    model_data_config,
    register_model,
)
from .scratch import ScratchCNN, build_scratch_cnn  # importing registers "scratch"

__all__ = [
    "FLOPS_METHOD",
    "STRATEGIES",
    "PackagedWeights",
    "PackagedWeightsError",
    "ScratchCNN",
    "UnknownModelError",
    "WeightSource",
    "WeightsNotFoundError",
    "backbone_parameters",
    "build_head",
    "build_scratch_cnn",
    "classifier_names",
    "count_flops",
    "count_params",
    "model_digest",
    "create_backbone",
    "create_model",
    "eval_mode",
    "freeze_backbone",
    "head_parameters",
    "is_backbone_frozen",
    "list_models",
    "load_packaged_state_dict",
    "model_data_config",
    "packaged_weights_for",
    "register_model",
    "unfreeze_backbone",
]
