"""Momentum (EMA) encoders: MoCo's key encoder and BYOL's target network."""
from __future__ import annotations

import copy
import math

import torch
from torch import nn


def momentum_copy(module: nn.Module) -> nn.Module:
    """A frozen deep copy of ``module`` that receives no gradients."""
    target = copy.deepcopy(module)
    for param in target.parameters():
        param.requires_grad_(False)
    return target


@torch.no_grad()
def momentum_update(online: nn.Module, target: nn.Module, momentum: float) -> None:
    """``theta_t <- m * theta_t + (1 - m) * theta_o`` for every parameter (He et al. 2020, eq. 2).

    Buffers (BatchNorm running statistics) are left alone: the target computes its own.
    """
    online_params = [p.detach() for p in online.parameters()]
    target_params = list(target.parameters())
    if len(online_params) != len(target_params):
        raise ValueError("online and target networks have different parameter lists")
    torch._foreach_lerp_(target_params, online_params, 1.0 - momentum)


def cosine_momentum(base: float, final: float, step: int, total_steps: int) -> float:
    """BYOL's schedule: ``final - (final - base) * (cos(pi * k / K) + 1) / 2``."""
    if total_steps <= 0:
        return base
    progress = min(max(step / total_steps, 0.0), 1.0)
    return final - (final - base) * (math.cos(math.pi * progress) + 1) / 2
