"""Self-supervised losses as plain functions, usable without a trainer."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def info_nce(
    query: torch.Tensor,
    positive: torch.Tensor,
    negatives: torch.Tensor,
    temperature: float = 0.2,
) -> torch.Tensor:
    """InfoNCE of MoCo (He et al. 2020, eq. 1): cross-entropy with the positive at index 0.

    Args:
        query: ``[B, D]`` L2-normalised queries.
        positive: ``[B, D]`` L2-normalised keys, one positive per query (no gradient
            flows through it when it comes from the momentum encoder).
        negatives: ``[K, D]`` negatives shared by every query (the queue), or
            ``[B, K, D]`` negatives per query.
        temperature: softmax temperature tau.

    Returns:
        The mean loss over the batch.
    """
    return F.cross_entropy(*info_nce_logits(query, positive, negatives, temperature))


def info_nce_logits(
    query: torch.Tensor,
    positive: torch.Tensor,
    negatives: torch.Tensor,
    temperature: float = 0.2,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits ``[B, 1+K]`` (positive first) and the all-zero targets of InfoNCE."""
    if query.shape != positive.shape:
        raise ValueError(f"query {tuple(query.shape)} and positive {tuple(positive.shape)} differ")
    pos = (query * positive).sum(dim=1, keepdim=True)
    if negatives.dim() == 2:
        neg = query @ negatives.to(query.dtype).T
    else:
        neg = torch.einsum("bd,bkd->bk", query, negatives.to(query.dtype))
    logits = torch.cat([pos, neg], dim=1) / temperature
    targets = torch.zeros(query.shape[0], dtype=torch.long, device=query.device)
    return logits, targets
