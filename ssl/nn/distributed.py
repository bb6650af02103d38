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
