"""On-device, batched augmentation stages and the published recipes built from them."""
from .background import BackgroundRandom, BackgroundRemove, BackgroundSwap
from .recipes import BYOLViews, MoCoV2Views, MultiCropViews
from .stages import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    CenterCrop,
    ColorJitter,
    Normalize,
    RandomGaussianBlur,
    RandomGrayscale,
    RandomHorizontalFlip,
    RandomResizedCrop,
    RandomSolarize,
    Stage,
    View,
)
from .views import MultiView, RepeatedView

__all__ = [
    "BackgroundRandom",
    "BackgroundRemove",
    "BackgroundSwap",
    "BYOLViews",
    "MultiCropViews",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "CenterCrop",
    "ColorJitter",
    "MoCoV2Views",
    "MultiView",
    "Normalize",
    "RandomGaussianBlur",
    "RandomGrayscale",
    "RandomHorizontalFlip",
    "RandomResizedCrop",
    "RandomSolarize",
    "RepeatedView",
    "Stage",
    "View",
]
