"""The online linear classifier: a linear layer trained on detached backbone features during
pretraining, so every epoch shows how linearly separable the features are, with no second
stage (solo-learn's ``BaseMethod`` classifier; Lightning Bolts' ``SSLOnlineEvaluator``).

It sees the features the method's own step computed (no extra backbone pass), never passes a
gradient back into the backbone, ignores samples labelled -1, and has its own parameter
group: its learning rate and weight decay are taken as given, not scaled with the batch and
never adapted by LARS. Features are standardised by running statistics first (as the linear
probes of MAE, He et al. 2022, put a BatchNorm without affine parameters before the head):
SGD on raw backbone features of changing scale trains far slower.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from sslkit.nn import distributed


@dataclass
class OnlineClassifierConfig:
    """``model.init_args.online_classifier`` (``null`` switches it off).

    ``lr``, ``weight_decay``: of its own SGD parameter group (solo-learn: ``classifier_lr``
    0.1, no weight decay), not batch-scaled and not LARS-adapted. ``schedule``: ``cosine``
    follows the method's warm-up and cosine shape, ``constant`` keeps ``lr``. ``views``:
    ``global`` trains on the large crops (solo-learn), ``all`` on every view the backbone
    sees. ``num_classes``: ``None`` = from the data's labels."""

    lr: float = 0.1
    weight_decay: float = 0.0
    schedule: Literal["cosine", "constant"] = "cosine"
    views: Literal["global", "all"] = "global"
    standardize: bool = True
    num_classes: int | None = None


class RunningStandardize(nn.Module):
    """``(x - mean) / sqrt(var + eps)`` per feature, with mean and variance the exponential
    moving averages (``momentum``) of the training batches' statistics, all-reduced over ranks
    so every rank holds the same; the first batch sets them. The same statistics serve training
    and evaluation: no train/eval gap, and results identical under DDP."""

    def __init__(self, dim: int, momentum: float = 0.01, eps: float = 1e-5) -> None:
        super().__init__()
        self.momentum, self.eps = momentum, eps
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("var", torch.ones(dim))
        self.register_buffer("batches", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def update(self, features: torch.Tensor) -> None:
        sums = torch.cat([features.new_tensor([features.shape[0]]), features.sum(0), features.pow(2).sum(0)]).double()
        sums = distributed.all_reduce_sum(sums)
        count, total, squares = sums[0], sums[1:features.shape[1] + 1], sums[features.shape[1] + 1:]
        mean = total / count
        var = (squares / count - mean.pow(2)).clamp_min(0)
        rate = 1.0 if int(self.batches) == 0 else self.momentum
        self.mean.lerp_(mean.to(self.mean.dtype), rate)
        self.var.lerp_(var.to(self.var.dtype), rate)
        self.batches += 1

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return (features - self.mean) / (self.var + self.eps).sqrt()


class OnlineClassifier(nn.Module):
    """A linear layer on detached features, with its train and val accuracy metrics
    (torchmetrics: synchronised across ranks when computed)."""

    def __init__(self, dim: int, num_classes: int, standardize: bool = True) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"the online classifier needs at least 2 classes, got {num_classes}")
        self.standardize = RunningStandardize(dim) if standardize else None
        self.linear = nn.Linear(dim, num_classes)
        self.num_classes = num_classes
        self.train_top1 = MulticlassAccuracy(num_classes, top_k=1, average="micro")
        self.val_top1 = MulticlassAccuracy(num_classes, top_k=1, average="micro")
        self.val_top5 = MulticlassAccuracy(num_classes, top_k=min(5, num_classes), average="micro")

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        features = features.detach().to(self.linear.weight.dtype)
        return self.linear(self.standardize(features) if self.standardize is not None else features)

    def loss(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor | None:
        """Cross-entropy on the labelled samples (label -1: unknown, left out); their
        accuracy joins ``train_top1``. ``None`` when no sample has a label."""
        known = labels >= 0
        if self.standardize is not None:
            self.standardize.update(features.detach().float())
        if not known.any():
            return None
        logits = self(features[known])
        self.train_top1.update(logits.detach(), labels[known])
        return F.cross_entropy(logits, labels[known])

    @torch.no_grad()
    def evaluate(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        known = labels >= 0
        if known.any():
            logits = self(features[known])
            self.val_top1.update(logits, labels[known])
            self.val_top5.update(logits, labels[known])
