"""Class-per-folder image trees (ImageNet layout) with an optional parallel mask tree.

By default the loader yields each image whole, at its own size: every random crop is
drawn on the device from the whole image, as torchvision's ``ImageFolder`` +
``RandomResizedCrop`` draw it in MoCo, SwAV and solo-learn. With ``image_size`` set it
resizes and centre-crops a fixed canvas instead (fixed-size batches, cheaper to move, but
the sides of non-square images never reach a crop). Decoding: PIL, libjpeg-turbo through
torchvision (``decoder: torchvision``), or on the training device (``decoder: device``:
workers only read the JPEG bytes, nvJPEG decodes the batch on a GPU).
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms import InterpolationMode

from .base import SSLDataModule
from .decode import (Decoder, ImageDecodeError, SkippedItem, as_chw, decode_bytes, jpeg_header, open_image,
                     plain_jpeg, reduced_size)
from .files import cache_file, list_image_folder, mask_path

MissingMask = Literal["error", "foreground"]
BadImages = Literal["error", "skip"]


def to_canvas(image: torch.Tensor, size: int, nearest: bool = False) -> torch.Tensor:
    """Resize the shorter side to ``size`` (antialiased) and centre-crop ``size`` x ``size``."""
    mode = InterpolationMode.NEAREST_EXACT if nearest else InterpolationMode.BILINEAR
    image = TF.resize(image, size, interpolation=mode, antialias=not nearest)
    return TF.center_crop(image, [size, size])


class ImageFolderDataset(Dataset):
    """``root/<class>/<image>``; masks (if ``mask_root``) at ``mask_root/<class>/<stem>.png``.

    Items: ``image`` uint8 ``[3, H, W]`` (whole, or on the ``image_size`` canvas; with
    ``decoder: device`` a plain JPEG stays encoded, a 1-d uint8 tensor of its bytes), ``size``
    (the decoded image's height and width), ``label``, ``index``, ``path``, and with masks
    ``mask`` bool ``[1, H, W]``. A listed file that cannot be read (removed since the file list
    was made, say) is an ``ImageDecodeError`` naming it and how to refresh the list, or, with
    ``bad_images: skip``, an item the collation drops and counts, as an undecodable one. A mask is foreground where
    its grey level is above 127 and may have any size: it is resized nearest-neighbour to its
    image. ``missing_mask``: ``error`` names the image without a mask; ``foreground`` uses an
    all-foreground mask (which the background stages skip) and marks ``mask_missing``.
    ``reduce_to``: decode JPEGs at the smallest power-of-two reduction whose shorter side
    is still this large (faster, but fewer pixels for small crops); ``None``: full resolution.
    """

    def __init__(
        self,
        root: str | Path,
        image_size: int | None = None,
        mask_root: str | Path | None = None,
        missing_mask: MissingMask = "error",
        bad_images: BadImages = "error",
        decoder: Decoder = "torchvision",
        reduce_to: int | None = None,
        index_cache: str | None = "auto",
    ) -> None:
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"image folder '{root}' does not exist")
        self.classes, self.samples = list_image_folder(root, index_cache)
        self.root = root.resolve()
        self.index_cache = cache_file(self.root, index_cache)
        self.image_size = image_size
        self.mask_root = Path(mask_root).resolve() if mask_root is not None else None
        if self.mask_root is not None and not self.mask_root.is_dir():
            raise FileNotFoundError(f"mask folder '{mask_root}' does not exist")
        for name, value, allowed in (("missing_mask", missing_mask, ("error", "foreground")),
                                     ("bad_images", bad_images, ("error", "skip")),
                                     ("decoder", decoder, ("pil", "torchvision", "device"))):
            if value not in allowed:
                raise ValueError(f"data.{name} must be one of {', '.join(allowed)}, got '{value}'")
        if decoder == "device" and image_size is not None:
            raise ValueError("data.decoder: device decodes whole images on the device; it needs data.image_size: null")
        self.missing_mask, self.bad_images, self.decoder, self.reduce_to = missing_mask, bad_images, decoder, reduce_to

    def mask_path(self, image_path: str) -> Path:
        return mask_path(image_path, self.root, self.mask_root)

    def _mask(self, path: str, size: tuple[int, int]) -> dict[str, torch.Tensor]:
        """The mask of ``path`` at the image's ``size`` (height, width)."""
        file = self.mask_path(path)
        if not file.exists():
            if self.missing_mask == "error":
                raise FileNotFoundError(
                    f"no mask for image '{path}': expected '{file}' (write masks with 'sslkit masks', or set "
                    f"data.missing_mask: foreground to train on without)")
            return {"mask": torch.ones(1, *size, dtype=torch.bool), "mask_missing": torch.tensor(True)}
        mask = open_image(str(file), "L")
        if mask.size != (size[1], size[0]):
            mask = mask.resize((size[1], size[0]), Image.NEAREST)
        return {"mask": as_chw(mask) > 127, "mask_missing": torch.tensor(False)}

    def __len__(self) -> int:
        return len(self.samples)

    def labels(self) -> torch.Tensor:
        return torch.tensor([label for _, label in self.samples])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor] | SkippedItem:
        try:
            return self._load(index)
        except ImageDecodeError as err:
            if self.bad_images == "skip":
                return SkippedItem(str(err))
            if "bad_images" in str(err):
                raise
            raise ImageDecodeError(f"{err} (data.bad_images: skip trains on without unreadable images)") from err

    def _bytes(self, path: str) -> bytes:
        try:
            with open(path, "rb") as f:
                return f.read()
        except OSError as err:
            gone = "no longer exists" if isinstance(err, FileNotFoundError) else f"cannot be read ({err.strerror})"
            refresh = (f"delete the cached list {self.index_cache} (or set data.index_cache: null)"
                       if self.index_cache is not None else "restart to list the folder again")
            raise ImageDecodeError(
                f"image file '{path}' is in the file list but {gone}: if files were removed or moved, {refresh}; "
                f"data.bad_images: skip trains on without it") from err

    def _read(self, path: str) -> tuple[torch.Tensor, tuple[int, int]]:
        """The image (decoded, or still encoded for the device) and its (height, width)."""
        data = self._bytes(path)
        if self.decoder == "device" and plain_jpeg(data):
            height, width = jpeg_header(data)[:2]
            return torch.frombuffer(bytearray(data), dtype=torch.uint8), reduced_size(height, width, self.reduce_to)
        image = decode_bytes(data, path, "pil" if self.decoder == "pil" else "torchvision", self.reduce_to)
        return image, tuple(image.shape[-2:])

    def _load(self, index: int) -> dict[str, torch.Tensor]:
        path, label = self.samples[index]
        image, size = self._read(path)
        item = {"label": torch.tensor(label), "index": torch.tensor(index), "path": path}
        if self.mask_root is not None:
            item.update(self._mask(path, size))
        if self.image_size is not None:
            image = to_canvas(image, self.image_size)
            if "mask" in item:
                item["mask"] = to_canvas(item["mask"], self.image_size, nearest=True)
            size = (self.image_size, self.image_size)
        item["image"], item["size"] = image, torch.tensor(size)
        return item


class ImageFolderData(SSLDataModule):
    """ImageNet-style tree: ``root/train/<class>/*`` and ``root/val/<class>/*``.

    ``image_size``: ``None`` (default) yields whole images and every crop is drawn from the
    whole image on the device; an int resizes (shorter side) and centre-crops a canvas in the
    workers. ``decoder``: ``torchvision`` (libjpeg-turbo for plain JPEGs, PIL for the rest),
    ``pil``, or ``device`` (nvJPEG on the GPU; workers only read bytes). ``reduce_to``: see
    ``ImageFolderDataset``. ``index_cache``: folder for the cached file lists (``auto``:
    ``~/.cache/sslkit/file_lists``; ``null``: list every time). ``mask_root`` mirrors ``root``;
    ``missing_mask`` and ``bad_images`` as in ``ImageFolderDataset`` (both counted per epoch).
    """

    def __init__(
        self,
        root: str,
        image_size: int | None = None,
        mask_root: str | None = None,
        missing_mask: MissingMask = "error",
        bad_images: BadImages = "error",
        decoder: Decoder = "torchvision",
        reduce_to: int | None = None,
        index_cache: str | None = "auto",
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
        self.decoder, self.reduce_to, self.index_cache = decoder, reduce_to, index_cache
        self.train_dir, self.val_dir = train_dir, val_dir

    @property
    def whole_images(self) -> bool:
        return self.image_size is None

    @property
    def has_masks(self) -> bool:
        return self.mask_root is not None

    def _split(self, name: str) -> ImageFolderDataset:
        masks = self.mask_root / name if self.mask_root else None
        return ImageFolderDataset(self.root / name, self.image_size, masks, self.missing_mask, self.bad_images,
                                  self.decoder, self.reduce_to, self.index_cache)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            self.train_set = self._split(self.train_dir)
            self.val_set = self._split(self.val_dir)
