"""Hardness-aware negatives for contrastive learning (Cai, Frankle, Schwab, Morcos 2020,
arXiv 2010.06682), with two optional relatives: MoCHi's synthetic hard negatives
(Kalantidis et al. 2020) and Robinson et al.'s (2021) beta-reweighting.

For each query the queue's negatives are ranked by similarity (hardest = most similar).
``HardnessBand`` keeps ranks ``[skip, end)`` per query: ``topk(end)`` (no full sort),
minus the first ``skip``. The full band skips the selection, so it is plain InfoNCE to
the bit.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


class HardnessBand:
    """Negatives whose hardness rank lies in ``[lo, hi)`` of a queue of ``queue_size``.

    ``lo``, ``hi``: fractions of the queue (``unit='fraction'``; e.g. ``(0.001, 0.05)``
    drops the hardest 0.1% and keeps up to the hardest 5%), or numbers of negatives
    (``unit='count'``; e.g. ``(4, 205)``). Ranks ``floor(lo K)`` to ``ceil(hi K)``.
    """

    def __init__(self, lo: float, hi: float, queue_size: int, unit: str = "fraction") -> None:
        if unit not in ("fraction", "count"):
            raise ValueError(f"hardness unit must be 'fraction' or 'count', got '{unit}'")
        limit = 1.0 if unit == "fraction" else queue_size
        if not (0 <= lo < hi <= limit):
            raise ValueError(
                f"hardness_band [{lo}, {hi}] must satisfy 0 <= lo < hi <= {limit} "
                f"({'fractions of the queue' if unit == 'fraction' else 'negatives, queue_size ' + str(queue_size)})"
            )
        if unit == "fraction":
            skip, end = math.floor(round(lo * queue_size, 9)), math.ceil(round(hi * queue_size, 9))
        else:
            skip, end = int(lo), int(math.ceil(hi))
        if end - skip < 1:
            raise ValueError(
                f"hardness_band [{lo}, {hi}] keeps no negative of a queue of {queue_size} "
                f"(ranks {skip} to {end}); widen the band or grow the queue"
            )
        self.lo, self.hi, self.unit = lo, hi, unit
        self.queue_size, self.skip, self.end = queue_size, skip, end

    @property
    def full(self) -> bool:
        return self.skip == 0 and self.end >= self.queue_size

    @property
    def size(self) -> int:
        return min(self.end, self.queue_size) - self.skip

    def select(self, similarity: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``similarity`` ``[B, K]`` -> (band similarities ``[B, size]``, hardest first, and
        their queue indices). Differentiable in the selected entries only."""
        if similarity.shape[1] != self.queue_size:
            raise ValueError(f"band built for a queue of {self.queue_size}, got {similarity.shape[1]} negatives")
        if self.full:
            index = torch.arange(self.queue_size, device=similarity.device).expand_as(similarity)
            return similarity, index
        values, index = similarity.topk(min(self.end, self.queue_size), dim=1, sorted=True)
        return values[:, self.skip:], index[:, self.skip:]

    def __repr__(self) -> str:
        return f"HardnessBand([{self.lo}, {self.hi}] {self.unit}: ranks {self.skip}..{self.end} of {self.queue_size})"


@dataclass
class MoCHi:
    """Synthetic hard negatives (Kalantidis et al. 2020, sec. 4): from each query's
    ``hardest`` negatives, ``synthetic`` mixes of two (h = n_i a + n_j (1 - a), a ~ U(0, 1))
    and ``query_synthetic`` mixes with the query (h' = q b + n_j (1 - b), b ~ U(0, 0.5),
    q without gradient), all L2-normalised and appended to the logits."""

    hardest: int = 1024
    synthetic: int = 1024
    query_synthetic: int = 256


def mochi_negatives(query: torch.Tensor, negatives: torch.Tensor, similarity: torch.Tensor,
                    config: MoCHi) -> torch.Tensor:
    """Synthetic negatives ``[B, synthetic + query_synthetic, D]`` per query."""
    batch = query.shape[0]
    hardest = min(config.hardest, negatives.shape[0])
    hard_index = similarity.detach().topk(hardest, dim=1).indices
    pick = lambda count: hard_index.gather(1, torch.randint(0, hardest, (batch, count), device=query.device))  # noqa: E731
    made = []
    if config.synthetic > 0:
        a = torch.rand(batch, config.synthetic, 1, device=query.device, dtype=query.dtype)
        made.append(a * negatives[pick(config.synthetic)] + (1 - a) * negatives[pick(config.synthetic)])
    if config.query_synthetic > 0:
        b = 0.5 * torch.rand(batch, config.query_synthetic, 1, device=query.device, dtype=query.dtype)
        made.append(b * query.detach().unsqueeze(1) + (1 - b) * negatives[pick(config.query_synthetic)])
    return F.normalize(torch.cat(made, dim=1), dim=2)


@dataclass
class NegativeSimilarity:
    """What a query saw of its negatives: every similarity ``[B, K]``, those of its band
    ``[B, M]`` and their queue indices, for the hardness statistics."""

    similarity: torch.Tensor
    band_similarity: torch.Tensor
    band_index: torch.Tensor


class HardNegatives:
    """The negatives each query of InfoNCE is contrasted with: its ``band`` of the queue
    (``HardnessBand``; ``None`` = all), optionally beta-reweighted and with MoCHi's synthetic
    negatives appended. Passed to ``sslkit.nn.losses.info_nce(selection=...)``; with no band,
    beta or MoCHi it is plain InfoNCE to the bit. ``logits`` also hands back what each query
    saw (``NegativeSimilarity``) for diagnostics.

    beta-reweighting (Robinson et al. 2021, eq. 3 without debiasing) replaces the sum over
    negatives by M times their mean under weights ``w_i = softmax(beta s_i)`` (no gradient
    through w): a term ``log(M w_i)`` added to each negative logit. ``beta = 0`` is InfoNCE.
    """

    def __init__(self, band: HardnessBand | None = None, beta: float = 0.0, mochi: MoCHi | None = None) -> None:
        self.band, self.beta, self.mochi = band, beta, mochi

    def logits(self, query: torch.Tensor, negatives: torch.Tensor, temperature: float,
               exclude: torch.Tensor | None = None) -> tuple[torch.Tensor, NegativeSimilarity]:
        """Negative logits ``[B, M]`` (divided by ``temperature``) of ``query`` against
        ``negatives`` ``[K, D]``, and what each query saw. ``exclude`` ``[B, K]``: rows of
        ``negatives`` that are no negatives of that query (SimCLR's positive and the query
        itself; the same count per query): left out, and band indices still count in
        ``negatives``."""
        similarity = query @ negatives.to(query.dtype).T
        full_similarity = similarity
        columns = None
        if exclude is not None:
            keep = ~exclude
            columns = torch.arange(similarity.shape[1], device=similarity.device).expand_as(similarity)
            columns = columns[keep].view(query.shape[0], -1)
            similarity = similarity[keep].view(query.shape[0], -1)
            full_similarity = full_similarity.masked_fill(exclude, float("-inf"))
        if self.band is None or self.band.full:
            band_similarity = similarity
            band_index = torch.arange(similarity.shape[1], device=similarity.device).expand_as(similarity)
        else:
            band_similarity, band_index = self.band.select(similarity)
        if columns is not None:
            band_index = columns.gather(1, band_index)
        seen = NegativeSimilarity(similarity, band_similarity, band_index)
        parts = [band_similarity]
        if self.mochi is not None:
            synthetic = mochi_negatives(query, negatives.to(query.dtype), full_similarity, self.mochi)
            parts.append(torch.einsum("bd,bmd->bm", query, synthetic))
        logits = (torch.cat(parts, dim=1) if len(parts) > 1 else band_similarity) / temperature
        if self.beta != 0.0:
            with torch.no_grad():
                s = logits * temperature
                log_weight = math.log(s.shape[1]) + self.beta * s - torch.logsumexp(self.beta * s, dim=1, keepdim=True)
            logits = logits + log_weight
        return logits, seen


def swap_negative_logit(query: torch.Tensor, negative: torch.Tensor, positive: torch.Tensor, valid: torch.Tensor,
                        temperature: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """BG_Swaps' hard negative as one more logit per query (Ryali et al. 2021, sec. 3):
    ``q . n / temperature``, or ``-inf`` where the sample got none (which adds exactly nothing
    to the softmax); with how often it was drawn, its mean similarity and how often it beats
    the positive."""
    valid = valid.view(-1, 1)
    similarity = (query * negative).sum(1, keepdim=True)
    with torch.no_grad():
        count = valid.sum().clamp_min(1)
        beats = similarity > (query * positive).sum(1, keepdim=True)
        stats = {"train/swap_negative_rate": valid.float().mean(),
                 "train/swap_negative_sim": (similarity * valid).sum() / count,
                 "train/swap_negative_beats_positive": (beats & valid).sum() / count}
    return (similarity / temperature).masked_fill(~valid, float("-inf")), stats


@torch.no_grad()
def hardness_statistics(
    similarity: torch.Tensor,
    band_similarity: torch.Tensor,
    band_index: torch.Tensor,
    query_labels: torch.Tensor | None = None,
    queue_labels: torch.Tensor | None = None,
    quantiles: tuple[float, ...] = (0.5, 0.9, 0.99, 0.999),
    max_samples: int = 1 << 20,
) -> dict[str, torch.Tensor]:
    """Quantiles of query-negative similarity, the band's similarity range, and (with
    labels; -1 = unknown) the fraction of same-class negatives in the band and in the
    whole queue (the paper finds hard negatives more often share the query's class)."""
    flat = similarity.detach().float().flatten()
    if flat.numel() > max_samples:
        flat = flat[torch.randint(0, flat.numel(), (max_samples,), device=flat.device)]
    q = torch.quantile(flat, torch.tensor(quantiles, device=flat.device))
    stats = {f"hardness/sim_q{str(p).replace('0.', '')}": v for p, v in zip(quantiles, q)}
    stats["hardness/band_sim_max"] = band_similarity.detach().float().amax(1).mean()
    stats["hardness/band_sim_min"] = band_similarity.detach().float().amin(1).mean()
    stats["hardness/band_size"] = torch.tensor(float(band_similarity.shape[1]))
    if query_labels is not None and queue_labels is not None:
        known = queue_labels >= 0
        if known.any():
            same_queue = (queue_labels.unsqueeze(0) == query_labels.unsqueeze(1)) & known.unsqueeze(0)
            stats["hardness/same_class_queue"] = same_queue.float().sum() / (known.sum() * len(query_labels))
            band_labels = queue_labels[band_index]
            band_known = band_labels >= 0
            same_band = (band_labels == query_labels.unsqueeze(1)) & band_known
            stats["hardness/same_class_band"] = same_band.float().sum() / band_known.sum().clamp_min(1)
    return stats

