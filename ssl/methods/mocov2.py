"""MoCo v2 (Chen, Fan, Girshick, He 2020, arXiv 2003.04297) as a LightningModule.

Query encoder = backbone + MLP head; key encoder = its momentum copy; negatives from a
FIFO queue of past keys; InfoNCE with the positive at index 0.
"""
from __future__ import annotations

from typing import Literal

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.utilities import rank_zero_warn
from torch import nn

from sslkit.augmentations import MoCoV2Views, MultiView
from sslkit.eval.knn import KNNAccuracy
from sslkit.nn import distributed
from sslkit.checkpoints import load_backbone_weights
from sslkit.nn.backbones import build_backbone
from sslkit.nn.hardness import HardnessBand, MoCHi, hardness_info_nce_logits, hardness_statistics
from sslkit.nn.heads import mlp_head
from sslkit.nn.queue import NegativeQueue
from sslkit.nn.splitbn import convert_split_batchnorm
from sslkit.nn.syncbn import convert_global_batchnorm

from .hardness_plot import SimilarityHistogram

from .common import SSLHooks, config, check_canvas, configure_optimization, embedding_spread
from .momentum import cosine_momentum, momentum_copy, momentum_update
from .optim import OptimConfig
from .speed import SpeedConfig

BatchNormMode = Literal["split", "shuffle", "sync", "plain"]


class MoCoV2(SSLHooks, pl.LightningModule):
    """MoCo v2.

    Args:
        backbone: timm name or ``torchvision.<arch>`` (see ``build_backbone``).
        small_images, small_stem_padding: 3x3 stride-1 stem without max-pool, for 32-96 px
            images, with padding 1 (MoCo's CIFAR demo) or 2 (solo-learn); see ``build_backbone``.
        backbone_weights: initialise the backbone (and so the key encoder) from a
            checkpoint in any format ``sslkit.checkpoints.load_backbone`` reads, loaded
            strictly; ``backbone_weights_format`` names the layout (default: detected) and
            ``backbone_weights_branch`` the network of a file that holds several (default:
            the one its project evaluates, e.g. DINO's teacher).
        hidden_dim: hidden width of the MLP head; ``None`` = the backbone's feature size.
        output_dim: embedding size (128 in the paper).
        queue_size: number of negative keys K (65536 on ImageNet, 4096 on CIFAR).
        temperature: InfoNCE temperature tau (0.2; the CIFAR demo uses 0.1).
        momentum: key-encoder momentum m (0.999; 0.99 on CIFAR).
        momentum_end: if set, m follows a cosine schedule from ``momentum`` to this value.
        symmetric: also use (v2 -> v1) and average the two losses; both keys enter the
            queue after both terms are computed, so no view is its own negative.
        queue_per_view: with ``symmetric``, one queue per key view, each query contrasted
            with past keys of the other view (solo-learn's MoCo V2+,
            ``solo/methods/mocov2plus.py``); default one queue for both.
        batchnorm: how the key encoder avoids the BatchNorm leak (sec. 3.3 of MoCo):
            ``shuffle`` shuffles the key batch across ranks (the original, needs DDP);
            ``split`` normalises ``bn_splits`` interleaved sub-batches separately in both
            encoders and shuffles keys within the device (``SplitBatchNorm2d``, the authors'
            single-GPU CIFAR-10 demo); ``sync`` uses
            BatchNorm over the global batch (torch's SyncBatchNorm on GPUs,
            ``sslkit.nn.syncbn.GlobalBatchNorm`` elsewhere); ``plain`` does nothing.
        augment: the view recipe; default ``MoCoV2Views()``. With a ``BackgroundSwap``
            (BG_Swaps), its hard negative (the query's background, another image's object)
            is keyed by the key encoder and appended to the query's logits; it never enters
            the queue. With ``symmetric`` it joins the (view 1 -> view 2) term only, the
            one whose query has that background.
        optim: default ``main_moco.py`` with ``--cos``: SGD lr 0.03 x B/256, momentum 0.9,
            wd 1e-4 on every parameter, cosine per epoch.
        speed: channels_last and torch.compile (``SpeedConfig``).
        knn_k, knn_temperature: the kNN monitor on the val split.
        hardness_band: ``[lo, hi]``: each query trains on the queue negatives whose
            hardness rank (most similar first) lies in that band (Cai et al. 2020; see
            ``sslkit.nn.hardness.HardnessBand``); ``None`` = all negatives.
        hardness_unit: ``fraction`` (of the queue) or ``count`` (of negatives).
        negative_beta: beta-reweighting of negatives by exp(beta s) (Robinson et al. 2021);
            0 = off.
        mochi: synthetic hard negatives (Kalantidis et al. 2020); ``None`` = off.
        hardness_log_every: every N steps, log similarity quantiles, the band's range and,
            with labels, the same-class fraction of band and queue; each epoch, a
            histogram PNG under ``<log_dir>/hardness/``. 0 = off.
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
        hidden_dim: int | None = None,
        output_dim: int = 128,
        queue_size: int = 65536,
        temperature: float = 0.2,
        momentum: float = 0.999,
        momentum_end: float | None = None,
        symmetric: bool = False,
        queue_per_view: bool = False,
        batchnorm: BatchNormMode = "shuffle",
        bn_splits: int = 8,
        augment: MultiView | None = None,
        optim: OptimConfig | None = None,
        speed: SpeedConfig | None = None,
        knn_k: int = 200,
        knn_temperature: float = 0.07,
        hardness_band: tuple[float, float] | None = None,
        hardness_unit: Literal["fraction", "count"] = "fraction",
        negative_beta: float = 0.0,
        mochi: MoCHi | None = None,
        hardness_log_every: int = 50,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["augment"])
        if batchnorm not in ("split", "shuffle", "sync", "plain"):
            raise ValueError(f"batchnorm must be one of split, shuffle, sync, plain; got '{batchnorm}'")
        self.backbone = build_backbone(backbone, small_images=small_images, small_stem_padding=small_stem_padding,
                                       **(backbone_kwargs or {}))
        if backbone_weights:
            load_backbone_weights(self.backbone, backbone_weights, backbone_weights_format, backbone_weights_branch)
        if queue_per_view and not symmetric:
            raise ValueError("model.queue_per_view needs model.symmetric: true (one queue per key view)")
        if batchnorm == "split":
            convert_split_batchnorm(self.backbone, bn_splits)
        dim = self.backbone.dim
        self.head = mlp_head(dim, hidden_dim or dim, output_dim)
        self.key_backbone = momentum_copy(self.backbone)
        self.key_head = momentum_copy(self.head)
        self.queue = NegativeQueue(queue_size, output_dim)
        self.queue_2 = NegativeQueue(queue_size, output_dim) if queue_per_view else None
        self.augment = augment if augment is not None else MoCoV2Views()
        self.optim = config(optim, OptimConfig, OptimConfig(lr=0.03, weight_decay=1e-4, schedule_interval="epoch"))
        self.speed = config(speed, SpeedConfig, SpeedConfig())
        self.temperature = temperature
        self.momentum = momentum
        self.momentum_end = momentum_end
        self.symmetric = symmetric
        self.batchnorm = batchnorm
        self.bn_splits = bn_splits
        self.knn = KNNAccuracy(knn_k, knn_temperature)
        self.band = HardnessBand(*hardness_band, queue_size, hardness_unit) if hardness_band is not None else None
        self.negative_beta = negative_beta
        self.mochi = config(mochi, MoCHi, None)
        self.hardness_log_every = hardness_log_every
        self.histogram = SimilarityHistogram()
        self._total_steps = 0

    # ----------------------------------------------------------------- encoders
    def _query(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(self.backbone(images)), dim=1)

    def _key_forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.key_head(self.key_backbone(images)), dim=1)

    @torch.no_grad()
    def _keys(self, images: torch.Tensor) -> torch.Tensor:
        """Keys with the batch shuffled before the key encoder and unshuffled after."""
        if self.batchnorm == "shuffle" and distributed.world_size() > 1:
            return self._keys_cross_rank_shuffle(images)
        if self.batchnorm in ("split", "shuffle"):
            perm = torch.randperm(images.shape[0], device=images.device)
            keys = self._key_forward(images[perm])
            return keys[torch.argsort(perm)]
        return self._key_forward(images)

    def _keys_cross_rank_shuffle(self, images: torch.Tensor) -> torch.Tensor:
        everyone = distributed.gather_all(images)
        total, local = everyone.shape[0], images.shape[0]
        perm = torch.randperm(total, device=images.device)
        torch.distributed.broadcast(perm, src=0)
        rank = distributed.rank()
        mine = perm[rank * local:(rank + 1) * local]
        keys = distributed.gather_all(self._key_forward(everyone[mine]))
        unshuffle = torch.argsort(perm)
        return keys[unshuffle][rank * local:(rank + 1) * local]

    # ----------------------------------------------------------------- training
    def momentum_at(self, step: int) -> float:
        """Key-encoder momentum of optimiser step ``step``: constant, or BYOL's cosine from
        ``momentum`` to ``momentum_end`` (solo-learn's MoCo V2+ uses 0.99 -> 0.999)."""
        if self.momentum_end is None:
            return self.momentum
        return cosine_momentum(self.momentum, self.momentum_end, step, self._total_steps)

    def optimizer_step(self, *args, **kwargs) -> None:
        """The key encoder follows the query encoder right after each optimiser step (MoCo
        eq. 2 applies it before the next step's keys: the same sequence of key encoders)."""
        super().optimizer_step(*args, **kwargs)
        m = self.momentum_at(self.global_step)
        momentum_update(self.backbone, self.key_backbone, m)
        momentum_update(self.head, self.key_head, m)

    def step(self, views: list[dict], labels: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """MoCo loss on augmented views, then the keys enter the queue. Returns (loss, stats)."""
        x1, x2 = views[0]["image"], views[1]["image"]
        negatives = self.queue.keys.clone()
        queue_labels = self.queue.labels.clone()
        q1, k2 = self._query(x1), self._keys(x2)
        first = self._logits(q1, k2, negatives)
        logits, targets = first.logits, first.targets
        queue_logits, swap_stats = logits, {}
        if "hard_negative" in views[1]:
            logits, swap_stats = self._append_hard_negative(logits, q1, views[1])
        loss = F.cross_entropy(logits, targets)
        if self.symmetric:
            q2, k1 = self._query(x2), self._keys(x1)
            negatives_2 = self.queue_2.keys.clone() if self.queue_2 is not None else negatives
            loss = 0.5 * (loss + F.cross_entropy(self._logits(q2, k1, negatives_2).logits, targets))
        if self.queue_2 is not None:
            self.queue.enqueue(k2, labels)
            self.queue_2.enqueue(k1, labels)
        else:
            keys = [k2, k1] if self.symmetric else [k2]
            self.queue.enqueue(torch.cat(keys), None if labels is None else labels.repeat(len(keys)))
        swap_stats.update(self._hardness_statistics(first, labels, queue_labels))
        with torch.no_grad():
            stats = {
                "train/instance_acc": (logits.argmax(1) == 0).float().mean(),
                "train/embedding_spread": embedding_spread(q1),
                "train/positive_sim": queue_logits[:, 0].mean() * self.temperature,
                "train/negative_sim": queue_logits[:, 1:].mean() * self.temperature,
                "train/momentum": torch.tensor(self.momentum_at(self.global_step)),
                "queue/filled": self.queue.filled.float() / self.queue.size,
                **swap_stats,
            }
        return loss, stats

    def _logits(self, query: torch.Tensor, key: torch.Tensor, negatives: torch.Tensor):
        return hardness_info_nce_logits(query, key, negatives, self.temperature, self.band,
                                        self.negative_beta, self.mochi)

    def _hardness_statistics(self, computed, labels: torch.Tensor | None,
                             queue_labels: torch.Tensor) -> dict[str, torch.Tensor]:
        every = self.hardness_log_every
        if every <= 0 or self.global_step % every or int(self.queue.filled) < self.queue.size:
            return {}
        self.histogram.add(computed.similarity, computed.band_similarity)
        return hardness_statistics(computed.similarity, computed.band_similarity, computed.band_index,
                                   labels, queue_labels)

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        log_dir = self.trainer.log_dir if self.trainer is not None else None
        if self.histogram.count and log_dir and self.trainer.is_global_zero:
            self.histogram.save(f"{log_dir}/hardness/epoch_{self.current_epoch:03d}.png",
                                f"epoch {self.current_epoch}: query-negative similarity", self.band)
        self.histogram.reset()

    def _append_hard_negative(
        self, logits: torch.Tensor, query: torch.Tensor, key_view: dict
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """BG_Swaps: one more logit per query, q . k(negative) / tau, or -inf where the
        sample got no negative (so it adds exactly nothing to the softmax)."""
        key = self._keys(key_view["hard_negative"])
        valid = key_view["hard_negative_valid"].view(-1, 1)
        similarity = (query * key).sum(1, keepdim=True)
        extra = (similarity / self.temperature).masked_fill(~valid, float("-inf"))
        with torch.no_grad():
            count = valid.sum().clamp_min(1)
            stats = {
                "train/swap_negative_rate": valid.float().mean(),
                "train/swap_negative_sim": (similarity * valid).sum() / count,
                "train/swap_negative_beats_positive": ((extra > logits[:, :1]) & valid).sum() / count,
            }
        return torch.cat([logits, extra.to(logits.dtype)], dim=1), stats

    def check_data(self, datamodule, world_size: int = 1) -> None:
        """Errors that would otherwise surface mid-run: crops larger than the canvas and a
        queue that cannot hold one step's keys."""
        check_canvas(self, datamodule)
        batch = getattr(datamodule, "batch_size", None)
        if self.mochi is not None and self.mochi.hardest > self.queue.size:
            raise ValueError(f"model.mochi.hardest={self.mochi.hardest} exceeds queue_size={self.queue.size}")
        if batch is not None and self.batchnorm == "split" and batch % self.bn_splits:
            raise ValueError(f"batchnorm='split' needs data.batch_size ({batch}) divisible by "
                             f"model.bn_splits={self.bn_splits}")
        if batch is not None:
            per_step = batch * world_size * (2 if self.symmetric and self.queue_2 is None else 1)
            if self.queue.size < per_step:
                raise ValueError(
                    f"model.queue_size={self.queue.size} is smaller than the {per_step} keys enqueued "
                    f"per step (batch {batch} x {world_size} ranks x {per_step // (batch * world_size)} views per queue)"
                )

    def setup(self, stage: str) -> None:
        if self.batchnorm == "sync" and distributed.world_size() > 1 and not getattr(self, "_sync_converted", False):
            on_gpu = self.trainer is not None and self.trainer.strategy.root_device.type == "cuda"
            for name in ("backbone", "head", "key_backbone", "key_head"):
                module = getattr(self, name)
                setattr(self, name, nn.SyncBatchNorm.convert_sync_batchnorm(module) if on_gpu
                        else convert_global_batchnorm(module))
            self._sync_converted = True
        if self.batchnorm == "shuffle" and self.trainer is not None and self.trainer.world_size == 1:
            rank_zero_warn(
                "batchnorm='shuffle' on a single process cannot stop the BatchNorm leak; "
                "use batchnorm='split' on one device"
            )
        super().setup(stage)

    def configure_optimizers(self):
        config = configure_optimization(self, nn.ModuleList([self.backbone, self.head]), self.optim)
        self._total_steps = int(self.trainer.estimated_stepping_batches)
        return config
