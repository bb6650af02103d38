"""Split BatchNorm: BatchNorm statistics over sub-batches, for MoCo on one device.

MoCo's BatchNorm leak (He et al. 2020, sec. 3.3) is stopped across GPUs by shuffling keys;
on one device the authors' CIFAR-10 demo (``colab/moco_cifar10_demo.ipynb`` in
facebookresearch/moco) normalises ``num_splits`` interleaved sub-batches (sample ``n`` in
split ``n mod num_splits``) separately, and updates the running statistics once per step
with their mean over the splits. Evaluation is ordinary BatchNorm.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SplitBatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` (same parameters and buffers, so checkpoints load either way)
    whose training statistics come from ``num_splits`` interleaved sub-batches."""

    def __init__(self, num_features: int, num_splits: int, **kwargs) -> None:
        super().__init__(num_features, **kwargs)
        if num_splits < 1:
            raise ValueError(f"num_splits must be at least 1, got {num_splits}")
        self.num_splits = num_splits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.num_splits == 1:
            return super().forward(x)
        n, c = x.shape[:2]
        s = self.num_splits
        if n < s:
            raise ValueError(f"split BatchNorm with {s} splits needs at least {s} samples, got {n}")
        momentum = 0.1 if self.momentum is None else self.momentum
        if n % s == 0:
            mean = self.running_mean.repeat(s)
            var = self.running_var.repeat(s)
            out = F.batch_norm(x.reshape(n // s, c * s, *x.shape[2:]), mean, var, self.weight.repeat(s),
                               self.bias.repeat(s), True, momentum, self.eps).reshape(x.shape)
            means, variances = mean.view(s, c), var.view(s, c)
        else:  # a batch that lost images (bad_images: skip): the same interleaved splits, uneven
            out = torch.empty_like(x)
            means, variances = [], []
            for j in range(s):
                mean, var = self.running_mean.clone(), self.running_var.clone()
                out[j::s] = F.batch_norm(x[j::s], mean, var, self.weight, self.bias, True, momentum, self.eps)
                means.append(mean)
                variances.append(var)
            means, variances = torch.stack(means), torch.stack(variances)
        with torch.no_grad():
            self.running_mean.copy_(means.mean(0))
            self.running_var.copy_(variances.mean(0))
        return out


def convert_split_batchnorm(module: nn.Module, num_splits: int) -> nn.Module:
    """Replace every ``nn.BatchNorm2d`` of ``module`` by a ``SplitBatchNorm2d`` sharing its
    parameters and buffers; other normalisation layers are an error (naming the layer)."""
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            split = SplitBatchNorm2d(child.num_features, num_splits, eps=child.eps, momentum=child.momentum,
                                     affine=child.affine, track_running_stats=child.track_running_stats)
            split.weight, split.bias = child.weight, child.bias
            split.running_mean, split.running_var = child.running_mean, child.running_var
            split.num_batches_tracked = child.num_batches_tracked
            split.train(child.training)
            module.add_module(name, split)
        elif isinstance(child, nn.modules.batchnorm._BatchNorm) and not isinstance(child, SplitBatchNorm2d):
            raise ValueError(f"split BatchNorm supports nn.BatchNorm2d; '{name}' is a {type(child).__name__}")
        else:
            convert_split_batchnorm(child, num_splits)
    return module
