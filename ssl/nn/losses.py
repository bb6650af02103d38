"""Self-supervised losses as plain functions, usable without a trainer."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def info_nce(
    query: torch.Tensor,
    positive: torch.Tensor,
    negatives: torch.Tensor,
    temperature: float = 0.2,
    selection=None,
    extra_logits: torch.Tensor | None = None,
) -> torch.Tensor:
    """InfoNCE of MoCo (He et al. 2020, eq. 1): cross-entropy with the positive at index 0.

    Args:
        query: ``[B, D]`` L2-normalised queries.
        positive: ``[B, D]`` L2-normalised keys, one positive per query (no gradient
            flows through it when it comes from the momentum encoder).
        negatives: ``[K, D]`` negatives shared by every query (the queue), or
            ``[B, K, D]`` negatives per query.
        temperature: softmax temperature tau.
        selection: which negatives each query is contrasted with, and how they weigh
            (``sslkit.nn.hardness.HardNegatives``: a hardness band, beta-reweighting,
            MoCHi); ``None``: all of them, as in MoCo.
        extra_logits: ``[B, E]`` more negative logits per query, already divided by the
            temperature (BG_Swaps' hard negative; ``-inf`` where a query has none).

    Returns:
        The mean loss over the batch.
    """
    logits, targets, _ = info_nce_logits(query, positive, negatives, temperature, selection, extra_logits)
    return F.cross_entropy(logits, targets)


def info_nce_logits(
    query: torch.Tensor,
    positive: torch.Tensor,
    negatives: torch.Tensor,
    temperature: float = 0.2,
    selection=None,
    extra_logits: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, object]:
    """Logits ``[B, 1 + M (+ E)]`` (positive first), the all-zero targets of ``info_nce``, and
    what the ``selection`` handed back of the negatives each query saw (``None`` without one):
    MoCo's ``builder.py`` forward, up to the logits."""
    if query.shape != positive.shape:
        raise ValueError(f"query {tuple(query.shape)} and positive {tuple(positive.shape)} differ")
    pos = (query * positive).sum(dim=1, keepdim=True) / temperature
    seen = None
    if selection is not None:
        neg, seen = selection.logits(query, negatives, temperature)
    elif negatives.dim() == 2:
        neg = query @ negatives.to(query.dtype).T / temperature
    else:
        neg = torch.einsum("bd,bkd->bk", query, negatives.to(query.dtype)) / temperature
    parts = [pos, neg] + ([extra_logits.to(neg.dtype)] if extra_logits is not None else [])
    targets = torch.zeros(query.shape[0], dtype=torch.long, device=query.device)
    return torch.cat(parts, dim=1), targets, seen


def byol_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BYOL's regression loss (Grill et al. 2020, eq. 2): ``2 - 2 cos(p, sg(z'))``, batch mean.

    Equals the squared distance between the L2-normalised prediction and target; the
    target gets no gradient.
    """
    p = F.normalize(prediction, dim=1)
    z = F.normalize(target.detach(), dim=1)
    return (2 - 2 * (p * z).sum(dim=1)).mean()


@torch.no_grad()
def sinkhorn(scores: torch.Tensor, epsilon: float = 0.05, iterations: int = 3) -> torch.Tensor:
    """SwAV's Sinkhorn-Knopp codes (Caron et al. 2020, sec. 3.1 and Algorithm 1).

    ``scores`` ``[B, K]`` (embeddings x prototypes) -> codes ``[B, K]`` whose rows sum to 1
    and whose prototype marginals are (approximately) equal. Under DDP the normalising
    sums are all-reduced and B is the global batch, so every rank gets the rows of the
    codes a single process would compute on the concatenated batch.
    """
    from .distributed import all_reduce_max, all_reduce_sum, world_size

    scores = scores.float()
    if not torch.isfinite(scores).all():
        raise FloatingPointError("non-finite scores passed to sinkhorn")
    shift = all_reduce_max(scores.max().clone())
    q = torch.exp((scores - shift) / epsilon).T
    num_prototypes, batch = q.shape[0], q.shape[1] * world_size()
    q /= all_reduce_sum(q.sum())
    for _ in range(iterations):
        q /= all_reduce_sum(q.sum(dim=1, keepdim=True))
        q /= num_prototypes
        q /= q.sum(dim=0, keepdim=True)
        q /= batch
    return (q * batch).T


def swav_loss(
    scores: list[torch.Tensor], codes: list[torch.Tensor], temperature: float = 0.1
) -> torch.Tensor:
    """Swapped prediction (Caron et al. 2020, eq. 1): the code of crop s is predicted from
    every other crop t: ``-sum_k q_s,k log softmax(z_t . C / tau)_k``, averaged over pairs
    and batch. ``codes[i]`` belongs to ``scores[i]``; crops beyond ``len(codes)`` only
    predict."""
    total = scores[0].new_zeros(())
    for s, q in enumerate(codes):
        others = [t for t in range(len(scores)) if t != s]
        for t in others:
            log_p = F.log_softmax(scores[t] / temperature, dim=1)
            total = total - (q * log_p).sum(dim=1).mean() / len(others)
    return total / len(codes)
