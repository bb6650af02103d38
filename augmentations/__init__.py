"""On-device, batched augmentation stages and the published recipes built from them."""
from .background import BackgroundRandom, BackgroundRemove
from .recipes import BYOLViews, MoCoV2Views, MultiCropViews
from .stages import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    CenterCrop,
    ColorJitter,
    MultiView,
    Normalize,
    RandomGaussianBlur,
    RandomGrayscale,
    RandomHorizontalFlip,
    RandomResizedCrop,
    RandomSolarize,
    RepeatedView,
    Stage,
    View,
)

__all__ = [
    "BackgroundRandom",
    "BackgroundRemove",
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
