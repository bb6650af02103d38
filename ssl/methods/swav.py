"""SwAV (Caron et al. 2020, arXiv 2006.09882) as a LightningModule.

Embeddings are scored against learnable prototypes; Sinkhorn-Knopp turns the scores of
each global crop into balanced codes, and every other crop predicts them (swapped
prediction). Multi-crop views of one resolution go through the backbone together.
"""
from __future__ import annotations

import math

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from sslkit.augmentations import MultiCropViews, MultiView
from sslkit.eval.knn import KNNAccuracy
from sslkit.checkpoints import load_backbone_weights
from sslkit.nn.backbones import build_backbone
from sslkit.nn.heads import mlp_head
from sslkit.nn.losses import sinkhorn, swav_loss

from .common import SSLHooks, check_canvas, configure_optimization, embedding_spread, reject_swap_negative
from .optim import OptimConfig
from .speed import SpeedConfig


class SwAV(SSLHooks, pl.LightningModule):
    """SwAV with multi-crop.

    Args:
        backbone, small_images, backbone_kwargs: see ``build_backbone``.
        backbone_weights, backbone_weights_format: initialise the backbone from a checkpoint
            in any format ``sslkit.checkpoints.load_backbone`` reads (see ``MoCoV2``).
        proj_hidden_dim, proj_output_dim: projector ``Linear-BN-ReLU-Linear`` (2048 -> 128).
        num_prototypes: K (3000 on ImageNet; fewer on small data).
        temperature: tau of the swapped-prediction softmax (0.1).
        epsilon, sinkhorn_iterations: Sinkhorn regularisation (0.05) and iterations (3).
        freeze_prototypes_steps: prototypes get no update for this many initial steps.
        queue_length: per global crop, stored embeddings of past batches added to the
            scores when computing codes (0 = off; 3840 in the paper for small batches).
        queue_start_epoch: the queue is used from this epoch on.
        augment: default ``MultiCropViews()`` (2 x 224 + 6 x 96).
        optim: default LARS, lr 0.6 x B/256 (4.8 at 4096), final lr ratio 0.001, wd 1e-6,
            10 warm-up epochs.
        speed: channels_last and torch.compile (``SpeedConfig``).
    """

    def __init__(
        self,
        backbone: str = "resnet50",
        small_images: bool = False,
        backbone_kwargs: dict | None = None,
        backbone_weights: str | None = None,
        backbone_weights_format: str = "auto",
        proj_hidden_dim: int = 2048,
        proj_output_dim: int = 128,
        num_prototypes: int = 3000,
        temperature: float = 0.1,
        epsilon: float = 0.05,
        sinkhorn_iterations: int = 3,
        freeze_prototypes_steps: int = 313,
        queue_length: int = 0,
        queue_start_epoch: int = 15,
        augment: MultiView | None = None,
        optim: OptimConfig | None = None,
        speed: SpeedConfig | None = None,
        knn_k: int = 200,
        knn_temperature: float = 0.07,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["augment"])
        if num_prototypes < 2:
            raise ValueError(f"model.num_prototypes must be at least 2, got {num_prototypes}")
        self.backbone = build_backbone(backbone, small_images=small_images, **(backbone_kwargs or {}))
        if backbone_weights:
            load_backbone_weights(self.backbone, backbone_weights, backbone_weights_format)
        self.projector = mlp_head(self.backbone.dim, proj_hidden_dim, proj_output_dim, batch_norm=True)
        self.prototypes = nn.Linear(proj_output_dim, num_prototypes, bias=False)
        self.augment = augment if augment is not None else MultiCropViews()
        reject_swap_negative(self.augment, "SwAV")
        self.optim = optim if optim is not None else OptimConfig(
            name="lars", lr=0.6, weight_decay=1e-6, exclude_bias_and_norm=True,
            warmup_epochs=10, final_lr_ratio=0.001,
        )
        self.speed = speed if speed is not None else SpeedConfig()
        self.temperature = temperature
        self.epsilon = epsilon
        self.sinkhorn_iterations = sinkhorn_iterations
        self.freeze_prototypes_steps = freeze_prototypes_steps
        self.queue_start_epoch = queue_start_epoch
        self.num_global = getattr(self.augment, "num_global", 2)
        self.register_buffer("queue", torch.zeros(self.num_global, queue_length, proj_output_dim))
        self.register_buffer("queue_filled", torch.zeros((), dtype=torch.long))
        self.knn = KNNAccuracy(knn_k, knn_temperature)

    @torch.no_grad()
    def normalize_prototypes(self) -> None:
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

    def _use_queue(self) -> bool:
        return self.queue.shape[1] > 0 and self.current_epoch >= self.queue_start_epoch

    def step(self, views: list[dict], labels: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Swapped-prediction loss over all crops. Returns (loss, stats)."""
        if len(views) < self.num_global:
            raise ValueError(f"SwAV needs at least {self.num_global} global crops, got {len(views)} views")
        self.normalize_prototypes()
        embeddings = self.embed(views)
        scores = [self.prototypes(z) for z in embeddings]
        batch = embeddings[0].shape[0]
        codes = []
        with torch.no_grad():
            for s in range(self.num_global):
                if not torch.isfinite(scores[s]).all():
                    raise FloatingPointError(
                        f"non-finite prototype scores at global step {self.global_step} "
                        f"(crop {s}): lower the learning rate or check the data"
                    )
                crop_scores = scores[s].detach()
                if self._use_queue() and int(self.queue_filled) >= self.queue.shape[1]:
                    crop_scores = torch.cat([self.prototypes(self.queue[s]), crop_scores])
                codes.append(sinkhorn(crop_scores, self.epsilon, self.sinkhorn_iterations)[-batch:])
            self._enqueue(embeddings[: self.num_global])
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

    @torch.no_grad()
    def _enqueue(self, embeddings: list[torch.Tensor]) -> None:
        length = self.queue.shape[1]
        if length == 0 or self.current_epoch < self.queue_start_epoch:
            return
        batch = embeddings[0].shape[0]
        if batch > length:
            raise ValueError(f"model.queue_length={length} is shorter than the batch ({batch})")
        self.queue[:, batch:] = self.queue[:, :-batch].clone()
        for s, z in enumerate(embeddings):
            self.queue[s, :batch] = z.to(self.queue.dtype)
        self.queue_filled.copy_(torch.clamp(self.queue_filled + batch, max=length))

    def on_after_backward(self) -> None:
        if self.global_step < self.freeze_prototypes_steps:
            self.prototypes.weight.grad = None

    def check_data(self, datamodule, world_size: int = 1) -> None:
        check_canvas(self, datamodule)
        batch = getattr(datamodule, "batch_size", None)
        length = self.queue.shape[1]
        if batch is not None and 0 < length < batch:
            raise ValueError(f"model.queue_length={length} is shorter than the per-device batch ({batch})")

    def configure_optimizers(self):
        params = nn.ModuleList([self.backbone, self.projector, self.prototypes])
        return configure_optimization(self, params, self.optim)
