"""MoCo v2 (Chen, Fan, Girshick, He 2020, arXiv 2003.04297) as an sslkit method.

Query encoder = backbone + MLP projector; key encoder = their momentum copies; negatives from
a FIFO queue of past keys; InfoNCE with the positive at index 0 (``sslkit.nn.losses.info_nce``).
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from jsonargparse import lazy_instance
from pytorch_lightning.utilities import rank_zero_warn
from torch import nn

from sslkit.augmentations import MoCoV2Views, MultiView
from sslkit.eval.knn import KNNConfig
from sslkit.eval.online import OnlineClassifierConfig
from sslkit.eval.plots import SimilarityHistogram
from sslkit.nn import distributed
from sslkit.nn.backbones import BackboneConfig
from sslkit.nn.hardness import (HardNegatives, HardnessBand, MoCHi, NegativeSimilarity, hardness_statistics,
                                 swap_negative_logit)
from sslkit.nn.heads import mlp_head
from sslkit.nn.losses import info_nce_logits
from sslkit.nn.momentum import cosine_momentum, momentum_copy
from sslkit.nn.queue import NegativeQueue
from sslkit.nn.splitbn import convert_split_batchnorm
from sslkit.nn.syncbn import synchronise_batchnorm

from .method import SSLMethod, as_config, embedding_spread
from .optim import OptimConfig
from .speed import SpeedConfig

BatchNormMode = Literal["split", "shuffle", "sync", "plain"]


class MoCoV2(SSLMethod):
    """MoCo v2.

    Args:
        backbone: the query encoder's network (``BackboneConfig``: name, small-image stem, ...;
            the small stem's padding is 1 in MoCo's CIFAR demo, 2 in solo-learn).
        proj_hidden_dim: hidden width of the MLP projector; ``None`` = the backbone's feature size.
        proj_output_dim: embedding size (128 in the paper).
        queue_size: number of negative keys K (65536 on ImageNet).
        temperature: InfoNCE temperature tau (0.2).
        momentum: key-encoder momentum m (0.999).
        momentum_end: if set, m follows a cosine schedule from ``momentum`` to this value.
        symmetric: also use (v2 -> v1) and average the two losses; keys enter the queue
            after both terms, so no view is its own negative.
        queue_per_view: with ``symmetric``, one queue per key view, each query contrasted with
            past keys of the other view (solo-learn's MoCo V2+, ``solo/methods/mocov2plus.py``).
        batchnorm: how the key encoder avoids the BatchNorm leak (MoCo sec. 3.3): ``shuffle``
            shuffles the key batch across ranks (the original, needs DDP); ``split`` normalises
            ``bn_splits`` interleaved sub-batches separately (``SplitBatchNorm2d``, the authors'
            single-GPU CIFAR-10 demo) and shuffles keys within the device; ``sync`` normalises
            over the global batch (SyncBatchNorm on GPUs, ``GlobalBatchNorm`` elsewhere);
            ``plain`` does nothing.
        hardness_band: ``[lo, hi]``: each query trains on the queue negatives whose hardness
            rank lies in that band (Cai et al. 2020; ``HardnessBand``); ``None`` = all.
        hardness_unit: ``fraction`` (of the queue) or ``count`` (of negatives).
        negative_beta: beta-reweighting of negatives by exp(beta s) (Robinson et al. 2021); 0 = off.
        mochi: synthetic hard negatives (Kalantidis et al. 2020); ``None`` = off.
        hardness_log_every: every N steps, hardness statistics; each epoch, a similarity
            histogram PNG under ``<log_dir>/hardness/``. 0 = off.
        augment: the view recipe; default ``MoCoV2Views()``. A ``BackgroundSwap`` hard negative
            (the query's background, another image's object) is keyed by the key encoder and
            joins the (view 1 -> view 2) term; it never enters the queue.
        optim: default ``main_moco.py --cos``: SGD lr 0.03 x B/256, momentum 0.9, wd 1e-4 on
            every parameter, cosine per epoch.
        speed, knn, online_classifier: see ``SSLMethod``.
    """

    uses_negatives = True
    legacy_names = {"hidden_dim": "proj_hidden_dim", "output_dim": "proj_output_dim"}

    def __init__(
        self,
        backbone: BackboneConfig | str = "torchvision.resnet50",
        proj_hidden_dim: int | None = None,
        proj_output_dim: int = 128,
        queue_size: int = 65536,
        temperature: float = 0.2,
        momentum: float = 0.999,
        momentum_end: float | None = None,
        symmetric: bool = False,
        queue_per_view: bool = False,
        batchnorm: BatchNormMode = "shuffle",
        bn_splits: int = 8,
        hardness_band: tuple[float, float] | None = None,
        hardness_unit: Literal["fraction", "count"] = "fraction",
        negative_beta: float = 0.0,
        mochi: MoCHi | None = None,
        hardness_log_every: int = 50,
        augment: MultiView = lazy_instance(MoCoV2Views),
        optim: OptimConfig | None = OptimConfig(lr=0.03, weight_decay=1e-4, schedule_interval="epoch"),
        speed: SpeedConfig | None = None,
        knn: KNNConfig | None = None,
        online_classifier: OnlineClassifierConfig | None = None,
    ) -> None:
        super().__init__(backbone, augment, optim, speed, knn, online_classifier)
        if batchnorm not in ("split", "shuffle", "sync", "plain"):
            raise ValueError(f"model.batchnorm must be one of split, shuffle, sync, plain; got '{batchnorm}'")
        if queue_per_view and not symmetric:
            raise ValueError("model.queue_per_view needs model.symmetric: true (one queue per key view)")
        if batchnorm == "split":
            convert_split_batchnorm(self.backbone, bn_splits)
        self.projector = mlp_head(self.backbone.dim, proj_hidden_dim or self.backbone.dim, proj_output_dim)
        self.momentum_backbone = momentum_copy(self.backbone)
        self.momentum_projector = momentum_copy(self.projector)
        self.queue = NegativeQueue(queue_size, proj_output_dim)
        self.queue_2 = NegativeQueue(queue_size, proj_output_dim) if queue_per_view else None
        self.temperature, self.momentum, self.momentum_end = temperature, momentum, momentum_end
        self.symmetric, self.batchnorm, self.bn_splits = symmetric, batchnorm, bn_splits
        band = HardnessBand(*hardness_band, queue_size, hardness_unit) if hardness_band is not None else None
        self.mochi = as_config(mochi, MoCHi) if mochi is not None else None
        self.negatives = HardNegatives(band, negative_beta, self.mochi)
        self.hardness_log_every = hardness_log_every
        self.histogram = SimilarityHistogram()

    # ------------------------------------------------------------------ the contract
    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.backbone, self.momentum_backbone), (self.projector, self.momentum_projector)]

    def momentum_at(self, step: int) -> float:
        """Constant, or BYOL's cosine from ``momentum`` to ``momentum_end`` (solo-learn's MoCo
        V2+ uses 0.99 -> 0.999)."""
        if self.momentum_end is None:
            return self.momentum
        return cosine_momentum(self.momentum, self.momentum_end, step, self.total_steps)

    def _logits(self, views: list[dict]):
        """The InfoNCE logits of each term (positive first), as ``step`` computes them."""
        x1, x2 = views[0]["image"], views[1]["image"]
        negatives = self.queue.keys.clone()
        q1, k2 = self._queries(x1), self._keys(x2)
        extra, swap_stats = self._hard_negative(q1, k2, views[1]) if "hard_negative" in views[1] else (None, {})
        logits, targets, seen = info_nce_logits(q1, k2, negatives, self.temperature, self.negatives, extra)
        terms, k1 = [(logits, targets)], None
        if self.symmetric:
            q2, k1 = self._queries(x2), self._keys(x1)
            negatives_2 = self.queue_2.keys.clone() if self.queue_2 is not None else negatives
            logits_2, targets_2, _ = info_nce_logits(q2, k1, negatives_2, self.temperature, self.negatives)
            terms.append((logits_2, targets_2))
        return terms, (q1, k2, k1, seen, swap_stats)

    def step_logits(self, views: list[dict]) -> torch.Tensor:
        """The logits ``step``'s cross-entropy (target 0, the positive) is taken of, without
        enqueueing: ``[B, 1 + K (+ 1)]`` (positive, the queue's K negatives, BG_Swaps' hard
        negative), the two terms' rows stacked when ``symmetric`` (``-inf``-padded to one width;
        a -inf logit has probability 0). ``step``'s loss is their mean cross-entropy at 0. For the
        true Fisher of the InfoNCE softmax (sslkit.eval.objectives.method_logit_closures)."""
        terms, _ = self._logits(views)
        width = max(logits.shape[1] for logits, _ in terms)
        return torch.cat([F.pad(logits, (0, width - logits.shape[1]), value=float("-inf")) for logits, _ in terms])

    def step(self, views: list[dict], labels: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """MoCo's loss on two views, then the keys enter the queue. Returns (loss, stats)."""
        queue_labels = self.queue.labels.clone()
        terms, (q1, k2, k1, seen, swap_stats) = self._logits(views)
        loss = F.cross_entropy(*terms[0])
        if self.symmetric:
            loss = 0.5 * (loss + F.cross_entropy(*terms[1]))
        if self.queue_2 is not None:
            self.queue.enqueue(k2, labels)
            self.queue_2.enqueue(k1, labels)
        else:
            keys = [k2, k1] if self.symmetric else [k2]
            self.queue.enqueue(torch.cat(keys), None if labels is None else labels.repeat(len(keys)))
        return loss, {**swap_stats, **self.statistics(q1, k2, seen, labels, queue_labels)}

    @torch.no_grad()
    def statistics(self, query: torch.Tensor, positive: torch.Tensor, seen: NegativeSimilarity,
                   labels: torch.Tensor | None, queue_labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """What the (view 1 -> view 2) term saw: instance accuracy (the positive beats every
        negative of the band), similarities, spread, queue fill and, every
        ``hardness_log_every`` steps once the queue is full, the hardness statistics."""
        similarity = (query * positive).sum(1)
        stats = {
            "train/instance_acc": (similarity.unsqueeze(1) > seen.band_similarity).all(1).float().mean(),
            "train/embedding_spread": embedding_spread(query),
            "train/positive_sim": similarity.mean(),
            "train/negative_sim": seen.similarity.mean(),
            "train/momentum": torch.tensor(self.momentum_at(self.global_step)),
            "queue/filled": self.queue.filled.float() / self.queue.size,
        }
        every = self.hardness_log_every
        if every > 0 and self.global_step % every == 0 and int(self.queue.filled) == self.queue.size \
                and not self.measuring:
            self.histogram.add(seen.similarity, seen.band_similarity)
            stats.update(hardness_statistics(seen.similarity, seen.band_similarity, seen.band_index, labels,
                                             queue_labels))
        return stats

    def check_data(self, datamodule, world_size: int = 1) -> None:
        """Besides the recipe: a queue that holds one step's keys, splits that divide the batch."""
        super().check_data(datamodule, world_size)
        batch = datamodule.batch_size
        if self.mochi is not None and self.mochi.hardest > self.queue.size:
            raise ValueError(f"model.mochi.hardest={self.mochi.hardest} exceeds model.queue_size={self.queue.size}")
        if self.batchnorm == "split" and batch % self.bn_splits:
            raise ValueError(f"model.batchnorm: split needs data.batch_size ({batch}) divisible by "
                             f"model.bn_splits ({self.bn_splits})")
        views = 2 if self.symmetric and self.queue_2 is None else 1
        if self.queue.size < batch * world_size * views:
            raise ValueError(f"model.queue_size={self.queue.size} is smaller than the {batch * world_size * views} keys "
                             f"enqueued per step (batch {batch} x {world_size} ranks x {views} views per queue)")

    def prepare(self) -> None:
        """``batchnorm: sync`` under DDP: BatchNorm over the global batch in every encoder."""
        if self.batchnorm == "sync" and distributed.world_size() > 1:
            on_gpu = self.trainer.strategy.root_device.type == "cuda"
            for name in ("backbone", "projector", "momentum_backbone", "momentum_projector"):
                module = getattr(self, name)
                setattr(self, name, synchronise_batchnorm(module, on_gpu))
        if self.batchnorm == "shuffle" and self.trainer.world_size == 1:
            rank_zero_warn("model.batchnorm: shuffle on a single process cannot stop the BatchNorm leak; "
                           "use batchnorm: split on one device")

    # ------------------------------------------------------------------ encoders
    def _queries(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.projector(self.backbone(images)), dim=1)

    def _key_forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.momentum_projector(self.momentum_backbone(images)), dim=1)

    @torch.no_grad()
    def _keys(self, images: torch.Tensor) -> torch.Tensor:
        """Keys, with the batch shuffled before the key encoder and unshuffled after."""
        if self.batchnorm == "shuffle" and distributed.world_size() > 1:
            return self._keys_cross_rank_shuffle(images)
        if self.batchnorm in ("split", "shuffle"):
            perm = torch.randperm(images.shape[0], device=images.device)
            return self._key_forward(images[perm])[torch.argsort(perm)]
        return self._key_forward(images)

    def _keys_cross_rank_shuffle(self, images: torch.Tensor) -> torch.Tensor:
        everyone = distributed.gather_all(images)
        total, local = everyone.shape[0], images.shape[0]
        perm = torch.randperm(total, device=images.device)
        torch.distributed.broadcast(perm, src=0)
        rank = distributed.rank()
        keys = distributed.gather_all(self._key_forward(everyone[perm[rank * local:(rank + 1) * local]]))
        return keys[torch.argsort(perm)][rank * local:(rank + 1) * local]

    # ------------------------------------------------------------------ BG_Swaps and hardness
    def _hard_negative(self, query: torch.Tensor, positive: torch.Tensor,
                       key_view: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """BG_Swaps: one more logit per query, q . k(negative) / tau, or -inf where the sample
        got no negative (which adds exactly nothing to the softmax)."""
        key = self._keys(key_view["hard_negative"])
        return swap_negative_logit(query, key, positive, key_view["hard_negative_valid"], self.temperature)

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        log_dir = self.trainer.log_dir if self.trainer is not None else None
        if self.histogram.count and log_dir and self.trainer.is_global_zero:
            self.histogram.save(f"{log_dir}/hardness/epoch_{self.current_epoch:03d}.png",
                                f"epoch {self.current_epoch}: query-negative similarity", self.negatives.band)
        self.histogram.reset()
