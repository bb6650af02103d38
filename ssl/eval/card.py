"""A checkpoint judged by every instrument on one set of features.

``FeatureSource`` encodes a split once (evaluation view, progress bar) and keeps the features
on disk, keyed by everything they depend on (checkpoint bytes, branch, data, split, view):
``sslkit probe``, ``sslkit report`` and a rerun of either read the same files.
``probe_card`` is the fast linear probe (L-BFGS logistic regression with an L2 sweep), kNN and,
with masks, the Backgrounds Challenge through the probe's classifier; ``report_card`` adds the
eigenspectrum of the val features.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from sslkit.augmentations.stages import View

from .backgrounds import VARIANTS, BackgroundsChallenge
from .cache import cached_features, describe
from .features import extract_features
from .knn import knn_predict
from .linear import fit_logistic_regression, linear_probe, topk_accuracy
from .spectrum import eigenspectrum


class FeatureSource:
    """Backbone features of a data module's splits under ``view``, computed once and cached
    (``cache_dir``; ``None``: in memory only). ``key``: what else the features depend on, for
    the cache (the checkpoint's SHA-256 and branch, the view's crop, resize and statistics)."""

    def __init__(self, backbone: nn.Module, data, view: View, device: torch.device, key: dict,
                 cache_dir: str | Path | None) -> None:
        self.backbone, self.data, self.view, self.device = backbone, data, view, device
        self.key, self.cache_dir = key, cache_dir
        self.from_cache: dict[str, bool] = {}
        self._memory: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, name: str, dataset=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Features and labels of ``dataset`` (default: the split ``name``, ``train`` or ``val``)."""
        if name not in self._memory:
            dataset = dataset if dataset is not None else self.data.eval_split(name)
            parts = {**self.key, "data": describe(self.data), "split": name}
            x, y, hit = cached_features(self.cache_dir, parts, lambda: extract_features(
                self.backbone, self.data.eval_loader(dataset), lambda b: self.view(b)["image"], self.device, name,
                prepare=self.data.prepare))
            self._memory[name], self.from_cache[name] = (x, y), hit
        return self._memory[name]


def held_out(val_fraction: float, n_train: int) -> int:
    """How many train features ``linear_probe`` holds out to choose the L2 (its own rule)."""
    return max(1, int(round(val_fraction * n_train)))


def probe_card(source: FeatureSource, l2_grid: Sequence[float], val_fraction: float = 0.2, max_iter: int = 500,
               knn_k: int = 20, knn_temperature: float = 0.07, backgrounds: bool = False) -> dict:
    """Linear probe (top-1, top-5, the L2 chosen on a held-out part of train; its top-1 on the
    train features it was fitted to, ``train_top1``, and the generalisation gap ``gap`` = train -
    test top-1, the decodable-information view of Dubois et al. 2020), weighted kNN and,
    with ``backgrounds``, the probe classifier's accuracy on the Backgrounds Challenge
    variants of the val split with BG-Gap = Mixed-Same - Mixed-Rand (Xiao et al. 2020)."""
    device = source.device
    train_x, train_y = source("train")
    test_x, test_y = source("val")
    result = linear_probe((train_x, train_y), (test_x, test_y), l2_grid, val_fraction, max_iter, device)
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    scores = knn_predict(test_x.to(device), train_x.to(device), train_y.to(device), num_classes, knn_k, knn_temperature)
    card = {**result.to_dict(), "knn_top1": topk_accuracy(scores, test_y, 1), "knn_k": min(knn_k, len(train_x)),
            "knn_temperature": knn_temperature, "n_train": len(train_x), "n_test": len(test_x),
            "dim": train_x.shape[1], "val_fraction": val_fraction, "held_out": held_out(val_fraction, len(train_x))}
    if backgrounds:
        classifier = fit_logistic_regression(train_x, train_y, result.l2, num_classes, max_iter, device)
        variants = {}
        for variant in VARIANTS:
            x, y = (test_x, test_y) if variant == "original" else source(
                f"val/{variant}", BackgroundsChallenge(source.data.eval_split("val"), variant))
            variants[variant] = topk_accuracy(classifier.logits(x.to(device)), y, 1)
        variants["bg_gap"] = variants["mixed_same"] - variants["mixed_rand"]
        card["backgrounds_top1"] = variants
    card["features_from_cache"] = all(source.from_cache.values())
    return card


def report_card(source: FeatureSource, l2_grid: Sequence[float], val_fraction: float = 0.2, max_iter: int = 500,
                knn_k: int = 20, knn_temperature: float = 0.07, backgrounds: bool = False,
                fit_range: tuple[int, int] | None = None) -> dict:
    """``probe_card`` with the names of the report (``probe_top1``, ``probe_top5``), and the
    eigenspectrum of the val features: ``alpha`` (with its fit range and r2),
    ``effective_rank``, ``participation_ratio`` and the eigenvalues."""
    card = probe_card(source, l2_grid, val_fraction, max_iter, knn_k, knn_temperature, backgrounds)
    card["probe_top1"], card["probe_top5"] = card.pop("top1"), card.pop("top5")
    if "train_top1" in card:  # the probe's own training accuracy and its generalisation gap (Dubois et al. 2020)
        card["probe_train_top1"], card["probe_gap"] = card.pop("train_top1"), card.pop("gap")
    if "backgrounds_top1" in card:
        card["bg_gap"] = card["backgrounds_top1"]["bg_gap"]
    spectrum = eigenspectrum(source("val")[0], fit_range)
    card.update(alpha=spectrum.alpha, alpha_r2=spectrum.r2, alpha_fit_range=list(spectrum.fit_range),
                effective_rank=spectrum.effective_rank, participation_ratio=spectrum.participation_ratio,
                eigenvalues=spectrum.eigenvalues[:spectrum.rank_limit].tolist())
    return card
