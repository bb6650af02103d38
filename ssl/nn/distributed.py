"""Collective helpers that are no-ops in a single process."""
from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


@torch.no_grad()
def gather_all(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` from every rank along dim 0, in rank order (no gradient)."""
    if world_size() == 1:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


class _GatherWithGradient(torch.autograd.Function):
    """All-gather along dim 0 whose backward hands each rank the gradient of its own rows summed
    over every rank's loss (an all-reduce, then the rank's slice), so that DDP's gradient
    average over ranks gives the gradient of the global-batch loss (VICReg's
    ``FullGatherLayer``, solo-learn's ``GatherLayer``)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        count = torch.tensor([tensor.shape[0]], device=tensor.device)
        sizes = [torch.zeros_like(count) for _ in range(world_size())]
        dist.all_gather(sizes, count)
        sizes = [int(size) for size in sizes]
        largest = max(sizes)
        padded = tensor.new_zeros((largest, *tensor.shape[1:]))
        padded[:tensor.shape[0]] = tensor
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded.contiguous())
        ctx.sizes, ctx.rank = sizes, rank()
        return torch.cat([part[:size] for part, size in zip(parts, sizes)])

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        start = sum(ctx.sizes[:ctx.rank])
        return grad[start:start + ctx.sizes[ctx.rank]]


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` from every rank along dim 0, in rank order, with gradient: the
    global batch of a loss over it (SimCLR's negatives, Barlow Twins' cross-correlation,
    VICReg's covariance). Ranks may hold different numbers of rows. Backward: each rank gets
    the gradient of its rows summed over all ranks' losses, so under DDP (which averages
    gradients) the parameters get the gradient of the mean of the ranks' losses, as one
    process with the whole batch would. The identity in one process."""
    if world_size() == 1:
        return tensor
    return _GatherWithGradient.apply(tensor)


def batch_offset(rows: int) -> int:
    """Where this rank's ``rows`` start in ``gather_with_grad``'s result."""
    if world_size() == 1:
        return 0
    sizes = gather_all(torch.tensor([rows]))
    return int(sizes[:rank()].sum())


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over ranks in place and return it."""
    if world_size() > 1:
        dist.all_reduce(tensor)
    return tensor


def all_reduce_max(tensor: torch.Tensor) -> torch.Tensor:
    """Maximum of ``tensor`` over ranks in place and return it."""
    if world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor


def from_rank_zero(compute: Callable[[], T]) -> T:
    """``compute()`` on rank 0 only, its result (picklable) sent to every rank; an error
    raised there is raised on every rank, so none waits forever."""
    if world_size() == 1:
        return compute()
    message: list = [None]
    if rank() == 0:
        try:
            message = [("ok", compute())]
        except Exception as err:  # noqa: BLE001 (re-raised on every rank below)
            message = [("error", err)]
    dist.broadcast_object_list(message, src=0)
    status, value = message[0]
    if status == "error":
        raise value
    return value
