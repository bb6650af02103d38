"""Projection and prediction heads."""
from __future__ import annotations

from torch import nn


def mlp_head(
    input_dim: int,
    hidden_dim: int,
    output_dim: int,
    batch_norm: bool = False,
    num_layers: int = 2,
) -> nn.Sequential:
    """``Linear -> [BN] -> ReLU -> ... -> Linear``.

    MoCo v2's head is ``mlp_head(d, d, 128)``; BYOL's projector and predictor and SwAV's
    projector use ``batch_norm=True``.
    """
    if num_layers < 1:
        raise ValueError(f"num_layers must be at least 1, got {num_layers}")
    layers: list[nn.Module] = []
    dim = input_dim
    for _ in range(num_layers - 1):
        layers.append(nn.Linear(dim, hidden_dim, bias=not batch_norm))
        if batch_norm:
            layers.append(nn.BatchNorm1d(hidden_dim))
        layers.append(nn.ReLU(inplace=True))
        dim = hidden_dim
    layers.append(nn.Linear(dim, output_dim))
    return nn.Sequential(*layers)
