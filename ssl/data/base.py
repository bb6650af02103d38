"""The DataModule contract every sslkit dataset follows.

Batches are dicts: ``image`` uint8 ``[B,3,H,W]`` on a fixed canvas, optional ``mask``
bool ``[B,1,H,W]``, optional ``label`` long ``[B]``, ``index`` long ``[B]``. Workers only
decode and resize; random augmentation happens on the device, in the method.

Validation yields two loaders: the train split without augmentation (the kNN feature
bank) and the val split (the kNN queries).
"""
from __future__ import annotations

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Subset, default_collate

from .sampler import ResumableSampler


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class SSLDataModule(pl.LightningDataModule):
    """Shared loaders; subclasses set ``train_set``, ``bank_set`` and ``val_set`` in ``setup``.
    ``mean`` and ``std``: the per-channel statistics recipes normalise with when they name none."""

    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __init__(
        self,
        batch_size: int = 256,
        num_workers: int = 0,
        image_size: int = 32,
        knn_bank_size: int | None = None,
        pin_memory: bool = False,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.image_size = image_size
        self.knn_bank_size = knn_bank_size
        self.pin_memory = pin_memory
        self.train_set: Dataset | None = None
        self.bank_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self._sampler: ResumableSampler | None = None
        self._resume: tuple[int, int] | None = None

    def _loader(self, dataset: Dataset, shuffle: bool, drop_last: bool = False, sampler=None) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle if sampler is None else False,
            sampler=sampler,
            drop_last=drop_last,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            collate_fn=collate_dropping_skipped,
            persistent_workers=self.num_workers > 0,
        )

    def _bank(self) -> Dataset:
        bank = self.bank_set if self.bank_set is not None else self.train_set
        if self.knn_bank_size is not None and self.knn_bank_size < len(bank):
            step = len(bank) / self.knn_bank_size
            bank = Subset(bank, [int(i * step) for i in range(self.knn_bank_size)])
        return bank

    def train_dataloader(self) -> DataLoader:
        if len(self.train_set) < self.batch_size:
            raise ValueError(
                f"the train split has {len(self.train_set)} images, fewer than batch_size={self.batch_size}"
            )
        self._sampler = ResumableSampler(len(self.train_set), seed_from_environment())
        if self._resume is not None:
            self._sampler.resume(*self._resume)
            self._resume = None
        return self._loader(self.train_set, shuffle=True, drop_last=True, sampler=self._sampler)

    def state_dict(self) -> dict:
        """Where the training data order stands: the epoch and the samples it consumed."""
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return {}
        done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        return {"epoch": trainer.current_epoch, "consumed": done * self.batch_size}

    def load_state_dict(self, state: dict) -> None:
        if "epoch" in state:
            self._resume = (int(state["epoch"]), int(state["consumed"]))
            if getattr(self, "_sampler", None) is not None:
                self._sampler.resume(*self._resume)

    def val_dataloader(self) -> list[DataLoader]:
        return [self._loader(self._bank(), shuffle=False), self._loader(self.val_set, shuffle=False)]

    def test_dataloader(self) -> list[DataLoader]:
        return self.val_dataloader()


def collate_dropping_skipped(items: list) -> dict:
    """Default collation of the readable items; unreadable ones (strings naming the file,
    from ``bad_images: skip``) are left out and listed in ``skipped``."""
    kept = [item for item in items if not isinstance(item, str)]
    skipped = [item for item in items if isinstance(item, str)]
    if not kept:
        return {"skipped": skipped}
    batch = default_collate(kept)
    if skipped:
        batch["skipped"] = skipped
    return batch


def seed_from_environment() -> int:
    """The run's seed (``seed_everything`` exports it), or 0."""
    import os

    return int(os.environ.get("PL_GLOBAL_SEED", 0))


def as_uint8_chw(array) -> torch.Tensor:
    """HWC uint8 array (numpy or PIL) -> CHW uint8 tensor."""
    tensor = torch.from_numpy(np.array(array, dtype=np.uint8, copy=True))
    if tensor.dim() == 2:
        tensor = tensor.unsqueeze(-1).expand(-1, -1, 3)
    return tensor.permute(2, 0, 1).contiguous()
