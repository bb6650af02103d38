"""Training images/s: sslkit against lightly (the peer library), same method, backbone,
batch, image size and queue, measured in the same run.

    pip install -e ".[bench]"        # lightly, for this benchmark only
    python tests/benchmarks/bench_vs_lightly.py [--steps 12] [--batch 256] [--device cpu]

sslkit: uint8 canvases from the data module, every augmentation batched on the device
(Kornia). lightly: its own transforms (torchvision, per image) in DataLoader workers, as
its examples run it. Both are Lightning modules run by the same Trainer settings; the
clock starts after the first step (start-up, worker spawn) and stops after the last.
Peak memory: resident set size of the process (CPU) or CUDA peak allocation.
"""
from __future__ import annotations

import argparse
import copy
import resource
import time

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from sslkit.augmentations import BYOLViews, MoCoV2Views, MultiCropViews
from sslkit.data import SyntheticScenes
from sslkit.methods import BYOL, MoCoV2, OptimConfig, SwAV
from sslkit.nn.backbones import build_backbone


class Clock(pl.Callback):
    def __init__(self) -> None:
        self.start, self.images, self.seconds = None, 0, 0.0

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        if batch_idx == 1:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if batch_idx >= 1:
            self.images += module.batch_size
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.seconds = time.perf_counter() - self.start


class PILScenes(Dataset):
    """The same SyntheticScenes images as PIL, through a lightly transform."""

    def __init__(self, images: torch.Tensor, transform) -> None:
        self.images, self.transform = images, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.transform(Image.fromarray(self.images[i].permute(1, 2, 0).numpy())), 0


class LightlyMoCo(pl.LightningModule):
    def __init__(self, batch_size: int, queue: int) -> None:
        super().__init__()
        from lightly.loss import NTXentLoss
        from lightly.models.modules import MoCoProjectionHead

        self.batch_size = batch_size
        self.backbone = build_backbone("test_resnet")
        self.head = MoCoProjectionHead(self.backbone.dim, 256, 64)
        self.key_backbone, self.key_head = copy.deepcopy(self.backbone), copy.deepcopy(self.head)
        for p in list(self.key_backbone.parameters()) + list(self.key_head.parameters()):
            p.requires_grad = False
        self.loss = NTXentLoss(temperature=0.2, memory_bank_size=(queue, 64))

    def training_step(self, batch, batch_idx):
        from lightly.models.utils import update_momentum

        (x_q, x_k), _ = batch
        update_momentum(self.backbone, self.key_backbone, 0.99)
        update_momentum(self.head, self.key_head, 0.99)
        q = self.head(self.backbone(x_q))
        with torch.no_grad():
            k = self.key_head(self.key_backbone(x_k))
        return self.loss(q, k)

    def configure_optimizers(self):
        return torch.optim.SGD(list(self.backbone.parameters()) + list(self.head.parameters()), lr=0.12,
                               momentum=0.9, weight_decay=5e-4)


class LightlyBYOL(pl.LightningModule):
    def __init__(self, batch_size: int) -> None:
        super().__init__()
        from lightly.loss import NegativeCosineSimilarity
        from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead

        self.batch_size = batch_size
        self.backbone = build_backbone("test_resnet")
        self.projector = BYOLProjectionHead(self.backbone.dim, 512, 128)
        self.predictor = BYOLPredictionHead(128, 512, 128)
        self.target_backbone, self.target_projector = copy.deepcopy(self.backbone), copy.deepcopy(self.projector)
        for p in list(self.target_backbone.parameters()) + list(self.target_projector.parameters()):
            p.requires_grad = False
        self.loss = NegativeCosineSimilarity()

    def training_step(self, batch, batch_idx):
        from lightly.models.utils import update_momentum

        update_momentum(self.backbone, self.target_backbone, 0.99)
        update_momentum(self.projector, self.target_projector, 0.99)
        (x0, x1), _ = batch
        p0, p1 = (self.predictor(self.projector(self.backbone(x))) for x in (x0, x1))
        with torch.no_grad():
            z0, z1 = (self.target_projector(self.target_backbone(x)) for x in (x0, x1))
        return 0.5 * (self.loss(p0, z1) + self.loss(p1, z0))

    def configure_optimizers(self):
        params = [p for n, p in self.named_parameters() if not n.startswith("target_")]
        return torch.optim.SGD(params, lr=0.12, momentum=0.9, weight_decay=1e-4)


class LightlySwAV(pl.LightningModule):
    def __init__(self, batch_size: int) -> None:
        super().__init__()
        from lightly.loss import SwaVLoss
        from lightly.models.modules import SwaVProjectionHead, SwaVPrototypes

        self.batch_size = batch_size
        self.backbone = build_backbone("test_resnet")
        self.projector = SwaVProjectionHead(self.backbone.dim, 512, 128)
        self.prototypes = SwaVPrototypes(128, 1000, n_steps_frozen_prototypes=0)
        self.loss = SwaVLoss()

    def training_step(self, batch, batch_idx):
        self.prototypes.normalize()
        views, _ = batch
        features = [F.normalize(self.projector(self.backbone(v)), dim=1) for v in views]
        scores = [self.prototypes(f, self.global_step) for f in features]
        return self.loss(scores[:2], scores[2:])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.3, momentum=0.9, weight_decay=1e-6)


def sslkit_model(method: str, batch: int, queue: int) -> pl.LightningModule:
    optim = OptimConfig(lr=0.12, weight_decay=5e-4)
    if method == "MoCo v2":
        model = MoCoV2(backbone="test_resnet", proj_hidden_dim=256, proj_output_dim=64, queue_size=queue, momentum=0.99,
                       batchnorm="plain", augment=MoCoV2Views(crop_size=32, crop_scale=(0.2, 1.0), blur_p=0.0),
                       optim=optim, hardness_log_every=0)
    elif method == "BYOL":
        model = BYOL(backbone="test_resnet", proj_hidden_dim=512, proj_output_dim=128, pred_hidden_dim=512,
                     momentum=0.99, augment=BYOLViews(crop_size=32, blur_p=(0.0, 0.0)), optim=optim)
    else:
        model = SwAV(backbone="test_resnet", proj_hidden_dim=512, proj_output_dim=128, num_prototypes=1000,
                     queue_size=0, freeze_prototypes_epochs=0,
                     augment=MultiCropViews(global_size=32, local_size=16, num_local=4, blur_p=0.0),
                     optim=OptimConfig(lr=0.3, weight_decay=1e-6))
    model.batch_size = batch
    return model


def lightly_parts(method: str, batch: int, queue: int):
    from lightly.transforms import BYOLTransform, MoCoV2Transform, SwaVTransform
    from lightly.transforms.byol_transform import BYOLView1Transform, BYOLView2Transform

    if method == "MoCo v2":
        return LightlyMoCo(batch, queue), MoCoV2Transform(input_size=32, gaussian_blur=0.0)
    if method == "BYOL":
        return LightlyBYOL(batch), BYOLTransform(BYOLView1Transform(input_size=32, gaussian_blur=0.0),
                                                 BYOLView2Transform(input_size=32, gaussian_blur=0.0))
    return LightlySwAV(batch), SwaVTransform(crop_sizes=(32, 16), crop_counts=(2, 4), crop_min_scales=(0.14, 0.05),
                                             crop_max_scales=(1.0, 0.14), random_gray_scale=0.2,
                                             sigmas=(0.1, 2.0), cj_prob=0.8)


def run(module: pl.LightningModule, loader_or_data, steps: int, device: str) -> float:
    clock = Clock()
    trainer = pl.Trainer(max_steps=steps + 1, accelerator=device, devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                         callbacks=[clock], precision="32")
    if isinstance(loader_or_data, pl.LightningDataModule):
        trainer.fit(module, datamodule=loader_or_data)
    else:
        trainer.fit(module, train_dataloaders=loader_or_data)
    return clock.images / clock.seconds


def peak_memory_mb(device: str) -> float:
    if device == "gpu":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--queue", type=int, default=4096)
    parser.add_argument("--workers", type=int, default=2, help="lightly's DataLoader workers")
    parser.add_argument("--device", default="cpu", choices=["cpu", "gpu"])
    parser.add_argument("--methods", nargs="+", default=["MoCo v2", "BYOL", "SwAV"])
    args = parser.parse_args()
    torch.manual_seed(0)
    data = SyntheticScenes(image_size=32, num_train=args.batch * (args.steps + 2), batch_size=args.batch)
    data.setup("fit")
    images = data.train_set.data["image"]
    rows = []
    for method in args.methods:
        sslkit_rate = run(sslkit_model(method, args.batch, args.queue), data, args.steps, args.device)
        sslkit_memory = peak_memory_mb(args.device)
        module, transform = lightly_parts(method, args.batch, args.queue)
        loader = DataLoader(PILScenes(images, transform), batch_size=args.batch, shuffle=True, drop_last=True,
                            num_workers=args.workers, persistent_workers=args.workers > 0)
        lightly_rate = run(module, loader, args.steps, args.device)
        rows.append((method, sslkit_rate, lightly_rate, sslkit_memory))
        print(f"{method}: sslkit {sslkit_rate:,.0f} images/s, lightly {lightly_rate:,.0f} images/s", flush=True)
    print(f"\ntest_resnet, 32 px, batch {args.batch}, queue {args.queue} (MoCo), {args.steps} timed steps, "
          f"device {args.device}")
    print(f"{'method':<10}{'sslkit img/s':>14}{'lightly img/s':>15}{'ratio':>8}")
    for method, ours, theirs, _ in rows:
        print(f"{method:<10}{ours:>14,.0f}{theirs:>15,.0f}{ours / theirs:>8.2f}")


if __name__ == "__main__":
    main()
