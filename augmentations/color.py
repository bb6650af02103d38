"""Colour stages with torchvision's semantics, batched, every sample drawing its own values.

``ColorJitter`` follows ``torchvision.transforms.ColorJitter`` per image: brightness,
contrast and saturation factors ~ U[max(0, 1 - x), 1 + x], hue shift ~ U[-h, h], applied in
an order drawn per image (torchvision draws ``randperm(4)`` on every call, and MoCo, SwAV
and solo-learn call it once per image and view), each result clamped to [0, 1]. Kornia's
``ColorJitter`` draws one order per batch, so this stage does not use it; the hue shift is
computed directly on the HSV hexagon (max, min and hue of each pixel) rather than through
full RGB -> HSV -> RGB conversions, which makes it several times faster on a CPU.
"""
from __future__ import annotations

import torch

from .stages import Stage, ViewDict

GREY_WEIGHTS = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale (ITU-R 601-2 luma)


def grayscale(image: torch.Tensor) -> torch.Tensor:
    """``[N, 1, H, W]`` luma of ``[N, 3, H, W]`` images, torchvision's weights."""
    r, g, b = image.unbind(1)
    return (r * GREY_WEIGHTS[0] + g * GREY_WEIGHTS[1] + b * GREY_WEIGHTS[2]).unsqueeze(1)


def _per_sample(values: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    return values.to(image.dtype).view(-1, 1, 1, 1)


def adjust_brightness(image: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return (image * _per_sample(factor, image)).clamp_(0, 1)


def adjust_contrast(image: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    mean = grayscale(image).mean(dim=(1, 2, 3), keepdim=True)
    f = _per_sample(factor, image)
    return (image * f + mean * (1 - f)).clamp_(0, 1)


def adjust_saturation(image: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    f = _per_sample(factor, image)
    return (image * f + grayscale(image) * (1 - f)).clamp_(0, 1)


def adjust_hue(image: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate each pixel's HSV hue by ``shift`` (fraction of a turn) keeping its value and
    saturation: channel c becomes ``V - C * clamp(min(k, 4 - k), 0, 1)`` with
    ``k = (n_c + 6 h') mod 6``, ``n = (5, 3, 1)`` for (R, G, B), C = max - min."""
    r, g, b = image.unbind(1)
    value = torch.maximum(torch.maximum(r, g), b)
    chroma = value - torch.minimum(torch.minimum(r, g), b)
    safe = torch.where(chroma > 0, chroma, torch.ones_like(chroma))
    hue = torch.where(value == r, (g - b) / safe,
                      torch.where(value == g, (b - r) / safe + 2.0, (r - g) / safe + 4.0))
    hue6 = torch.remainder(hue + 6.0 * _per_sample(shift, image).squeeze(1), 6.0)
    out = []
    for n in (5.0, 3.0, 1.0):
        k = torch.remainder(hue6 + n, 6.0)
        out.append(value - chroma * torch.minimum(k, 4.0 - k).clamp_(0, 1))
    return torch.stack(out, dim=1)


ADJUSTMENTS = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)


class ColorJitter(Stage):
    """With probability ``p`` per sample, torchvision's colour jitter with the sample's own
    factors and order. ``last_params`` keeps the draws (``applied``, ``factors`` ``[B, 4]``,
    ``order`` ``[B, 4]``), so a call can be checked or replayed."""

    def __init__(self, brightness: float = 0.4, contrast: float = 0.4, saturation: float = 0.4,
                 hue: float = 0.1, p: float = 0.8) -> None:
        super().__init__()
        if not 0 <= hue <= 0.5:
            raise ValueError(f"ColorJitter: hue must be in [0, 0.5], got {hue}")
        if min(brightness, contrast, saturation) < 0:
            raise ValueError("ColorJitter: brightness, contrast and saturation must be non-negative")
        self.ranges = [(max(0.0, 1 - x), 1 + x) if x > 0 else None for x in (brightness, contrast, saturation)]
        self.ranges.append((-hue, hue) if hue > 0 else None)
        self.p = p
        self.last_params: dict[str, torch.Tensor] = {}

    def draw(self, batch: int, device: torch.device) -> dict[str, torch.Tensor]:
        applied = torch.rand(batch, device=device) < self.p
        factors = torch.zeros(batch, 4, device=device)
        for i, bounds in enumerate(self.ranges):
            if bounds is not None:
                factors[:, i].uniform_(*bounds)
        order = torch.rand(batch, 4, device=device).argsort(dim=1)
        return {"applied": applied, "factors": factors, "order": order}

    def apply(self, view: ViewDict) -> ViewDict:
        image = view["image"]
        params = self.draw(image.shape[0], image.device)
        self.last_params = params
        out = image.clone()
        for position in range(4):
            for op, adjust in enumerate(ADJUSTMENTS):
                if self.ranges[op] is None:
                    continue
                index = (params["applied"] & (params["order"][:, position] == op)).nonzero().squeeze(1)
                if index.numel():
                    out[index] = adjust(out[index], params["factors"][index, op])
        view["image"] = out
        return view


class RandomGrayscale(Stage):
    """With probability ``p`` per sample, the image's luma in all three channels
    (torchvision's ``RandomGrayscale``)."""

    def __init__(self, p: float = 0.2) -> None:
        super().__init__()
        self.p = p

    def apply(self, view: ViewDict) -> ViewDict:
        image = view["image"]
        chosen = (torch.rand(image.shape[0], device=image.device) < self.p).view(-1, 1, 1, 1)
        view["image"] = torch.where(chosen, grayscale(image).expand_as(image), image)
        return view
