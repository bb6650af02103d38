"""Self-supervised losses as plain functions, usable without a trainer.

The losses over a batch (``nt_xent``, ``barlow_twins_loss``, ``vicreg_loss``) take
``gather``: under ``torch.distributed`` they see the global batch through
``sslkit.nn.distributed.gather_with_grad`` (with gradient), so that DDP's averaged
gradients equal one process holding the whole batch; in one process it changes nothing.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .distributed import batch_offset, gather_all, gather_with_grad


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
    exclude: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, object]:
    """Logits ``[B, 1 + M (+ E)]`` (positive first), the all-zero targets of ``info_nce``, and
    what the ``selection`` handed back of the negatives each query saw (``None`` without one):
    MoCo's ``builder.py`` forward, up to the logits. ``exclude`` ``[B, K]`` (with shared
    ``[K, D]`` negatives): True where a row of ``negatives`` is no negative of that query
    (SimCLR's positive and the query itself); the same count in every row."""
    if query.shape != positive.shape:
        raise ValueError(f"query {tuple(query.shape)} and positive {tuple(positive.shape)} differ")
    pos = (query * positive).sum(dim=1, keepdim=True) / temperature
    seen = None
    if selection is not None:
        neg, seen = selection.logits(query, negatives, temperature, exclude)
    elif negatives.dim() == 2:
        neg = query @ negatives.to(query.dtype).T / temperature
        if exclude is not None:
            neg = neg[~exclude].view(query.shape[0], -1)
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


def _at_least_float32(z: torch.Tensor) -> torch.Tensor:
    """Statistics over the batch in float32 at least, under bf16/fp16 autocast too."""
    return z.float() if z.dtype in (torch.float16, torch.bfloat16) else z


def off_diagonal(matrix: torch.Tensor) -> torch.Tensor:
    """The off-diagonal entries of a square matrix, flattened."""
    n = matrix.shape[0]
    return matrix.flatten()[:-1].view(n - 1, n + 1)[:, 1:].flatten()


def simclr_pairs(z1: torch.Tensor, z2: torch.Tensor, gather: bool = True
                 ) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """SimCLR's two directions as ``(queries, positives, candidates, exclude)``: the local
    anchors of one view (L2-normalised), their positives in the other view, the candidates
    ``[other view's global batch; own view's global batch]`` ``[2M, D]``, and the mask of the
    two candidates of each anchor that are no negatives (its positive and itself), leaving
    2M - 2 negatives (google-research/simclr ``objective.py``, ``add_contrastive_loss``)."""
    z1, z2 = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
    all1, all2 = (gather_with_grad(z1), gather_with_grad(z2)) if gather else (z1, z2)
    rows, total = z1.shape[0], all1.shape[0]
    columns = (batch_offset(rows) if gather else 0) + torch.arange(rows, device=z1.device)
    exclude = torch.zeros(rows, 2 * total, dtype=torch.bool, device=z1.device)
    exclude[torch.arange(rows, device=z1.device), columns] = True
    exclude[torch.arange(rows, device=z1.device), total + columns] = True
    return [(z1, z2, torch.cat([all2, all1]), exclude), (z2, z1, torch.cat([all1, all2]), exclude)]


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.1, gather: bool = True) -> torch.Tensor:
    """SimCLR's NT-Xent (Chen et al. 2020, eq. 1; google-research/simclr ``objective.py``):
    each anchor of each view against its positive (the other view of its image) and the
    2N - 2 other embeddings of the (global) batch, cosine similarities over ``temperature``;
    the official code sums the two views' mean cross-entropies (``reduce_mean(loss_a +
    loss_b)``), and so does this."""
    total = z1.new_zeros(())
    for query, positive, candidates, exclude in simclr_pairs(z1, z2, gather):
        logits, targets, _ = info_nce_logits(query, positive, candidates, temperature, exclude=exclude)
        total = total + F.cross_entropy(logits, targets)
    return total


def negative_cosine(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """SimSiam's D(p, stopgrad(z)) = -cos(p, z), batch mean (Chen & He 2021, eq. 1-2;
    facebookresearch/simsiam ``main_simsiam.py``: ``-CosineSimilarity(dim=1)(p, z).mean()``
    with ``z`` detached in ``builder.py``)."""
    return -F.cosine_similarity(prediction, target.detach(), dim=1).mean()


def barlow_twins_loss(z1: torch.Tensor, z2: torch.Tensor, lambd: float = 0.0051,
                      gather: bool = True) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Barlow Twins (Zbontar et al. 2021, eq. 1; facebookresearch/barlowtwins ``main.py``):
    the cross-correlation ``C`` of the two views' embeddings, each standardised over the
    (global) batch (``BatchNorm1d(affine=False)``, SyncBN there), ``sum_i (1 - C_ii)^2 +
    lambd sum_{i!=j} C_ij^2``. The official all-reduce of ``C`` carries no gradient, so its
    DDP gradient is 1/world_size of this one, which is the gradient of the global loss.
    Returns (loss, {on_diagonal, off_diagonal})."""
    z1, z2 = _at_least_float32(z1), _at_least_float32(z2)
    if gather:
        z1, z2 = gather_with_grad(z1), gather_with_grad(z2)
    standardise = lambda z: (z - z.mean(0)) / torch.sqrt(z.var(0, unbiased=False) + 1e-5)  # noqa: E731
    c = standardise(z1).T @ standardise(z2) / z1.shape[0]
    on = (torch.diagonal(c) - 1).pow(2).sum()
    off = off_diagonal(c).pow(2).sum()
    return on + lambd * off, {"on_diagonal": on.detach(), "off_diagonal": off.detach()}


def vicreg_loss(z1: torch.Tensor, z2: torch.Tensor, sim_weight: float = 25.0, var_weight: float = 25.0,
                cov_weight: float = 1.0, gather: bool = True) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """VICReg (Bardes et al. 2022, eq. 6; facebookresearch/vicreg ``main_vicreg.py``):
    invariance (mean squared error of the local pairs), variance (hinge on the std of each
    dimension, sqrt(var + 1e-4), at 1, averaged over the two views) and covariance (squared
    off-diagonal covariances over the dimension count, summed over the views), the last two
    over the (global) batch. Returns (loss, {invariance, variance, covariance})."""
    z1, z2 = _at_least_float32(z1), _at_least_float32(z2)
    invariance = F.mse_loss(z1, z2)
    if gather:
        z1, z2 = gather_with_grad(z1), gather_with_grad(z2)
    z1, z2 = z1 - z1.mean(0), z2 - z2.mean(0)
    std1, std2 = torch.sqrt(z1.var(0) + 1e-4), torch.sqrt(z2.var(0) + 1e-4)
    variance = F.relu(1 - std1).mean() / 2 + F.relu(1 - std2).mean() / 2
    n, d = z1.shape
    covariance = (off_diagonal(z1.T @ z1 / (n - 1)).pow(2).sum() + off_diagonal(z2.T @ z2 / (n - 1)).pow(2).sum()) / d
    loss = sim_weight * invariance + var_weight * variance + cov_weight * covariance
    return loss, {"invariance": invariance.detach(), "variance": variance.detach(),
                  "covariance": covariance.detach()}


def mocov3_loss(query: torch.Tensor, key: torch.Tensor, temperature: float = 1.0, gather: bool = True) -> torch.Tensor:
    """MoCo v3's contrastive loss (Chen, Xie & He 2021, Algorithm 1; facebookresearch/moco-v3
    ``moco/builder.py`` ``contrastive_loss``): L2-normalised queries against the keys of the
    (global) batch, the key of the same image as the positive, cross-entropy scaled by
    ``2 * temperature``. The keys come from the momentum encoder and carry no gradient, so
    they are gathered without it, as there; each rank's queries find their positives at
    ``batch_offset``."""
    q, k = F.normalize(query, dim=1), F.normalize(key.detach(), dim=1)
    if gather:
        k = gather_all(k)
    logits = q @ k.T / temperature
    offset = batch_offset(q.shape[0]) if gather else 0
    targets = offset + torch.arange(q.shape[0], device=q.device)
    return F.cross_entropy(logits, targets) * (2 * temperature)
