"""VICReg (Bardes, Ponce, LeCun 2022, arXiv 2105.04906) as an sslkit method.

Backbone + 3-layer expander; invariance between the two views' embeddings, and variance and
covariance regularisation of each view over the global batch (``sslkit.nn.losses.
vicreg_loss``).
"""
from __future__ import annotations

import torch
from jsonargparse import lazy_instance

from sslkit.augmentations import BYOLViews, MultiView
from sslkit.eval.knn import KNNConfig
from sslkit.eval.online import OnlineClassifierConfig
from sslkit.nn.backbones import BackboneConfig
from sslkit.nn.losses import vicreg_loss

from .barlow_twins import ProjectorBias, barlow_twins_projector
from .method import SSLMethod, embedding_spread
from .optim import OptimConfig
from .speed import SpeedConfig


class VICReg(SSLMethod):
    """VICReg.

    Args:
        backbone: the encoder (``BackboneConfig``).
        proj_hidden_dim, proj_output_dim: expander widths (``--mlp 8192-8192-8192``).
        proj_bias: which expander Linears have a bias (hidden, as ``Projector``; solo-learn's:
            all).
        sim_weight, var_weight, cov_weight: the loss coefficients (25, 25, 1).
        gather: variance and covariance over every rank's batch (``FullGatherLayer``).
        global_batchnorm: BatchNorm over the global batch under DDP (SyncBatchNorm there).
        augment: default BYOL's asymmetric pair, which ``augmentations.py`` is.
        optim: default ``main_vicreg.py``: LARS (trust 1e-3 on ``||g + wd w||``), lr 0.2 x B/256,
            wd 1e-6, biases and norms without weight decay or adaptation, 10 warm-up epochs from
            0, cosine to 0.001 x the peak.
        speed, knn, online_classifier: see ``SSLMethod``.
    """

    def __init__(
        self,
        backbone: BackboneConfig | str = "torchvision.resnet50",
        proj_hidden_dim: int = 8192,
        proj_output_dim: int = 8192,
        proj_bias: ProjectorBias = "hidden",
        sim_weight: float = 25.0,
        var_weight: float = 25.0,
        cov_weight: float = 1.0,
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
        self.weights = (sim_weight, var_weight, cov_weight)
        self.gather, self.use_global_batchnorm = gather, global_batchnorm

    def prepare(self) -> None:
        if self.use_global_batchnorm:
            self.global_batchnorm("backbone", "projector")

    def step(self, views: list[dict], labels: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
        z1, z2 = (self.projector(self.backbone(view["image"])) for view in views[:2])
        loss, parts = vicreg_loss(z1, z2, *self.weights, gather=self.gather)
        return loss, {**{f"train/{k}": v for k, v in parts.items()}, "train/embedding_spread": embedding_spread(z1)}
