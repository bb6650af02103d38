"""Saliency models for foreground masks, and the masker that thresholds their maps.

A saliency model is any ``nn.Module`` or callable mapping float images ``[B,3,H,W]`` in
[0, 1] to a saliency map ``[B,1,H,W]`` (or ``[B,H,W]``); ``SaliencyMasker`` min-max normalises
each map and thresholds it at 0.5 (the post-processing of saliency maps in Ryali et al. 2021,
arXiv 2103.12719, for background augmentations). ``sslkit masks`` runs one over a folder.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable

import kornia.filters
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

SaliencyModel = Callable[[torch.Tensor], torch.Tensor]


class BorderContrastSaliency(nn.Module):
    """A weight-free saliency baseline: how far each pixel's colour is from the median
    colour of the image border (objects are rarely cut by the frame), smoothed.

    Good on clean, centred objects (SyntheticScenes); use a learned model (U²-Net) for
    natural images."""

    def __init__(self, border: float = 0.1, smoothing: float = 0.02) -> None:
        super().__init__()
        self.border, self.smoothing = border, smoothing

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        height, width = images.shape[-2:]
        b = max(1, round(self.border * min(height, width)))
        frame = torch.ones(height, width, dtype=torch.bool, device=images.device)
        frame[b:height - b, b:width - b] = False
        border_pixels = images[:, :, frame]
        reference = border_pixels.median(dim=2).values.view(-1, 3, 1, 1)
        distance = (images - reference).norm(dim=1, keepdim=True)
        sigma = max(0.5, self.smoothing * max(height, width))
        kernel = int(2 * round(2 * sigma) + 1)
        return kornia.filters.gaussian_blur2d(distance, (kernel, kernel), (sigma, sigma))


class RembgSaliency:
    """U²-Net and relatives through the optional ``rembg`` package
    (``pip install "sslkit[masks]"``); it downloads the model's weights on first use."""

    def __init__(self, model_name: str = "u2net") -> None:
        try:
            import rembg
        except ImportError as err:
            raise ImportError(
                f"saliency model '{model_name}' needs the optional 'rembg' package: "
                f"pip install 'sslkit[masks]' (or pip install rembg)"
            ) from err
        self.session = rembg.new_session(model_name)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        maps = []
        for image in images:
            pil = Image.fromarray((image.clamp(0, 1) * 255).byte().permute(1, 2, 0).cpu().numpy())
            mask = self.session.predict(pil)[0].convert("L").resize(pil.size)
            maps.append(torch.from_numpy(np.asarray(mask, dtype=np.float32) / 255.0))
        return torch.stack(maps).unsqueeze(1).to(images.device)


REMBG_MODELS = ("u2net", "u2netp", "isnet-general-use", "silueta")
SALIENCY_MODELS = ("border_contrast", *REMBG_MODELS)


def load_saliency_model(spec: str, weights: str | None = None) -> SaliencyModel:
    """A saliency model from a short name or an import path.

    ``border_contrast`` (built in, no weights), a rembg model name (``u2net``, ``u2netp``,
    ``isnet-general-use``, ``silueta``), or ``package.module:attribute`` naming an
    ``nn.Module`` class or factory (called without arguments) or a ready callable.
    ``weights``: a state_dict file for that module, loaded with ``weights_only=True``.
    """
    if spec == "border_contrast":
        model: SaliencyModel = BorderContrastSaliency()
    elif spec in REMBG_MODELS:
        model = RembgSaliency(spec)
    elif ":" in spec:
        module_name, _, attribute = spec.partition(":")
        try:
            target = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError) as err:
            raise ValueError(f"cannot import saliency model '{spec}': {err}") from err
        is_factory = isinstance(target, type) or (not isinstance(target, nn.Module) and _is_factory(target))
        model = target() if is_factory else target
    else:
        raise ValueError(
            f"unknown saliency model '{spec}': use border_contrast, one of {', '.join(REMBG_MODELS)}, "
            f"or package.module:attribute"
        )
    if weights is not None:
        if not isinstance(model, nn.Module):
            raise ValueError(f"--weights needs a torch module, but '{spec}' is a {type(model).__name__}")
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    if isinstance(model, nn.Module):
        model.eval()
    return model


def _is_factory(target: Callable) -> bool:
    """A callable with no required argument is a factory; one taking images is the model."""
    import inspect

    try:
        params = inspect.signature(target).parameters.values()
    except (TypeError, ValueError):
        return False
    return all(p.default is not p.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params)


class SaliencyMasker:
    """Saliency model -> boolean masks at the images' own size.

    Images are resized to ``input_size`` (``None``: as they are) for the model; each map is
    min-max normalised, resized back and thresholded at ``threshold``.
    """

    def __init__(self, model: SaliencyModel, threshold: float = 0.5, input_size: int | None = 320) -> None:
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        self.model, self.threshold, self.input_size = model, threshold, input_size

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype == torch.uint8:
            images = images.float() / 255.0
        size = images.shape[-2:]
        x = images
        if self.input_size is not None and tuple(size) != (self.input_size, self.input_size):
            x = F.interpolate(images, (self.input_size, self.input_size), mode="bilinear", align_corners=False)
        saliency = self.model(x)
        if isinstance(saliency, (tuple, list)):
            saliency = saliency[0]
        if saliency.dim() == 3:
            saliency = saliency.unsqueeze(1)
        saliency = saliency.float()
        lo = saliency.amin(dim=(2, 3), keepdim=True)
        hi = saliency.amax(dim=(2, 3), keepdim=True)
        saliency = (saliency - lo) / (hi - lo).clamp_min(1e-8)
        if saliency.shape[-2:] != size:
            saliency = F.interpolate(saliency, size, mode="bilinear", align_corners=False)
        return saliency > self.threshold
