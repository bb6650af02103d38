"""SwAV (Caron et al. 2020, arXiv 2006.09882) as an sslkit method.

Embeddings are scored against learnable prototypes; Sinkhorn-Knopp turns the scores of
each global crop into balanced codes, and every other crop predicts them (swapped
prediction). Multi-crop views of one resolution go through the backbone together.
"""
from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from jsonargparse import lazy_instance
from torch import nn

from sslkit.augmentations import IMAGENET_MEAN, MultiCropViews, MultiView
from sslkit.augmentations.recipes import SWAV_STD
from sslkit.eval.knn import KNNConfig
from sslkit.eval.online import OnlineClassifierConfig
from sslkit.nn import distributed
from sslkit.nn.backbones import BackboneConfig
from sslkit.nn.heads import mlp_head
from sslkit.nn.losses import sinkhorn, swav_loss
from sslkit.nn.queue import FeatureQueue

from .method import SSLMethod, embedding_spread
from .optim import OptimConfig
from .speed import SpeedConfig


class SwAV(SSLMethod):
    """SwAV with multi-crop.

    Args:
        backbone: the network (``BackboneConfig``).
        proj_hidden_dim, proj_output_dim: projector ``Linear-BN-ReLU-Linear`` (2048 -> 128).
        num_prototypes: K (3000 on ImageNet; fewer on small data).
        prototype_norm: ``renormalize`` (each prototype rescaled to unit length before every
            step, ``main_swav.py``) or ``weight_norm`` (prototypes ``v / ||v||`` with the
            gradient through the normalisation, solo-learn's ``nn.utils.weight_norm`` with g = 1).
        temperature: tau of the swapped-prediction softmax (0.1).
        epsilon, sinkhorn_iterations: Sinkhorn regularisation (0.05) and iterations (3).
        freeze_prototypes_epochs: prototypes get no update during this many initial epochs
            (``freeze_prototypes_niters`` 313 at batch 4096 and 5005 at batch 256 in SwAV's
            scripts: one epoch of ImageNet either way), counted in optimiser steps from the
            run's ``schedule``.
        queue_size: global number of past embeddings per global crop added to the scores
            when computing codes (0 = off; ``queue_length`` 3840 in SwAV's batch-256 scripts).
            As in ``main_swav.py`` it is cut to a multiple of the global batch and each of the W
            ranks scores ``queue_size / W`` of them, so Sinkhorn sees the whole queue once.
        queue_start_epoch: the queue is used from this epoch on, once full.
        queue_fill_epoch: embeddings enter the queue from this epoch on; ``None`` = from
            ``queue_start_epoch`` (``main_swav.py``); solo-learn fills it from epoch 0.
        augment: default ``MultiCropViews()`` (2 x 224 + 6 x 96) with SwAV's ImageNet
            normalisation (std 0.228, 0.224, 0.225).
        optim: default SwAV's 800-epoch batch-4096 script: LARC (trust 0.001, no clipping)
            over all parameters, lr 4.8 (not batch-scaled), 10 warm-up epochs from 0.3, cosine
            to 0.0048, wd 1e-6.
        speed, knn, online_classifier: see ``SSLMethod``.
    """

    legacy_names = {"queue_length": "queue_size"}

    def __init__(
        self,
        backbone: BackboneConfig | str = "torchvision.resnet50",
        proj_hidden_dim: int = 2048,
        proj_output_dim: int = 128,
        num_prototypes: int = 3000,
        prototype_norm: Literal["renormalize", "weight_norm"] = "renormalize",
        temperature: float = 0.1,
        epsilon: float = 0.05,
        sinkhorn_iterations: int = 3,
        freeze_prototypes_epochs: float = 1.0,
        queue_size: int = 0,
        queue_start_epoch: int = 15,
        queue_fill_epoch: int | None = None,
        augment: MultiView = lazy_instance(MultiCropViews, mean=IMAGENET_MEAN, std=SWAV_STD),
        optim: OptimConfig | None = OptimConfig(name="lars", lr=4.8, lr_scaling="none", weight_decay=1e-6,
                                         trust_coefficient=0.001, trust_ratio="larc", warmup_epochs=10,
                                         warmup_start_lr=0.3, final_lr=0.0048),
        speed: SpeedConfig | None = None,
        knn: KNNConfig | None = None,
        online_classifier: OnlineClassifierConfig | None = None,
    ) -> None:
        super().__init__(backbone, augment, optim, speed, knn, online_classifier)
        if num_prototypes < 2:
            raise ValueError(f"model.num_prototypes must be at least 2, got {num_prototypes}")
        if prototype_norm not in ("renormalize", "weight_norm"):
            raise ValueError(f"model.prototype_norm must be renormalize or weight_norm, got '{prototype_norm}'")
        self.projector = mlp_head(self.backbone.dim, proj_hidden_dim, proj_output_dim, batch_norm=True)
        self.prototype_norm = prototype_norm
        self.prototypes = (nn.Linear(proj_output_dim, num_prototypes, bias=False) if prototype_norm == "renormalize"
                           else NormalizedLinear(proj_output_dim, num_prototypes))
        self.temperature = temperature
        self.epsilon = epsilon
        self.sinkhorn_iterations = sinkhorn_iterations
        self.freeze_prototypes_epochs = freeze_prototypes_epochs
        self.queue_start_epoch = queue_start_epoch
        self.queue_fill_epoch = queue_start_epoch if queue_fill_epoch is None else queue_fill_epoch
        self.num_global = getattr(self.augment, "num_global", 2)
        self.queue_size = queue_size
        self.queues = nn.ModuleList(FeatureQueue(queue_size, proj_output_dim) for _ in range(self.num_global)
                                    ) if queue_size > 0 else None

    @property
    def freeze_steps(self) -> int:
        """The optimiser steps in which prototypes get no update: ``freeze_prototypes_epochs``
        of the run's ``schedule``."""
        return int(round(self.freeze_prototypes_epochs * self.schedule.steps_per_epoch))

    @torch.no_grad()
    def normalize_prototypes(self) -> None:
        """``renormalize``: every prototype back to unit length before the step (``main_swav.py``);
        ``weight_norm`` normalises inside the forward instead."""
        if self.prototype_norm == "renormalize":
            self.prototypes.weight.copy_(F.normalize(self.prototypes.weight, dim=1))

    def embed(self, views: list[dict]) -> list[torch.Tensor]:
        """L2-normalised projections per crop; crops of one resolution share a forward."""
        images = [v["image"] for v in views]
        out: list[torch.Tensor] = []
        start = 0
        while start < len(images):
            end = start
            while end < len(images) and images[end].shape[-2:] == images[start].shape[-2:]:
                end += 1
            group = torch.cat(images[start:end])
            z = F.normalize(self.projector(self.backbone(group)), dim=1)
            out.extend(z.chunk(end - start))
            start = end
        return out

    def _queue_scores(self, crop: int) -> torch.Tensor | None:
        """Scores of this rank's share of the queue of global crop ``crop`` against the
        current prototypes, once the queue is in use and full; else ``None``."""
        if self.queues is None or self.current_epoch < self.queue_start_epoch:
            return None
        queue = self.queues[crop]
        if int(queue.filled) < queue.size:
            return None
        share = queue.size // distributed.world_size()
        rank = distributed.rank()
        return self.prototypes(queue.keys[rank * share:(rank + 1) * share])

    def step_logits(self, views: list[dict]) -> torch.Tensor:
        """The logits of the student's softmax in ``step``'s swapped prediction, ``scores / tau``
        of every crop against the prototypes (renormalised first, as ``step`` does), the crops'
        rows stacked: ``[crops x B, K]``. (The loss weighs a crop by the codes it predicts,
        ``num_global - 1`` for a global crop and ``num_global`` for a local one; the rows here weigh
        alike, so their Fisher is the loss's own Gauss-Newton matrix when there are only global
        crops.) The codes do not enter: as in ``step``, and so in every Hessian and Fisher that
        sslkit.eval.objectives measures of SwAV, they and the prototypes are held fixed; those
        measure part of the objective (the networks of ``trained_blocks``, prototypes left out)."""
        if len(views) < self.num_global:
            raise ValueError(f"SwAV needs at least {self.num_global} global crops, got {len(views)} views")
        self.normalize_prototypes()
        return torch.cat([self.prototypes(z) for z in self.embed(views)]) / self.temperature

    def step(self, views: list[dict], labels: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Swapped-prediction loss over all crops. Returns (loss, stats)."""
        if len(views) < self.num_global:
            raise ValueError(f"SwAV needs at least {self.num_global} global crops, got {len(views)} views")
        self.normalize_prototypes()
        embeddings = self.embed(views)
        scores = [self.prototypes(z) for z in embeddings]
        batch = embeddings[0].shape[0]
        codes = []
        # The codes are targets computed under no_grad (main_swav.py): no gradient, and so no Hessian
        # (sslkit landscape, LandscapeMonitor), passes through Sinkhorn; a landscape of this loss holds
        # them (and the prototypes, which trained_blocks leaves out) fixed: part of the objective.
        with torch.no_grad():
            for s in range(self.num_global):
                if not torch.isfinite(scores[s]).all():
                    raise FloatingPointError(
                        f"non-finite prototype scores at global step {self.global_step} "
                        f"(crop {s}): lower the learning rate or check the data"
                    )
                crop_scores = scores[s].detach()
                queued = self._queue_scores(s)
                if queued is not None:
                    crop_scores = torch.cat([queued, crop_scores])
                codes.append(sinkhorn(crop_scores, self.epsilon, self.sinkhorn_iterations)[-batch:])
            if self.queues is not None and self.current_epoch >= self.queue_fill_epoch:
                for queue, z in zip(self.queues, embeddings[: self.num_global]):
                    queue.enqueue(z)
        loss = swav_loss(scores, codes, self.temperature)
        with torch.no_grad():
            q = torch.cat(codes)
            entropy = -(q * q.clamp_min(1e-12).log()).sum(1).mean()
            usage = q.mean(0)
            usage_entropy = -(usage * usage.clamp_min(1e-12).log()).sum()
        stats = {
            "train/code_entropy": entropy,
            "train/embedding_spread": embedding_spread(embeddings[0]),
            "train/prototype_usage_entropy": usage_entropy,
            "train/log_num_prototypes": torch.tensor(math.log(self.prototypes.out_features)),
        }
        return loss, stats

    def on_after_backward(self) -> None:
        if self.global_step < self.freeze_steps:
            for p in self.prototypes.parameters():
                p.grad = None

    def check_data(self, datamodule, world_size: int = 1) -> None:
        """Besides the recipe: a queue at least one global batch long."""
        super().check_data(datamodule, world_size)
        batch = datamodule.batch_size
        if self.queues is not None and self.queue_size < batch * world_size:
            raise ValueError(f"model.queue_size={self.queue_size} is shorter than the global batch "
                             f"({batch} x {world_size} ranks); raise it or set it to 0")

    def prepare(self) -> None:
        """``main_swav.py``: ``queue_length -= queue_length % (batch_size * world_size)``."""
        data = self.trainer.datamodule
        if self.queues is None or data is None:
            return
        batch = data.batch_size
        length = self.queue_size - self.queue_size % (batch * self.trainer.world_size)
        if length != self.queues[0].size:
            dim = self.queues[0].dim
            self.queues = nn.ModuleList(FeatureQueue(length, dim) for _ in range(self.num_global)).to(self.device)


class NormalizedLinear(nn.Module):
    """``x @ (v / ||v||)^T`` with unit-length rows: prototypes as weight normalisation with
    the gain fixed at 1 (solo-learn's ``nn.utils.weight_norm`` with ``weight_g = 1`` frozen)."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Linear(in_features, out_features, bias=False).weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, F.normalize(self.weight, dim=1))
