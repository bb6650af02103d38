"""On-device, batched augmentation stages and the published recipes built from them."""
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
