"""What every sslkit data module provides, written down once (``SSLDataModule`` implements it).

Methods, evaluators and tools use a data module only through these names; a module that
lacks one is refused with the names it lacks, never guessed around.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch.utils.data import DataLoader, Dataset

CONTRACT = ("batch_size", "num_workers", "image_size", "whole_images", "has_masks", "mean", "std", "decode",
            "prepare", "eval_loader", "eval_split", "labels", "knn_bank")


@runtime_checkable
class DataContract(Protocol):
    """The data side of sslkit.

    ``batch_size``, ``num_workers``: per device. ``whole_images``: batches hold each image at its
    own size (a list; the crop comes on the device), else a canvas of ``image_size`` px.
    ``has_masks``: items carry a foreground ``mask``. ``mean``, ``std``: the statistics recipes
    normalise with where they name none.
    ``decode(batch, device)``: JPEGs the workers left encoded, decoded on ``device``;
    ``prepare(batch, device)``: a loader's batch moved there and decoded. ``eval_loader(dataset)``:
    the loader every evaluator reads through (training's collation and unreadable-image
    handling, no augmentation); ``eval_split('train' | 'val')``: the labelled images of a split;
    ``labels(split)``: their labels without decoding; ``knn_bank()``: the kNN monitor's bank.
    """

    batch_size: int
    num_workers: int
    image_size: int | None
    whole_images: bool
    has_masks: bool
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def decode(self, batch: dict, device: torch.device | str) -> dict: ...

    def prepare(self, batch: dict, device: torch.device | str) -> dict: ...

    def eval_loader(self, dataset: Dataset, shuffle: bool = False) -> DataLoader: ...

    def eval_split(self, split: str) -> Dataset: ...

    def labels(self, split: str) -> torch.Tensor: ...

    def knn_bank(self) -> Dataset: ...


def data_contract(datamodule) -> DataContract:
    """``datamodule`` itself when it follows ``DataContract``; otherwise an error naming what
    it lacks (subclass ``sslkit.data.SSLDataModule`` to get all of it)."""
    missing = [name for name in CONTRACT if not hasattr(datamodule, name)]
    if datamodule is None or missing:
        what = "no data module" if datamodule is None else f"{type(datamodule).__name__} lacks {', '.join(missing)}"
        raise TypeError(f"sslkit needs a data module that follows sslkit.data.DataContract: {what} "
                        f"(subclass sslkit.data.SSLDataModule)")
    return datamodule
