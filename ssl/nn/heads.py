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


def mocov3_mlp(num_layers: int, input_dim: int, hidden_dim: int, output_dim: int, last_bn: bool = True) -> nn.Sequential:
    """MoCo v3's heads (facebookresearch/moco-v3 ``moco/builder.py`` ``_build_mlp``): Linears
    without bias, each but the last followed by BN and ReLU; the last by a BN without affine
    parameters when ``last_bn`` (SimCLR's design without gamma). ViT: projector of 3 layers,
    predictor of 2 with the last BN; ResNet: 2 and 2, the predictor without it."""
    if num_layers < 1:
        raise ValueError(f"num_layers must be at least 1, got {num_layers}")
    layers: list[nn.Module] = []
    for index in range(num_layers):
        first = input_dim if index == 0 else hidden_dim
        last = index == num_layers - 1
        layers.append(nn.Linear(first, output_dim if last else hidden_dim, bias=False))
        if not last:
            layers += [nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True)]
        elif last_bn:
            layers.append(nn.BatchNorm1d(output_dim, affine=False))
    return nn.Sequential(*layers)
