"""Backgrounds-Challenge-style evaluation sets built from masks (Xiao et al. 2020,
arXiv 2006.09994).

``only_fg``: the object on black; ``mixed_same``: the object on the background of another
image of the same class; ``mixed_rand``: on the background of a random other image. The
donor's own object is painted over with its mean background colour (Xiao et al. tile the
remaining background instead). BG-Gap = acc(mixed_same) - acc(mixed_rand): how much a
model's accuracy owes to backgrounds that agree with the class.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch.utils.data import Dataset

from sslkit.augmentations.background import background_only, composite, resized
from sslkit.data.base import is_encoded
from sslkit.data.decode import SkippedItem, decode_bytes, fit_size

from .features import extract_features
from .knn import knn_predict

VARIANTS = ("original", "only_fg", "mixed_same", "mixed_rand")


def challenge_donors(labels: torch.Tensor, variant: str, seed: int = 0) -> torch.Tensor:
    """For each image, the index of its background donor: another image of the same class
    (``mixed_same``) or any other image (``mixed_rand``); itself for the other variants."""
    n = len(labels)
    if variant in ("original", "only_fg"):
        return torch.arange(n)
    generator = torch.Generator().manual_seed(seed)
    if variant == "mixed_rand":
        if n < 2:
            raise ValueError("mixed_rand needs at least 2 images")
        return (torch.arange(n) + torch.randint(1, n, (n,), generator=generator)) % n
    if variant != "mixed_same":
        raise ValueError(f"unknown variant '{variant}'; choose from {', '.join(VARIANTS)}")
    donors = torch.empty(n, dtype=torch.long)
    for label in labels.unique():
        members = (labels == label).nonzero().view(-1)
        if len(members) < 2:
            raise ValueError(f"mixed_same needs at least 2 images of class {int(label)}, found {len(members)}")
        shift = torch.randint(1, len(members), (len(members),), generator=generator)
        donors[members] = members[(torch.arange(len(members)) + shift) % len(members)]
    return donors


def challenge_image(image: torch.Tensor, mask: torch.Tensor, donor: torch.Tensor, donor_mask: torch.Tensor,
                    variant: str) -> torch.Tensor:
    """The ``variant`` of uint8 ``image`` ``[3,H,W]`` given its mask and its donor."""
    if variant == "original":
        return image
    if variant == "only_fg":
        return torch.where(mask, image, torch.zeros_like(image))
    background = background_only(donor.float().unsqueeze(0), donor_mask.unsqueeze(0), "mean")[0]
    background = resized(background, image.shape[-2:])  # whole images: the donor's background at this size
    return composite(image.float(), mask, background).round().to(image.dtype)


def decoded(item: dict) -> dict:
    """``item`` with its image decoded here if its loader left it encoded for the device
    (``decoder: device``): the variants are composed in the loader's workers."""
    image = item["image"]
    if not is_encoded(image):
        return item
    pixels = decode_bytes(image.numpy().tobytes(), item.get("path", "image"), "torchvision")
    size = item.get("size")
    return dict(item, image=pixels if size is None else fit_size(pixels, tuple(int(v) for v in size)))


class BackgroundsChallenge(Dataset):
    """``dataset`` (items with ``image``, ``mask``, ``label``; ``dataset.labels()`` gives every
    label) seen through one variant; donors are drawn once from ``seed``, so every evaluator
    sees the same images. Whole images, JPEGs left encoded for the device and unreadable
    items (``bad_images: skip``) are handled as the loader handles them: an image whose
    donor cannot be read is left out too, naming both."""

    def __init__(self, dataset: Dataset, variant: str, seed: int = 0) -> None:
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant '{variant}'; choose from {', '.join(VARIANTS)}")
        if not hasattr(dataset, "labels"):
            raise TypeError(f"the Backgrounds Challenge needs a dataset with labels() (sslkit's datasets); "
                            f"got {type(dataset).__name__}")
        self.dataset, self.variant = dataset, variant
        self.donors = challenge_donors(dataset.labels(), variant, seed)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor] | SkippedItem:
        item = self.dataset[index]
        if isinstance(item, str):
            return item
        if "mask" not in item:
            raise ValueError("the Backgrounds Challenge needs masks: the dataset's items have no 'mask' "
                             "(give the data module a mask_root, or write masks with 'sslkit masks')")
        item = decoded(dict(item))
        if self.variant != "original":
            donor = self.dataset[int(self.donors[index])]
            if isinstance(donor, str):
                return SkippedItem(f"{self.variant} of '{item.get('path', index)}': its background donor is "
                                   f"unreadable ({donor})")
            donor = decoded(donor)
            item["image"] = challenge_image(item["image"], item["mask"], donor["image"], donor["mask"], self.variant)
        return item


def backgrounds_knn(
    encoder: torch.nn.Module,
    transform: Callable[[dict], torch.Tensor],
    data,
    k: int = 20,
    temperature: float = 0.07,
    device: str | torch.device = "cpu",
    variants: Sequence[str] = VARIANTS,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, float]:
    """Weighted-kNN top-1 of ``data``'s val split under each variant against clean features
    of its train split (the bank), plus ``bg_gap`` (when both mixed variants are evaluated).
    Every split is read through the data module's ``eval_loader`` and ``prepare``."""
    def features(dataset: Dataset, desc: str) -> tuple[torch.Tensor, torch.Tensor]:
        return extract_features(encoder, data.eval_loader(dataset), transform, device, desc, progress, data.prepare)

    bank_features, bank_labels = features(data.knn_bank(), "bank")
    num_classes = int(bank_labels.max()) + 1
    results: dict[str, float] = {}
    for variant in variants:
        queries, labels = features(BackgroundsChallenge(data.eval_split("val"), variant, seed), variant)
        scores = knn_predict(queries, bank_features, bank_labels, max(num_classes, int(labels.max()) + 1),
                             k, temperature)
        results[variant] = float((scores.argmax(1) == labels).float().mean())
    if "mixed_same" in results and "mixed_rand" in results:
        results["bg_gap"] = results["mixed_same"] - results["mixed_rand"]
    return results
