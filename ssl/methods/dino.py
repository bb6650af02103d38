"""DINO (Caron et al. 2021, arXiv 2104.14294) as an sslkit method, after facebookresearch/dino.

Student = backbone + ``DINOHead``; teacher = the EMA of both (the teacher's backbone without
stochastic depth, as ``main_dino.py`` builds it without ``drop_path_rate``). The teacher sees
the two global crops, the student every crop (crops of one size through the backbone
together, the head once over all of them, as ``utils.MultiCropWrapper``); the student's
distribution of each crop is trained towards the teacher's centred, sharpened distribution of
every other global crop (``sslkit.nn.dino.dino_loss``). No negatives. The teacher is what is
evaluated (``evaluated_branch = "momentum"``), as DINO's k-NN and linear evaluations take
``--checkpoint_key teacher``.
"""
from __future__ import annotations

import torch
from jsonargparse import lazy_instance
from torch import nn

from sslkit.augmentations import IMAGENET_MEAN, IMAGENET_STD, DINOViews, MultiView
from sslkit.eval.knn import KNNConfig
from sslkit.eval.online import OnlineClassifierConfig
from sslkit.nn.backbones import BackboneConfig
from sslkit.nn.dino import DINOHead, cancel_last_layer, clip_gradients, dino_center, dino_loss, teacher_temperature
from sslkit.nn.momentum import cosine_momentum, momentum_copy

from .method import SSLMethod, embedding_spread
from .optim import OptimConfig
from .speed import SpeedConfig


def without_drop_path(module: nn.Module) -> nn.Module:
    """Stochastic depth off in ``module`` (timm's ``DropPath``, torchvision's
    ``StochasticDepth``): the teacher ``main_dino.py`` builds without ``drop_path_rate``."""
    for child in module.modules():
        if type(child).__name__ == "DropPath" and hasattr(child, "drop_prob"):
            child.drop_prob = 0.0
        elif type(child).__name__ == "StochasticDepth" and hasattr(child, "p"):
            child.p = 0.0
    return module


class DINO(SSLMethod):
    """DINO: self-distillation with no labels.

    Args:
        backbone: the student's network (``BackboneConfig``); default ViT-S/16
            (``vit_small_patch16_224``, DINO's ``vit_small``) with ``drop_path_rate: 0.1``
            in ``kwargs`` (``--drop_path_rate``; the teacher gets none).
        out_dim: K, the head's output (``--out_dim`` 65536).
        hidden_dim, bottleneck_dim, head_layers: the head's MLP (2048, 256, 3: ``DINOHead``).
        use_bn_in_head: BatchNorm in the head's MLP (``--use_bn_in_head``, False).
        norm_last_layer: the last layer's rows kept at unit norm (its gain frozen at 1;
            ``--norm_last_layer``, True; the README's best ViT-S/16 run sets False).
        momentum, momentum_end: the teacher's EMA rate, cosine per step from ``momentum`` to
            ``momentum_end`` (``--momentum_teacher`` 0.996 -> 1, ``momentum_schedule``).
        student_temp: the student's softmax temperature (0.1, ``DINOLoss``).
        teacher_temp, warmup_teacher_temp, warmup_teacher_temp_epochs: the teacher's
            temperature rises linearly per epoch from ``warmup_teacher_temp`` to ``teacher_temp``
            over ``warmup_teacher_temp_epochs`` (``teacher_temp_schedule``; 0.04, 0.04, 0 by
            ``main_dino.py``'s defaults; 0.07 after 30 in the README's best ViT-S/16 run).
        center_momentum: the centre's EMA rate (0.9, ``DINOLoss``); the centre is the buffer
            ``center``, saved in checkpoints, moved after every step by the teacher's mean
            output over the global batch.
        freeze_last_layer: epochs during which the head's last layer gets no update
            (``--freeze_last_layer`` 1, ``utils.cancel_gradients_last_layer``), counted in
            optimiser steps of the run's ``schedule``.
        clip_grad: every student parameter's gradient clipped to this norm on its own
            (``--clip_grad`` 3.0, ``utils.clip_gradients``); 0 or None: off.
        augment: default ``DINOViews()`` (2 x 224 + 8 x 96) with ImageNet's mean and std.
        optim: default ``main_dino.py``'s: AdamW, lr 0.0005 x B/256 after 10 warm-up epochs
            from 0 (``np.linspace``), cosine to ``min_lr`` 1e-6, weight decay 0.04 -> 0.4
            (cosine per step), biases and norms (1-d tensors) without weight decay
            (``utils.get_params_groups``).
        speed, knn, online_classifier: see ``SSLMethod``.
    """

    evaluated_branch = "momentum"
    num_global = 2

    def __init__(
        self,
        backbone: BackboneConfig | str = BackboneConfig(name="vit_small_patch16_224", kwargs={"drop_path_rate": 0.1}),
        out_dim: int = 65536,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        head_layers: int = 3,
        use_bn_in_head: bool = False,
        norm_last_layer: bool = True,
        momentum: float = 0.996,
        momentum_end: float = 1.0,
        student_temp: float = 0.1,
        teacher_temp: float = 0.04,
        warmup_teacher_temp: float = 0.04,
        warmup_teacher_temp_epochs: int = 0,
        center_momentum: float = 0.9,
        freeze_last_layer: float = 1.0,
        clip_grad: float | None = 3.0,
        augment: MultiView = lazy_instance(DINOViews, mean=IMAGENET_MEAN, std=IMAGENET_STD),
        optim: OptimConfig | None = OptimConfig(name="adamw", lr=0.0005, weight_decay=0.04, weight_decay_end=0.4,
                                                exclude_bias_and_norm=True, warmup_epochs=10, final_lr=1e-6),
        speed: SpeedConfig | None = None,
        knn: KNNConfig | None = None,
        online_classifier: OnlineClassifierConfig | None = None,
    ) -> None:
        super().__init__(backbone, augment, optim, speed, knn, online_classifier)
        if out_dim < 2:
            raise ValueError(f"model.out_dim must be at least 2, got {out_dim}")
        self.projector = DINOHead(self.backbone.dim, out_dim, use_bn_in_head, norm_last_layer, head_layers,
                                  hidden_dim, bottleneck_dim)
        self.momentum_backbone = without_drop_path(momentum_copy(self.backbone))
        self.momentum_projector = momentum_copy(self.projector)
        self.register_buffer("center", torch.zeros(1, out_dim))
        self.momentum, self.momentum_end = momentum, momentum_end
        self.student_temp, self.teacher_temp = student_temp, teacher_temp
        self.warmup_teacher_temp, self.warmup_teacher_temp_epochs = warmup_teacher_temp, warmup_teacher_temp_epochs
        self.center_momentum = center_momentum
        self.freeze_last_layer = freeze_last_layer
        self.clip_grad = clip_grad

    # ------------------------------------------------------------------ the contract
    def prepare(self) -> None:
        """BatchNorm (a ResNet's, ``use_bn_in_head``) over the global batch under DDP, in
        student and teacher (``main_dino.py`` converts both to ``SyncBatchNorm``)."""
        self.global_batchnorm("backbone", "projector", "momentum_backbone", "momentum_projector")

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.backbone, self.momentum_backbone), (self.projector, self.momentum_projector)]

    def momentum_at(self, step: int) -> float:
        """``momentum_schedule[it]`` (``utils.cosine_scheduler(momentum_teacher, 1, ...)``),
        applied after optimiser step ``it``."""
        return cosine_momentum(self.momentum, self.momentum_end, step, self.total_steps)

    def teacher_temp_at(self, epoch: int) -> float:
        """The teacher temperature of ``epoch`` (``DINOLoss.teacher_temp_schedule``)."""
        return teacher_temperature(epoch, self.teacher_temp, self.warmup_teacher_temp, self.warmup_teacher_temp_epochs)

    @property
    def freeze_steps(self) -> int:
        """The optimiser steps in which the head's last layer gets no update."""
        return int(round(self.freeze_last_layer * self.schedule.steps_per_epoch))

    def student_features(self, images: list[torch.Tensor]) -> torch.Tensor:
        """The backbone's features of every crop, crop after crop; crops of one size go
        through together (``utils.MultiCropWrapper``)."""
        out, start = [], 0
        while start < len(images):
            end = start
            while end < len(images) and images[end].shape[-2:] == images[start].shape[-2:]:
                end += 1
            out.append(self.backbone(torch.cat(images[start:end])))
            start = end
        return torch.cat(out)

    def step(self, views: list[dict], labels: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
        """DINO's loss on the views (the first two are the global crops); then the centre
        moves (not while an evaluator measures the loss). Returns (loss, stats)."""
        if len(views) < self.num_global:
            raise ValueError(f"DINO needs at least {self.num_global} global crops, got {len(views)} views")
        images = [v["image"] for v in views]
        with torch.no_grad():
            teacher = self.momentum_projector(self.momentum_backbone(torch.cat(images[:self.num_global]))).float()
        if not torch.isfinite(teacher).all():  # before it reaches the centre
            raise FloatingPointError(f"non-finite teacher outputs at global step {self.global_step}: lower the "
                                     f"learning rate or check the data")
        student = self.projector(self.student_features(images)).float()
        temp = self.teacher_temp_at(self.current_epoch)
        loss, parts = dino_loss(student, teacher, self.center, self.student_temp, temp, self.num_global, parts=True)
        if not self.measuring:
            self.center.copy_(dino_center(self.center, teacher, self.center_momentum))
        entropy = parts["teacher_entropy"]
        stats = {
            "train/teacher_temp": torch.tensor(temp),
            "train/momentum": torch.tensor(self.momentum_at(self.global_step)),
            "train/teacher_entropy": entropy,  # -> 0: one dimension dominates (DINO sec. 5.3, Fig. 7)
            "train/kl": loss.detach() - entropy,  # teacher-student KL -> 0: collapse of either kind
            "train/center_norm": self.center.norm(),
            "train/embedding_spread": embedding_spread(student[:views[0]["image"].shape[0]]),
        }
        return loss, stats

    def on_before_optimizer_step(self, optimizer) -> None:
        """After backward (and DDP's gradient average): each student gradient clipped on its
        own (``clip_grad``), then the last layer's dropped while it is frozen, as
        ``train_one_epoch`` does before ``optimizer.step()``."""
        if self.clip_grad:
            clip_gradients([*self.backbone.parameters(), *self.projector.parameters()], self.clip_grad)
        if self.global_step < self.freeze_steps:
            cancel_last_layer(self.projector)
