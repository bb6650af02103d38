"""Barlow Twins (Zbontar, Jing, Misra, LeCun, Deny 2021, arXiv 2103.03230) as an sslkit method.

Backbone + 3-layer projector; the cross-correlation of the two views' standardised
embeddings over the global batch is pushed to the identity (``sslkit.nn.losses.
barlow_twins_loss``). Biases and norms train at their own rate (``param_groups``).
"""
from __future__ import annotations

from typing import Literal

import torch
from jsonargparse import lazy_instance
from torch import nn

from sslkit.augmentations import BYOLViews, MultiView
from sslkit.eval.knn import KNNConfig
from sslkit.eval.online import OnlineClassifierConfig
from sslkit.nn.backbones import BackboneConfig
from sslkit.nn.losses import barlow_twins_loss

from .method import SSLMethod, embedding_spread
from .optim import OptimConfig
from .speed import SpeedConfig


ProjectorBias = Literal["none", "hidden", "all"]


def barlow_twins_projector(input_dim: int, hidden_dim: int, output_dim: int, bias: ProjectorBias = "none"
                           ) -> nn.Sequential:
    """``main.py``'s projector (``--projector 8192-8192-8192``): 2 x [Linear, BN, ReLU], then
    Linear. ``bias``: which Linears have one: ``none`` (Barlow Twins), ``hidden`` (VICReg's
    ``Projector``), ``all`` (solo-learn's heads of both)."""
    if bias not in ("none", "hidden", "all"):
        raise ValueError(f"model.proj_bias must be none, hidden or all; got '{bias}'")
    hidden = bias != "none"
    return nn.Sequential(
        nn.Linear(input_dim, hidden_dim, bias=hidden), nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True),
        nn.Linear(hidden_dim, hidden_dim, bias=hidden), nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True),
        nn.Linear(hidden_dim, output_dim, bias=bias == "all"))


class BarlowTwins(SSLMethod):
    """Barlow Twins.

    Args:
        backbone: the encoder (``BackboneConfig``).
        proj_hidden_dim, proj_output_dim: projector widths (8192, 8192).
        proj_bias: which projector Linears have a bias (none; solo-learn's: all).
        lambd: weight of the off-diagonal term (0.0051).
        scale_loss: a factor on the whole loss (1; the first release's ``--scale-loss``,
            solo-learn's ``scale_loss``).
        lr_biases: the rate of biases and normalisation parameters at ``optim``'s reference
            batch (0.0048, ``--learning-rate-biases``), beside ``optim.lr`` for the weights (0.2,
            ``--learning-rate-weights``); both follow the schedule.
        gather: the cross-correlation over every rank's batch (the official code all-reduces
            it); False = each rank's own.
        global_batchnorm: BatchNorm over the global batch under DDP (SyncBatchNorm there).
        augment: default BYOL's asymmetric pair, which ``main.py``'s ``Transform`` is.
        optim: default ``main.py``: LARS (trust 1e-3 on ``||g + wd w||``), lr 0.2 x B/256, wd
            1e-6, biases and norms without weight decay or adaptation, 10 warm-up
            epochs from 0, cosine to 0.001 x the peak.
        speed, knn, online_classifier: see ``SSLMethod``.
    """

    def __init__(
        self,
        backbone: BackboneConfig | str = "torchvision.resnet50",
        proj_hidden_dim: int = 8192,
        proj_output_dim: int = 8192,
        proj_bias: ProjectorBias = "none",
        lambd: float = 0.0051,
        scale_loss: float = 1.0,
        lr_biases: float = 0.0048,
        gather: bool = True,
        global_batchnorm: bool = True,
        augment: MultiView = lazy_instance(BYOLViews),
        optim: OptimConfig | None = OptimConfig(name="lars", lr=0.2, weight_decay=1e-6, exclude_bias_and_norm=True,
                                         warmup_epochs=10, warmup_ends_at_peak=False, final_lr_ratio=0.001),
        speed: SpeedConfig | None = None,
        knn: KNNConfig | None = None,
        online_classifier: OnlineClassifierConfig | None = None,
    ) -> None:
        super().__init__(backbone, augment, optim, speed, knn, online_classifier)
        self.projector = barlow_twins_projector(self.backbone.dim, proj_hidden_dim, proj_output_dim, proj_bias)
        self.scale_loss = scale_loss
        self.lambd, self.lr_biases, self.gather, self.use_global_batchnorm = lambd, lr_biases, gather, global_batchnorm

    def param_groups(self) -> list[dict]:
        """Weights at ``optim.lr``; biases and norms (1-d tensors) at ``lr_biases``, without
        weight decay or LARS adaptation (``main.py``: ``param_weights``, ``param_biases``)."""
        params = self.trainable_parameters()
        return [{"name": "weights", "params": [p for p in params if p.ndim > 1]},
                {"name": "biases", "params": [p for p in params if p.ndim <= 1],
                 "lr_mult": self.lr_biases / self.optim.lr, "exclude": True}]

    def prepare(self) -> None:
        if self.use_global_batchnorm:
            self.global_batchnorm("backbone", "projector")

    def step(self, views: list[dict], labels: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
        z1, z2 = (self.projector(self.backbone(view["image"])) for view in views[:2])
        loss, parts = barlow_twins_loss(z1, z2, self.lambd, self.gather)
        return self.scale_loss * loss, {"train/on_diagonal": parts["on_diagonal"], "train/off_diagonal": parts["off_diagonal"],
                      "train/embedding_spread": embedding_spread(z1)}
