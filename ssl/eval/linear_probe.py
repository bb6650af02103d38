"""The standard linear-probe protocol as a LightningModule (MoCo ``main_lincls.py``).

A frozen backbone (kept in eval mode: its BatchNorm statistics never move), one linear
layer initialised N(0, 0.01) with zero bias, training views RandomResizedCrop + flip made on
the device, resize + centre crop for evaluation. ``decode``: the data module's, so JPEGs its
workers left encoded are decoded on the device as in training. MoCo's ``main_lincls.py`` by default: SGD
lr 30, momentum 0.9, no weight decay, 100 epochs, lr x 0.1 at epochs 60 and 80.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from sslkit.augmentations.recipes import eval_view
from sslkit.augmentations.geometry import RandomHorizontalFlip, RandomResizedCrop
from sslkit.augmentations.stages import IMAGENET_MEAN, IMAGENET_STD, Normalize
from sslkit.augmentations.views import View
from sslkit.data.base import decode_batch, to_device


class LinearProbe(pl.LightningModule):
    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        crop_size: int = 224,
        crop_scale: tuple[float, float] = (0.08, 1.0),
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        resize: int | None = None,
        lr: float = 30.0,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        milestones: Sequence[int] = (60, 80),
        decode: Callable[[dict, torch.device], dict] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["backbone", "decode"])
        self.decode = decode or (lambda batch, device: decode_batch(batch, "error", device))
        self.backbone = backbone.requires_grad_(False).eval()
        dim = getattr(backbone, "dim", None)
        if dim is None:
            raise ValueError("the backbone must expose its feature size as .dim (use sslkit's build/load_backbone)")
        self.classifier = nn.Linear(dim, num_classes)
        nn.init.normal_(self.classifier.weight, mean=0.0, std=0.01)  # main_lincls.py
        nn.init.zeros_(self.classifier.bias)
        self.train_view = View([RandomResizedCrop(crop_size, crop_scale), RandomHorizontalFlip(), Normalize(mean, std)])
        self.eval_view = eval_view(crop_size, mean, std, resize)
        self.val_top1 = MulticlassAccuracy(num_classes, top_k=1, average="micro")
        self.val_top5 = MulticlassAccuracy(num_classes, top_k=min(5, num_classes), average="micro")

    def train(self, mode: bool = True):
        super().train(mode)
        self.backbone.eval()
        return self

    def transfer_batch_to_device(self, batch: dict, device: torch.device, dataloader_idx: int) -> dict:
        return to_device(batch, device)

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        batch = self.decode(batch, self.device)
        if "image" not in batch:  # every image of the batch unreadable (bad_images: skip)
            return batch
        if "label" not in batch:
            raise ValueError("the linear probe needs labelled batches ('label'); this split has none")
        with torch.no_grad():
            view = self.train_view if self.trainer is not None and self.trainer.training else self.eval_view
            batch["probe_image"] = view(batch)["image"]
        return batch

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            features = self.backbone(images)
        return self.classifier(features)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor | None:
        if "probe_image" not in batch:
            return None
        loss = F.cross_entropy(self(batch["probe_image"]), batch["label"])
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        if "probe_image" not in batch:
            return
        logits = self(batch["probe_image"])
        self.val_top1(logits, batch["label"])
        self.val_top5(logits, batch["label"])
        self.log("val/top1", self.val_top1, prog_bar=True)
        self.log("val/top5", self.val_top5)

    def configure_optimizers(self):
        h = self.hparams
        optimizer = torch.optim.SGD(self.classifier.parameters(), lr=h.lr, momentum=h.momentum,
                                    weight_decay=h.weight_decay, nesterov=h.nesterov)
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(h.milestones), gamma=0.1)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}
