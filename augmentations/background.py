"""Background augmentations (Ryali, Schwab, Morcos 2021, arXiv 2103.12719), batched on device.

BG_RM and BG_Random are stages of the usual protocol (view dict in, view dict out) that
need ``mask`` (True = foreground). They act on float images in [0, 1], before
normalisation, and belong first in a view, on the full image, as in the paper. BG_Swaps
couples the views of one sample, so it is not a stage but an argument of the recipe
(``MultiView(background_swap=BackgroundSwap(...))``) that prepares each view's input.

Every sample is augmented with probability ``p``, and only when its foreground covers a
fraction of the image inside ``foreground_range`` (5-95% by default: an all-background or
all-foreground mask carries no usable split). ``draw`` hands back the parameters of a call
(which samples, which partners, which grey), and ``apply`` replays them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import kornia.filters
import torch
from torch import nn

import torchvision.transforms.v2.functional as TF
from torchvision.transforms import InterpolationMode

from . import images
from .stages import IMAGENET_MEAN, Stage, ViewDict, check_mask

Fill = Literal["grey", "random_grey", "image_mean", "dataset_mean", "black", "blur"]
DonorHole = Literal["leak", "mean"]


def _require_mask(view: ViewDict, stage: str) -> images.Images:
    mask = view.get("mask")
    if mask is None:
        raise ValueError(f"{stage} needs a foreground mask in the batch ('mask' key); the data module gives none")
    check_mask(view["image"], mask)
    return mask


def resized(image: torch.Tensor, size: tuple[int, int], nearest: bool = False) -> torch.Tensor:
    """``image`` ``[C, h, w]`` at ``size`` (a donor for an image of another size)."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    if nearest:
        return TF.resize(image.float(), list(size), interpolation=InterpolationMode.NEAREST_EXACT) > 0.5
    return TF.resize(image, list(size), antialias=True)


def _check_p(p: float, stage: str) -> None:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{stage}: p must be in [0, 1], got {p}")


def _check_donor_hole(donor_hole: str, stage: str) -> None:
    if donor_hole not in ("leak", "mean"):
        raise ValueError(f"{stage}: donor_hole must be leak or mean; got '{donor_hole}'")


def _check_range(foreground_range: tuple[float, float], stage: str) -> tuple[float, float]:
    lo, hi = foreground_range
    if not 0.0 <= lo < hi <= 1.0:
        raise ValueError(f"{stage}: foreground_range must satisfy 0 <= lo < hi <= 1, got {tuple(foreground_range)}")
    return float(lo), float(hi)


def usable_masks(mask: images.Images, foreground_range: tuple[float, float]) -> torch.Tensor:
    """bool ``[B]``: the foreground fraction of each mask lies inside ``foreground_range``."""
    if images.is_ragged(mask):
        fraction = torch.stack([m.float().mean() for m in mask])
    else:
        fraction = mask.flatten(1).float().mean(1)
    return (fraction >= foreground_range[0]) & (fraction <= foreground_range[1])


def _chosen(mask: images.Images, p: float, foreground_range: tuple[float, float]) -> torch.Tensor:
    """bool ``[B]``: samples drawn with probability ``p`` whose mask is usable."""
    batch = images.count(mask)
    return (torch.rand(batch, device=images.device(mask)) < p) & usable_masks(mask, foreground_range)


def partner_permutation(batch: int, device: torch.device, blocks: int = 1) -> torch.Tensor:
    """A random partner for every sample, never the sample itself: ``(i + s_i) mod B`` with
    each shift ``s_i`` drawn from ``1..B-1``. With ``blocks`` > 1 the batch is that many
    copies of one set of images (the views of a ``RepeatedView``), and partners are drawn
    within each block, so no image is paired with another view of itself."""
    size = batch // blocks
    if size < 2 or size * blocks != batch:
        raise ValueError(f"background partners need at least 2 images per block, got a batch of {batch} "
                         f"in {blocks} blocks")
    shift = torch.randint(1, size, (batch,), device=device)
    index = torch.arange(batch, device=device)
    return index - index % size + (index % size + shift) % size


def background_only(image: torch.Tensor, mask: torch.Tensor, hole: DonorHole) -> torch.Tensor:
    """The image as a background donor: with ``hole='mean'`` its own object is painted over
    with its mean background colour, with ``hole='leak'`` it stays."""
    if hole == "leak":
        return image
    background = (~mask).to(image.dtype)
    mean = (image * background).sum((2, 3), keepdim=True) / background.sum((2, 3), keepdim=True).clamp_min(1)
    return torch.where(mask, mean.expand_as(image), image)


def composite(foreground: torch.Tensor, mask: torch.Tensor, background: torch.Tensor) -> torch.Tensor:
    """``foreground`` where ``mask``, ``background`` elsewhere (all ``[B,C,H,W]``)."""
    return torch.where(mask, foreground, background)


class BackgroundRemove(Stage):
    """BG_RM: background pixels replaced by a fill, foreground untouched.

    ``fill``: ``random_grey`` (a grey level drawn per sample in [0, 1], the default),
    ``grey`` (constant ``grey_level``), ``image_mean`` (the image's own mean colour),
    ``dataset_mean`` (the constant ``dataset_mean`` colour), ``black``, or ``blur`` (the
    image blurred with a Gaussian of ``blur_sigma`` x image side).
    """

    def __init__(
        self,
        p: float = 0.2,
        fill: Fill = "random_grey",
        grey_level: float = 0.5,
        dataset_mean: tuple[float, float, float] = IMAGENET_MEAN,
        blur_sigma: float = 0.1,
        foreground_range: tuple[float, float] = (0.05, 0.95),
    ) -> None:
        super().__init__()
        fills = ("grey", "random_grey", "image_mean", "dataset_mean", "black", "blur")
        if fill not in fills:
            raise ValueError(f"BackgroundRemove: fill must be one of {', '.join(fills)}; got '{fill}'")
        _check_p(p, "BackgroundRemove")
        self.p, self.fill, self.grey_level, self.blur_sigma = p, fill, grey_level, blur_sigma
        self.foreground_range = _check_range(foreground_range, "BackgroundRemove")
        self.register_buffer("dataset_mean", torch.tensor(dataset_mean).view(1, 3, 1, 1), persistent=False)

    whole_batch = True
    uses_mask = True

    def _fill(self, image: torch.Tensor, grey: torch.Tensor) -> torch.Tensor:
        """The fill of ``image`` ``[B,C,H,W]``; ``grey`` ``[B]`` holds the random grey levels."""
        batch = image.shape[0]
        shape, kw = (batch, 1, 1, 1), {"device": image.device, "dtype": image.dtype}
        if self.fill == "grey":
            return torch.full(shape, self.grey_level, **kw)
        if self.fill == "random_grey":
            return grey.view(shape).to(image.dtype)
        if self.fill == "image_mean":
            return image.mean(dim=(2, 3), keepdim=True)
        if self.fill == "dataset_mean":
            return self.dataset_mean.to(image.dtype).expand(batch, -1, -1, -1)
        if self.fill == "black":
            return torch.zeros(shape, **kw)
        sigma = max(0.5, self.blur_sigma * max(image.shape[-2:]))
        kernel = int(2 * round(3 * sigma) + 1)
        return kornia.filters.gaussian_blur2d(image, (kernel, kernel), (sigma, sigma), border_type="reflect")

    def draw(self, view: ViewDict) -> dict:
        """``chosen`` ``[B]``: the samples whose background is removed; ``grey`` ``[B]``: the
        grey levels of ``random_grey``."""
        image = view["image"]
        mask = _require_mask(view, "BackgroundRemove")
        chosen = _chosen(mask, self.p, self.foreground_range)
        return {"chosen": chosen, "grey": torch.rand(images.count(image), device=images.device(image))}

    def apply(self, view: ViewDict, params: dict) -> ViewDict:
        image, mask = view["image"], _require_mask(view, "BackgroundRemove")
        chosen, grey = params["chosen"], params["grey"]
        if images.is_ragged(image):
            fills = [self._fill(x[None], grey[i:i + 1])[0] for i, x in enumerate(image)]
            view["image"] = [torch.where(chosen[i] & ~m, f.expand_as(x), x)
                             for i, (x, m, f) in enumerate(zip(image, mask, fills))]
            return view
        fill = self._fill(image, grey)
        view["image"] = torch.where(chosen.view(-1, 1, 1, 1) & ~mask, fill.expand_as(image), image)
        return view


class BackgroundRandom(Stage):
    """BG_Random: background replaced by the background of another image of the batch
    (never the image itself); the foreground is untouched.

    The partner's own object leaves a hole in its background. ``donor_hole``: ``leak``
    keeps the partner's object pixels there (the simple form), ``mean`` fills the hole with
    the partner's mean background colour.
    """

    def __init__(
        self,
        p: float = 0.2,
        donor_hole: DonorHole = "mean",
        foreground_range: tuple[float, float] = (0.05, 0.95),
    ) -> None:
        super().__init__()
        _check_p(p, "BackgroundRandom")
        _check_donor_hole(donor_hole, "BackgroundRandom")
        self.p, self.donor_hole = p, donor_hole
        self.foreground_range = _check_range(foreground_range, "BackgroundRandom")

    whole_batch = True
    uses_mask = True

    def draw(self, view: ViewDict) -> dict:
        """``chosen`` ``[B]``: the samples whose background is replaced; ``partner`` ``[B]``:
        whose background each receives (never itself, nor another view of itself)."""
        image = view["image"]
        mask = _require_mask(view, "BackgroundRandom")
        chosen = _chosen(mask, self.p, self.foreground_range)
        return {"chosen": chosen,
                "partner": partner_permutation(images.count(image), images.device(image), view.get("blocks", 1))}

    def apply(self, view: ViewDict, params: dict) -> ViewDict:
        image, mask = view["image"], _require_mask(view, "BackgroundRandom")
        chosen, partner = params["chosen"], params["partner"]
        if images.is_ragged(image):  # whole images: the donor's background resized to each image
            out = []
            for i, j in enumerate(partner.tolist()):
                donor = background_only(image[j][None], mask[j][None], self.donor_hole)[0]
                out.append(torch.where(chosen[i] & ~mask[i], resized(donor, image[i].shape[-2:]), image[i]))
            view["image"] = out
            return view
        donor = background_only(image[partner], mask[partner], self.donor_hole)
        view["image"] = torch.where(chosen.view(-1, 1, 1, 1) & ~mask, donor, image)
        return view


@dataclass
class SwapInputs:
    """What ``BackgroundSwap`` prepares from one batch: the query's input (the image
    itself), the positive's input (own foreground on another image's background) and, for
    contrastive methods, the hard negative's input (another image's foreground on the
    query's background). Where ``negative_valid[i]`` is False (sample not drawn, or a mask
    outside ``foreground_range``) the negative must be ignored. ``params``: what was drawn
    (``BackgroundSwap.draw``)."""

    query: ViewDict
    positive: ViewDict
    negative: ViewDict | None
    negative_valid: torch.Tensor
    params: dict


class BackgroundSwap(nn.Module):
    """BG_Swaps: the positive gets a background that differs from the query's, and (with
    ``hard_negative``) a negative is made of the query's background with a foreign
    foreground, so that background alone can neither find the positive nor reject the
    negative (Ryali et al. 2021, sec. 3). The query's background is the one its view shows:
    where BG_RM or BG_Random replaced it, the negative carries the replacement (otherwise the
    background would tell query and negative apart again). BYOL and SwAV have no negatives
    and use ``hard_negative=False``.

    The background donor of the positive and the foreground donor of the negative are two
    independent partner permutations without self-pairs. Holes left by removed objects are
    filled per ``donor_hole`` (``mean`` by default: a leaked query object would make the
    negative partly a positive).
    """

    def __init__(
        self,
        p: float = 0.5,
        hard_negative: bool = True,
        donor_hole: DonorHole = "mean",
        foreground_range: tuple[float, float] = (0.05, 0.95),
    ) -> None:
        super().__init__()
        _check_p(p, "BackgroundSwap")
        _check_donor_hole(donor_hole, "BackgroundSwap")
        self.p, self.hard_negative, self.donor_hole = p, hard_negative, donor_hole
        self.foreground_range = _check_range(foreground_range, "BackgroundSwap")

    def draw(self, batch: ViewDict) -> dict:
        """``chosen`` ``[B]`` (the positive is swapped), ``background_donor`` ``[B]`` (whose
        background it gets) and, with ``hard_negative``, ``foreground_donor`` ``[B]`` (whose
        object the negative shows) and ``negative_valid`` ``[B]``."""
        mask = _require_mask(batch, "BackgroundSwap")
        size, device = images.count(mask), images.device(mask)
        usable = usable_masks(mask, self.foreground_range)
        background_donor = partner_permutation(size, device)
        chosen = (torch.rand(size, device=device) < self.p) & usable & usable[background_donor]
        params = {"chosen": chosen, "background_donor": background_donor}
        if self.hard_negative:
            foreground_donor = partner_permutation(size, device)
            params.update(foreground_donor=foreground_donor, negative_valid=chosen & usable[foreground_donor])
        return params

    def forward(self, batch: ViewDict, query: images.Images | None = None, params: dict | None = None) -> SwapInputs:
        """The inputs of every view from ``batch``. ``query``: the query's image as its view
        shows it, after its own background stages (default: the image itself); the hard
        negative carries that background. ``params``: replay a ``draw``."""
        image = images.to_float(batch["image"])
        query = image if query is None else images.to_float(query)
        mask = _require_mask(batch, "BackgroundSwap")
        params = self.draw(batch) if params is None else params
        chosen, background_donor = params["chosen"], params["background_donor"]
        foreground_donor = params.get("foreground_donor")
        valid = params["negative_valid"] if self.hard_negative else torch.zeros_like(chosen)
        if images.is_ragged(image):
            positive, negative = self._ragged(image, query, mask, chosen, background_donor, foreground_donor)
        else:
            donated = background_only(image[background_donor], mask[background_donor], self.donor_hole)
            positive = torch.where(chosen.view(-1, 1, 1, 1) & ~mask, donated, image)
            negative = None
            if self.hard_negative:
                query_background = background_only(query, mask, self.donor_hole)
                negative = (composite(image[foreground_donor], mask[foreground_donor], query_background),
                            mask[foreground_donor])
        if self.hard_negative:
            negative = {"image": negative[0], "mask": negative[1]}
        return SwapInputs({"image": query, "mask": mask}, {"image": positive, "mask": mask}, negative, valid, params)

    def _ragged(self, image: list, query: list, mask: list, chosen: torch.Tensor, background_donor: torch.Tensor,
                foreground_donor: torch.Tensor | None):
        """Whole images of different sizes: every donor (a background, or an object with its
        mask) is resized to the image it is pasted into."""
        positive = []
        for i, j in enumerate(background_donor.tolist()):
            donor = background_only(image[j][None], mask[j][None], self.donor_hole)[0]
            positive.append(torch.where(chosen[i] & ~mask[i], resized(donor, image[i].shape[-2:]), image[i]))
        if foreground_donor is None:
            return positive, None
        negative_images, negative_masks = [], []
        for i, j in enumerate(foreground_donor.tolist()):
            size = image[i].shape[-2:]
            own_background = background_only(query[i][None], mask[i][None], self.donor_hole)[0]
            object_mask = resized(mask[j], size, nearest=True)
            negative_images.append(composite(resized(image[j], size), object_mask, own_background))
            negative_masks.append(object_mask)
        return positive, (negative_images, negative_masks)
