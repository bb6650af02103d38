"""SimSiam (Chen & He 2021, arXiv 2011.10566) as an sslkit method.

Backbone + 3-layer projector + bottleneck predictor; each view's prediction regresses the
other view's projection under a stop-gradient (``sslkit.nn.losses.negative_cosine``),
symmetrised; no momentum encoder, no negatives.
"""
from __future__ import annotations

import torch
from jsonargparse import lazy_instance
from torch import nn

from sslkit.augmentations import MoCoV2Views, MultiView
from sslkit.eval.knn import KNNConfig
from sslkit.eval.online import OnlineClassifierConfig
from sslkit.nn.backbones import BackboneConfig
from sslkit.nn.losses import negative_cosine

from .method import SSLMethod, embedding_spread
from .optim import OptimConfig
from .speed import SpeedConfig


def simsiam_projector(input_dim: int, hidden_dim: int, output_dim: int) -> nn.Sequential:
    """SimSiam's projector (``simsiam/builder.py``): 2 x [Linear (no bias), BN, ReLU], then
    Linear, whose bias is frozen (a BN follows), and BN without affine parameters."""
    last = nn.Linear(hidden_dim, output_dim)
    last.bias.requires_grad_(False)
    return nn.Sequential(
        nn.Linear(input_dim, hidden_dim, bias=False), nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True),
        nn.Linear(hidden_dim, hidden_dim, bias=False), nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True),
        last, nn.BatchNorm1d(output_dim, affine=False))


def simsiam_predictor(dim: int, hidden_dim: int) -> nn.Sequential:
    """SimSiam's bottleneck predictor: Linear (no bias), BN, ReLU, Linear."""
    return nn.Sequential(nn.Linear(dim, hidden_dim, bias=False), nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True),
                         nn.Linear(hidden_dim, dim))


class SimSiam(SSLMethod):
    """SimSiam.

    Args:
        backbone: the encoder (``BackboneConfig``).
        proj_hidden_dim: projector hidden width; ``None`` = the backbone's feature size (the
            official code turns ResNet-50's 2048-d ``fc`` into the projector).
        proj_output_dim: embedding size (2048).
        pred_hidden_dim: predictor bottleneck (512).
        fix_pred_lr: the predictor's rate stays at the batch-scaled peak, neither warmed up nor
            decayed (``main_simsiam.py --fix-pred-lr``, as the README's command runs it).
        pred_lr_mult: the predictor's rate as a multiple of the encoder's (1, as SimSiam; Tian et
            al. 2021, arXiv 2102.06810, study a faster predictor).
        global_batchnorm: BatchNorm over the global batch under DDP (SyncBatchNorm there).
        augment: default MoCo v2's views (``main_simsiam.py``).
        optim: default ``main_simsiam.py``: SGD lr 0.05 x B/256, momentum 0.9, wd 1e-4 on every
            parameter, cosine per epoch to 0, no warm-up.
        speed, knn, online_classifier: see ``SSLMethod``.
    """

    def __init__(
        self,
        backbone: BackboneConfig | str = "torchvision.resnet50",
        proj_hidden_dim: int | None = None,
        proj_output_dim: int = 2048,
        pred_hidden_dim: int = 512,
        fix_pred_lr: bool = True,
        pred_lr_mult: float = 1.0,
        global_batchnorm: bool = True,
        augment: MultiView = lazy_instance(MoCoV2Views),
        optim: OptimConfig | None = OptimConfig(lr=0.05, weight_decay=1e-4, schedule_interval="epoch"),
        speed: SpeedConfig | None = None,
        knn: KNNConfig | None = None,
        online_classifier: OnlineClassifierConfig | None = None,
    ) -> None:
        super().__init__(backbone, augment, optim, speed, knn, online_classifier)
        self.projector = simsiam_projector(self.backbone.dim, proj_hidden_dim or self.backbone.dim, proj_output_dim)
        self.predictor = simsiam_predictor(proj_output_dim, pred_hidden_dim)
        self.fix_pred_lr, self.use_global_batchnorm = fix_pred_lr, global_batchnorm
        self.pred_lr_mult = pred_lr_mult

    def param_groups(self) -> list[dict]:
        """The encoder (backbone + projector) on the schedule; the predictor at a fixed rate
        with ``fix_pred_lr``."""
        predictor = [p for p in self.predictor.parameters() if p.requires_grad]
        encoder = [p for p in [*self.backbone.parameters(), *self.projector.parameters()] if p.requires_grad]
        return [{"name": "encoder", "params": encoder},
                {"name": "predictor", "params": predictor, "fixed_lr": self.fix_pred_lr, "lr_mult": self.pred_lr_mult}]

    def prepare(self) -> None:
        if self.use_global_batchnorm:
            self.global_batchnorm("backbone", "projector", "predictor")

    def step(self, views: list[dict], labels: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
        """0.5 (D(p1, z2) + D(p2, z1)), SimSiam eq. 2."""
        z1, z2 = (self.projector(self.backbone(view["image"])) for view in views[:2])
        p1, p2 = self.predictor(z1), self.predictor(z2)
        loss = 0.5 * (negative_cosine(p1, z2) + negative_cosine(p2, z1))
        return loss, {"train/embedding_spread": embedding_spread(z1)}
