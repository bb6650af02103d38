"""Image decoding, in one place: PIL for every format, libjpeg-turbo through torchvision for
plain JPEGs on the CPU, nvJPEG through torchvision on a GPU.

Every path gives the same pixels (within a decoder's rounding): RGB, no EXIF rotation
(PIL's ``Image.open`` and torchvision's decoders both leave it, as torchvision's
``ImageFolder`` does), 16-bit and float images rescaled to 8 bits, transparency composited
over mid-grey, palette and grey images expanded. JPEGs that are not plain 8-bit grey or
YCbCr (CMYK, YCCK, 12-bit) always go through PIL, which converts them as the PIL path does.
"""
from __future__ import annotations

import io
import re
import struct
from typing import Literal

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

Decoder = Literal["pil", "torchvision", "device"]


class ImageDecodeError(RuntimeError):
    """An image or mask file that cannot be read or decoded; the message names the file."""


class SkippedItem(str):
    """Stands for an item that could not be read (``bad_images: skip``); the batch
    collation drops it and counts it. Its text names the file and the error."""


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


def as_chw(image: Image.Image) -> torch.Tensor:
    """A PIL image as a uint8 ``[C, H, W]`` tensor (``[1, H, W]`` for 'L')."""
    array = np.array(image, dtype=np.uint8, copy=True)
    tensor = torch.from_numpy(array)
    return tensor.unsqueeze(0) if tensor.dim() == 2 else tensor.permute(2, 0, 1).contiguous()


def reduction(width: int, height: int, reduce_to: int | None) -> int:
    """The power-of-two factor (1, 2, 4 or 8) by which a JPEG is decoded: the largest whose
    shorter side is still at least ``reduce_to`` pixels (libjpeg's DCT scaling)."""
    factor = 1
    while reduce_to is not None and factor < 8 and min(width, height) // (factor * 2) >= reduce_to:
        factor *= 2
    return factor


def reduced_size(height: int, width: int, reduce_to: int | None) -> tuple[int, int]:
    """``(height, width)`` of a JPEG decoded with ``reduce_to``, exactly as PIL's
    ``Image.draft`` scales it: by the largest of 8, 4, 2, 1 that fits the requested size,
    rounding up."""
    factor = reduction(width, height, reduce_to)
    if factor == 1:
        return height, width
    fits = min(width // (width // factor), height // (height // factor))
    scale = next(s for s in (8, 4, 2, 1) if fits >= s)
    return (height + scale - 1) // scale, (width + scale - 1) // scale


def _load_pil(img: Image.Image, mode: str, reduce_to: int | None) -> Image.Image:
    if reduce_to is not None and img.format == "JPEG":
        width, height = img.size
        factor = reduction(width, height, reduce_to)
        if factor > 1:
            img.draft(img.mode, (width // factor, height // factor))
    img.load()
    return to_mode(img, mode)


def open_image(path: str, mode: str = "RGB", reduce_to: int | None = None) -> Image.Image:
    """The image at ``path`` through PIL. ``reduce_to``: a JPEG is decoded at the smallest
    power-of-two reduction (libjpeg's DCT scaling, ``Image.draft``) whose shorter side is still
    at least this many pixels."""
    try:
        with Image.open(path) as img:
            return _load_pil(img, mode, reduce_to)
    except FileNotFoundError as err:
        raise ImageDecodeError(f"image file '{path}' does not exist") from err
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise ImageDecodeError(f"cannot decode image file '{path}': {err}") from err


JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def jpeg_header(data: bytes) -> tuple[int, int, int, int] | None:
    """``(height, width, components, precision)`` from a JPEG's frame header, or ``None`` if
    ``data`` is not a JPEG whose header can be read."""
    if data[:2] != b"\xff\xd8":
        return None
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        length = struct.unpack(">H", data[i + 2:i + 4])[0]
        if marker in JPEG_SOF and i + 10 <= len(data):
            precision, height, width, components = struct.unpack(">BHHB", data[i + 4:i + 10])
            return height, width, components, precision
        i += 2 + length
    return None


def plain_jpeg(data: bytes) -> bool:
    """An 8-bit grey or YCbCr JPEG, which libjpeg-turbo and nvJPEG decode as PIL does."""
    header = jpeg_header(data)
    return header is not None and header[2] in (1, 3) and header[3] == 8


def _reason(err: BaseException) -> str:
    """The reason in an error from PIL or torchvision, without the C++ source location."""
    return re.sub(r"^\w+, \S+\.(cpp|h|c):\d+, ", "", str(err).strip())


def decode_bytes(data: bytes, path: str, decoder: Decoder = "pil", reduce_to: int | None = None) -> torch.Tensor:
    """uint8 ``[3, H, W]`` RGB from an image file's bytes. ``decoder='torchvision'`` uses
    libjpeg-turbo directly for plain JPEGs (no PIL image in between), PIL for the rest."""
    if decoder == "torchvision" and reduce_to is None and plain_jpeg(data):
        from torchvision.io import ImageReadMode, decode_jpeg

        try:
            return decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
        except RuntimeError as err:
            raise ImageDecodeError(f"cannot decode image file '{path}': {_reason(err)}") from err
    try:
        with Image.open(io.BytesIO(data)) as img:
            return as_chw(_load_pil(img, "RGB", reduce_to))
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise ImageDecodeError(f"cannot decode image file '{path}': {_reason(err)}") from err


def fit_size(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``image`` at ``size`` (height, width), antialiased: a JPEG decoded at full resolution
    on the device brought to the size ``reduce_to`` gives on the CPU."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    import torchvision.transforms.v2.functional as TF

    return TF.resize(image, list(size), antialias=True)


def decode_on_device(encoded: list[torch.Tensor], paths: list[str], device: torch.device) -> list[torch.Tensor | None]:
    """Decode JPEG byte tensors (in host memory, where nvJPEG reads them) on ``device`` (nvJPEG
    on a GPU, in one batched call), each to uint8 ``[3, H, W]``; ``None`` where a file cannot
    be decoded, so the caller can name it."""
    from torchvision.io import ImageReadMode, decode_jpeg

    try:
        return list(decode_jpeg(list(encoded), mode=ImageReadMode.RGB, device=device))
    except RuntimeError:
        out = []
        for data in encoded:
            try:
                out.append(decode_jpeg(data, mode=ImageReadMode.RGB, device=device))
            except RuntimeError:
                out.append(None)
        return out
