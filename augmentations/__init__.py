"""On-device, batched augmentation stages and the published recipes built from them."""
from .background import BackgroundRandom, BackgroundRemove, BackgroundSwap
from .color import ColorJitter, RandomGaussianBlur, RandomGrayscale, RandomSolarize
from .geometry import CenterCrop, RandomHorizontalFlip, RandomResizedCrop, Resize
from .recipes import BYOLViews, DINOViews, MoCoV2Views, MultiCropViews, eval_view, view_stages
from .stages import IMAGENET_MEAN, IMAGENET_STD, KorniaStage, Normalize, Stage, View
from .views import MultiView, RepeatedView

__all__ = [
    "BackgroundRandom",
    "BackgroundRemove",
    "BackgroundSwap",
    "BYOLViews",
    "CenterCrop",
    "ColorJitter",
    "DINOViews",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "KorniaStage",
    "MoCoV2Views",
    "MultiCropViews",
    "MultiView",
    "Normalize",
    "RandomGaussianBlur",
    "RandomGrayscale",
    "RandomHorizontalFlip",
    "RandomResizedCrop",
    "RandomSolarize",
    "RepeatedView",
    "Resize",
    "Stage",
    "View",
    "eval_view",
    "view_stages",
]
