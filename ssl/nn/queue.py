"""FIFO queue of negative keys for MoCo (He et al. 2020, sec. 3.2)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .distributed import gather_all


class NegativeQueue(nn.Module):
    """A ring buffer of ``size`` L2-normalised keys of dimension ``dim``.

    Contents and pointer are persistent buffers, so checkpoints carry them and a resumed
    run continues with the same negatives. ``enqueue`` gathers the keys of every rank
    first, so all ranks hold the same queue under DDP. Keys are written at
    ``(ptr + i) mod size``: any batch size wraps around correctly. The class label of each
    key is kept beside it when the data has labels (-1 otherwise), for diagnostics only.
    """

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        if size < 1 or dim < 1:
            raise ValueError(f"queue size and dim must be positive, got size={size}, dim={dim}")
        self.size = size
        self.dim = dim
        self.register_buffer("keys", F.normalize(torch.randn(size, dim), dim=1))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))
        self.register_buffer("labels", torch.full((size,), -1, dtype=torch.long))

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor, labels: torch.Tensor | None = None) -> None:
        """Append ``keys`` ``[B, dim]`` (and their ``labels`` ``[B]``, if known) from this
        rank and every other rank to the queue."""
        if labels is None:
            labels = torch.full((keys.shape[0],), -1, dtype=torch.long, device=keys.device)
        if labels.shape[0] != keys.shape[0]:
            raise ValueError(f"{keys.shape[0]} keys but {labels.shape[0]} labels")
        keys = gather_all(keys.detach())
        labels = gather_all(labels.detach().long())
        n = keys.shape[0]
        if keys.dim() != 2 or keys.shape[1] != self.dim:
            raise ValueError(f"expected keys of shape [B, {self.dim}], got {tuple(keys.shape)}")
        if n > self.size:
            raise ValueError(
                f"queue_size={self.size} is smaller than the {n} keys enqueued per step "
                f"(global batch x views); raise queue_size to at least {n}"
            )
        index = (self.ptr + torch.arange(n, device=self.keys.device)) % self.size
        self.keys[index] = keys.to(self.keys.dtype)
        self.labels[index] = labels.to(self.labels.device)
        self.ptr.copy_((self.ptr + n) % self.size)
        self.filled.copy_(torch.clamp(self.filled + n, max=self.size))

