"""Optimisers and learning-rate schedules shared by the methods."""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_warn
from torch import nn

from sslkit.eval.online import OnlineClassifierConfig

from .lars import TrustRatio


@dataclass
class OptimConfig:
    """Optimiser and schedule of a recipe.

    Learning rate: ``lr`` is the peak rate at ``reference_batch_size``; with
    ``lr_scaling='linear'`` the run uses ``lr * global_batch / reference_batch_size``
    (Goyal et al. 2017; MoCo, BYOL, solo-learn), with ``'none'`` exactly ``lr`` (SwAV's
    scripts give 0.6 at batch 256 and 4.8 at 4096 as two recipes, not a rule).

    Schedule (``lr_at``): ``warmup_epochs`` of linear warm-up from ``warmup_start_lr``, then a
    half cosine from the peak to ``final_lr`` (both absolute, never batch-scaled, as in
    SwAV's ``main_swav.py`` and solo-learn). ``warmup_ends_at_peak``: the last warm-up step is
    at the peak (``np.linspace`` in ``main_swav.py``, solo-learn's
    ``LinearWarmupCosineAnnealingLR``), or, when False, warm-up is ``lr * t / W`` and the peak
    comes with the first cosine step (BYOL's ``byol/utils/schedules.py``).
    ``schedule_interval='epoch'`` changes the rate once per epoch (MoCo's ``main_moco.py``).

    LARS (``name='lars'``, see ``sslkit.methods.lars``): ``trust_coefficient`` (eta),
    ``trust_ratio`` (``byol`` or ``larc``) and ``clip_lr``. ``exclude_bias_and_norm``: biases
    and normalisation weights (every 1-d tensor) get no weight decay and, with LARS, no
    trust ratio.
    """

    name: Literal["sgd", "lars"] = "sgd"
    lr: float = 0.03
    lr_scaling: Literal["linear", "none"] = "linear"
    reference_batch_size: int = 256
    weight_decay: float = 1e-4
    momentum: float = 0.9
    nesterov: bool = False
    exclude_bias_and_norm: bool = False
    trust_coefficient: float = 0.001
    trust_ratio: TrustRatio = "byol"
    clip_lr: bool = False
    warmup_epochs: float = 0.0
    warmup_start_lr: float = 0.0
    warmup_ends_at_peak: bool = True
    final_lr: float = 0.0
    schedule_interval: Literal["step", "epoch"] = "step"


def scaled_lr(config: OptimConfig, global_batch_size: int) -> float:
    """The peak learning rate of a run whose optimiser step sees ``global_batch_size`` images."""
    if config.lr_scaling == "none":
        return config.lr
    if config.lr_scaling != "linear":
        raise ValueError(f"optim.lr_scaling must be 'linear' or 'none', got '{config.lr_scaling}'")
    return config.lr * global_batch_size / config.reference_batch_size


def parameter_groups(module: nn.Module, config: OptimConfig, skip: Sequence[torch.Tensor] = ()) -> list[dict]:
    """Trainable parameters (but ``skip``), with biases and normalisation weights (1-d
    tensors) in a group of their own without weight decay or LARS adaptation when the recipe
    excludes them."""
    skipped = {id(p) for p in skip}
    params = [p for p in module.parameters() if p.requires_grad and id(p) not in skipped]
    if not config.exclude_bias_and_norm:
        return [{"params": params}]
    regular = [p for p in params if p.ndim > 1]
    exempt = [p for p in params if p.ndim <= 1]
    return [{"params": regular}, {"params": exempt, "weight_decay": 0.0, "exclude": True}]


def build_optimizer(module: nn.Module, config: OptimConfig, global_batch_size: int,
                    skip: Sequence[torch.Tensor] = ()) -> torch.optim.Optimizer:
    groups = parameter_groups(module, config, skip)
    lr = scaled_lr(config, global_batch_size)
    if config.name == "lars":
        from .lars import LARS

        return LARS(groups, lr=lr, momentum=config.momentum, weight_decay=config.weight_decay,
                    trust_coefficient=config.trust_coefficient, trust_ratio=config.trust_ratio,
                    clip=config.clip_lr)
    if config.name != "sgd":
        raise ValueError(f"optim.name must be 'sgd' or 'lars', got '{config.name}'")
    for group in groups:
        group.pop("exclude", None)
    return torch.optim.SGD(groups, lr=lr, momentum=config.momentum, weight_decay=config.weight_decay,
                           nesterov=config.nesterov)


def lr_at(step: int, total: int, warmup: int, peak: float, start: float = 0.0, final: float = 0.0,
          warmup_ends_at_peak: bool = True) -> float:
    """Learning rate at ``step`` (0-based; steps or epochs) of ``total``: linear warm-up over
    ``warmup`` steps from ``start``, then ``final + (peak - final)(1 + cos(pi t / (total - warmup)))/2``
    with ``t = step - warmup``."""
    if step < warmup:
        span = warmup - 1 if warmup_ends_at_peak else warmup
        return start + (peak - start) * step / max(1, span)
    span = max(1, total - warmup)
    t = min(step - warmup, span)
    return final + (peak - final) * 0.5 * (1 + math.cos(math.pi * t / span))


def global_batch_size(module: pl.LightningModule) -> int:
    """Images per optimiser step over all ranks (data batch x world size x accumulation)."""
    trainer = module.trainer
    if trainer.datamodule is None:
        rank_zero_warn("no data module: the learning rate is not scaled by batch size")
        return 0
    return trainer.datamodule.batch_size * trainer.world_size * trainer.accumulate_grad_batches


def configure_optimization(module: pl.LightningModule, config: OptimConfig,
                           classifier: tuple[list[torch.Tensor], OnlineClassifierConfig] | None = None) -> dict:
    """Optimiser at the batch-scaled peak rate and its warm-up + cosine schedule (``lr_at``),
    stepped every optimiser step or every epoch as the recipe says; the step counts come from
    ``module.schedule`` (``SSLMethod.plan_schedule``). ``classifier``: the online classifier's
    parameters and config, in a last group of their own at the config's learning rate and
    weight decay (not batch-scaled, never LARS-adapted), on the recipe's schedule shape or
    constant."""
    own = classifier[0] if classifier is not None else []
    batch = global_batch_size(module) or config.reference_batch_size
    optimizer = build_optimizer(module, config, batch, skip=own)
    peak = scaled_lr(config, batch)
    if peak <= 0:
        raise ValueError(f"optim.lr must be positive, got {config.lr}")
    trainer = module.trainer
    if config.schedule_interval == "epoch":
        if trainer.max_epochs is None or trainer.max_epochs < 1:
            raise ValueError("optim.schedule_interval: epoch needs trainer.max_epochs; set it, or use 'step'")
        total, warmup = int(trainer.max_epochs), int(round(config.warmup_epochs))
    else:
        total = module.schedule.total_steps
        warmup = int(round(config.warmup_epochs * module.schedule.steps_per_epoch))

    def shape(step: int) -> float:
        return lr_at(step, total, warmup, peak, config.warmup_start_lr, config.final_lr, config.warmup_ends_at_peak) / peak

    lambdas = [shape] * len(optimizer.param_groups)
    if classifier is not None:
        online = classifier[1]
        optimizer.add_param_group({"params": own, "lr": online.lr, "weight_decay": online.weight_decay,
                                   "momentum": 0.9, "nesterov": False, "exclude": False, "adapt": False})
        lambdas.append(shape if online.schedule == "cosine" else (lambda step: 1.0))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)
    return {"optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": config.schedule_interval}}
