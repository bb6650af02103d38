"""Geometric stages with torchvision's semantics, on a batch on its device.

``RandomResizedCrop`` draws one box per sample by ``RandomResizedCrop.get_params``' rule on
the sample's own size (10 tries of area fraction ~ U(scale) and log aspect ~ U(log ratio),
then the central fallback), vectorised over the batch, and resamples each box with
torchvision's own ``resized_crop`` (antialiased, as torchvision's transforms do). It takes a
canvas batch or whole images of different sizes (``sslkit.augmentations.images``) and
returns one tensor; masks follow the same boxes with nearest-neighbour sampling at pixel
centres (torchvision's ``NEAREST_EXACT``, aligned with the image's resampling).
"""
from __future__ import annotations

import math
from typing import Literal

import torch
import torchvision.transforms.v2.functional as TF
from torchvision.transforms import InterpolationMode

from . import images as batch_images
from .stages import Stage, ViewDict, check_mask

Interpolation = Literal["bilinear", "bicubic"]
INTERPOLATION = {"bilinear": InterpolationMode.BILINEAR, "bicubic": InterpolationMode.BICUBIC,
                 "nearest-exact": InterpolationMode.NEAREST_EXACT}


def random_resized_boxes(
    sizes: torch.Tensor,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    attempts: int = 10,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``[B, 4]`` long boxes ``(top, left, height, width)``, one per row of ``sizes`` ``[B, 2]``
    (height, width), by torchvision's ``RandomResizedCrop.get_params`` rule, vectorised."""
    sizes = sizes.to(torch.float64)
    height, width = sizes[:, :1], sizes[:, 1:]
    n = sizes.shape[0]
    area = height * width
    target = area * torch.empty(n, attempts, dtype=torch.float64).uniform_(*scale, generator=generator)
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    aspect = torch.exp(torch.empty(n, attempts, dtype=torch.float64).uniform_(*log_ratio, generator=generator))
    w = torch.round(torch.sqrt(target * aspect))
    h = torch.round(torch.sqrt(target / aspect))
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = torch.where(fits.any(1), fits.float().argmax(1), -1)
    found = first >= 0
    pick = first.clamp_min(0).unsqueeze(1)
    h, w = h.gather(1, pick).squeeze(1), w.gather(1, pick).squeeze(1)
    height, width = height.squeeze(1), width.squeeze(1)
    u = torch.rand(n, 2, dtype=torch.float64, generator=generator)
    top = torch.floor(u[:, 0] * (height - h + 1))
    left = torch.floor(u[:, 1] * (width - w + 1))
    # fallback: the largest central crop whose aspect ratio is within range
    in_ratio = width / height
    fw = torch.where(in_ratio < min(ratio), width, torch.where(in_ratio > max(ratio), torch.round(height * max(ratio)), width))
    fh = torch.where(in_ratio < min(ratio), torch.round(width / min(ratio)), height)
    h, w = torch.where(found, h, fh), torch.where(found, w, fw)
    top = torch.where(found, top, torch.div(height - h, 2, rounding_mode="floor"))
    left = torch.where(found, left, torch.div(width - w, 2, rounding_mode="floor"))
    return torch.stack([top, left, h, w], dim=1).long()


def crop_resize(image: torch.Tensor, box: tuple[int, int, int, int], size: tuple[int, int],
                mode: str) -> torch.Tensor:
    """``image`` ``[C, H, W]`` cropped to ``box`` (top, left, height, width) and resized to
    ``size``: torchvision's ``resized_crop`` itself (antialiased; uint8 resampled natively
    on the CPU, through float elsewhere, exactly as torchvision does)."""
    return TF.resized_crop(image, *box, list(size), interpolation=INTERPOLATION[mode], antialias=True)


def crop_images(images: batch_images.Images, boxes: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """One ``crop_resize`` per image and box, stacked."""
    if not batch_images.is_ragged(images):
        images = list(images)
    return torch.stack([crop_resize(image, tuple(box), size, mode) for image, box in zip(images, boxes.tolist())])


class RandomResizedCrop(Stage):
    """Crop a random area fraction ``scale`` and aspect ratio ``ratio`` of each image and
    resize it to ``size`` x ``size`` (``interpolation``: torchvision's default ``bilinear``,
    or ``bicubic`` as solo-learn and BYOL use)."""

    needs_float = False

    def __init__(
        self,
        size: int = 224,
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        interpolation: Interpolation = "bilinear",
    ) -> None:
        super().__init__()
        if not 0 < scale[0] <= scale[1]:
            raise ValueError(f"RandomResizedCrop: scale must satisfy 0 < lo <= hi, got {tuple(scale)}")
        if interpolation not in ("bilinear", "bicubic"):
            raise ValueError(f"RandomResizedCrop: interpolation must be bilinear or bicubic, got '{interpolation}'")
        self.size, self.scale, self.ratio, self.interpolation = size, tuple(scale), tuple(ratio), interpolation

    def draw(self, view: ViewDict) -> dict:
        """``boxes`` ``[B, 4]``: (top, left, height, width) of each sample's crop."""
        return {"boxes": random_resized_boxes(batch_images.sizes(view["image"]), self.scale, self.ratio)}

    def apply(self, view: ViewDict, params: dict) -> ViewDict:
        image, mask = view["image"], view.get("mask")
        if mask is not None:
            check_mask(image, mask)
        boxes = params["boxes"]
        out = (self.size, self.size)
        view["image"] = crop_images(image, boxes, out, self.interpolation)
        if mask is not None:
            view["mask"] = crop_images(_as_float(mask), boxes, out, "nearest-exact") > 0.5
        return view


def _as_float(mask: batch_images.Images) -> batch_images.Images:
    if batch_images.is_ragged(mask):
        return [m.float() for m in mask]
    return mask.float()


def center_box(height: int, width: int, size: int) -> tuple[int, int, int, int]:
    """torchvision's ``center_crop`` box: ``top = round((H - size) / 2)``."""
    return int(round((height - size) / 2.0)), int(round((width - size) / 2.0)), size, size


class CenterCrop(Stage):
    """Deterministic centre crop to ``size`` x ``size`` (evaluation views)."""

    needs_float = False

    def __init__(self, size: int = 224) -> None:
        super().__init__()
        self.size = size

    def apply(self, view: ViewDict, params: dict) -> ViewDict:
        for key in ("image", "mask"):
            images = view.get(key)
            if images is None:
                continue
            if not batch_images.is_ragged(images) and tuple(images.shape[-2:]) == (self.size, self.size):
                continue
            crops = []
            for image in (images if batch_images.is_ragged(images) else list(images)):
                height, width = image.shape[-2:]
                if self.size > min(height, width):
                    raise ValueError(f"CenterCrop size {self.size} is larger than a {height}x{width} image; "
                                     f"resize first (eval_resize) or lower the crop size")
                top, left, _, _ = center_box(height, width, self.size)
                crops.append(image[:, top:top + self.size, left:left + self.size])
            view[key] = torch.stack(crops)
        return view


class Resize(Stage):
    """Resize every image so its shorter side is ``size`` (torchvision's ``Resize(size)``,
    antialiased). ``size=None``: leave canvas batches as they are and resize whole images
    to ``round(crop / 0.875)`` where ``crop`` is the following centre crop (256 for 224, as
    in the official linear evaluations)."""

    needs_float = False

    def __init__(self, size: int | None = None, crop: int = 224, interpolation: Interpolation = "bilinear") -> None:
        super().__init__()
        self.size, self.crop, self.interpolation = size, crop, interpolation

    def apply(self, view: ViewDict, params: dict) -> ViewDict:
        image = view["image"]
        if self.size is None and not batch_images.is_ragged(image):
            return view
        short = self.size if self.size is not None else int(round(self.crop / 0.875))
        for key, mode in (("image", self.interpolation), ("mask", "nearest-exact")):
            items = view.get(key)
            if items is None:
                continue
            out = []
            for item in (items if batch_images.is_ragged(items) else list(items)):
                source = item.float() if key == "mask" else item
                resized = TF.resize(source, short, interpolation=INTERPOLATION[mode], antialias=mode != "nearest-exact")
                out.append(resized > 0.5 if key == "mask" else resized)
            view[key] = out
        return view


class RandomHorizontalFlip(Stage):
    """Mirror each sample (image and mask) left-right with probability ``p``."""

    needs_float = False

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        self.p = p

    def draw(self, view: ViewDict) -> dict:
        """``flip`` ``[B]`` bool: the samples mirrored."""
        image = view["image"]
        return {"flip": torch.rand(image.shape[0], device=image.device) < self.p}

    def apply(self, view: ViewDict, params: dict) -> ViewDict:
        image, mask = view["image"], view.get("mask")
        index = params["flip"].nonzero().squeeze(1)
        if mask is not None:
            check_mask(image, mask)
        for key in ("image", "mask"):
            value = view.get(key)
            if value is None or not index.numel():
                continue
            value = value.clone()
            if batch_images.row_by_row(value):  # row slices: no gather and scatter
                for i in index.tolist():
                    value[i] = value[i].flip(-1)
            else:
                value[index] = value[index].flip(-1)
            view[key] = value
        return view
