"""Background augmentations (Ryali, Schwab, Morcos 2021, arXiv 2103.12719), batched on device.

Stages of the usual protocol (view dict in, view dict out) that need ``mask`` (True =
foreground). They act on float images in [0, 1], before normalisation, and are meant to
come first in a view, on the full image, as in the paper. Each sample is augmented with
probability ``p``; the drawn parameters of the last call are kept in ``last_params`` so a
call can be inspected or replayed.
"""
from __future__ import annotations

from typing import Literal

import torch

from .stages import Stage, ViewDict, check_mask


def _require_mask(view: ViewDict, stage: str) -> torch.Tensor:
    mask = view.get("mask")
    if mask is None:
        raise ValueError(f"{stage} needs a foreground mask in the batch ('mask' key); the data module gives none")
    check_mask(view["image"], mask)
    return mask


def _chosen(batch: int, p: float, device: torch.device) -> torch.Tensor:
    return (torch.rand(batch, device=device) < p).view(batch, 1, 1, 1)


def partner_permutation(batch: int, device: torch.device) -> torch.Tensor:
    """A random partner for every sample, never the sample itself: ``(i + s_i) mod B`` with
    each shift ``s_i`` drawn from ``1..B-1``."""
    if batch < 2:
        raise ValueError("background partners need a batch of at least 2 images")
    shift = torch.randint(1, batch, (batch,), device=device)
    return (torch.arange(batch, device=device) + shift) % batch


class BackgroundRemove(Stage):
    """BG_RM: background pixels replaced by a fill, foreground untouched.

    ``fill``: ``grey`` (constant ``grey_level``), ``random_grey`` (a grey level drawn per
    sample in [0, 1]), ``mean`` (the image's own mean colour) or ``black``.
    """

    def __init__(
        self,
        p: float = 0.2,
        fill: Literal["grey", "random_grey", "mean", "black"] = "random_grey",
        grey_level: float = 0.5,
    ) -> None:
        super().__init__()
        if fill not in ("grey", "random_grey", "mean", "black"):
            raise ValueError(f"fill must be grey, random_grey, mean or black; got '{fill}'")
        self.p, self.fill, self.grey_level = p, fill, grey_level
        self.last_params: dict[str, torch.Tensor] = {}

    def apply(self, view: ViewDict) -> ViewDict:
        image = view["image"]
        mask = _require_mask(view, "BackgroundRemove")
        batch = image.shape[0]
        chosen = _chosen(batch, self.p, image.device)
        if self.fill == "grey":
            fill = torch.full((batch, 1, 1, 1), self.grey_level, device=image.device, dtype=image.dtype)
        elif self.fill == "random_grey":
            fill = torch.rand(batch, 1, 1, 1, device=image.device).to(image.dtype)
        elif self.fill == "mean":
            fill = image.mean(dim=(2, 3), keepdim=True)
        else:
            fill = torch.zeros((batch, 1, 1, 1), device=image.device, dtype=image.dtype)
        view["image"] = torch.where(chosen & ~mask, fill.expand_as(image), image)
        self.last_params = {"chosen": chosen.view(-1), "fill": fill}
        return view


class BackgroundRandom(Stage):
    """BG_Random: background replaced by the background of another image of the batch
    (never the image itself); the foreground is untouched.

    The partner's own object leaves a hole in its background. ``donor_hole``: ``leak``
    keeps the partner's object pixels there (the simple form), ``mean`` fills the hole with
    the partner's mean background colour.
    """

    def __init__(self, p: float = 0.2, donor_hole: Literal["leak", "mean"] = "mean") -> None:
        super().__init__()
        if donor_hole not in ("leak", "mean"):
            raise ValueError(f"donor_hole must be leak or mean; got '{donor_hole}'")
        self.p, self.donor_hole = p, donor_hole
        self.last_params: dict[str, torch.Tensor] = {}

    def apply(self, view: ViewDict) -> ViewDict:
        image = view["image"]
        mask = _require_mask(view, "BackgroundRandom")
        batch = image.shape[0]
        chosen = _chosen(batch, self.p, image.device)
        partner = partner_permutation(batch, image.device)
        donor, donor_mask = image[partner], mask[partner]
        if self.donor_hole == "mean":
            background = (~donor_mask).to(image.dtype)
            mean = (donor * background).sum((2, 3), keepdim=True) / background.sum((2, 3), keepdim=True).clamp_min(1)
            donor = torch.where(donor_mask, mean.expand_as(donor), donor)
        view["image"] = torch.where(chosen & ~mask, donor, image)
        self.last_params = {"chosen": chosen.view(-1), "partner": partner}
        return view
