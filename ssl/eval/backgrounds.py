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
from torch.utils.data import DataLoader, Dataset

from sslkit.augmentations.background import background_only, composite, resized

from .features import extract_features
from .knn import knn_predict

VARIANTS = ("original", "only_fg", "mixed_same", "mixed_rand")


def dataset_labels(dataset: Dataset) -> torch.Tensor:
    """All labels of ``dataset`` without decoding images where the dataset allows it."""
    data = getattr(dataset, "data", None)
    if isinstance(data, dict) and "label" in data:
        return data["label"].clone()
    if hasattr(dataset, "targets"):
        return torch.as_tensor(dataset.targets)
    if hasattr(dataset, "samples"):
        return torch.tensor([label for _, label in dataset.samples])
    return torch.stack([torch.as_tensor(dataset[i]["label"]) for i in range(len(dataset))])


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


class BackgroundsChallenge(Dataset):
    """``dataset`` (items with ``image``, ``mask``, ``label``) seen through one variant;
    donors are drawn once from ``seed``, so every evaluator sees the same images."""

    def __init__(self, dataset: Dataset, variant: str, seed: int = 0) -> None:
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant '{variant}'; choose from {', '.join(VARIANTS)}")
        self.dataset, self.variant = dataset, variant
        self.donors = challenge_donors(dataset_labels(dataset), variant, seed)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        item = dict(self.dataset[index])
        if "mask" not in item:
            raise ValueError("the Backgrounds Challenge needs masks: the dataset's items have no 'mask'")
        if self.variant != "original":
            donor = self.dataset[int(self.donors[index])]
            item["image"] = challenge_image(item["image"], item["mask"], donor["image"], donor["mask"], self.variant)
        return item


def backgrounds_knn(
    encoder: torch.nn.Module,
    transform: Callable[[dict], torch.Tensor],
    bank: Dataset,
    queries: Dataset,
    k: int = 20,
    temperature: float = 0.07,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    variants: Sequence[str] = VARIANTS,
    seed: int = 0,
    num_workers: int = 0,
    progress: bool = True,
) -> dict[str, float]:
    """Weighted-kNN top-1 of ``queries`` under each variant against clean ``bank``
    features, plus ``bg_gap`` (when both mixed variants are evaluated)."""
    def loader(dataset: Dataset) -> DataLoader:
        return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)

    bank_features, bank_labels = extract_features(encoder, loader(bank), transform, device, "bank", progress)
    num_classes = int(bank_labels.max()) + 1
    results: dict[str, float] = {}
    for variant in variants:
        features, labels = extract_features(
            encoder, loader(BackgroundsChallenge(queries, variant, seed)), transform, device, variant, progress
        )
        scores = knn_predict(features, bank_features, bank_labels, max(num_classes, int(labels.max()) + 1),
                             k, temperature)
        results[variant] = float((scores.argmax(1) == labels).float().mean())
    if "mixed_same" in results and "mixed_rand" in results:
        results["bg_gap"] = results["mixed_same"] - results["mixed_rand"]
    return results
