"""Features of a frozen encoder over a data loader, with a progress bar."""
from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn
from tqdm.auto import tqdm

from sslkit.data.base import prepare_batch


@torch.no_grad()
def extract_features(
    encoder: nn.Module,
    loader: Iterable[dict],
    transform: Callable[[dict], torch.Tensor],
    device: str | torch.device = "cpu",
    desc: str = "features",
    progress: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(features [N,D] float32, labels [N])`` of ``encoder(transform(batch))`` for every
    batch dict of ``loader``, on the CPU. ``transform`` turns a batch on ``device`` into
    the encoder's input (for sslkit methods: ``model.augment.evaluate``)."""
    was_training = encoder.training
    encoder.eval()
    features, labels = [], []
    try:
        total = len(loader) if hasattr(loader, "__len__") else None
        for batch in tqdm(loader, total=total, desc=desc, unit="batch", disable=not progress, leave=False):
            if "label" not in batch:
                raise ValueError(f"{desc}: the batches carry no 'label'; a labelled split is needed")
            batch = prepare_batch(batch, device)
            features.append(encoder(transform(batch)).float().cpu())
            labels.append(batch["label"].cpu())
    finally:
        encoder.train(was_training)
    return torch.cat(features), torch.cat(labels)
