"""A batch of images is either one tensor ``[B, C, H, W]`` (fixed-size data on a canvas) or
a list of ``[C, h_i, w_i]`` tensors (whole images, each of its own size, as an ImageNet
loader yields them). Stages that act before the crop accept both; the crop turns either
into one tensor. These helpers treat both forms alike.
"""
from __future__ import annotations

import torch

Images = torch.Tensor | list[torch.Tensor]


def is_ragged(images: Images) -> bool:
    return isinstance(images, (list, tuple))


def count(images: Images) -> int:
    return len(images) if is_ragged(images) else images.shape[0]


def device(images: Images) -> torch.device:
    return images[0].device if is_ragged(images) else images.device


def sizes(images: Images) -> torch.Tensor:
    """``[B, 2]`` long: (height, width) of every image."""
    if is_ragged(images):
        return torch.tensor([tuple(image.shape[-2:]) for image in images], dtype=torch.long)
    return torch.tensor(tuple(images.shape[-2:]), dtype=torch.long).expand(images.shape[0], 2)


def concat(parts: list[Images]) -> Images:
    if is_ragged(parts[0]):
        return [image for part in parts for image in part]
    return torch.cat(parts)


def repeat(images: Images, times: int) -> Images:
    if is_ragged(images):
        return list(images) * times
    return images.repeat(times, *[1] * (images.dim() - 1))


def split(images: Images, parts: int) -> list[Images]:
    """``parts`` equal consecutive pieces."""
    if is_ragged(images):
        size = len(images) // parts
        return [list(images[i * size:(i + 1) * size]) for i in range(parts)]
    return list(images.chunk(parts))


def select(images: Images, index: torch.Tensor) -> Images:
    if is_ragged(images):
        return [images[i] for i in index.tolist()]
    return images[index]


def to_float(images: Images) -> Images:
    """uint8 ``[0, 255]`` -> float32 ``[0, 1]``; float images are returned unchanged."""
    if is_ragged(images):
        return [to_float(image) for image in images]
    if images.dtype == torch.uint8:
        return images.float().div_(255.0)
    return images


ROW_BY_ROW_ELEMENTS = 3 * 64 * 64


def row_by_row(image: torch.Tensor) -> bool:
    """Whether to process a CPU batch one image at a time: for large images each one then
    stays in the processor's cache through every operation, and the gather and scatter of the
    chosen rows, which cost more there than the arithmetic, are avoided. Small images (32 px)
    go faster as one batch, where the per-call overhead is paid once."""
    return image.device.type == "cpu" and image[0].numel() >= ROW_BY_ROW_ELEMENTS
