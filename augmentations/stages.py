"""The stage protocol, and the stages built directly on Kornia.

A *stage* is an ``nn.Module`` that takes a view dict ``{"image": [B,3,H,W] (or a list of
whole images before the crop), "mask": bool (optional)}`` and returns a new one, on the
batch's device. Every sample draws its own random parameters. Geometric stages
(``sslkit.augmentations.geometry``) move ``mask`` with ``image``; photometric stages
(``color`` and the Kornia ones here) leave it alone. A ``View`` chains stages; a
``MultiView`` makes the views one method needs from a uint8 batch.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import kornia.augmentation as K
import torch
from torch import nn

from . import images

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

ViewDict = dict[str, torch.Tensor]


class Stage(nn.Module):
    """Base of all stages: ``forward(view) -> view``. Subclasses implement ``apply``.
    ``needs_float``: the stage wants float images in [0, 1] (False for stages that only move
    pixels, which run on uint8 when they come first)."""

    needs_float = True

    def forward(self, view: ViewDict) -> ViewDict:
        return self.apply(dict(view))

    def apply(self, view: ViewDict) -> ViewDict:
        raise NotImplementedError


def check_mask(image: images.Images, mask: images.Images) -> None:
    """A mask must cover its image pixel for pixel: ``[B,1,H,W]`` beside ``[B,3,H,W]`` (or,
    for whole images, each ``[1,h,w]`` beside its ``[3,h,w]``)."""
    if images.is_ragged(image) or images.is_ragged(mask):
        if len(image) != len(mask):
            raise ValueError(f"{len(mask)} masks for {len(image)} images")
        for i, (m, x) in enumerate(zip(mask, image)):
            if m.shape[-2:] != x.shape[-2:]:
                raise ValueError(f"mask {i} of shape {tuple(m.shape)} does not match its image of shape {tuple(x.shape)}")
        return
    if mask.shape[0] != image.shape[0] or mask.shape[-2:] != image.shape[-2:]:
        raise ValueError(f"mask of shape {tuple(mask.shape)} does not match image of shape {tuple(image.shape)}")


class _PhotometricStage(Stage):
    def __init__(self, augmentation: K.AugmentationBase2D) -> None:
        super().__init__()
        self.augmentation = augmentation

    def apply(self, view: ViewDict) -> ViewDict:
        view["image"] = self.augmentation(view["image"])
        return view


class RandomGaussianBlur(_PhotometricStage):
    """Gaussian blur with sigma ~ U(``sigma``) per sample, with probability ``p``.

    ``kernel_size`` default: ``2 ceil(3 sigma_max) + 1`` taps (13 for sigma up to 2), the
    extent of PIL's ``GaussianBlur(radius=sigma)`` that MoCo v2, SwAV and solo-learn apply at
    any image size; BYOL uses image side / 10 (23 taps at 224 px, ``byol/utils/augmentations.py``).
    ``border``: ``replicate`` (PIL extends the edge), ``constant`` (zeros, BYOL's SAME padding),
    ``reflect``.
    """

    def __init__(
        self,
        sigma: tuple[float, float] = (0.1, 2.0),
        p: float = 0.5,
        kernel_size: int | None = None,
        border: str = "replicate",
    ) -> None:
        if kernel_size is None:
            kernel_size = 2 * math.ceil(3 * max(sigma)) + 1
        if kernel_size % 2 == 0 or kernel_size < 3:
            raise ValueError(f"RandomGaussianBlur: kernel_size must be odd and at least 3, got {kernel_size}")
        super().__init__(K.RandomGaussianBlur(kernel_size, tuple(sigma), border_type=border, p=p))


class RandomSolarize(_PhotometricStage):
    """Invert pixels above ``threshold`` (BYOL's solarisation)."""

    def __init__(self, p: float = 0.2, threshold: float = 0.5) -> None:
        super().__init__(K.RandomSolarize(thresholds=(threshold, threshold), additions=0.0, p=p))


class Normalize(Stage):
    """Subtract ``mean`` and divide by ``std`` per channel. ``None`` (the recipes' default):
    the statistics of the data the method trains on (``use_statistics``, called with the
    data module's ``mean`` and ``std``: CIFAR's own for CIFAR, as solo-learn normalises),
    ImageNet's until then."""

    def __init__(self, mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> None:
        super().__init__()
        self.fixed = mean is not None and std is not None
        self.register_buffer("mean", torch.tensor(mean or IMAGENET_MEAN).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std or IMAGENET_STD).view(1, -1, 1, 1), persistent=False)

    def use_statistics(self, mean: Sequence[float], std: Sequence[float]) -> None:
        """Adopt the data's statistics unless the recipe gave its own."""
        if not self.fixed:
            self.mean.copy_(torch.tensor(mean).view(1, -1, 1, 1))
            self.std.copy_(torch.tensor(std).view(1, -1, 1, 1))

    def apply(self, view: ViewDict) -> ViewDict:
        image = view["image"]
        view["image"] = (image - self.mean.to(image.dtype)) / self.std.to(image.dtype)
        return view


class View(nn.Module):
    """One view: a list of stages applied in order to the batch's image (and mask). Images
    stay uint8 through the leading stages that do not need float (crops, flips), which is
    where resampling is cheapest, and become float in [0, 1] before the first stage that does."""

    def __init__(self, stages: Sequence[Stage]) -> None:
        super().__init__()
        self.stages = nn.ModuleList(stages)

    def forward(self, batch: ViewDict) -> ViewDict:
        view = {k: batch[k] for k in ("image", "mask", "background_locked", "blocks") if batch.get(k) is not None}
        is_float = False
        for stage in self.stages:
            if not is_float and getattr(stage, "needs_float", True):
                view["image"] = images.to_float(view["image"])
                is_float = True
            view = stage(view)
        if not is_float:
            view["image"] = images.to_float(view["image"])
        return view
