"""The online linear classifier: a linear layer trained on detached backbone features during
pretraining, so every epoch shows how linearly separable the features are, with no second
stage (solo-learn's ``BaseMethod`` classifier; Lightning Bolts' ``SSLOnlineEvaluator``).

It never passes a gradient back into the backbone, ignores samples labelled -1 and costs no
extra backbone pass. It learns from one of two sources:

- ``views: global`` (or ``all``): the features the method's own training step computed, of
  augmented crops, in its own parameter group (learning rate and weight decay taken as given,
  not scaled with the batch, never adapted by LARS). Features are standardised by running
  statistics first (as the linear probes of MAE, He et al. 2022, put a BatchNorm without
  affine parameters before the head): SGD on raw features of changing scale trains far slower.
  Trained on augmented views and scored on clean ones, it trails an offline probe while the
  features are weak.
- ``views: bank``: the clean features of the train split the validation pass already computes
  for the kNN monitor (evaluation view, backbone in eval mode, the probe's inputs). Before the
  queries are scored, the classifier is refitted on them by full-batch L-BFGS on the probe's
  objective, warm-started from the last fit: every validation epoch reports what an offline
  linear probe of that backbone would, without a second stage.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy
from torchmetrics.utilities.distributed import gather_all_tensors

from sslkit.eval.linear import minimize_logistic_loss
from sslkit.nn import distributed


@dataclass
class OnlineClassifierConfig:
    """``model.init_args.online_classifier`` (``null`` switches it off).

    ``views``: ``global`` trains in every step on the large crops (solo-learn), ``all`` on
    every view the backbone sees, ``bank`` refits at every validation on the kNN bank's clean
    features (the train split under the evaluation view). ``lr``, ``weight_decay``: of its
    own SGD parameter group (solo-learn: ``classifier_lr`` 0.1, no weight decay), not
    batch-scaled and not LARS-adapted; for ``bank``, ``weight_decay`` is the L2 strength of
    the fit (``mean CE + (weight_decay / 2) ||W||^2``, the same gradient) and ``lr`` is unused.
    ``schedule``: ``cosine`` follows the method's warm-up and cosine shape, ``constant`` keeps
    ``lr``. ``max_iter``: L-BFGS iterations per ``bank`` refit. ``num_classes``: ``None`` =
    from the data's labels."""

    lr: float = 0.1
    weight_decay: float = 0.0
    schedule: Literal["cosine", "constant"] = "cosine"
    views: Literal["global", "all", "bank"] = "global"
    standardize: bool = True
    num_classes: int | None = None
    max_iter: int = 100

    @property
    def in_step(self) -> bool:
        """Trained by the training step's optimiser (``global``, ``all``), not refitted on the bank."""
        return self.views != "bank"


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
        self._bank: list[tuple[torch.Tensor, torch.Tensor]] = []
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

    def collect(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """Keep a batch of bank features (this rank's part) for the next ``fit_bank``."""
        self._bank.append((features.detach().float(), labels.detach()))

    def drop_bank(self) -> None:
        self._bank = []

    def fit_bank(self, l2: float, max_iter: int) -> None:
        """Refit on the collected bank, gathered from every rank: standardisation by the bank's
        mean and variance, then ``mean CE + (l2 / 2) ||W||^2`` minimised by L-BFGS from the
        current weights. Fitted on rank 0 and sent to every rank, so all hold the same
        classifier; each rank's own part of the bank joins ``train_top1``."""
        if not self._bank:
            return
        local = torch.cat([f for f, _ in self._bank]), torch.cat([y for _, y in self._bank])
        self._bank = []
        features, labels = local
        if distributed.world_size() > 1:
            features = torch.cat(gather_all_tensors(features.contiguous()))
            labels = torch.cat(gather_all_tensors(labels.contiguous()))
        known = labels >= 0
        if not known.any():
            return
        x, y = features[known], labels[known]

        def fit() -> tuple[torch.Tensor, ...]:
            mean, var = (x.mean(0), x.var(0, unbiased=False)) if self.standardize is not None else (None, None)
            z = (x - mean) / (var + self.standardize.eps).sqrt() if mean is not None else x
            weight, bias = minimize_logistic_loss(z, y, l2, self.linear.weight, self.linear.bias, max_iter)
            return tuple(t.cpu() if t is not None else None for t in (mean, var, weight, bias))

        mean, var, weight, bias = distributed.from_rank_zero(fit)
        with torch.inference_mode(False), torch.no_grad():
            if self.standardize is not None:
                self.standardize.mean.copy_(mean)
                self.standardize.var.copy_(var)
                self.standardize.batches.fill_(1)
            self.linear.weight.copy_(weight)
            self.linear.bias.copy_(bias)
        features, labels = local
        if (labels >= 0).any():
            with torch.no_grad():
                self.train_top1.update(self(features[labels >= 0]), labels[labels >= 0])
