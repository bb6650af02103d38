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
    SwAV's ``main_swav.py`` and solo-learn), or, with ``final_lr_ratio``, to that fraction of
    the batch-scaled peak (Barlow Twins' and VICReg's ``main*.py`` end at 0.001 x the peak at
    any batch size). ``warmup_ends_at_peak``: the last warm-up step is
    at the peak (``np.linspace`` in ``main_swav.py``, solo-learn's
    ``LinearWarmupCosineAnnealingLR``), or, when False, warm-up is ``lr * t / W`` and the peak
    comes with the first cosine step (BYOL's ``byol/utils/schedules.py``).
    ``schedule_interval='epoch'`` changes the rate once per epoch (MoCo's ``main_moco.py``).

    AdamW (``name='adamw'``, ``betas``, ``eps``): the ViT recipes (MoCo v3 ``main_moco.py``,
    DINO ``main_dino.py``). ``weight_decay_end``: the weight decay follows a half cosine from
    ``weight_decay`` to it over the run, updated every step (DINO's ``wd_schedule``, from
    ``utils.cosine_scheduler`` without warm-up); excluded groups stay at 0.

    LARS (``name='lars'``, see ``sslkit.methods.lars``): ``trust_coefficient`` (eta),
    ``trust_ratio`` (``byol`` or ``larc``) and ``clip_lr``. ``exclude_bias_and_norm``: biases
    and normalisation weights (every 1-d tensor) get no weight decay and, with LARS, no
    trust ratio.

    Parameter groups come from the method (``SSLMethod.param_groups``): each may carry
    ``lr_mult``, ``weight_decay_mult``, ``fixed_lr`` and ``exclude`` (see ``optimizer_groups``).
    """

    name: Literal["sgd", "lars", "adamw"] = "sgd"
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
    final_lr_ratio: float | None = None
    schedule_interval: Literal["step", "epoch"] = "step"
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay_end: float | None = None


def scaled_lr(config: OptimConfig, global_batch_size: int) -> float:
    """The peak learning rate of a run whose optimiser step sees ``global_batch_size`` images."""
    if config.lr_scaling == "none":
        return config.lr
    if config.lr_scaling != "linear":
        raise ValueError(f"optim.lr_scaling must be 'linear' or 'none', got '{config.lr_scaling}'")
    return config.lr * global_batch_size / config.reference_batch_size


GROUP_KEYS = {"params", "name", "lr_mult", "weight_decay_mult", "fixed_lr", "exclude"}


def optimizer_groups(groups: Sequence[dict], config: OptimConfig, peak: float) -> list[dict]:
    """A method's parameter groups as the optimiser's: ``lr = peak x lr_mult`` (default 1),
    ``weight_decay = config.weight_decay x weight_decay_mult`` (default 1), ``fixed_lr``
    (default False: the group follows warm-up and cosine; True: it stays at its peak, as
    SimSiam's predictor with ``--fix-pred-lr``), ``exclude`` (default False: no weight decay and
    no LARS adaptation). With ``config.exclude_bias_and_norm`` the 1-d tensors of every group
    go to an excluded sibling group with the same rate. Empty groups are dropped."""
    out = []
    for index, group in enumerate(groups):
        unknown = set(group) - GROUP_KEYS
        if unknown:
            raise ValueError(f"parameter group {group.get('name', index)!r} has unknown keys {sorted(unknown)}; "
                             f"a group takes {sorted(GROUP_KEYS)}")
        name = group.get("name", f"group{index}")
        params = list(group["params"])
        common = {"name": name, "lr_mult": float(group.get("lr_mult", 1.0)),
                  "weight_decay_mult": float(group.get("weight_decay_mult", 1.0)),
                  "fixed_lr": bool(group.get("fixed_lr", False))}
        parts = [(params, bool(group.get("exclude", False)), name)]
        if config.exclude_bias_and_norm and not parts[0][1]:
            parts = [([p for p in params if p.ndim > 1], False, name),
                     ([p for p in params if p.ndim <= 1], True, f"{name}/bias_and_norm")]
        for part, exclude, part_name in parts:
            if part:
                wd = 0.0 if exclude else config.weight_decay * common["weight_decay_mult"]
                out.append({**common, "name": part_name, "params": part, "lr": peak * common["lr_mult"],
                            "weight_decay": wd, "exclude": exclude})
    return out


def check_groups(module: nn.Module, groups: Sequence[dict], skip: Sequence[torch.Tensor] = ()) -> None:
    """Every trainable parameter of ``module`` (but ``skip``) in exactly one group."""
    names = {id(p): n for n, p in module.named_parameters()}
    seen: dict[int, str] = {}
    for index, group in enumerate(groups):
        for p in group["params"]:
            if id(p) in seen:
                raise ValueError(f"parameter {names.get(id(p), '?')} is in two groups "
                                 f"({seen[id(p)]!r} and {group.get('name', index)!r})")
            seen[id(p)] = group.get("name", index)
    skipped = {id(p) for p in skip}
    missing = [n for n, p in module.named_parameters() if p.requires_grad and id(p) not in seen
               and id(p) not in skipped]
    if missing:
        raise ValueError(f"param_groups() leaves out trainable parameters {missing[:3]}"
                         f"{' ...' if len(missing) > 3 else ''}: put them in a group, or set requires_grad=False")


def build_optimizer(groups: nn.Module | Sequence[dict], config: OptimConfig, global_batch_size: int,
                    skip: Sequence[torch.Tensor] = ()) -> torch.optim.Optimizer:
    """The recipe's optimiser over ``groups`` (a module: one group of its trainable
    parameters but ``skip``), each group at ``optimizer_groups``' rate and weight decay."""
    if isinstance(groups, nn.Module):
        skipped = {id(p) for p in skip}
        groups = [{"params": [p for p in groups.parameters() if p.requires_grad and id(p) not in skipped]}]
    peak = scaled_lr(config, global_batch_size)
    groups = optimizer_groups(groups, config, peak)
    if config.name == "lars":
        from .lars import LARS

        return LARS(groups, lr=peak, momentum=config.momentum, weight_decay=config.weight_decay,
                    trust_coefficient=config.trust_coefficient, trust_ratio=config.trust_ratio,
                    clip=config.clip_lr)
    if config.name == "adamw":
        return torch.optim.AdamW(groups, lr=peak, betas=tuple(config.betas), eps=config.eps,
                                 weight_decay=config.weight_decay)
    if config.name != "sgd":
        raise ValueError(f"optim.name must be 'sgd', 'lars' or 'adamw', got '{config.name}'")
    return torch.optim.SGD(groups, lr=peak, momentum=config.momentum, weight_decay=config.weight_decay,
                           nesterov=config.nesterov)


def final_lr(config: OptimConfig, peak: float) -> float:
    """Where the cosine ends: ``final_lr``, or ``final_lr_ratio`` x the batch-scaled peak."""
    if config.final_lr_ratio is None:
        return config.final_lr
    if config.final_lr:
        raise ValueError(f"optim.final_lr ({config.final_lr}) and optim.final_lr_ratio ({config.final_lr_ratio}) "
                         f"both set: give one")
    return config.final_lr_ratio * peak


def weight_decay_at(config: OptimConfig, step: int, total: int) -> float:
    """The weight decay at optimiser step ``step`` of ``total``: ``weight_decay``, or with
    ``weight_decay_end`` the half cosine ``end + (start - end)(1 + cos(pi k / K))/2`` (DINO
    ``utils.cosine_scheduler(weight_decay, weight_decay_end, epochs, niter_per_ep)``)."""
    if config.weight_decay_end is None or total <= 0:
        return config.weight_decay
    t = min(max(step, 0), total) / total
    return config.weight_decay_end + (config.weight_decay - config.weight_decay_end) * 0.5 * (1 + math.cos(math.pi * t))


def schedule_weight_decay(optimizer: torch.optim.Optimizer, config: OptimConfig, step: int, total: int) -> None:
    """Every group's weight decay for ``step`` (``weight_decay_at`` x its ``weight_decay_mult``;
    excluded groups and the online classifier's keep theirs)."""
    if config.weight_decay_end is None:
        return
    wd = weight_decay_at(config, step, total)
    for group in optimizer.param_groups:
        if not group.get("exclude", False) and group.get("name") != "online_classifier":
            group["weight_decay"] = wd * group.get("weight_decay_mult", 1.0)


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


def configure_optimization(module: pl.LightningModule, config: OptimConfig, groups: Sequence[dict],
                           classifier: tuple[list[torch.Tensor], OnlineClassifierConfig] | None = None) -> dict:
    """Optimiser over the method's parameter ``groups`` at the batch-scaled peak rate, and
    their warm-up + cosine schedule (``lr_at``; a ``fixed_lr`` group stays at its peak),
    stepped every optimiser step or every epoch as the recipe says; the step counts come from
    ``module.schedule`` (``SSLMethod.plan_schedule``). ``classifier``: the online classifier's
    parameters and config, in a last group of their own at the config's learning rate and
    weight decay (not batch-scaled, never LARS-adapted), on the recipe's schedule shape or
    constant."""
    own = classifier[0] if classifier is not None else []
    check_groups(module, groups, skip=own)
    batch = global_batch_size(module) or config.reference_batch_size
    optimizer = build_optimizer(groups, config, batch)
    peak = scaled_lr(config, batch)
    if peak <= 0:
        raise ValueError(f"optim.lr must be positive, got {config.lr}")
    end = final_lr(config, peak)
    trainer = module.trainer
    if config.schedule_interval == "epoch":
        if trainer.max_epochs is None or trainer.max_epochs < 1:
            raise ValueError("optim.schedule_interval: epoch needs trainer.max_epochs; set it, or use 'step'")
        total, warmup = int(trainer.max_epochs), int(round(config.warmup_epochs))
    else:
        total = module.schedule.total_steps
        warmup = int(round(config.warmup_epochs * module.schedule.steps_per_epoch))

    def shape(step: int) -> float:
        return lr_at(step, total, warmup, peak, config.warmup_start_lr, end, config.warmup_ends_at_peak) / peak

    def constant(step: int) -> float:
        return 1.0

    lambdas = [constant if group["fixed_lr"] else shape for group in optimizer.param_groups]
    if classifier is not None:
        online = classifier[1]
        optimizer.add_param_group({"params": own, "lr": online.lr, "weight_decay": online.weight_decay,
                                   "momentum": 0.9, "nesterov": False, "exclude": False, "adapt": False,
                                   "name": "online_classifier", "lr_mult": 1.0, "weight_decay_mult": 1.0,
                                   "fixed_lr": online.schedule != "cosine"})
        lambdas.append(shape if online.schedule == "cosine" else constant)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)
    return {"optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": config.schedule_interval}}
