"""FIFO queues of embeddings: SwAV's feature queue, and MoCo's queue of negative keys
(He et al. 2020, sec. 3.2), which also keeps each key's class label for diagnostics."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .distributed import gather_all


class FeatureQueue(nn.Module):
    """A ring buffer of the last ``size`` embeddings of dimension ``dim``.

    Contents and pointer are persistent buffers, so checkpoints carry them and a resumed
    run continues with the same queue. ``enqueue`` gathers the embeddings of every rank
    first, so all ranks hold the same queue under DDP. Embeddings are written at
    ``(ptr + i) mod size``: any batch size wraps around correctly. SwAV (Caron et al. 2020,
    sec. 4) scores the queue against the prototypes to compute codes for small batches.
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
        self.register_load_state_dict_pre_hook(_drop_unused_labels)

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> torch.Tensor:
        """Append ``keys`` ``[B, dim]`` from this rank and every other rank; returns the
        queue positions they were written to."""
        keys = gather_all(keys.detach())
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
        self.ptr.copy_((self.ptr + n) % self.size)
        self.filled.copy_(torch.clamp(self.filled + n, max=self.size))
        return index


def _drop_unused_labels(module, state_dict, prefix, *args) -> None:
    """sslkit 0.2 kept SwAV's queue in a ``NegativeQueue``, with a label buffer it never used."""
    if type(module) is FeatureQueue:
        state_dict.pop(prefix + "labels", None)


class NegativeQueue(FeatureQueue):
    """MoCo's queue of negative keys, with the class label of each key beside it when the data
    has labels (-1 otherwise), for the hardness diagnostics only."""

    def __init__(self, size: int, dim: int) -> None:
        super().__init__(size, dim)
        self.register_buffer("labels", torch.full((size,), -1, dtype=torch.long))

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Append ``keys`` ``[B, dim]`` (and their ``labels`` ``[B]``, if known) from this
        rank and every other rank to the queue."""
        if labels is None:
            labels = torch.full((keys.shape[0],), -1, dtype=torch.long, device=keys.device)
        if labels.shape[0] != keys.shape[0]:
            raise ValueError(f"{keys.shape[0]} keys but {labels.shape[0]} labels")
        index = super().enqueue(keys)
        self.labels[index] = gather_all(labels.detach().long()).to(self.labels.device)
        return index
