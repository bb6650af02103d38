"""Photometric stages with torchvision's semantics, batched, every sample drawing its own values.

``ColorJitter`` follows ``torchvision.transforms.ColorJitter`` per image: brightness,
contrast and saturation factors ~ U[max(0, 1 - x), 1 + x], hue shift ~ U[-h, h], applied in
an order drawn per image (torchvision draws ``randperm(4)`` on every call, and MoCo, SwAV
and solo-learn call it once per image and view), each result clamped to [0, 1]. Kornia's
``ColorJitter`` draws one order per batch, so this stage does not use it; the hue shift is
computed directly on the HSV hexagon (max, min and hue of each pixel) rather than through
full RGB -> HSV -> RGB conversions, which makes it several times faster on a CPU.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .images import row_by_row
from .stages import Stage, ViewDict

GREY_WEIGHTS = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale (ITU-R 601-2 luma)


def grayscale(image: torch.Tensor) -> torch.Tensor:
    """``[N, 1, H, W]`` luma of ``[N, 3, H, W]`` images, torchvision's weights."""
    r, g, b = image.unbind(1)
    return (r * GREY_WEIGHTS[0]).add_(g, alpha=GREY_WEIGHTS[1]).add_(b, alpha=GREY_WEIGHTS[2]).unsqueeze(1)


def _per_sample(values: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    return values.to(image.dtype).view(-1, 1, 1, 1)


def _blend(image: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """torchvision's ``_blend``: ``(f image + (1 - f) other)`` clamped to [0, 1]."""
    f = _per_sample(factor, image)
    return (image * f).add_(other * (1 - f)).clamp_(0, 1)


def adjust_brightness(image: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return (image * _per_sample(factor, image)).clamp_(0, 1)


def adjust_contrast(image: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend with the mean luma of the image (the mean of the grey image equals the luma of
    the mean colour, so no grey image is made)."""
    weights = image.new_tensor(GREY_WEIGHTS).view(1, 3, 1, 1)
    mean = (image.mean(dim=(2, 3), keepdim=True) * weights).sum(1, keepdim=True)
    return _blend(image, mean, factor)


def adjust_saturation(image: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return _blend(image, grayscale(image), factor)


def adjust_hue(image: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate each pixel's HSV hue by ``shift`` (fraction of a turn) keeping its value and
    saturation: channel c becomes ``V - C * clamp(2 - |k - 2|, 0, 1)`` with
    ``k = (n_c + 6 h') mod 6``, ``n = (5, 3, 1)`` for (R, G, B), V = max, C = max - min
    (the HSV-to-RGB hexagon; torchvision converts to HSV and back, to the same values),
    computed as ``(V - C) + C * clamp(d - 1, 0, 1)`` with ``d`` the distance of ``k`` from 2
    on the circle of length 6 (for ``k`` in [0, 6) the same value, without a remainder per
    channel, the slowest elementwise operation on a CPU)."""
    r, g, b = image.unbind(1)
    value = torch.maximum(torch.maximum(r, g), b)
    chroma = value - torch.minimum(torch.minimum(r, g), b)
    hue = torch.where(value == r, g - b,
                      torch.where(value == g, (b - r).add_(chroma, alpha=2), (r - g).add_(chroma, alpha=4)))
    hue6 = hue.div_(chroma.clamp_min(1e-12)).add_(6.0 * _per_sample(shift, image).squeeze(1)).remainder_(6.0)
    low = value.sub_(chroma)
    out = torch.empty_like(image)
    x, far = torch.empty_like(hue6), torch.empty_like(hue6)
    for c, n in enumerate((5.0, 3.0, 1.0)):
        # |k - 2| on the hexagon's circle, x = h' + n - 2 in [-1, 9): min(|x|, |x - 6|), no remainder
        torch.add(hue6, n - 2.0, out=x)
        torch.sub(x, 6.0, out=far).abs_()
        torch.minimum(x.abs_(), far, out=x).sub_(1.0).clamp_(0, 1)
        torch.addcmul(low, chroma, x, out=out[:, c])
    return out


ADJUSTMENTS = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)


def apply_to(view: ViewDict, index: torch.Tensor, fn) -> torch.Tensor:
    """The view's image with ``fn(rows, index)`` in the rows ``index``, written in place when
    the view owns its image (``view["owned"]``: a tensor a ``View`` made, no one else's): the
    rows gathered and processed together, or each from its own slice (``row_by_row``)."""
    image = view["image"]
    if index.numel() == 0:
        return image
    out = image if view.get("owned") else image.clone()
    if row_by_row(image):
        for i in index.tolist():
            out[i:i + 1] = fn(out[i:i + 1], index.new_tensor([i]))
    else:
        out[index] = fn(out[index], index)
    return out


class ColorJitter(Stage):
    """With probability ``p`` per sample, torchvision's colour jitter with the sample's own
    factors and order (``draw``: ``applied`` ``[B]``, ``factors`` ``[B, 4]``, ``order``
    ``[B, 4]``)."""

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
        self.adjustments = list(ADJUSTMENTS)

    def compile_kernels(self, backend: str = "inductor") -> None:
        """``torch.compile`` the four adjustments (the hue rotation's thirty elementwise passes
        fuse into a few): the colour jitter's cost. Same values; a one-time compilation."""
        self.adjustments = [torch.compile(fn, dynamic=True, backend=backend) for fn in ADJUSTMENTS]

    def draw(self, view: ViewDict) -> dict[str, torch.Tensor]:
        batch, device = view["image"].shape[0], view["image"].device
        applied = torch.rand(batch, device=device) < self.p
        factors = torch.zeros(batch, 4, device=device)
        for i, bounds in enumerate(self.ranges):
            if bounds is not None:
                factors[:, i].uniform_(*bounds)
        order = torch.rand(batch, 4, device=device).argsort(dim=1)
        return {"applied": applied, "factors": factors, "order": order}

    def apply(self, view: ViewDict, params: dict) -> ViewDict:
        image = view["image"]
        if row_by_row(image):  # each image through its own four adjustments, in its order
            view["image"] = apply_to(view, params["applied"].nonzero().squeeze(1), lambda x, i: self._jitter(
                x, params["order"][int(i)].tolist(), params["factors"][int(i)]))
            return view
        out = image if view.get("owned") else image.clone()  # for each position of the order, each adjustment on all images due
        for position in range(4):
            for op, adjust in enumerate(self.adjustments):
                if self.ranges[op] is None:
                    continue
                index = (params["applied"] & (params["order"][:, position] == op)).nonzero().squeeze(1)
                if index.numel():
                    out[index] = adjust(out[index], params["factors"][index, op])
        view["image"] = out
        return view

    def _jitter(self, image: torch.Tensor, order: list[int], factors: torch.Tensor) -> torch.Tensor:
        for op in order:
            if self.ranges[op] is not None:
                image = self.adjustments[op](image, factors[op:op + 1])
        return image


class RandomGrayscale(Stage):
    """With probability ``p`` per sample, the image's luma in all three channels
    (torchvision's ``RandomGrayscale``)."""

    def __init__(self, p: float = 0.2) -> None:
        super().__init__()
        self.p = p

    def draw(self, view: ViewDict) -> dict:
        image = view["image"]
        return {"chosen": torch.rand(image.shape[0], device=image.device) < self.p}

    def apply(self, view: ViewDict, params: dict) -> ViewDict:
        index = params["chosen"].nonzero().squeeze(1)
        view["image"] = apply_to(view, index, lambda x, i: grayscale(x).expand(-1, 3, -1, -1))
        return view


class RandomGaussianBlur(Stage):
    """With probability ``p`` per sample, a Gaussian blur with sigma ~ U(``sigma``) drawn per
    sample; the kernel is torchvision's (``exp(-x^2 / 2 sigma^2)``, normalised).

    ``kernel_size`` default: ``2 ceil(3 sigma_max) + 1`` taps (13 for sigma up to 2), the
    extent of PIL's ``GaussianBlur(radius=sigma)`` that MoCo v2, SwAV and solo-learn apply at
    any image size; BYOL uses image side / 10 (23 taps at 224 px, ``byol/utils/augmentations.py``).
    ``border``: ``replicate`` (PIL extends the edge), ``constant`` (zeros, BYOL's SAME
    padding) or ``reflect`` (torchvision's ``gaussian_blur``). The separable filter is applied
    as shifted multiply-adds, which is several times faster on a CPU than a depthwise
    convolution with one kernel per sample.
    """

    def __init__(self, sigma: tuple[float, float] = (0.1, 2.0), p: float = 0.5, kernel_size: int | None = None,
                 border: str = "replicate") -> None:
        super().__init__()
        if kernel_size is None:
            kernel_size = 2 * math.ceil(3 * max(sigma)) + 1
        if kernel_size % 2 == 0 or kernel_size < 3:
            raise ValueError(f"RandomGaussianBlur: kernel_size must be odd and at least 3, got {kernel_size}")
        if border not in ("replicate", "constant", "reflect"):
            raise ValueError(f"RandomGaussianBlur: border must be replicate, constant or reflect, got '{border}'")
        self.sigma, self.p, self.kernel_size, self.border = tuple(sigma), p, kernel_size, border

    def draw(self, view: ViewDict) -> dict:
        image = view["image"]
        chosen = torch.rand(image.shape[0], device=image.device) < self.p
        return {"chosen": chosen, "sigma": torch.empty(image.shape[0], device=image.device).uniform_(*self.sigma)}

    def apply(self, view: ViewDict, params: dict) -> ViewDict:
        chosen, sigma = params["chosen"], params["sigma"]
        view["image"] = apply_to(view, chosen.nonzero().squeeze(1),
                                 lambda x, i: gaussian_blur(x, sigma[i], self.kernel_size, self.border))
        return view


def gaussian_blur(image: torch.Tensor, sigma: torch.Tensor, kernel_size: int, border: str = "replicate") -> torch.Tensor:
    """Blur each image of ``[N, C, H, W]`` with its own ``sigma`` ``[N]``, separably."""
    half = kernel_size // 2
    taps = torch.linspace(-half, half, kernel_size, device=image.device, dtype=image.dtype)
    kernel = torch.exp(-0.5 * (taps / sigma.to(image.dtype).view(-1, 1)) ** 2)
    kernel = (kernel / kernel.sum(1, keepdim=True)).view(-1, kernel_size, 1, 1, 1)
    for dim, pad in ((-1, (half, half, 0, 0)), (-2, (0, 0, half, half))):
        padded = F.pad(image, pad, mode=border)
        size = image.shape[dim]
        out = image * kernel[:, half]
        for t in range(kernel_size):
            if t != half:
                out.addcmul_(padded.narrow(dim, t, size), kernel[:, t])
        image = out
    return image


class RandomSolarize(Stage):
    """With probability ``p`` per sample, pixels at or above ``threshold`` inverted (BYOL's
    ``solarize``: ``where(x < threshold, x, 1 - x)``)."""

    def __init__(self, p: float = 0.2, threshold: float = 0.5) -> None:
        super().__init__()
        self.p, self.threshold = p, threshold

    def draw(self, view: ViewDict) -> dict:
        image = view["image"]
        return {"chosen": torch.rand(image.shape[0], device=image.device) < self.p}

    def apply(self, view: ViewDict, params: dict) -> ViewDict:
        image = view["image"]
        chosen = params["chosen"].view(-1, 1, 1, 1)
        view["image"] = torch.where(chosen & (image >= self.threshold), 1 - image, image)
        return view
