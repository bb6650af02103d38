"""BYOL (Grill et al. 2020, arXiv 2006.07733) as an sslkit method.

Online network = backbone + projector + predictor; momentum (target) network = the EMA of
backbone + projector; the online prediction of one view regresses the target projection of
the other, symmetrised (``sslkit.nn.losses.byol_loss``).
"""
from __future__ import annotations

import torch
from jsonargparse import lazy_instance
from torch import nn

from sslkit.augmentations import BYOLViews, MultiView
from sslkit.eval.knn import KNNConfig
from sslkit.eval.online import OnlineClassifierConfig
from sslkit.nn.backbones import BackboneConfig
from sslkit.nn.heads import mlp_head
from sslkit.nn.losses import byol_loss
from sslkit.nn.momentum import cosine_momentum, momentum_copy

from .method import SSLMethod, embedding_spread
from .optim import OptimConfig
from .speed import SpeedConfig


class BYOL(SSLMethod):
    """BYOL.

    Args:
        backbone: the online network's backbone (``BackboneConfig``).
        proj_hidden_dim, proj_output_dim: projector ``Linear-BN-ReLU-Linear`` (4096 -> 256).
        pred_hidden_dim: predictor hidden width (4096; output = ``proj_output_dim``).
        pred_lr_mult: the predictor's rate as a multiple of the scheduled one (1, as BYOL; Tian
            et al. 2021, arXiv 2102.06810, study a faster predictor). At 1 all parameters form
            one group, as checkpoints of earlier versions expect.
        momentum, momentum_end: the target's EMA rate tau follows
            ``1 - (1 - momentum)(cos(pi k / K) + 1) / 2`` from ``momentum`` at step 0 to
            ``momentum_end`` at the last step K (BYOL's tau_base 0.996 -> 1).
        augment: default ``BYOLViews()`` (the asymmetric recipe).
        optim: default BYOL's ImageNet recipe (``byol/utils/optimizers.py``, ``schedules.py``):
            LARS (trust 1e-3 on ``||g + wd w||``), lr 0.2 x B/256, wd 1.5e-6, biases and norms
            excluded, 10 warm-up epochs from 0, cosine to 0.
        speed, knn, online_classifier: see ``SSLMethod``.
    """

    legacy_names = {"tau_base": "momentum", "tau_final": "momentum_end"}

    def __init__(
        self,
        backbone: BackboneConfig | str = "torchvision.resnet50",
        proj_hidden_dim: int = 4096,
        proj_output_dim: int = 256,
        pred_hidden_dim: int = 4096,
        pred_lr_mult: float = 1.0,
        momentum: float = 0.996,
        momentum_end: float = 1.0,
        augment: MultiView = lazy_instance(BYOLViews),
        optim: OptimConfig | None = OptimConfig(name="lars", lr=0.2, weight_decay=1.5e-6, exclude_bias_and_norm=True,
                                         warmup_epochs=10, warmup_ends_at_peak=False),
        speed: SpeedConfig | None = None,
        knn: KNNConfig | None = None,
        online_classifier: OnlineClassifierConfig | None = None,
    ) -> None:
        super().__init__(backbone, augment, optim, speed, knn, online_classifier)
        self.projector = mlp_head(self.backbone.dim, proj_hidden_dim, proj_output_dim, batch_norm=True)
        self.predictor = mlp_head(proj_output_dim, pred_hidden_dim, proj_output_dim, batch_norm=True)
        self.momentum_backbone = momentum_copy(self.backbone)
        self.momentum_projector = momentum_copy(self.projector)
        self.momentum, self.momentum_end = momentum, momentum_end
        self.pred_lr_mult = pred_lr_mult

    def param_groups(self) -> list[dict]:
        """One group, or the backbone + projector and, at ``pred_lr_mult`` x their rate, the predictor."""
        if self.pred_lr_mult == 1.0:
            return super().param_groups()
        predictor = [p for p in self.predictor.parameters() if p.requires_grad]
        ids = {id(p) for p in predictor}
        return [{"name": "encoder", "params": [p for p in self.trainable_parameters() if id(p) not in ids]},
                {"name": "predictor", "params": predictor, "lr_mult": self.pred_lr_mult}]

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.backbone, self.momentum_backbone), (self.projector, self.momentum_projector)]

    def momentum_at(self, step: int) -> float:
        """tau_k of BYOL sec. 3.1 (``target_ema`` in ``byol/utils/schedules.py``; k = 0 gives ``momentum``)."""
        return cosine_momentum(self.momentum, self.momentum_end, step, self.total_steps)

    def step(self, views: list[dict], labels: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Symmetrised BYOL loss on two views. Returns (loss, stats)."""
        x1, x2 = views[0]["image"], views[1]["image"]
        online = [self.predictor(self.projector(self.backbone(x))) for x in (x1, x2)]
        with torch.no_grad():
            target = [self.momentum_projector(self.momentum_backbone(x)) for x in (x1, x2)]
        loss = byol_loss(online[0], target[1]) + byol_loss(online[1], target[0])
        return loss, {"train/momentum": torch.tensor(self.momentum_at(self.global_step)),
                      "train/embedding_spread": embedding_spread(online[0])}
