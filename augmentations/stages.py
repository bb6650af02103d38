"""The stage protocol, and the stages built directly on Kornia.

A *stage* is an ``nn.Module`` that takes a view dict ``{"image": [B,3,H,W] (or a list of
whole images before the crop), "mask": bool (optional)}`` and returns a new one, on the
batch's device. Every sample draws its own random parameters. Geometric stages
(``sslkit.augmentations.geometry``) move ``mask`` with ``image``; photometric stages
(``color`` and the Kornia ones here) leave it alone. A ``View`` chains stages; a
``MultiView`` makes the views one method needs from a uint8 batch.
"""
from __future__ import annotations

from collections.abc import Sequence

import kornia.augmentation as K
import torch
from torch import nn

from . import images

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

ViewDict = dict[str, torch.Tensor]


class Stage(nn.Module):
    """Base of all stages: ``forward(view, params=None) -> view``. A subclass implements
    ``draw(view) -> params`` (every random value of every sample, from torch's generator; ``{}``
    for a deterministic stage) and ``apply(view, params) -> view`` (no randomness): Kornia's
    split of generating parameters and applying them. Calling ``draw`` then ``apply`` hands the
    parameters back to the caller, and ``apply`` replays them. ``needs_float``: the stage wants float images in [0, 1] (False for stages that only move
    pixels, which run on uint8 when they come first). ``whole_batch``: the stage works across
    samples (background donors) and sees the whole batch, never a chunk of it. ``uses_mask``:
    the stage reads the foreground mask (a ``MultiView`` without such a stage leaves masks out
    of its views, so they are not cropped for nothing)."""

    needs_float = True
    whole_batch = False
    uses_mask = False

    def forward(self, view: ViewDict, params: dict | None = None) -> ViewDict:
        view = dict(view)
        return self.apply(view, self.draw(view) if params is None else params)

    def draw(self, view: ViewDict) -> dict:
        return {}

    def apply(self, view: ViewDict, params: dict) -> ViewDict:
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


class KorniaStage(Stage):
    """Any Kornia augmentation as a stage, so a recipe can use what sslkit does not ship:

        {class_path: sslkit.augmentations.KorniaStage,
         init_args: {augmentation: {class_path: kornia.augmentation.RandomEqualize, init_args: {p: 0.2}}}}

    Geometric augmentations (``kornia.augmentation.GeometricAugmentationBase2D``) move the
    mask with the image; intensity augmentations leave it. Kornia draws parameters per sample
    (its ``ColorJitter`` draws the order of its four adjustments once per batch; sslkit's
    ``ColorJitter`` draws it per image as torchvision does)."""

    def __init__(self, augmentation: K.AugmentationBase2D) -> None:
        super().__init__()
        self.augmentation = augmentation
        self.geometric = isinstance(augmentation, K.GeometricAugmentationBase2D)
        if self.geometric:
            self.sequence = K.AugmentationSequential(augmentation, data_keys=["input", "mask"])

    def draw(self, view: ViewDict) -> dict:
        shape = view["image"].shape
        if self.geometric and view.get("mask") is not None:
            return {"kornia": self.sequence.forward_parameters(shape)}
        return {"kornia": self.augmentation.forward_parameters(shape)}

    def apply(self, view: ViewDict, params: dict) -> ViewDict:
        image, mask = view["image"], view.get("mask")
        if self.geometric and mask is not None:
            check_mask(image, mask)
            out, moved = self.sequence(image, mask.to(image.dtype), data_keys=["input", "mask"],
                                       params=params["kornia"])
            view["image"], view["mask"] = out, moved > 0.5
        else:
            view["image"] = self.augmentation(image, params=params["kornia"])
        return view


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

    def apply(self, view: ViewDict, params: dict) -> ViewDict:
        image = view["image"]
        scale = (1.0 / self.std).to(image.dtype)
        bias = -self.mean.to(image.dtype) * scale
        out = image if view.get("owned") else None  # (x - mean) / std in one pass, in place when it may
        view["image"] = torch.addcmul(bias, image, scale, out=out) if out is not None else torch.addcmul(bias, image, scale)
        return view


class View(nn.Module):
    """One view: a list of stages applied in order to the batch's image (and mask). Images
    stay uint8 through the leading stages that do not need float (crops, flips), which is
    where resampling is cheapest, and become float in [0, 1] before the first stage that does.

    On the CPU, the stages after the last ``whole_batch`` one (background stages) run on chunks of
    ``cpu_chunk`` images when a batch is larger than that and over ``CPU_CHUNK_PIXELS`` pixels,
    which bounds the float copies a very large batch makes at once. Chunks are not faster:
    the large-image colour stages already work one image at a time in cache (``row_by_row``),
    and joining the chunks costs a copy of the batch (two 224 px views of 64 images on one
    CPU thread: 5.1 ms per image whole, 5.4-6.0 ms in chunks of 8 or 64). Every sample draws
    its own parameters either way.
    """

    CPU_CHUNK_PIXELS = 1 << 22

    def __init__(self, stages: Sequence[Stage], cpu_chunk: int = 512) -> None:
        super().__init__()
        self.stages = nn.ModuleList(stages)
        self.cpu_chunk = cpu_chunk

    def forward(self, batch: ViewDict) -> ViewDict:
        view = {k: batch[k] for k in ("image", "mask", "blocks") if batch.get(k) is not None}
        if not batch.get("background_done"):
            view = self.background(view)
        return self.finish(view)

    @property
    def _split(self) -> int:
        """Index of the first stage after the last ``whole_batch`` one (background stages)."""
        return max((i + 1 for i, stage in enumerate(self.stages) if getattr(stage, "whole_batch", False)), default=0)

    def background(self, view: ViewDict) -> ViewDict:
        """The leading stages up to the last ``whole_batch`` one (BG_RM, BG_Random), on the
        whole image: what BG_Swaps must see applied to the query before it builds the hard
        negative."""
        return self._run(list(self.stages)[:self._split], dict(view), last=False)

    def finish(self, view: ViewDict) -> ViewDict:
        """The stages after ``background`` (crop, colour, normalisation)."""
        stages = list(self.stages)[self._split:]
        if self._chunked(view["image"]):
            rest = {k: v for k, v in view.items() if k in ("image", "mask")}
            parts = [self._run(stages, {k: v[i:i + self.cpu_chunk] for k, v in rest.items()})
                     for i in range(0, images.count(view["image"]), self.cpu_chunk)]
            return {k: torch.cat([part[k] for part in parts]) for k in parts[0]}
        return self._run(stages, view)

    def _chunked(self, image: images.Images) -> bool:
        if images.device(image).type != "cpu" or images.count(image) <= self.cpu_chunk:
            return False
        pixels = sum(x.numel() for x in image) if images.is_ragged(image) else image.numel()
        return pixels > self.CPU_CHUNK_PIXELS

    @staticmethod
    def _run(stages: list[Stage], view: ViewDict, last: bool = True) -> ViewDict:
        for stage in stages:
            if getattr(stage, "needs_float", True):
                view = View._float(view)
            view = stage(view)
        if last:
            view = View._float(view)
            view.pop("owned", None)
        return view

    @staticmethod
    def _float(view: ViewDict) -> ViewDict:
        """Float images; a conversion makes a new tensor, which the stages after may change in place."""
        image = view["image"]
        converted = images.to_float(image)
        if converted is not image and not images.is_ragged(converted):
            view["owned"] = True
        view["image"] = converted
        return view
