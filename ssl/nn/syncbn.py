"""Batch normalisation over the global batch of all ranks, on any device.

torch's ``nn.SyncBatchNorm`` runs on GPUs only. ``GlobalBatchNorm`` computes the
per-channel sum, sum of squares and count on each rank, all-reduces them with autograd
(``torch.distributed.nn.functional.all_reduce``), and normalises with the global mean and
biased variance, so B/2 samples on each of 2 ranks normalise exactly as B samples on one
(SimCLR/BYOL's "global BN"). Running statistics use the unbiased global variance, as
``nn.BatchNorm`` does. With one process it is plain BatchNorm.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from pytorch_lightning.plugins import LayerSync
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from .distributed import world_size


class GlobalBatchNorm(_BatchNorm):
    """Drop-in for ``BatchNorm1d/2d/3d`` whose training statistics span all ranks."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input, got {input.dim()}D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or world_size() == 1:
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        dims = [0] + list(range(2, x.dim()))
        local = torch.cat([x.sum(dims), (x * x).sum(dims),
                           torch.full((1,), x.numel() / x.shape[1], device=x.device, dtype=x.dtype)])
        total = all_reduce(local.float(), op=dist.ReduceOp.SUM)
        channels = x.shape[1]
        count = total[-1]
        mean = total[:channels] / count
        var = (total[channels:2 * channels] / count - mean * mean).clamp_min(0)
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked + 1)
                self.running_mean.lerp_(mean.detach().to(self.running_mean), momentum)
                unbiased = var.detach() * count / (count - 1).clamp_min(1)
                self.running_var.lerp_(unbiased.to(self.running_var), momentum)
                self.num_batches_tracked += 1
        shape = [1, channels] + [1] * (x.dim() - 2)
        out = (x - mean.view(shape).to(x.dtype)) * torch.rsqrt(var.view(shape) + self.eps).to(x.dtype)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out


def convert_global_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm (including torch's SyncBatchNorm) in ``module`` by a
    ``GlobalBatchNorm`` sharing its parameters and statistics (a frozen momentum encoder
    stays frozen)."""
    if isinstance(module, _BatchNorm) and not isinstance(module, GlobalBatchNorm):
        converted = GlobalBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                                    module.track_running_stats)
        if module.affine:  # the same Parameter objects: requires_grad and optimiser state carry over
            converted.weight, converted.bias = module.weight, module.bias
        if module.track_running_stats:
            converted.running_mean = module.running_mean
            converted.running_var = module.running_var
            converted.num_batches_tracked = module.num_batches_tracked
        converted.train(module.training)
        return converted
    for name, child in module.named_children():
        module.add_module(name, convert_global_batchnorm(child))
    return module


def synchronise_batchnorm(module: nn.Module, on_gpu: bool) -> nn.Module:
    """Every BatchNorm of ``module`` normalised over the global batch: torch's
    ``SyncBatchNorm`` on GPUs, ``GlobalBatchNorm`` elsewhere."""
    return nn.SyncBatchNorm.convert_sync_batchnorm(module) if on_gpu else convert_global_batchnorm(module)


class GlobalBatchNormPlugin(LayerSync):
    """Lightning plugin: global BatchNorm on any accelerator, CPUs included
    (``trainer.plugins: [sslkit.nn.syncbn.GlobalBatchNormPlugin]`` instead of
    ``trainer.sync_batchnorm: true``, which needs GPUs)."""

    def apply(self, model: nn.Module) -> nn.Module:
        return convert_global_batchnorm(model)

    def revert(self, model: nn.Module) -> nn.Module:
        return model
