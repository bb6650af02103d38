"""A shuffling sampler that can resume in the middle of an epoch.

The order of epoch ``e`` is a permutation drawn from a generator seeded with
``(seed, e)`` alone, so it is the same in every run with that seed; after a restart the
data module tells it how many samples of the interrupted epoch were already consumed,
and that epoch continues where it stopped instead of starting over.
"""
from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class ResumableSampler(Sampler[int]):
    def __init__(self, size: int, seed: int = 0) -> None:
        self.size, self.seed = size, seed
        self.epoch = 0
        self.skip_epoch, self.skip = -1, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def resume(self, epoch: int, consumed: int) -> None:
        """Epoch ``epoch`` already used its first ``consumed`` samples."""
        self.skip_epoch, self.skip = epoch, consumed

    def order(self, epoch: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.size, generator=generator)

    def __iter__(self) -> Iterator[int]:
        order = self.order(self.epoch)
        if self.epoch == self.skip_epoch:
            order = order[self.skip:]
            self.skip_epoch, self.skip = -1, 0
        return iter(order.tolist())

    def __len__(self) -> int:
        return self.size
