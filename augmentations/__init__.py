"""On-device, batched augmentation stages and the published recipes built from them."""
from .recipes import MoCoV2Views
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
