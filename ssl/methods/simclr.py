"""SimCLR (Chen, Kornblith, Norouzi, Hinton 2020, arXiv 2002.05709) as an sslkit method.

Backbone + projection head; NT-Xent over the global batch: each anchor against its other view
and the 2N - 2 other embeddings of the batch (``sslkit.nn.losses.nt_xent``). Like MoCo v2's
queue, those negatives can be narrowed to a hardness band, and BG_Swaps' hard negative joins
the (view 1 -> view 2) term.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from jsonargparse import lazy_instance
from torch import nn

from sslkit.augmentations import MoCoV2Views, MultiView
from sslkit.eval.knn import KNNConfig
from sslkit.eval.online import OnlineClassifierConfig
from sslkit.nn.backbones import BackboneConfig
from sslkit.nn.hardness import HardNegatives, HardnessBand, MoCHi, hardness_statistics, swap_negative_logit
from sslkit.nn.losses import info_nce_logits, simclr_pairs

from .method import SSLMethod, as_config, embedding_spread
from .optim import OptimConfig
from .speed import SpeedConfig


def simclr_head(input_dim: int, hidden_dim: int, output_dim: int, num_layers: int = 2,
                batch_norm: bool = True) -> nn.Sequential:
    """SimCLR's projection head (google-research/simclr ``model_util.py``): ``num_layers - 1``
    x [Linear (no bias), BN, ReLU] at ``hidden_dim``, then Linear (no bias) and a BN with scale
    but no shift (``center=False``). Without ``batch_norm``: Linears with biases and ReLUs
    (solo-learn's ``simclr.py``)."""
    layers: list[nn.Module] = []
    dim = input_dim
    for _ in range(num_layers - 1):
        layers += [nn.Linear(dim, hidden_dim, bias=not batch_norm)]
        layers += [nn.BatchNorm1d(hidden_dim)] if batch_norm else []
        layers += [nn.ReLU(inplace=True)]
        dim = hidden_dim
    layers.append(nn.Linear(dim, output_dim, bias=not batch_norm))
    if batch_norm:
        last = nn.BatchNorm1d(output_dim)
        last.bias.requires_grad_(False)
        layers.append(last)
    return nn.Sequential(*layers)


class SimCLR(SSLMethod):
    """SimCLR.

    Args:
        backbone: the encoder (``BackboneConfig``).
        proj_hidden_dim: the head's hidden width; ``None`` = the backbone's feature size.
        proj_output_dim: embedding size (128).
        proj_layers: 2 (SimCLR v1, the paper) or 3 (SimCLR v2's ``num_proj_layers``).
        proj_batch_norm: the official head's BatchNorms (False: solo-learn's head without them).
        temperature: NT-Xent temperature (0.1, ``run.py``).
        directions: ``sum`` the two views' losses (the official ``loss_a + loss_b``) or take
            their ``mean`` (solo-learn, lightly: half the official loss).
        gather: negatives from every rank (the global batch, as the TPU code's cross-replica
            concatenation); False = each rank's own batch.
        global_batchnorm: BatchNorm over the global batch under DDP (``global_bn``).
        hardness_band, hardness_unit, negative_beta, mochi, hardness_log_every: as in
            ``MoCoV2``, over each anchor's 2N - 2 negatives instead of a queue.
        augment: default SimCLR's (``data_util.py``): crop 0.08-1 (bicubic), flip, colour
            jitter (0.8, 0.8, 0.8, 0.2) p=0.8, grayscale p=0.2, blur p=0.5 on each view.
        optim: default ``run.py``: LARS lr 0.3 x B/256, wd 1e-6, momentum 0.9, biases and BN
            without weight decay or adaptation, 10 warm-up epochs from 0, cosine to 0.
        speed, knn, online_classifier: see ``SSLMethod``.
    """

    uses_negatives = True

    def __init__(
        self,
        backbone: BackboneConfig | str = "torchvision.resnet50",
        proj_hidden_dim: int | None = None,
        proj_output_dim: int = 128,
        proj_layers: int = 2,
        proj_batch_norm: bool = True,
        temperature: float = 0.1,
        directions: Literal["sum", "mean"] = "sum",
        gather: bool = True,
        global_batchnorm: bool = True,
        hardness_band: tuple[float, float] | None = None,
        hardness_unit: Literal["fraction", "count"] = "fraction",
        negative_beta: float = 0.0,
        mochi: MoCHi | None = None,
        hardness_log_every: int = 50,
        augment: MultiView = lazy_instance(MoCoV2Views, crop_scale=(0.08, 1.0), crop_interpolation="bicubic",
                                           jitter=(0.8, 0.8, 0.8, 0.2)),
        optim: OptimConfig | None = OptimConfig(name="lars", lr=0.3, weight_decay=1e-6, exclude_bias_and_norm=True,
                                         warmup_epochs=10, warmup_ends_at_peak=False),
        speed: SpeedConfig | None = None,
        knn: KNNConfig | None = None,
        online_classifier: OnlineClassifierConfig | None = None,
    ) -> None:
        super().__init__(backbone, augment, optim, speed, knn, online_classifier)
        self.projector = simclr_head(self.backbone.dim, proj_hidden_dim or self.backbone.dim, proj_output_dim,
                                     proj_layers, proj_batch_norm)
        if directions not in ("sum", "mean"):
            raise ValueError(f"model.directions must be sum or mean, got '{directions}'")
        self.directions = directions
        self.temperature, self.gather, self.use_global_batchnorm = temperature, gather, global_batchnorm
        self.hardness_band, self.hardness_unit = hardness_band, hardness_unit
        self.mochi = as_config(mochi, MoCHi) if mochi is not None else None
        self.negative_beta, self.hardness_log_every = negative_beta, hardness_log_every
        self._selections: dict[int, HardNegatives] = {}

    def selection(self, negatives: int) -> HardNegatives | None:
        """The hardness band, beta and MoCHi over ``negatives`` per anchor (2N - 2), or None
        for plain NT-Xent."""
        if self.hardness_band is None and self.negative_beta == 0.0 and self.mochi is None:
            return None
        if negatives not in self._selections:
            band = (HardnessBand(*self.hardness_band, negatives, self.hardness_unit)
                    if self.hardness_band is not None else None)
            self._selections[negatives] = HardNegatives(band, self.negative_beta, self.mochi)
        return self._selections[negatives]

    def check_data(self, datamodule, world_size: int = 1) -> None:
        """Besides the recipe: a hardness band and MoCHi that fit the 2N - 2 negatives."""
        super().check_data(datamodule, world_size)
        negatives = 2 * datamodule.batch_size * (world_size if self.gather else 1) - 2
        if self.mochi is not None and self.mochi.hardest > negatives:
            raise ValueError(f"model.mochi.hardest={self.mochi.hardest} exceeds the {negatives} negatives of each "
                             f"anchor (2 x batch - 2)")
        self.selection(negatives)

    def prepare(self) -> None:
        if self.use_global_batchnorm:
            self.global_batchnorm("backbone", "projector")

    def step(self, views: list[dict], labels: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
        """NT-Xent of the two views, summed over the two directions as in the official code."""
        z1, z2 = (self.projector(self.backbone(view["image"])) for view in views[:2])
        pairs = simclr_pairs(z1, z2, self.gather)
        negatives = pairs[0][2].shape[0] - 2
        selection = self.selection(negatives)
        loss, stats, first = z1.new_zeros(()), {}, None
        for direction, (query, positive, candidates, exclude) in enumerate(pairs):
            extra = None
            if direction == 0 and "hard_negative" in views[1]:
                extra, stats = self._hard_negative(query, positive, views[1])
            logits, targets, seen = info_nce_logits(query, positive, candidates, self.temperature, selection, extra,
                                                    exclude)
            loss = loss + F.cross_entropy(logits, targets)
            if direction == 0:
                first = (query, positive, logits, seen, candidates, exclude)
        if self.directions == "mean":
            loss = loss / 2
        return loss, {**stats, **self.statistics(*first, labels)}

    def _hard_negative(self, query: torch.Tensor, positive: torch.Tensor,
                       view: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """BG_Swaps: q . z(negative) / tau as one more logit of each anchor of view 1, or -inf
        where the sample got none; its embedding takes gradient, as every SimCLR embedding."""
        negative = F.normalize(self.projector(self.backbone(view["hard_negative"])), dim=1)
        return swap_negative_logit(query, negative, positive, view["hard_negative_valid"], self.temperature)

    @torch.no_grad()
    def statistics(self, query: torch.Tensor, positive: torch.Tensor, logits: torch.Tensor, seen,
                   candidates: torch.Tensor, exclude: torch.Tensor,
                   labels: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """What the (view 1 -> view 2) term saw: instance accuracy (the positive's logit beats
        every other), similarities, spread and, with a band, the hardness statistics."""
        similarity = (query * positive).sum(1)
        negative = (query @ candidates.T)[~exclude]
        stats = {"train/instance_acc": (logits.argmax(1) == 0).float().mean(),
                 "train/embedding_spread": embedding_spread(query),
                 "train/positive_sim": similarity.mean(),
                 "train/negative_sim": negative.mean()}
        every = self.hardness_log_every
        if seen is not None and every > 0 and self.global_step % every == 0 and not self.measuring:
            candidate_labels = None
            if labels is not None:
                from sslkit.nn import distributed

                everyone = distributed.gather_all(labels) if self.gather else labels
                candidate_labels = torch.cat([everyone, everyone])
            stats.update(hardness_statistics(seen.similarity, seen.band_similarity, seen.band_index, labels,
                                             candidate_labels))
        return stats
