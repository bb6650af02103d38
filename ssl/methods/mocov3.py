"""MoCo v3 (Chen, Xie & He 2021, arXiv 2104.02057) as an sslkit method.

Backbone + projector + predictor as the query encoder; the momentum encoder is the EMA of
backbone + projector (``moco/builder.py``, where the projector is the encoders' ``head``/``fc``).
Each view's prediction is contrasted with the momentum keys of the other view over the
(global) batch, no queue (``sslkit.nn.losses.mocov3_loss``), symmetrised.
"""
from __future__ import annotations

import torch
from jsonargparse import lazy_instance
from torch import nn

from sslkit.augmentations import BYOLViews, MultiView
from sslkit.eval.knn import KNNConfig
from sslkit.eval.online import OnlineClassifierConfig
from sslkit.nn.backbones import BackboneConfig
from sslkit.nn.heads import mocov3_mlp
from sslkit.nn.losses import mocov3_loss
from sslkit.nn.momentum import cosine_momentum, momentum_copy

from .method import SSLMethod, embedding_spread
from .optim import OptimConfig
from .speed import SpeedConfig


class MoCoV3(SSLMethod):
    """MoCo v3.

    Args:
        backbone: the encoder (``BackboneConfig``): a ResNet, or a ViT (``mocov3_vit_small``
            and ``mocov3_vit_base`` are the official ViTs, ``sslkit.nn.vits``).
        dim: embedding size (``--moco-dim`` 256).
        mlp_dim: the heads' hidden width (``--moco-mlp-dim`` 4096).
        proj_layers: projector depth; ``None``: 3 for a ViT, 2 for a ResNet (``MoCo_ViT`` /
            ``MoCo_ResNet``).
        pred_last_bn: the predictor's last BN (no affine); ``None``: on for a ViT, off for a
            ResNet, as there.
        temperature: ``--moco-t`` (1.0 for ResNet-50, 0.2 for the ViTs in CONFIG.md).
        momentum, momentum_end: the EMA rate follows ``1 - (1 - momentum)(cos(pi t / T) + 1)/2``
            (``--moco-m`` 0.99 with ``--moco-m-cos``, ``adjust_moco_momentum``); equal values:
            constant.
        stop_grad_conv1: freeze a ViT's patch projection at its random initialisation
            (``--stop-grad-conv1``, the ViT recipes; sec. 4.1 of the paper).
        gather: keys from every rank (``concat_all_gather``); False: each rank's own.
        global_batchnorm: the heads' (and a ResNet's) BatchNorm over the global batch under DDP
            (``convert_sync_batchnorm`` of the whole model there).
        augment: default ``main_moco.py``'s pair: crop 0.08-1, jitter (0.4, 0.4, 0.2, 0.1)
            p=0.8, grayscale p=0.2, blur p=1.0 / 0.1, solarize p=0 / 0.2, flip (BYOL's).
        optim: default the ResNet-50 recipe (``main_moco.py`` defaults, CONFIG.md): LARS lr 0.6 x
            B/256, wd 1e-6, momentum 0.9, 1-d parameters without wd or adaptation
            (``moco/optimizer.py``), 10 warm-up epochs from 0, cosine to 0 per step. The ViT
            recipe (AdamW lr 1.5e-4, wd 0.1, 40 warm-up epochs) is ``configs/mocov3_vit_small_imagenet.yaml``.
        speed, knn, online_classifier: see ``SSLMethod``.
    """

    def __init__(
        self,
        backbone: BackboneConfig | str = "torchvision.resnet50",
        dim: int = 256,
        mlp_dim: int = 4096,
        proj_layers: int | None = None,
        pred_last_bn: bool | None = None,
        temperature: float = 1.0,
        momentum: float = 0.99,
        momentum_end: float = 1.0,
        stop_grad_conv1: bool = False,
        gather: bool = True,
        global_batchnorm: bool = True,
        augment: MultiView = lazy_instance(BYOLViews, crop_interpolation="bilinear"),
        optim: OptimConfig | None = OptimConfig(name="lars", lr=0.6, weight_decay=1e-6, exclude_bias_and_norm=True,
                                         warmup_epochs=10, warmup_ends_at_peak=False),
        speed: SpeedConfig | None = None,
        knn: KNNConfig | None = None,
        online_classifier: OnlineClassifierConfig | None = None,
    ) -> None:
        super().__init__(backbone, augment, optim, speed, knn, online_classifier)
        vit = self.backbone.vit
        if stop_grad_conv1:
            if not vit:
                raise ValueError(f"model.stop_grad_conv1 freezes a ViT's patch projection; '{self.backbone.name}' "
                                 f"is not a ViT")
            self.backbone.model.patch_embed.requires_grad_(False)
        self.projector = mocov3_mlp(proj_layers or (3 if vit else 2), self.backbone.dim, mlp_dim, dim)
        self.predictor = mocov3_mlp(2, dim, mlp_dim, dim, last_bn=vit if pred_last_bn is None else pred_last_bn)
        self.momentum_backbone = momentum_copy(self.backbone)
        self.momentum_projector = momentum_copy(self.projector)
        self.temperature, self.momentum, self.momentum_end = temperature, momentum, momentum_end
        self.gather, self.use_global_batchnorm = gather, global_batchnorm

    def prepare(self) -> None:
        if self.use_global_batchnorm:
            self.global_batchnorm("backbone", "projector", "predictor", "momentum_backbone", "momentum_projector")

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.backbone, self.momentum_backbone), (self.projector, self.momentum_projector)]

    def momentum_at(self, step: int) -> float:
        """The rate applied after optimiser step ``step``: ``main_moco.py`` moves the momentum
        encoder at the start of iteration ``step + 1`` with that iteration's rate."""
        return cosine_momentum(self.momentum, self.momentum_end, step + 1, self.total_steps)

    def step(self, views: list[dict], labels: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
        """ctr(q1, k2) + ctr(q2, k1) (``MoCo.forward``)."""
        x1, x2 = views[0]["image"], views[1]["image"]
        q1, q2 = (self.predictor(self.projector(self.backbone(x))) for x in (x1, x2))
        with torch.no_grad():
            k1, k2 = (self.momentum_projector(self.momentum_backbone(x)) for x in (x1, x2))
        loss = (mocov3_loss(q1, k2, self.temperature, self.gather)
                + mocov3_loss(q2, k1, self.temperature, self.gather))
        with torch.no_grad():
            agreement = torch.nn.functional.cosine_similarity(q1, k2, dim=1).mean()
        return loss, {"train/momentum": torch.tensor(self.momentum_at(self.global_step)),
                      "train/positive_sim": agreement, "train/embedding_spread": embedding_spread(q1)}
