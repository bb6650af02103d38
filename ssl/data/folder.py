"""Class-per-folder image trees (ImageNet layout) with an optional parallel mask tree."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

from .base import SSLDataModule, as_uint8_chw


class ImageDecodeError(RuntimeError):
    """An image or mask file that cannot be decoded; the message names the file."""


class SkippedItem(str):
    """Stands for an item that could not be read (``bad_images: skip``); the batch
    collation drops it and counts it. Its text names the file and the error."""


def resize_to_canvas(image: Image.Image, size: int, resample: int) -> Image.Image:
    """Resize the shorter side to ``size`` and centre-crop to ``size`` x ``size``."""
    width, height = image.size
    scale = size / min(width, height)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    image = image.resize((new_w, new_h), resample)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return image.crop((left, top, left + size, top + size))


def to_mode(img: Image.Image, mode: str) -> Image.Image:
    """``img`` in ``mode`` ('RGB' or 'L') without losing it on the way: 16-bit and float
    images are rescaled to 8 bits by their maximum instead of clipped (which turns them
    white), and transparency is composited over mid-grey instead of dropped (which turns
    transparent pixels black)."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(img, dtype=np.float64)
        top = array.max()
        array = array / top * 255.0 if top > 0 else array
        img = Image.fromarray(array.clip(0, 255).round().astype(np.uint8), "L")
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGBA", img.size, (128, 128, 128, 255))
        img = Image.alpha_composite(background, img.convert("RGBA"))
    return img.convert(mode)


def _open(path: str, mode: str) -> Image.Image:
    try:
        with Image.open(path) as img:
            img.load()
            return to_mode(img, mode)
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise ImageDecodeError(f"cannot decode image file '{path}': {err}") from err


MissingMask = Literal["error", "foreground"]
BadImages = Literal["error", "skip"]


class ImageFolderDataset(Dataset):
    """``root/<class>/<image>``; masks (if ``mask_root``) at ``mask_root/<class>/<stem>.png``.

    A mask is foreground where its grey level is above 127. It may have any size (a
    saliency model's 320x320 output, say): it is resized nearest-neighbour to its image,
    then both go to the canvas together. ``missing_mask``: ``error`` (default) names the
    image without a mask; ``foreground`` uses an all-foreground mask, which the background
    stages skip, and marks the item with ``mask_missing`` so the method can count them.
    """

    def __init__(
        self,
        root: str | Path,
        image_size: int,
        mask_root: str | Path | None = None,
        missing_mask: MissingMask = "error",
        bad_images: BadImages = "error",
    ) -> None:
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"image folder '{root}' does not exist")
        self.classes, class_to_idx = find_classes(str(root))
        self.samples = make_dataset(str(root), class_to_idx, extensions=IMG_EXTENSIONS)
        self.root = root
        self.image_size = image_size
        self.mask_root = Path(mask_root) if mask_root is not None else None
        if self.mask_root is not None and not self.mask_root.is_dir():
            raise FileNotFoundError(f"mask folder '{self.mask_root}' does not exist")
        if missing_mask not in ("error", "foreground"):
            raise ValueError(f"missing_mask must be 'error' or 'foreground', got '{missing_mask}'")
        self.missing_mask = missing_mask
        if bad_images not in ("error", "skip"):
            raise ValueError(f"bad_images must be 'error' or 'skip', got '{bad_images}'")
        self.bad_images = bad_images

    def mask_path(self, image_path: str) -> Path:
        relative = Path(image_path).relative_to(self.root)
        return self.mask_root / relative.with_suffix(".png")

    def _mask(self, path: str, image_size: tuple[int, int]) -> dict[str, torch.Tensor]:
        mask_path = self.mask_path(path)
        if not mask_path.exists():
            if self.missing_mask == "error":
                raise FileNotFoundError(
                    f"no mask for image '{path}': expected '{mask_path}' (write masks with "
                    f"'sslkit masks', or set data.missing_mask: foreground to train on without)"
                )
            full = torch.ones(1, self.image_size, self.image_size, dtype=torch.bool)
            return {"mask": full, "mask_missing": torch.tensor(True)}
        mask = _open(str(mask_path), "L")
        if mask.size != image_size:
            mask = mask.resize(image_size, Image.NEAREST)
        mask = resize_to_canvas(mask, self.image_size, Image.NEAREST)
        return {"mask": as_uint8_chw(mask)[:1] > 127, "mask_missing": torch.tensor(False)}

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor] | SkippedItem:
        try:
            return self._load(index)
        except ImageDecodeError as err:
            if self.bad_images == "error":
                raise
            return SkippedItem(str(err))

    def _load(self, index: int) -> dict[str, torch.Tensor]:
        path, label = self.samples[index]
        image = _open(path, "RGB")
        item = {"label": torch.tensor(label), "index": torch.tensor(index)}
        if self.mask_root is not None:
            item.update(self._mask(path, image.size))
        image = resize_to_canvas(image, self.image_size, Image.BILINEAR)
        item["image"] = as_uint8_chw(image)
        return item


class ImageFolderData(SSLDataModule):
    """ImageNet-style tree: ``root/train/<class>/*`` and ``root/val/<class>/*``.

    Images are resized (shorter side) and centre-cropped to an ``image_size`` canvas in
    the workers; random crops then happen on the device. ``mask_root`` mirrors ``root``;
    ``missing_mask`` as in ``ImageFolderDataset`` (missing masks are counted per epoch);
    ``bad_images: skip`` drops unreadable images from their batch and counts them per
    epoch instead of stopping (``error``, the default, names the file).
    """

    def __init__(
        self,
        root: str,
        image_size: int = 256,
        mask_root: str | None = None,
        missing_mask: MissingMask = "error",
        bad_images: BadImages = "error",
        train_dir: str = "train",
        val_dir: str = "val",
        batch_size: int = 256,
        num_workers: int = 8,
        knn_bank_size: int | None = None,
        pin_memory: bool = True,
    ) -> None:
        super().__init__(batch_size, num_workers, image_size, knn_bank_size, pin_memory)
        if not Path(root).is_dir():
            raise FileNotFoundError(f"data.root '{root}' does not exist")
        self.root = Path(root)
        self.mask_root = Path(mask_root) if mask_root else None
        self.missing_mask = missing_mask
        self.bad_images = bad_images
        self.train_dir, self.val_dir = train_dir, val_dir

    def _split(self, name: str) -> ImageFolderDataset:
        masks = self.mask_root / name if self.mask_root else None
        return ImageFolderDataset(self.root / name, self.image_size, masks, self.missing_mask, self.bad_images)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            self.train_set = self._split(self.train_dir)
            self.val_set = self._split(self.val_dir)
