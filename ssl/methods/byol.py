"""BYOL (Grill et al. 2020, arXiv 2006.07733) as a LightningModule.

Online network = backbone + projector + predictor; target network = EMA of backbone +
projector; the online prediction of one view regresses the target projection of the
other, symmetrised.
"""
from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch import nn

from sslkit.augmentations import BYOLViews, MultiView
from sslkit.eval.knn import KNNAccuracy
from sslkit.checkpoints import load_backbone_weights
from sslkit.nn.backbones import build_backbone
from sslkit.nn.heads import mlp_head
from sslkit.nn.losses import byol_loss

from .common import SSLHooks, config, check_canvas, configure_optimization, embedding_spread, reject_swap_negative
from .momentum import cosine_momentum, momentum_copy, momentum_update
from .optim import OptimConfig
from .speed import SpeedConfig


class BYOL(SSLHooks, pl.LightningModule):
    """BYOL.

    Args:
        backbone, small_images, small_stem_padding, backbone_kwargs: see ``build_backbone``.
        backbone_weights, backbone_weights_format: initialise the backbone from a checkpoint
            in any format ``sslkit.checkpoints.load_backbone`` reads (see ``MoCoV2``).
        proj_hidden_dim, proj_output_dim: projector ``Linear-BN-ReLU-Linear`` (4096 -> 256).
        pred_hidden_dim: predictor hidden width (4096; output = ``proj_output_dim``).
        tau_base, tau_final: target EMA rate follows ``1 - (1 - tau_base)(cos(pi k/K) + 1)/2``
            from ``tau_base`` at step 0 to ``tau_final`` at the last step K.
        augment: default ``BYOLViews()`` (the asymmetric recipe).
        optim: default BYOL's ImageNet recipe (``byol/utils/optimizers.py``, ``schedules.py``):
            LARS (trust 1e-3 on ``||g + wd w||``), lr 0.2 x B/256, wd 1.5e-6, biases and norms
            excluded, 10 warm-up epochs from 0, cosine to 0.
        speed: channels_last and torch.compile (``SpeedConfig``).
    """

    def __init__(
        self,
        backbone: str = "resnet50",
        small_images: bool = False,
        small_stem_padding: int = 1,
        backbone_kwargs: dict | None = None,
        backbone_weights: str | None = None,
        backbone_weights_format: str = "auto",
        backbone_weights_branch: str | None = None,
        proj_hidden_dim: int = 4096,
        proj_output_dim: int = 256,
        pred_hidden_dim: int = 4096,
        tau_base: float = 0.996,
        tau_final: float = 1.0,
        augment: MultiView | None = None,
        optim: OptimConfig | None = None,
        speed: SpeedConfig | None = None,
        knn_k: int = 200,
        knn_temperature: float = 0.07,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["augment"])
        self.backbone = build_backbone(backbone, small_images=small_images, small_stem_padding=small_stem_padding,
                                       **(backbone_kwargs or {}))
        if backbone_weights:
            load_backbone_weights(self.backbone, backbone_weights, backbone_weights_format, backbone_weights_branch)
        self.projector = mlp_head(self.backbone.dim, proj_hidden_dim, proj_output_dim, batch_norm=True)
        self.predictor = mlp_head(proj_output_dim, pred_hidden_dim, proj_output_dim, batch_norm=True)
        self.target_backbone = momentum_copy(self.backbone)
        self.target_projector = momentum_copy(self.projector)
        self.augment = augment if augment is not None else BYOLViews()
        reject_swap_negative(self.augment, "BYOL")
        self.optim = config(optim, OptimConfig, OptimConfig(
            name="lars", lr=0.2, weight_decay=1.5e-6, exclude_bias_and_norm=True, warmup_epochs=10,
            warmup_ends_at_peak=False,
        ))
        self.speed = config(speed, SpeedConfig, SpeedConfig())
        self.tau_base = tau_base
        self.tau_final = tau_final
        self.knn = KNNAccuracy(knn_k, knn_temperature)
        self._total_steps = 0

    def current_tau(self) -> float:
        return cosine_momentum(self.tau_base, self.tau_final, self.global_step, self._total_steps)

    def step(self, views: list[dict], labels: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Symmetrised BYOL loss on two augmented views. Returns (loss, stats)."""
        x1, x2 = views[0]["image"], views[1]["image"]
        online = [self.predictor(self.projector(self.backbone(x))) for x in (x1, x2)]
        with torch.no_grad():
            target = [self.target_projector(self.target_backbone(x)) for x in (x1, x2)]
        loss = byol_loss(online[0], target[1]) + byol_loss(online[1], target[0])
        return loss, {"train/tau": torch.tensor(self.current_tau()), "train/embedding_spread": embedding_spread(online[0])}

    def optimizer_step(self, *args, **kwargs) -> None:
        """After optimiser step k, the target moves with tau_k: xi <- tau_k xi + (1 - tau_k) theta
        (BYOL sec. 3.1 and ``target_ema`` in ``byol/utils/schedules.py``; k = 0 uses tau_base).
        Lightning increments ``global_step`` only after this hook returns, so it is k here."""
        super().optimizer_step(*args, **kwargs)
        tau = cosine_momentum(self.tau_base, self.tau_final, self.global_step, self._total_steps)
        momentum_update(self.backbone, self.target_backbone, tau)
        momentum_update(self.projector, self.target_projector, tau)

    def check_data(self, datamodule, world_size: int = 1) -> None:
        check_canvas(self, datamodule)

    def configure_optimizers(self):
        online = nn.ModuleList([self.backbone, self.projector, self.predictor])
        config = configure_optimization(self, online, self.optim)
        self._total_steps = int(self.trainer.estimated_stepping_batches)
        return config
