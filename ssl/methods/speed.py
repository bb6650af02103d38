"""Speed switches every method takes (``model.init_args.speed`` in YAML); numerical
precision is the trainer's (``trainer.precision: bf16-mixed | 16-mixed | 32``)."""
from __future__ import annotations

import shutil
from dataclasses import dataclass

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_warn


@dataclass
class SpeedConfig:
    """``channels_last``: NHWC memory format for the networks and the views (faster
    convolutions on recent GPUs). ``compile``: ``torch.compile`` the backbone(s) in place
    (checkpoint keys unchanged) with ``compile_backend`` and ``compile_mode``."""

    channels_last: bool = False
    compile: bool = False
    compile_backend: str = "inductor"
    compile_mode: str | None = None


def compiler_available(device: torch.device, backend: str) -> str | None:
    """``None`` if ``backend`` can compile for ``device``, else the reason it cannot."""
    if not hasattr(torch, "compile"):
        return "this torch has no torch.compile"
    if backend == "inductor" and device.type == "cpu" and not (shutil.which("c++") or shutil.which("g++")):
        return "inductor on CPU needs a C++ compiler (c++/g++), and none is on PATH"
    return None


def apply_speed(module: pl.LightningModule, config: SpeedConfig) -> None:
    """Apply ``config`` to ``module`` (called from ``setup``); compile is skipped with a
    warning naming the reason where the compiler is unavailable."""
    if config.channels_last:
        module.to(memory_format=torch.channels_last)
    if not config.compile:
        return
    reason = compiler_available(module.device if module.trainer is None else module.trainer.strategy.root_device,
                                config.compile_backend)
    if reason is not None:
        rank_zero_warn(f"speed.compile skipped: {reason}")
        return
    for name in ("backbone", "key_backbone", "target_backbone"):
        backbone = getattr(module, name, None)
        if backbone is not None:
            backbone.model.compile(backend=config.compile_backend, mode=config.compile_mode)


def to_memory_format(views: list[dict], config: SpeedConfig) -> list[dict]:
    if config.channels_last:
        for view in views:
            view["image"] = view["image"].contiguous(memory_format=torch.channels_last)
    return views


torch.serialization.add_safe_globals([SpeedConfig])
