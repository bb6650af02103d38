"""DataModules yielding dict batches of uint8 images on a fixed canvas."""
from .base import SSLDataModule
from .folder import ImageDecodeError, ImageFolderData, ImageFolderDataset
from .scenes import SyntheticScenes
from .synthetic import SyntheticScenesDataset, render_scenes
from .torchvision_data import CIFAR10, CIFAR100, STL10

__all__ = [
    "CIFAR10",
    "CIFAR100",
    "STL10",
    "ImageDecodeError",
    "ImageFolderData",
    "ImageFolderDataset",
    "SSLDataModule",
    "SyntheticScenes",
    "SyntheticScenesDataset",
    "render_scenes",
]
