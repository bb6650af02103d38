"""Published augmentation recipes as lists of stages, with every part overridable in YAML.

Every recipe is built by ``view_stages`` in one order: background stages (on the whole
image), crop, flip, colour jitter, grayscale, blur, solarisation, normalisation. The papers
flip at different points (MoCo's ``main_moco.py`` last, SwAV and solo-learn right after
the crop); flipping commutes with every pixel-wise stage and with a symmetric blur, so the
distribution of views is the same.
"""
from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from .background import BackgroundSwap
from .color import ColorJitter, RandomGaussianBlur, RandomGrayscale, RandomSolarize
from .geometry import CenterCrop, Interpolation, RandomHorizontalFlip, RandomResizedCrop, Resize
from .stages import Normalize, Stage, View
from .views import MultiView, RepeatedView

SWAV_STD = (0.228, 0.224, 0.225)  # swav src/multicropdataset.py


def eval_view(crop_size: int, mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
              resize: int | None = None) -> View:
    """The view every evaluator sees: whole images resized (shorter side ``resize``, default
    ``crop_size / 0.875``, i.e. 256 for 224 as in ``main_lincls.py``), then a centre crop
    and normalisation. Canvas batches are only resized when ``resize`` is given."""
    return View([Resize(resize, crop_size), CenterCrop(crop_size), Normalize(mean, std)])


def view_stages(
    crop_size: int,
    crop_scale: tuple[float, float],
    crop_interpolation: Interpolation = "bilinear",
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1),
    jitter_p: float = 0.8,
    grayscale_p: float = 0.2,
    blur_p: float = 0.5,
    blur_sigma: tuple[float, float] = (0.1, 2.0),
    blur_kernel: int | None = None,
    blur_border: str = "replicate",
    solarize_p: float = 0.0,
    flip_p: float = 0.5,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    background: Sequence[Stage] = (),
) -> list[Stage]:
    """The stages of one view; a stage whose probability is 0 is left out. ``mean``/``std``
    ``None``: the data's statistics (see ``Normalize``)."""
    out: list[Stage] = [*background, RandomResizedCrop(crop_size, crop_scale, interpolation=crop_interpolation)]
    if flip_p > 0:
        out.append(RandomHorizontalFlip(flip_p))
    if jitter_p > 0:
        out.append(ColorJitter(*jitter, p=jitter_p))
    if grayscale_p > 0:
        out.append(RandomGrayscale(grayscale_p))
    if blur_p > 0:
        out.append(RandomGaussianBlur(blur_sigma, p=blur_p, kernel_size=blur_kernel, border=blur_border))
    if solarize_p > 0:
        out.append(RandomSolarize(solarize_p))
    out.append(Normalize(mean, std))
    return out


class MoCoV2Views(RepeatedView):
    """MoCo v2's recipe (``main_moco.py --aug-plus``), the same for every view:
    RandomResizedCrop(scale 0.2-1), ColorJitter(0.4, 0.4, 0.4, 0.1) p=0.8, grayscale p=0.2,
    Gaussian blur sigma 0.1-2 p=0.5, flip, normalise. The flip comes right after the crop
    here (``view_stages``, BYOL's order): it commutes with per-pixel colour changes and a
    symmetric blur kernel, so the distribution of views is MoCo's.

    ``background``: background stages (BG_RM, BG_Random) run first, on the whole image of
    every view; ``background_swap``: BG_Swaps (see ``MultiView``). ``eval_resize``: see
    ``eval_view``.
    """

    def __init__(
        self,
        crop_size: int = 224,
        crop_scale: tuple[float, float] = (0.2, 1.0),
        crop_interpolation: Interpolation = "bilinear",
        jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1),
        jitter_p: float = 0.8,
        grayscale_p: float = 0.2,
        blur_p: float = 0.5,
        blur_sigma: tuple[float, float] = (0.1, 2.0),
        flip_p: float = 0.5,
        mean: tuple[float, float, float] | None = None,
        std: tuple[float, float, float] | None = None,
        num_views: int = 2,
        background: Sequence[Stage] = (),
        background_swap: BackgroundSwap | None = None,
        eval_resize: int | None = None,
    ) -> None:
        stages = view_stages(crop_size, crop_scale, crop_interpolation, jitter, jitter_p, grayscale_p, blur_p,
                             blur_sigma, flip_p=flip_p, mean=mean, std=std, background=background)
        super().__init__(View(stages), num_views, eval_view(crop_size, mean, std, eval_resize), background_swap)


class BYOLViews(MultiView):
    """BYOL's asymmetric pair (Grill et al. 2020, Table 6; ``byol/utils/augmentations.py``):
    bicubic crop (0.08-1), flip, colour jitter (0.4, 0.4, 0.2, 0.1) p=0.8, grayscale p=0.2,
    blur (kernel side / 10, zero padding) p=1.0 / 0.1 and solarisation p=0.0 / 0.2 for view
    1 / view 2. ``background`` and ``background_swap`` as in ``MoCoV2Views`` (BYOL has no
    negatives: ``hard_negative: false``)."""

    def __init__(
        self,
        crop_size: int = 224,
        crop_scale: tuple[float, float] = (0.08, 1.0),
        crop_interpolation: Interpolation = "bicubic",
        jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.2, 0.1),
        jitter_p: float = 0.8,
        grayscale_p: float = 0.2,
        blur_p: tuple[float, float] = (1.0, 0.1),
        blur_sigma: tuple[float, float] = (0.1, 2.0),
        blur_kernel: int | None = None,
        blur_border: str = "constant",
        solarize_p: tuple[float, float] = (0.0, 0.2),
        flip_p: float = 0.5,
        mean: tuple[float, float, float] | None = None,
        std: tuple[float, float, float] | None = None,
        background: Sequence[Stage] = (),
        background_swap: BackgroundSwap | None = None,
        eval_resize: int | None = None,
    ) -> None:
        if blur_kernel is None:
            blur_kernel = max(3, 2 * int(crop_size / 10 / 2) + 1)
        views = [
            View(view_stages(crop_size, crop_scale, crop_interpolation, jitter, jitter_p, grayscale_p, blur_p[i],
                             blur_sigma, blur_kernel, blur_border, solarize_p[i], flip_p, mean, std, background))
            for i in range(2)
        ]
        super().__init__(views, eval_view(crop_size, mean, std, eval_resize), background_swap)


class MultiCropViews(MultiView):
    """SwAV's multi-crop (Caron et al. 2020, sec. 3.2; ``src/multicropdataset.py``):
    ``num_global`` crops of ``global_size`` px (scale 0.14-1) then ``num_local`` crops of
    ``local_size`` px (scale 0.05-0.14); flip, colour jitter (0.8, 0.8, 0.8, 0.2) p=0.8,
    grayscale p=0.2, blur p=0.5. Each group is computed in one pass. (SwAV normalises
    ImageNet with std (0.228, 0.224, 0.225), ``SWAV_STD``; ``configs/swav_imagenet.yaml`` sets it.) ``background`` and ``background_swap`` as in ``MoCoV2Views``:
    with a swap, global crop 0 sees the image and every other crop the image on another
    background."""

    def __init__(
        self,
        global_size: int = 224,
        global_scale: tuple[float, float] = (0.14, 1.0),
        num_global: int = 2,
        local_size: int = 96,
        local_scale: tuple[float, float] = (0.05, 0.14),
        num_local: int = 6,
        crop_interpolation: Interpolation = "bilinear",
        jitter: tuple[float, float, float, float] = (0.8, 0.8, 0.8, 0.2),
        jitter_p: float = 0.8,
        grayscale_p: float = 0.2,
        blur_p: float = 0.5,
        blur_sigma: tuple[float, float] = (0.1, 2.0),
        flip_p: float = 0.5,
        mean: tuple[float, float, float] | None = None,
        std: tuple[float, float, float] | None = None,
        background: Sequence[Stage] = (),
        background_swap: BackgroundSwap | None = None,
        eval_resize: int | None = None,
    ) -> None:
        if num_global < 2:
            raise ValueError(f"multi-crop needs at least 2 global crops, got num_global={num_global}")

        def group(size: int, scale: tuple[float, float], count: int) -> RepeatedView:
            stages = view_stages(size, scale, crop_interpolation, jitter, jitter_p, grayscale_p, blur_p, blur_sigma,
                                 flip_p=flip_p, mean=mean, std=std, background=background)
            return RepeatedView(View(stages), count)

        views: list[nn.Module] = [group(global_size, global_scale, num_global)]
        if num_local > 0:
            views.append(group(local_size, local_scale, num_local))
        super().__init__(views, eval_view(global_size, mean, std, eval_resize), background_swap)
        self.num_global = num_global


class DINOViews(MultiView):
    """DINO's multi-crop (Caron et al. 2021; dino ``main_dino.py`` ``DataAugmentationDINO``):
    two global crops of ``global_size`` px (scale 0.4-1) and ``num_local`` local crops of
    ``local_size`` px (scale 0.05-0.4), all bicubic, each flipped, colour-jittered
    (0.4, 0.4, 0.2, 0.1) p=0.8 and greyed p=0.2; blur p=1.0 on global crop 1, p=0.1 and
    solarisation p=0.2 on global crop 2, blur p=0.5 on the local crops (the PIL-extent kernel
    with the edge replicated, as ``utils.GaussianBlur``). The local crops are made in one pass.
    ``mean``/``std`` ``None``: the data's statistics (``DINO``'s default gives ImageNet's, as
    there). ``background`` and ``background_swap`` as in ``MoCoV2Views`` (DINO has no
    negatives: ``hard_negative: false``): with a swap, global crop 1 sees the image and every
    other crop the image on another background."""

    num_global = 2

    def __init__(
        self,
        global_size: int = 224,
        global_scale: tuple[float, float] = (0.4, 1.0),
        local_size: int = 96,
        local_scale: tuple[float, float] = (0.05, 0.4),
        num_local: int = 8,
        crop_interpolation: Interpolation = "bicubic",
        jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.2, 0.1),
        jitter_p: float = 0.8,
        grayscale_p: float = 0.2,
        blur_p: tuple[float, float] = (1.0, 0.1),
        local_blur_p: float = 0.5,
        blur_sigma: tuple[float, float] = (0.1, 2.0),
        solarize_p: tuple[float, float] = (0.0, 0.2),
        flip_p: float = 0.5,
        mean: tuple[float, float, float] | None = None,
        std: tuple[float, float, float] | None = None,
        background: Sequence[Stage] = (),
        background_swap: BackgroundSwap | None = None,
        eval_resize: int | None = None,
    ) -> None:
        if num_local < 0:
            raise ValueError(f"num_local must be 0 or more, got {num_local}")

        def stages(size: int, scale: tuple[float, float], blur: float, solarize: float) -> list[Stage]:
            return view_stages(size, scale, crop_interpolation, jitter, jitter_p, grayscale_p, blur, blur_sigma,
                               solarize_p=solarize, flip_p=flip_p, mean=mean, std=std, background=background)

        views: list[nn.Module] = [View(stages(global_size, global_scale, blur_p[i], solarize_p[i])) for i in range(2)]
        if num_local > 0:
            views.append(RepeatedView(View(stages(local_size, local_scale, local_blur_p, 0.0)), num_local))
        super().__init__(views, eval_view(global_size, mean, std, eval_resize), background_swap)
