"""Classifier heads put on top of a feature extractor (scratch CNN or timm backbone)."""

from __future__ import annotations

from torch import nn


def build_head(
    in_features: int, num_classes: int, *, hidden: int = 0, dropout: float = 0.0
) -> nn.Module:
    """Build the fully connected head that maps pooled features to class logits.

    Args:
        in_features: Width of the pooled feature vector.
        num_classes: Number of output logits.
        hidden: Hidden units of a two-layer MLP head; 0 gives a single linear layer.
        dropout: Dropout probability, before the linear layer (hidden == 0) or after the
            hidden activation (hidden > 0).

    Returns:
        ``nn.Linear`` when hidden == 0 and dropout == 0; ``Sequential(Dropout, Linear)`` when
        only dropout is set; ``Sequential(Linear, ReLU, Dropout, Linear)`` when hidden > 0.

    Raises:
        ValueError: On a non-positive size or a dropout outside [0, 1).
    """
    if in_features < 1:
        raise ValueError(f"build_head: in_features must be >= 1, got {in_features}")
    if num_classes < 1:
        raise ValueError(f"build_head: num_classes must be >= 1, got {num_classes}")
    if hidden < 0:
        raise ValueError(f"build_head: hidden must be >= 0 (0 = linear head), got {hidden}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"build_head: dropout must be in [0, 1), got {dropout}")

    if hidden > 0:
        # The Dropout slot is kept even at p=0 so the MLP's state-dict keys (0.*, 3.*) do not
        # depend on a swept hyperparameter.
        return nn.Sequential(
            nn.Linear(in_features, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )
    if dropout > 0:
        return nn.Sequential(nn.Dropout(dropout), nn.Linear(in_features, num_classes))
    # A bare Linear keeps timm's checkpoint layout (e.g. "fc.weight") for the default head.
    return nn.Linear(in_features, num_classes)
