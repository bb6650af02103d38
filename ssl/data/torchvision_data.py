"""CIFAR-10/100 and STL-10 through torchvision's dataset classes."""
from __future__ import annotations

from pathlib import Path

import torch
import torchvision
from PIL import Image
from torch.utils.data import ConcatDataset, Dataset

from .base import SSLDataModule
from .decode import as_chw
from .folder import to_canvas


class _Labelled(Dataset):
    """Wraps a torchvision (PIL image, label) dataset into sslkit's dict items."""

    def __init__(self, dataset: Dataset, image_size: int) -> None:
        self.dataset = dataset
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.dataset)

    def labels(self) -> torch.Tensor:
        """The wrapped dataset's labels (CIFAR's ``targets``, STL-10's ``labels``)."""
        if isinstance(self.dataset, ConcatDataset):
            return torch.cat([_Labelled(part, self.image_size).labels() for part in self.dataset.datasets])
        for name in ("targets", "labels"):
            if hasattr(self.dataset, name):
                return torch.as_tensor(getattr(self.dataset, name), dtype=torch.long)
        raise TypeError(f"{type(self.dataset).__name__} exposes no labels (targets or labels)")

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        image, label = self.dataset[index]
        if not isinstance(image, Image.Image):
            image = Image.fromarray(image)
        tensor = as_chw(image.convert("RGB"))
        if image.size != (self.image_size, self.image_size):
            tensor = to_canvas(tensor, self.image_size)
        return {
            "image": tensor,
            "label": torch.tensor(int(label)),
            "index": torch.tensor(index),
        }


def _checked(root: str, download: bool, build):
    if not download and not Path(root).is_dir():
        raise FileNotFoundError(f"data.root '{root}' does not exist; set data.download=true to fetch it")
    try:
        return build()
    except RuntimeError as err:
        raise FileNotFoundError(f"dataset not found under data.root '{root}' ({err}); "
                                f"set data.download=true to fetch it") from err


class _TorchvisionData(SSLDataModule):
    def __init__(self, root: str, download: bool, image_size: int, batch_size: int,
                 num_workers: int, knn_bank_size: int | None) -> None:
        super().__init__(batch_size, num_workers, image_size, knn_bank_size, pin_memory=True)
        self.root = root
        self.download = download

    def prepare_data(self) -> None:
        if self.download:
            self._splits(download=True)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            train, bank, val = self._splits(download=False)
            self.train_set = _Labelled(train, self.image_size)
            self.bank_set = _Labelled(bank, self.image_size) if bank is not None else None
            self.val_set = _Labelled(val, self.image_size)


class CIFAR10(_TorchvisionData):
    """CIFAR-10 (32 px). ``download: true`` fetches it into ``root``. Normalised with its own
    statistics (solo-learn's ``MEANS_N_STD``)."""

    dataset_class = torchvision.datasets.CIFAR10
    mean = (0.4914, 0.4822, 0.4465)
    std = (0.2470, 0.2435, 0.2616)

    def __init__(self, root: str = "data", download: bool = False, image_size: int = 32,
                 batch_size: int = 512, num_workers: int = 4, knn_bank_size: int | None = None) -> None:
        super().__init__(root, download, image_size, batch_size, num_workers, knn_bank_size)

    def _splits(self, download: bool):
        cls = self.dataset_class
        return _checked(self.root, download, lambda: (
            cls(self.root, train=True, download=download),
            None,
            cls(self.root, train=False, download=download),
        ))


class CIFAR100(CIFAR10):
    """CIFAR-100 (32 px), with its own statistics."""

    dataset_class = torchvision.datasets.CIFAR100
    mean = (0.5071, 0.4865, 0.4409)
    std = (0.2673, 0.2564, 0.2762)


class STL10(_TorchvisionData):
    """STL-10 (96 px): pretrain on train+unlabeled, kNN bank on the labelled train split."""

    mean = (0.4914, 0.4823, 0.4466)
    std = (0.247, 0.243, 0.261)

    def __init__(self, root: str = "data", download: bool = False, image_size: int = 96,
                 use_unlabeled: bool = True, batch_size: int = 256, num_workers: int = 4,
                 knn_bank_size: int | None = None) -> None:
        super().__init__(root, download, image_size, batch_size, num_workers, knn_bank_size)
        self.use_unlabeled = use_unlabeled

    def _splits(self, download: bool):
        def build():
            stl = torchvision.datasets.STL10
            train = stl(self.root, split="train", download=download)
            val = stl(self.root, split="test", download=download)
            if not self.use_unlabeled:
                return train, None, val
            unlabeled = stl(self.root, split="unlabeled", download=download)
            return ConcatDataset([train, unlabeled]), train, val
        return _checked(self.root, download, build)
