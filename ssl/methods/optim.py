"""Optimisers and learning-rate schedules shared by the methods."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn


@dataclass
class OptimConfig:
    """Optimiser settings. ``lr`` is for ``reference_batch_size``; the effective rate is
    ``lr * global_batch / reference_batch_size`` (Goyal et al. 2017 linear scaling).

    ``warmup_epochs`` of linear warm-up, then cosine decay to ``final_lr_ratio * lr``.
    """

    name: Literal["sgd", "lars"] = "sgd"
    lr: float = 0.03
    reference_batch_size: int = 256
    weight_decay: float = 1e-4
    momentum: float = 0.9
    nesterov: bool = False
    warmup_epochs: float = 0.0
    final_lr_ratio: float = 0.0
    exclude_bias_and_norm: bool = False
    trust_coefficient: float = 0.001


def scaled_lr(config: OptimConfig, global_batch_size: int) -> float:
    return config.lr * global_batch_size / config.reference_batch_size


def parameter_groups(module: nn.Module, config: OptimConfig) -> list[dict]:
    """Split trainable parameters so biases and normalisation weights can skip weight decay."""
    params = [p for p in module.parameters() if p.requires_grad]
    if not config.exclude_bias_and_norm:
        return [{"params": params}]
    regular = [p for p in params if p.ndim > 1]
    exempt = [p for p in params if p.ndim <= 1]
    return [{"params": regular}, {"params": exempt, "weight_decay": 0.0, "exclude": True}]



def build_optimizer(module: nn.Module, config: OptimConfig, global_batch_size: int) -> torch.optim.Optimizer:
    groups = parameter_groups(module, config)
    if config.name == "lars":
        from .lars import LARS

        return LARS(groups, lr=scaled_lr(config, global_batch_size), momentum=config.momentum,
                    weight_decay=config.weight_decay, trust_coefficient=config.trust_coefficient)
    return torch.optim.SGD(
        groups,
        lr=scaled_lr(config, global_batch_size),
        momentum=config.momentum,
        weight_decay=config.weight_decay,
        nesterov=config.nesterov,
    )


def warmup_cosine(step: int, total_steps: int, warmup_steps: int, final_ratio: float = 0.0) -> float:
    """Multiplier of the base lr at ``step``: linear warm-up, then half-cosine to ``final_ratio``."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return final_ratio + (1 - final_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


torch.serialization.add_safe_globals([OptimConfig])
