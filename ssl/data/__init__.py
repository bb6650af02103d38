"""DataModules yielding dict batches of uint8 images: whole images at their own sizes, or a
fixed canvas for fixed-size data; every random augmentation happens later, on the device."""
from .base import SSLDataModule, collate_dropping_skipped, decode_batch, prepare_batch, share_cores, to_device
from .decode import ImageDecodeError, SkippedItem
from .files import list_image_folder, mask_path
from .folder import ImageFolderData, ImageFolderDataset
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
    "SkippedItem",
    "collate_dropping_skipped",
    "decode_batch",
    "list_image_folder",
    "mask_path",
    "prepare_batch",
    "SyntheticScenes",
    "SyntheticScenesDataset",
    "render_scenes",
    "share_cores",
    "to_device",
]
