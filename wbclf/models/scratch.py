"""The scratch CNN: a small VGG- or ResNet-style network for the from-scratch studies.

Layout: a stride-1 stem conv, then ``depth`` stages. Stage ``i`` has ``width * 2**i``
channels and ``blocks_per_stage`` blocks; its *first* block has stride 2, so each stage
halves the resolution (its output is at half its input's size). The stride-2 conv is used
rather than a pooling layer at the stage's end because (1) every conv after the stem then runs
at the reduced resolution, about 4x fewer FLOPs than pooling after the stage, and (2) plain
and residual networks downsample the same way: the residual block's projection shortcut
(1x1 stride-2 conv + norm) absorbs the change of channels and of resolution together, so the
``residual`` ablation changes the block and nothing else.

Blocks take injected ``norm_layer``/``act_layer`` factories: ``batch_norm=False`` is
``norm_layer=nn.Identity`` (``nn.Identity`` swallows the channel argument), not a second class.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .heads import build_head
from .registry import register_model

# timm's ImageNet normalization (timm.data.constants), copied: a scratch run never imports timm
IMAGENET_DEFAULT_MEAN = (0.485, 0.456, 0.406)
IMAGENET_DEFAULT_STD = (0.229, 0.224, 0.225)

LayerFactory = Callable[..., nn.Module]


def _conv(in_chs: int, out_chs: int, kernel_size: int, stride: int, norm: nn.Module) -> nn.Conv2d:
    # A conv followed by a norm gets no bias: the norm's shift makes it redundant.
    return nn.Conv2d(
        in_chs,
        out_chs,
        kernel_size,
        stride=stride,
        padding=kernel_size // 2,
        bias=isinstance(norm, nn.Identity),
    )


class ConvNormAct(nn.Module):
    """conv3x3 -> norm -> act: the stem, and the plain block."""

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        *,
        stride: int = 1,
        norm_layer: LayerFactory = nn.BatchNorm2d,
        act_layer: LayerFactory = nn.ReLU,
    ) -> None:
        super().__init__()
        norm = norm_layer(out_chs)
        self.conv = _conv(in_chs, out_chs, 3, stride, norm)
        self.norm = norm
        self.act = act_layer()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))


class PlainBlock(ConvNormAct):
    """A plain (VGG-style) block: one conv3x3-norm-act."""


class BasicBlock(nn.Module):
    """ResNet basic block: two conv3x3 plus a shortcut (a projection when the shape changes)."""

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        *,
        stride: int = 1,
        norm_layer: LayerFactory = nn.BatchNorm2d,
        act_layer: LayerFactory = nn.ReLU,
    ) -> None:
        super().__init__()
        norm1, norm2 = norm_layer(out_chs), norm_layer(out_chs)
        self.conv1 = _conv(in_chs, out_chs, 3, stride, norm1)
        self.norm1 = norm1
        self.act1 = act_layer()
        self.conv2 = _conv(out_chs, out_chs, 3, 1, norm2)
        self.norm2 = norm2
        if stride != 1 or in_chs != out_chs:
            proj_norm = norm_layer(out_chs)
            self.shortcut: nn.Module = nn.Sequential(
                _conv(in_chs, out_chs, 1, stride, proj_norm), proj_norm
            )
        else:
            self.shortcut = nn.Identity()
        self.act2 = act_layer()

    def zero_init_last(self) -> None:
        """Make the residual branch start at zero, so each block starts as its shortcut."""
        weight = getattr(self.norm2, "weight", None)
        if isinstance(weight, nn.Parameter):
            nn.init.zeros_(weight)
        else:
            # No affine norm to zero (batch_norm=False): zero the last conv instead (SkipInit),
            # which keeps a deep un-normalized residual net from growing its activations.
            nn.init.zeros_(self.conv2.weight)
            if self.conv2.bias is not None:
                nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return self.act2(out + self.shortcut(x))


class ScratchCNN(nn.Module):
    """Stem, ``depth`` downsampling stages, global average pooling, dropout, linear classifier.

    Exposes timm's model interface (``forward_features``, ``forward_head``,
    ``reset_classifier``, ``get_classifier``, ``num_features``, ``pretrained_cfg``) so the rest
    of wbclf treats it like any timm backbone.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        width: int = 32,
        depth: int = 4,
        blocks_per_stage: int = 1,
        block: type[nn.Module] = PlainBlock,
        norm_layer: LayerFactory = nn.BatchNorm2d,
        act_layer: LayerFactory = nn.ReLU,
        dropout: float = 0.0,
        in_chans: int = 3,
    ) -> None:
        super().__init__()
        layers = {"norm_layer": norm_layer, "act_layer": act_layer}
        self.stem = ConvNormAct(in_chans, width, stride=1, **layers)
        stages = []
        in_chs = width
        for i in range(depth):
            out_chs = width * 2**i
            blocks = [block(in_chs, out_chs, stride=2, **layers)]
            for _ in range(blocks_per_stage - 1):
                blocks.append(block(out_chs, out_chs, stride=1, **layers))
            stages.append(nn.Sequential(*blocks))
            in_chs = out_chs
        self.stages = nn.Sequential(*stages)

        self.num_features = in_chs
        self.num_classes = num_classes
        self.drop_rate = dropout
        self.head = self._build_head(num_classes)
        # timm-style config: resolve_model_data_config() reads normalization from here, as it
        # does for pretrained timm models. input_size is the training size (set by create_model).
        self.pretrained_cfg = {
            "architecture": "scratch",
            "num_classes": num_classes,
            "input_size": (in_chans, 128, 128),
            "interpolation": "bilinear",
            "crop_pct": 1.0,
            "crop_mode": "center",
            "mean": IMAGENET_DEFAULT_MEAN,
            "std": IMAGENET_DEFAULT_STD,
            "first_conv": "stem.conv",
            "classifier": "head",
        }
        self.default_cfg = self.pretrained_cfg  # timm keeps both names for the same dict
        self._init_weights()

    def _build_head(self, num_classes: int) -> nn.Module:
        # num_classes=0 means "pooled features out", as in timm.
        if num_classes == 0:
            return nn.Identity()
        return build_head(self.num_features, num_classes, dropout=self.drop_rate)

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        for module in self.modules():
            if isinstance(module, BasicBlock):
                module.zero_init_last()

    def get_classifier(self) -> nn.Module:
        """Return the classifier head."""
        return self.head

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the head with a freshly initialized one for ``num_classes`` (0 = none)."""
        self.num_classes = num_classes
        self.pretrained_cfg["num_classes"] = num_classes
        self.head = self._build_head(num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Return the last stage's feature map, shape (N, num_features, H', W')."""
        return self.stages(self.stem(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool the feature map; return the pooled features or the logits."""
        x = x.mean(dim=(2, 3))
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@register_model("scratch")
def build_scratch_cnn(
    *,
    num_classes: int,
    width: int = 32,
    depth: int = 4,
    blocks_per_stage: int = 1,
    batch_norm: bool = True,
    residual: bool = False,
    dropout: float = 0.0,
    in_chans: int = 3,
) -> ScratchCNN:
    """Build the scratch CNN from the RunConfig's architecture fields.

    Args:
        num_classes: Number of output logits (0 = return pooled features).
        width: Channels of the first stage; each later stage doubles them.
        depth: Number of stages; each halves the resolution.
        blocks_per_stage: Blocks per stage.
        batch_norm: BatchNorm after every conv (True) or no normalization (False).
        residual: ResNet basic blocks with shortcuts instead of plain conv blocks.
        dropout: Dropout probability before the linear classifier.
        in_chans: Input channels.

    Raises:
        ValueError: On an out-of-range argument (one line naming it).
    """
    checks = {
        "num_classes": (num_classes, num_classes >= 0, ">= 0"),
        "width": (width, width >= 1, ">= 1"),
        "depth": (depth, depth >= 1, ">= 1"),
        "blocks_per_stage": (blocks_per_stage, blocks_per_stage >= 1, ">= 1"),
        "dropout": (dropout, 0.0 <= dropout < 1.0, "in [0, 1)"),
        "in_chans": (in_chans, in_chans >= 1, ">= 1"),
    }
    for name, (value, ok, allowed) in checks.items():
        if not ok:
            raise ValueError(f"scratch CNN: {name} must be {allowed}, got {value!r}")
    return ScratchCNN(
        num_classes=num_classes,
        width=width,
        depth=depth,
        blocks_per_stage=blocks_per_stage,
        block=BasicBlock if residual else PlainBlock,
        norm_layer=nn.BatchNorm2d if batch_norm else nn.Identity,
        act_layer=nn.ReLU,
        dropout=dropout,
        in_chans=in_chans,
    )
