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
    convolutions on recent GPUs; ignored for ViTs, whose tokens gain nothing from it).
    ``activation_checkpointing``: keep only each block's input in the forward pass and
    recompute the block in the backward (timm's ``set_grad_checkpointing``): the same
    gradients, activation memory of one block instead of all, about a third more compute;
    for ViT-L-size runs (``docs/recipes.md``). ``compile``: ``torch.compile`` the backbone(s) in place
    (checkpoint keys unchanged) with ``compile_backend`` and ``compile_mode``.
    ``reuse_memory``: on a CPU, keep freed memory in the process for the next batch
    (``keep_freed_memory``) instead of returning it to the system and faulting it in again:
    augmentation of 224 px batches on a CPU spends a third of its time on those page faults."""

    channels_last: bool = False
    activation_checkpointing: bool = False
    compile: bool = False
    compile_backend: str = "inductor"
    compile_mode: str | None = None
    reuse_memory: bool = False


def keep_freed_memory() -> bool:
    """Ask glibc's allocator to keep large freed blocks for reuse (``mallopt`` with high
    mmap and trim thresholds), what tcmalloc or jemalloc do by default and PyTorch's CPU
    performance guide recommends. The process keeps its peak memory. False where the C
    library is not glibc."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(mallopt(m_mmap_threshold, 1 << 30)) and bool(mallopt(m_trim_threshold, 1 << 31))


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
    vit = any(getattr(backbone, "vit", False) for backbone in module.encoders())
    if config.channels_last and vit:
        rank_zero_warn("speed.channels_last ignored: the backbone is a Vision Transformer")
        config.channels_last = False
    if config.channels_last:
        module.to(memory_format=torch.channels_last)
    if config.activation_checkpointing:
        for backbone in module.encoders():
            if not hasattr(backbone.model, "set_grad_checkpointing"):
                raise ValueError(f"speed.activation_checkpointing needs a timm backbone; '{backbone.name}' has no "
                                 f"set_grad_checkpointing")
            backbone.model.set_grad_checkpointing(True)
    trainer = module._trainer
    device = module.device if trainer is None else trainer.strategy.root_device
    if config.reuse_memory and device.type == "cpu" and not keep_freed_memory():
        rank_zero_warn("speed.reuse_memory skipped: the C library is not glibc")
    if not config.compile:
        return
    reason = compiler_available(device, config.compile_backend)
    if reason is not None:
        rank_zero_warn(f"speed.compile skipped: {reason}")
        return
    for backbone in module.encoders():
        backbone.model.compile(backend=config.compile_backend, mode=config.compile_mode)


def to_memory_format(views: list[dict], config: SpeedConfig) -> list[dict]:
    if config.channels_last:
        for view in views:
            view["image"] = view["image"].contiguous(memory_format=torch.channels_last)
    return views

