"""Features of a frozen encoder over a data loader, with a progress bar."""
from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from pytorch_lightning.utilities import rank_zero_warn
from torch import nn
from tqdm.auto import tqdm

from sslkit.data.base import prepare_batch

Prepare = Callable[[dict, torch.device], dict]


@torch.no_grad()
def extract_features(
    encoder: nn.Module,
    loader: Iterable[dict],
    transform: Callable[[dict], torch.Tensor],
    device: str | torch.device = "cpu",
    desc: str = "features",
    progress: bool = True,
    prepare: Prepare | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(features [N,D] float32, labels [N])`` of ``encoder(transform(batch))`` for every
    batch dict of ``loader``, on the CPU. ``prepare(batch, device)`` moves a batch to
    ``device`` and decodes what its workers left encoded: the data module's ``prepare``, so
    evaluation decodes and drops unreadable images exactly as training does (default:
    ``prepare_batch``, which names an undecodable file). ``transform`` turns the prepared batch
    into the encoder's input (for sslkit methods: ``model.augment.evaluate``). Images left out
    as unreadable (``bad_images: skip``) are counted and named in one warning."""
    device = torch.device(device)
    prepare = prepare or (lambda batch, to: prepare_batch(batch, to))
    was_training = encoder.training
    encoder.eval()
    features, labels, skipped = [], [], []
    try:
        total = len(loader) if hasattr(loader, "__len__") else None
        for batch in tqdm(loader, total=total, desc=desc, unit="batch", disable=not progress, leave=False):
            batch = prepare(batch, device)
            skipped += list(batch.get("skipped") or [])
            if "image" not in batch:
                continue
            if "label" not in batch:
                raise ValueError(f"{desc}: the batches carry no 'label'; a labelled split is needed")
            features.append(encoder(transform(batch)).float().cpu())
            labels.append(batch["label"].cpu())
    finally:
        encoder.train(was_training)
    if skipped:
        rank_zero_warn(f"{desc}: {len(skipped)} unreadable images left out (data.bad_images: skip); first: {skipped[0]}")
    if not features:
        raise ValueError(f"{desc}: no readable image in the split")
    return torch.cat(features), torch.cat(labels)
