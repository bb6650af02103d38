"""The DataModule contract every sslkit dataset follows.

Batches are dicts: ``image`` uint8 ``[B,3,H,W]`` on a fixed canvas, or a list of B whole
images ``[3,h,w]`` of their own sizes (``ImageFolderData``; a 1-d uint8 tensor is a JPEG
still to decode on the device, see ``prepare``); optional ``mask`` bool (the same
form), optional ``label`` long ``[B]``, ``index`` long ``[B]``. Workers only read and
decode (and, for fixed-size data, resize); random augmentation happens on the device, in
the method.

Validation yields two loaders: the train split without augmentation (the kNN feature
bank) and the val split (the kNN queries). Every evaluator reads through ``eval_loader``
and ``prepare``: the same collation, decoding and unreadable-image handling as training.
"""
from __future__ import annotations

import pytorch_lightning as pl
import torch
from lightning_fabric.utilities.apply_func import move_data_to_device
from torch.utils.data import DataLoader, Dataset, Subset, default_collate

from sslkit.augmentations.stages import IMAGENET_MEAN, IMAGENET_STD

from .decode import ImageDecodeError, decode_on_device, fit_size
from .sampler import ResumableSampler



class SSLDataModule(pl.LightningDataModule):
    """Shared loaders; subclasses set ``train_set``, ``bank_set`` and ``val_set`` in ``setup``.
    ``mean`` and ``std``: the per-channel statistics recipes normalise with when they name none."""

    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    whole_images: bool = False
    has_masks: bool = False
    bad_images: str = "error"

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

    def _loader(self, dataset: Dataset, shuffle: bool, drop_last: bool = False, sampler=None,
                persistent: bool = True) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle if sampler is None else False,
            sampler=sampler,
            drop_last=drop_last,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            collate_fn=collate_dropping_skipped,
            persistent_workers=persistent and self.num_workers > 0,
        )

    def eval_loader(self, dataset: Dataset, shuffle: bool = False) -> DataLoader:
        """The loader every evaluator reads ``dataset`` (a split of this module, or a view of
        one) through: the training loader's workers and collation (whole images stay a list
        of their own sizes, JPEGs stay encoded for ``decode``, unreadable items are dropped
        and named under ``bad_images: skip``), no augmentation, every item once."""
        return self._loader(dataset, shuffle, persistent=False)

    def prepare(self, batch: dict, device: torch.device | str) -> dict:
        """A batch of this module's loaders on ``device``, ready for a view: tensors moved,
        JPEGs left encoded by the workers decoded there, unreadable ones handled per
        ``bad_images``."""
        device = torch.device(device)
        return self.decode(to_device(batch, device), device)

    def eval_split(self, split: str) -> Dataset:
        """The labelled images of ``split`` an evaluator reads: ``train`` (the labelled part
        where pretraining also uses unlabelled images, as STL-10's) or ``val``."""
        if split not in ("train", "val"):
            raise ValueError(f"split must be train or val, got '{split}'")
        if self.train_set is None:
            self.setup("validate")
        if split == "val":
            return self.val_set
        return self.bank_set if self.bank_set is not None else self.train_set

    def labels(self, split: str) -> torch.Tensor:
        """Every label of ``eval_split(split)``, without decoding an image."""
        return self.eval_split(split).labels()

    def knn_bank(self) -> Dataset:
        """The kNN monitor's bank: the train split without augmentation (``bank_set`` when
        given), evenly thinned to ``knn_bank_size`` images."""
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
        trainer = self.trainer
        if trainer is None:
            return {}
        done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        return {"epoch": trainer.current_epoch, "consumed": done * self.batch_size}

    def load_state_dict(self, state: dict) -> None:
        if "epoch" in state:
            self._resume = (int(state["epoch"]), int(state["consumed"]))
            if self._sampler is not None:
                self._sampler.resume(*self._resume)

    def val_dataloader(self) -> list[DataLoader]:
        """The kNN monitor's bank and queries, through the evaluation loader's collation
        (kept alive across epochs)."""
        return [self._loader(self.knn_bank(), shuffle=False), self._loader(self.val_set, shuffle=False)]

    def test_dataloader(self) -> list[DataLoader]:
        return self.val_dataloader()

    def decode(self, batch: dict, device: torch.device | str) -> dict:
        """JPEGs the workers left encoded, decoded on ``device``. The method calls this from
        its ``on_after_batch_transfer`` (a data module's own override of that hook would
        replace the method's in Lightning, which patches it onto the model)."""
        return decode_batch(batch, self.bad_images, device)


def collate_dropping_skipped(items: list) -> dict:
    """The readable items as one batch: tensors of one shape stacked, of several shapes
    (whole images) kept as a list; unreadable items (strings naming the file, from
    ``bad_images: skip``) left out and listed in ``skipped``."""
    kept = [item for item in items if not isinstance(item, str)]
    skipped = [item for item in items if isinstance(item, str)]
    if not kept:
        return {"skipped": skipped}
    batch = {}
    for key in kept[0]:
        values = [item[key] for item in kept]
        if all(torch.is_tensor(v) for v in values) and len({tuple(v.shape) for v in values}) > 1:
            batch[key] = values
        else:
            batch[key] = default_collate(values)
    if skipped:
        batch["skipped"] = skipped
    return batch


PER_SAMPLE = ("image", "mask", "label", "index", "path", "mask_missing", "size")


def is_encoded(image: torch.Tensor) -> bool:
    """A 1-d uint8 tensor: a JPEG file's bytes, still to decode."""
    return image.dim() == 1


def to_device(batch: dict, device: torch.device | str) -> dict:
    """``batch`` on ``device``, except JPEG bytes still to decode: they stay in host memory,
    where the decoder reads them (nvJPEG uploads what it needs itself; moving them to the GPU
    first would only force a copy back)."""
    images = batch.get("image")
    if not (isinstance(images, (list, tuple)) and any(is_encoded(x) for x in images)):
        return move_data_to_device(batch, torch.device(device))
    moved = move_data_to_device({k: v for k, v in batch.items() if k != "image"}, torch.device(device))
    moved["image"] = [x if is_encoded(x) else x.to(device, non_blocking=True) for x in images]
    return moved


def decode_batch(batch: dict, bad_images: str = "error", device: torch.device | str | None = None) -> dict:
    """Decode the still-encoded JPEGs of ``batch`` on ``device`` (nvJPEG on a GPU; default:
    the device of the batch's labels), each brought to its ``size`` (a ``reduce_to``
    reduction). A file that cannot be decoded is named (``bad_images: error``) or dropped from
    every per-sample entry and listed in ``skipped``."""
    images = batch.get("image")
    if images is None or (torch.is_tensor(images) and images.dim() == 4):
        return batch
    items = list(images)
    encoded = [i for i, x in enumerate(items) if is_encoded(x)]
    if not encoded:
        return batch
    if device is None:
        label = batch.get("label", batch.get("index"))
        device = label.device if torch.is_tensor(label) else torch.device("cpu")
    paths = batch.get("path") or [f"image {i} of the batch" for i in range(len(items))]
    decoded = decode_on_device([items[i] for i in encoded], [paths[i] for i in encoded], torch.device(device))
    sizes = batch.get("size")
    failed = []
    for i, image in zip(encoded, decoded):
        if image is None:
            failed.append(i)
        else:
            items[i] = image if sizes is None else fit_size(image, tuple(int(v) for v in sizes[i]))
    if failed and bad_images != "skip":
        raise ImageDecodeError(f"cannot decode image file '{paths[failed[0]]}' on {device} "
                               f"(set data.bad_images: skip to drop unreadable images)")
    batch = dict(batch, image=items)
    if failed:
        keep = [i for i in range(len(items)) if i not in failed]
        for key in PER_SAMPLE:
            value = batch.get(key)
            if value is not None:
                batch[key] = [value[i] for i in keep] if isinstance(value, list) else value[keep]
        batch["skipped"] = list(batch.get("skipped", [])) + [f"cannot decode image file '{paths[i]}'" for i in failed]
    return batch


def prepare_batch(batch: dict, device: torch.device | str, bad_images: str = "error") -> dict:
    """A loader's batch on ``device``, JPEGs decoded: what evaluators do before the view."""
    return decode_batch(to_device(batch, device), bad_images, device)


def share_cores(num_workers: int, device: torch.device | str, processes: int = 1) -> int | None:
    """On a CPU, leave the data loader's worker processes their cores: the main process's
    intra-op threads (torch's default: one per core) would otherwise compete with the workers
    decoding images, and both slow down many-fold. The main process gets
    ``max(1, cores / processes - num_workers)`` threads (never more than it has), where
    ``processes`` is the number of training processes on this machine. Returns the thread count
    it had, to restore when the run ends, or ``None`` where nothing changed (GPU, no workers,
    or ``OMP_NUM_THREADS`` set by the user)."""
    import os

    from pytorch_lightning.utilities import rank_zero_info

    if torch.device(device).type != "cpu" or num_workers <= 0 or os.environ.get("OMP_NUM_THREADS"):
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    cores = max(1, cores // max(1, processes))
    threads, before = max(1, cores - num_workers), torch.get_num_threads()
    if threads >= before:
        return None
    torch.set_num_threads(threads)
    rank_zero_info(f"sslkit: the main process computes on {threads} thread(s) (torch.set_num_threads), leaving "
                   f"{cores - threads} of {cores} cores to the {num_workers} data-loading workers "
                   f"(OMP_NUM_THREADS overrides this)")
    return before


def seed_from_environment() -> int:
    """The run's seed (``seed_everything`` exports it), or 0."""
    import os

    return int(os.environ.get("PL_GLOBAL_SEED", 0))
