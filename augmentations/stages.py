"""Augmentation stages: batched, on the batch's device, built on Kornia.

A *stage* is an ``nn.Module`` that takes a view dict ``{"image": float[B,3,H,W],
"mask": bool[B,1,H,W] (optional)}`` and returns a new one. Every sample of the batch
draws its own random parameters. Geometric stages move ``mask`` together with
``image``; photometric stages leave ``mask`` untouched. A ``View`` chains stages; a
``MultiView`` makes the views one method needs from a uint8 batch.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import kornia.augmentation as K
import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

ViewDict = dict[str, torch.Tensor]


class Stage(nn.Module):
    """Base of all stages: ``forward(view) -> view``. Subclasses implement ``apply``."""

    def forward(self, view: ViewDict) -> ViewDict:
        return self.apply(dict(view))

    def apply(self, view: ViewDict) -> ViewDict:
        raise NotImplementedError


def check_mask(image: torch.Tensor, mask: torch.Tensor) -> None:
    """A mask must cover its image pixel for pixel: ``[B,1,H,W]`` beside ``[B,3,H,W]``."""
    if mask.shape[0] != image.shape[0] or mask.shape[-2:] != image.shape[-2:]:
        raise ValueError(f"mask of shape {tuple(mask.shape)} does not match image of shape {tuple(image.shape)}")


class _GeometricStage(Stage):
    """Applies one Kornia geometric augmentation to image and mask with shared parameters."""

    def __init__(self, augmentation: K.AugmentationBase2D) -> None:
        super().__init__()
        self.sequence = K.AugmentationSequential(augmentation, data_keys=["input", "mask"])

    def apply(self, view: ViewDict) -> ViewDict:
        image = view["image"]
        mask = view.get("mask")
        if mask is None:
            view["image"] = self.sequence(image, data_keys=["input"])
            return view
        check_mask(image, mask)
        image, mask = self.sequence(image, mask.to(image.dtype), data_keys=["input", "mask"])
        view["image"], view["mask"] = image, mask > 0.5
        return view


class _PhotometricStage(Stage):
    def __init__(self, augmentation: K.AugmentationBase2D) -> None:
        super().__init__()
        self.augmentation = augmentation

    def apply(self, view: ViewDict) -> ViewDict:
        view["image"] = self.augmentation(view["image"])
        return view


def _check_fits(size: int, view: ViewDict, stage: str) -> None:
    height, width = view["image"].shape[-2:]
    if size > min(height, width):
        raise ValueError(
            f"{stage} size {size} is larger than the {height}x{width} image canvas; "
            f"lower the crop size or raise the data module's image_size"
        )


class RandomResizedCrop(_GeometricStage):
    """Crop a random area fraction ``scale`` and aspect ``ratio``, resized to ``size``."""

    def __init__(
        self,
        size: int = 224,
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
    ) -> None:
        super().__init__(
            K.RandomResizedCrop((size, size), scale=tuple(scale), ratio=tuple(ratio), cropping_mode="resample")
        )
        self.size = size

    def apply(self, view: ViewDict) -> ViewDict:
        _check_fits(self.size, view, "RandomResizedCrop")
        return super().apply(view)


class CenterCrop(_GeometricStage):
    """Deterministic centre crop to ``size`` (evaluation views)."""

    def __init__(self, size: int = 224) -> None:
        super().__init__(K.CenterCrop((size, size)))
        self.size = size

    def apply(self, view: ViewDict) -> ViewDict:
        _check_fits(self.size, view, "CenterCrop")
        if tuple(view["image"].shape[-2:]) == (self.size, self.size):
            return view
        return super().apply(view)


class RandomHorizontalFlip(_GeometricStage):
    def __init__(self, p: float = 0.5) -> None:
        super().__init__(K.RandomHorizontalFlip(p=p))


class ColorJitter(_PhotometricStage):
    """torchvision's ColorJitter semantics (random order of the four adjustments)."""

    def __init__(
        self,
        brightness: float = 0.4,
        contrast: float = 0.4,
        saturation: float = 0.4,
        hue: float = 0.1,
        p: float = 0.8,
    ) -> None:
        super().__init__(K.ColorJitter(brightness, contrast, saturation, hue, p=p))


class RandomGrayscale(_PhotometricStage):
    def __init__(self, p: float = 0.2) -> None:
        super().__init__(K.RandomGrayscale(p=p))


class RandomGaussianBlur(_PhotometricStage):
    """Gaussian blur with sigma drawn per sample; kernel ~10% of the image side if not given."""

    def __init__(
        self,
        sigma: tuple[float, float] = (0.1, 2.0),
        p: float = 0.5,
        kernel_size: int | None = None,
        image_size: int = 224,
    ) -> None:
        if kernel_size is None:
            kernel_size = max(3, int(math.ceil(0.1 * image_size)) // 2 * 2 + 1)
        super().__init__(K.RandomGaussianBlur(kernel_size, tuple(sigma), p=p))


class RandomSolarize(_PhotometricStage):
    """Invert pixels above ``threshold`` (BYOL's solarisation)."""

    def __init__(self, p: float = 0.2, threshold: float = 0.5) -> None:
        super().__init__(K.RandomSolarize(thresholds=(threshold, threshold), additions=0.0, p=p))


class Normalize(Stage):
    """Subtract ``mean`` and divide by ``std`` per channel."""

    def __init__(
        self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
    ) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def apply(self, view: ViewDict) -> ViewDict:
        image = view["image"]
        view["image"] = (image - self.mean.to(image.dtype)) / self.std.to(image.dtype)
        return view


def to_float(image: torch.Tensor) -> torch.Tensor:
    """uint8 ``[0, 255]`` -> float32 ``[0, 1]``; float input is returned unchanged."""
    if image.dtype == torch.uint8:
        return image.float().div_(255.0)
    return image


class View(nn.Module):
    """One view: a list of stages applied in order to the batch's image (and mask)."""

    def __init__(self, stages: Sequence[Stage]) -> None:
        super().__init__()
        self.stages = nn.ModuleList(stages)

    def forward(self, batch: ViewDict) -> ViewDict:
        view = {"image": to_float(batch["image"])}
        if batch.get("mask") is not None:
            view["mask"] = batch["mask"]
        for stage in self.stages:
            view = stage(view)
        return view
