"""SyntheticScenes: procedurally generated scenes with exact masks, embedded in the code.

Each scene has one foreground object from a shape family (the class) with a random
colour, scale, rotation and position, over a background from one of several texture
families. Everything is computed from (seed, split, index): no files, no downloads.
A knob ties the background family to the class in the train split, which plants a
spurious background cue for robustness experiments.
"""
from __future__ import annotations

import hashlib
import math

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

SHAPES = (
    "disk",
    "square",
    "triangle",
    "ring",
    "plus",
    "star",
    "crescent",
    "bar",
    "corner",
    "dumbbell",
)
TEXTURES = ("gradient", "grating", "checker", "blobs")
_SPLIT_IDS = {"train": 0, "val": 1, "test": 2}
_NUM_PARAMS = 40


def _index_params(
    seed: int, split: str, index: torch.Tensor, image_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Uniform numbers ``[N, _NUM_PARAMS]`` and pixel noise ``[N, 3, S, S]``.

    Both depend only on (seed, split, index), so a scene never changes with the
    number of scenes or the order in which they are rendered.
    """
    uniform = torch.empty(len(index), _NUM_PARAMS)
    noise = torch.empty(len(index), 3, image_size, image_size)
    gen = torch.Generator()
    for row, i in enumerate(index.tolist()):
        digest = hashlib.blake2b(f"{seed}/{split}/{i}".encode(), digest_size=8).digest()
        gen.manual_seed(int.from_bytes(digest, "little") & ((1 << 63) - 1))
        uniform[row] = torch.rand(_NUM_PARAMS, generator=gen)
        noise[row] = torch.randn(3, image_size, image_size, generator=gen)
    return uniform, noise


def _shape_masks(label: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Inside-test of each sample's shape family in its local coordinates ``u, v`` [N,S,S]."""
    r = torch.sqrt(u**2 + v**2)
    theta = torch.atan2(v, u)

    def half_planes(count: int, offset: float, reach: float) -> torch.Tensor:
        inside = torch.ones_like(u, dtype=torch.bool)
        for k in range(count):
            a = offset + 2 * math.pi * k / count
            inside &= (u * math.cos(a) + v * math.sin(a)) < reach
        return inside

    candidates = {
        "disk": r < 0.9,
        "square": torch.maximum(u.abs(), v.abs()) < 0.72,
        "triangle": half_planes(3, math.pi / 2, 0.5),
        "ring": (r < 0.95) & (r > 0.55),
        "plus": ((u.abs() < 0.28) & (v.abs() < 0.95)) | ((v.abs() < 0.28) & (u.abs() < 0.95)),
        "star": r < 0.5 + 0.42 * torch.cos(5 * theta),
        "crescent": (r < 0.95) & (((u - 0.45) ** 2 + v**2) > 0.72**2),
        "bar": (u / 1.0) ** 2 + (v / 0.38) ** 2 < 1.0,
        "corner": ((u > -0.8) & (u < -0.25) & (v.abs() < 0.8))
        | ((u > -0.8) & (u < 0.8) & (v > 0.25) & (v < 0.8)),
        "dumbbell": (((u - 0.55) ** 2 + v**2) < 0.4**2)
        | (((u + 0.55) ** 2 + v**2) < 0.4**2)
        | ((u.abs() < 0.55) & (v.abs() < 0.14)),
    }
    masks = torch.zeros_like(u, dtype=torch.bool)
    for k, name in enumerate(SHAPES):
        chosen = label == k
        if chosen.any():
            masks[chosen] = candidates[name][chosen]
    return masks


def _textures(family: torch.Tensor, p: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Background intensity in [0, 1] ``[N,S,S]`` for each sample's texture family."""
    n, size = family.shape[0], x.shape[-1]
    phi = (p[:, 0] * math.pi).view(n, 1, 1)
    freq = (1.5 + 2.5 * p[:, 1]).view(n, 1, 1)
    phase = (p[:, 2] * 2 * math.pi).view(n, 1, 1)
    along = torch.cos(phi) * x + torch.sin(phi) * y
    blobs = F.interpolate(
        p[:, 4:20].view(n, 1, 4, 4), size=(size, size), mode="bicubic", align_corners=False
    )[:, 0].clamp(0, 1)
    values = {
        "gradient": 0.5 + 0.5 * along,
        "grating": 0.5 + 0.5 * torch.sin(freq * math.pi * along + phase),
        "checker": 0.5
        + 0.5 * torch.sign(torch.sin(freq * math.pi * x + phase) * torch.sin(freq * math.pi * y)),
        "blobs": blobs,
    }
    out = torch.zeros(n, size, size)
    for k, name in enumerate(TEXTURES):
        chosen = family == k
        if chosen.any():
            out[chosen] = values[name][chosen]
    return out.clamp(0, 1)


def _hue_to_rgb(hue: torch.Tensor) -> torch.Tensor:
    """Fully saturated colours for hues in [0, 1)."""
    k = (torch.tensor([5.0, 3.0, 1.0]) + hue.view(-1, 1) * 6) % 6
    return 1 - torch.clamp(torch.minimum(k, 4 - k), 0, 1)


def render_scenes(
    seed: int,
    split: str,
    index: torch.Tensor,
    image_size: int = 32,
    num_classes: int = 10,
    object_scale: tuple[float, float] = (0.45, 0.75),
    background_contrast: float = 0.35,
    background_class_correlation: float = 0.0,
    noise: float = 0.03,
    object_colours: int | None = None,
    num_backgrounds: int | None = None,
    rotation_range: float = 360.0,
    saturation: float = 1.0,
) -> dict[str, torch.Tensor]:
    """Render scenes ``index`` of ``split``: uint8 images, bool masks, labels, texture ids."""
    if not 2 <= num_classes <= len(SHAPES):
        raise ValueError(f"num_classes must be in [2, {len(SHAPES)}], got {num_classes}")
    if split not in _SPLIT_IDS:
        raise ValueError(f"split must be one of {list(_SPLIT_IDS)}, got '{split}'")
    p, pixel_noise = _index_params(seed, split, index, image_size)
    n = len(index)
    label = (p[:, 4] * num_classes).long().clamp(max=num_classes - 1)
    tied = p[:, 6] < background_class_correlation
    if num_backgrounds is not None:
        table, _ = _index_params(seed, "backgrounds", torch.arange(num_backgrounds), 1)
        background_id = (p[:, 5] * num_backgrounds).long().clamp(max=num_backgrounds - 1)
        background_id = torch.where(tied, label % num_backgrounds, background_id)
        p[:, 11:37] = table[background_id, 11:37]
        family = (table[background_id, 5] * len(TEXTURES)).long().clamp(max=len(TEXTURES) - 1)
        if num_backgrounds >= len(TEXTURES):
            family = background_id % len(TEXTURES)
    else:
        family = (p[:, 5] * len(TEXTURES)).long().clamp(max=len(TEXTURES) - 1)
        family = torch.where(tied, label % len(TEXTURES), family)

    coords = (torch.arange(image_size) + 0.5) / image_size * 2 - 1
    y, x = torch.meshgrid(coords, coords, indexing="ij")
    x, y = x.expand(n, -1, -1), y.expand(n, -1, -1)

    lo, hi = object_scale
    radius = (lo + (hi - lo) * p[:, 7]).view(n, 1, 1)
    rot = ((p[:, 8] - 0.5) * math.radians(rotation_range)).view(n, 1, 1)
    margin = (1 - radius).clamp(min=0) * 0.8
    cx = ((p[:, 9] * 2 - 1).view(n, 1, 1)) * margin
    cy = ((p[:, 10] * 2 - 1).view(n, 1, 1)) * margin
    dx, dy = x - cx, y - cy
    u = (torch.cos(rot) * dx + torch.sin(rot) * dy) / radius
    v = (-torch.sin(rot) * dx + torch.cos(rot) * dy) / radius
    mask = _shape_masks(label, u, v)

    texture = _textures(family, p[:, 11:31], x, y)
    base = 0.25 + 0.5 * p[:, 31:34]
    direction = p[:, 34:37] * 2 - 1
    background = base.view(n, 3, 1, 1) + background_contrast * (texture.unsqueeze(1) - 0.5) * (
        0.5 + 0.5 * direction
    ).view(n, 3, 1, 1)
    colour = p[:, 37:40]
    if object_colours is not None:
        hue = (p[:, 37] * object_colours).floor() / object_colours
        colour = _hue_to_rgb(hue)
    luma_bg = (base * torch.tensor([0.299, 0.587, 0.114])).sum(1)
    luma_fg = (colour * torch.tensor([0.299, 0.587, 0.114])).sum(1)
    darker = luma_bg > 0.5
    shift = torch.where(darker, -(luma_fg - luma_bg + 0.35).clamp(min=0), (luma_bg - luma_fg + 0.35).clamp(min=0))
    colour = (colour + shift.view(n, 1)).clamp(0, 1)
    image = torch.where(mask.unsqueeze(1), colour.view(n, 3, 1, 1), background)
    grey = (image * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    image = grey + saturation * (image - grey)
    image = image + noise * pixel_noise
    image = (image.clamp(0, 1) * 255).round().to(torch.uint8)
    return {"image": image, "mask": mask.unsqueeze(1), "label": label, "texture": family}


class SyntheticScenesDataset(Dataset):
    """One split of SyntheticScenes, rendered once in batches and held in memory."""

    def __init__(
        self,
        split: str = "train",
        num_images: int = 8000,
        seed: int = 0,
        chunk: int = 1024,
        **render_kwargs,
    ) -> None:
        parts = [
            render_scenes(seed, split, torch.arange(s, min(s + chunk, num_images)), **render_kwargs)
            for s in range(0, num_images, chunk)
        ]
        self.data = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
        self.split = split

    def __len__(self) -> int:
        return len(self.data["label"])

    def labels(self) -> torch.Tensor:
        return self.data["label"].clone()

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {
            "image": self.data["image"][index],
            "mask": self.data["mask"][index],
            "label": self.data["label"][index],
            "index": torch.tensor(index),
        }
