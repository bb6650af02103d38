"""Published augmentation recipes as lists of stages, with every part overridable in YAML."""
from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from .background import BackgroundSwap
from .stages import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    CenterCrop,
    ColorJitter,
    RandomSolarize,
    Normalize,
    RandomGaussianBlur,
    RandomGrayscale,
    RandomHorizontalFlip,
    RandomResizedCrop,
    Stage,
    View,
)
from .views import MultiView, RepeatedView


def eval_view(crop_size: int, mean: Sequence[float], std: Sequence[float]) -> View:
    """Centre crop to ``crop_size`` and normalise: the view every evaluator sees."""
    return View([CenterCrop(crop_size), Normalize(mean, std)])


class MoCoV2Views(RepeatedView):
    """MoCo v2's recipe (Chen et al. 2020, arXiv 2003.04297), the same for every view.

    RandomResizedCrop(scale 0.2-1) -> ColorJitter(0.4, 0.4, 0.4, 0.1) p=0.8 ->
    grayscale p=0.2 -> Gaussian blur sigma 0.1-2 p=0.5 -> flip -> normalise.
    For 32 px images the MoCo CIFAR demo drops the blur (``blur_p: 0``) and uses
    ``crop_scale: [0.08, 1.0]``.

    ``background``: background stages (BG_RM, BG_Random) run first, on the full image of
    every view; ``background_swap``: BG_Swaps (see ``MultiView``).
    """

    def __init__(
        self,
        crop_size: int = 224,
        crop_scale: tuple[float, float] = (0.2, 1.0),
        jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1),
        jitter_p: float = 0.8,
        grayscale_p: float = 0.2,
        blur_p: float = 0.5,
        blur_sigma: tuple[float, float] = (0.1, 2.0),
        flip_p: float = 0.5,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
        num_views: int = 2,
        background: Sequence[Stage] = (),
        background_swap: BackgroundSwap | None = None,
    ) -> None:
        def stages() -> list[Stage]:
            out: list[Stage] = [*background, RandomResizedCrop(crop_size, crop_scale)]
            if jitter_p > 0:
                out.append(ColorJitter(*jitter, p=jitter_p))
            if grayscale_p > 0:
                out.append(RandomGrayscale(grayscale_p))
            if blur_p > 0:
                out.append(RandomGaussianBlur(blur_sigma, p=blur_p, image_size=crop_size))
            if flip_p > 0:
                out.append(RandomHorizontalFlip(flip_p))
            out.append(Normalize(mean, std))
            return out

        super().__init__(View(stages()), num_views, eval_view(crop_size, mean, std), background_swap)


def _stages(
    crop_size: int,
    crop_scale: tuple[float, float],
    jitter: tuple[float, float, float, float],
    jitter_p: float,
    grayscale_p: float,
    blur_p: float,
    blur_sigma: tuple[float, float],
    solarize_p: float,
    flip_p: float,
    mean: Sequence[float],
    std: Sequence[float],
    background: Sequence[Stage] = (),
) -> list[Stage]:
    out: list[Stage] = [*background, RandomResizedCrop(crop_size, crop_scale)]
    if flip_p > 0:
        out.append(RandomHorizontalFlip(flip_p))
    if jitter_p > 0:
        out.append(ColorJitter(*jitter, p=jitter_p))
    if grayscale_p > 0:
        out.append(RandomGrayscale(grayscale_p))
    if blur_p > 0:
        out.append(RandomGaussianBlur(blur_sigma, p=blur_p, image_size=crop_size))
    if solarize_p > 0:
        out.append(RandomSolarize(solarize_p))
    out.append(Normalize(mean, std))
    return out


class BYOLViews(MultiView):
    """BYOL's asymmetric pair (Grill et al. 2020, Table 6): crop (0.08-1), flip, colour
    jitter (0.4, 0.4, 0.2, 0.1) p=0.8, grayscale p=0.2; blur p=1.0 / 0.1 and solarisation
    p=0.0 / 0.2 for view 1 / view 2. ``background`` and ``background_swap`` as in
    ``MoCoV2Views`` (BYOL has no negatives: ``hard_negative: false``)."""

    def __init__(
        self,
        crop_size: int = 224,
        crop_scale: tuple[float, float] = (0.08, 1.0),
        jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.2, 0.1),
        jitter_p: float = 0.8,
        grayscale_p: float = 0.2,
        blur_p: tuple[float, float] = (1.0, 0.1),
        blur_sigma: tuple[float, float] = (0.1, 2.0),
        solarize_p: tuple[float, float] = (0.0, 0.2),
        flip_p: float = 0.5,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
        background: Sequence[Stage] = (),
        background_swap: BackgroundSwap | None = None,
    ) -> None:
        views = [
            View(_stages(crop_size, crop_scale, jitter, jitter_p, grayscale_p, blur_p[i], blur_sigma,
                         solarize_p[i], flip_p, mean, std, background))
            for i in range(2)
        ]
        super().__init__(views, eval_view(crop_size, mean, std), background_swap)


class MultiCropViews(MultiView):
    """SwAV's multi-crop (Caron et al. 2020, sec. 3.2): ``num_global`` crops of
    ``global_size`` px (scale 0.14-1) then ``num_local`` crops of ``local_size`` px
    (scale 0.05-0.14); colour jitter (0.8, 0.8, 0.8, 0.2) p=0.8, grayscale p=0.2,
    blur p=0.5, flip. Each group is computed in one pass. ``background`` and
    ``background_swap`` as in ``MoCoV2Views``: with a swap, global crop 0 sees the
    image and every other crop the image on another background."""

    def __init__(
        self,
        global_size: int = 224,
        global_scale: tuple[float, float] = (0.14, 1.0),
        num_global: int = 2,
        local_size: int = 96,
        local_scale: tuple[float, float] = (0.05, 0.14),
        num_local: int = 6,
        jitter: tuple[float, float, float, float] = (0.8, 0.8, 0.8, 0.2),
        jitter_p: float = 0.8,
        grayscale_p: float = 0.2,
        blur_p: float = 0.5,
        blur_sigma: tuple[float, float] = (0.1, 2.0),
        flip_p: float = 0.5,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
        background: Sequence[Stage] = (),
        background_swap: BackgroundSwap | None = None,
    ) -> None:
        if num_global < 2:
            raise ValueError(f"multi-crop needs at least 2 global crops, got num_global={num_global}")
        common = (jitter, jitter_p, grayscale_p, blur_p, blur_sigma, 0.0, flip_p, mean, std, background)
        views: list[nn.Module] = [RepeatedView(View(_stages(global_size, global_scale, *common)), num_global)]
        if num_local > 0:
            views.append(RepeatedView(View(_stages(local_size, local_scale, *common)), num_local))
        super().__init__(views, eval_view(global_size, mean, std), background_swap)
        self.num_global = num_global
