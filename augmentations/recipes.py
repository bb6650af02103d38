"""Published augmentation recipes as lists of stages, with every part overridable in YAML."""
from __future__ import annotations

from collections.abc import Sequence

from .stages import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    CenterCrop,
    ColorJitter,
    RepeatedView,
    Normalize,
    RandomGaussianBlur,
    RandomGrayscale,
    RandomHorizontalFlip,
    RandomResizedCrop,
    Stage,
    View,
)


def eval_view(crop_size: int, mean: Sequence[float], std: Sequence[float]) -> View:
    """Centre crop to ``crop_size`` and normalise: the view every evaluator sees."""
    return View([CenterCrop(crop_size), Normalize(mean, std)])


class MoCoV2Views(RepeatedView):
    """MoCo v2's recipe (Chen et al. 2020, arXiv 2003.04297), the same for every view.

    RandomResizedCrop(scale 0.2-1) -> ColorJitter(0.4, 0.4, 0.4, 0.1) p=0.8 ->
    grayscale p=0.2 -> Gaussian blur sigma 0.1-2 p=0.5 -> flip -> normalise.
    For 32 px images the MoCo CIFAR demo drops the blur (``blur_p: 0``) and uses
    ``crop_scale: [0.08, 1.0]``.
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
    ) -> None:
        def stages() -> list[Stage]:
            out: list[Stage] = [RandomResizedCrop(crop_size, crop_scale)]
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

        super().__init__(View(stages()), num_views, eval_view(crop_size, mean, std))
