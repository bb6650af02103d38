"""Backbones out of sslkit, as plain state_dicts other code loads without edits.

``export_backbone(source, out, format)`` writes the backbone of any checkpoint that
``load_backbone`` reads, under the stock architecture's own key names and with the stock
classifier (freshly initialised, as the constructor would make it), so that

    torchvision.models.resnet50().load_state_dict(torch.load(out))
    timm.create_model("resnet50", pretrained=True, pretrained_cfg_overlay=dict(file=out))

both load it strictly. A backbone with sslkit's small-image stem has no stock equivalent
and is refused.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import timm
import torch
import torchvision

from .formats import CheckpointError
from .loading import load_backbone_report


def stock_model(arch: str, format: str) -> torch.nn.Module:
    """A freshly initialised stock model of ``arch`` in the library ``format`` names."""
    name = arch.removeprefix("torchvision.")
    if format == "torchvision":
        if name not in torchvision.models.list_models(module=torchvision.models):
            raise ValueError(f"torchvision has no architecture '{name}' to export '{arch}' as")
        return torchvision.models.get_model(name, weights=None)
    if not timm.is_model(name):
        raise ValueError(f"timm has no architecture '{name}' to export '{arch}' as")
    return timm.create_model(name, pretrained=False)


def export_backbone(
    source: str | Path,
    out: str | Path,
    format: Literal["torchvision", "timm"] = "torchvision",
    arch: str | None = None,
    ckpt_format: str = "auto",
    branch: str | None = None,
) -> Path:
    """Write the backbone of ``source`` to ``out`` as a stock ``format`` state_dict."""
    if format not in ("torchvision", "timm"):
        raise ValueError(f"export format must be torchvision or timm, got '{format}'")
    backbone, report = load_backbone_report(source, arch, ckpt_format, branch)
    if report.small_stem_padding is not None:
        raise CheckpointError(
            f"'{source}' has sslkit's small-image stem (3x3 conv1, no max-pool), which stock {format} "
            f"models lack; load it with sslkit.checkpoints.load_backbone instead"
        )
    stock = stock_model(report.arch, format)
    expected = stock.state_dict()
    weights = backbone.model.state_dict()
    state = {}
    for key, value in expected.items():
        if key in weights:
            if weights[key].shape != value.shape:
                raise CheckpointError(f"tensor '{key}' is {tuple(weights[key].shape)} in the backbone but "
                                      f"{tuple(value.shape)} in stock {format} {report.arch}")
            state[key] = weights[key].clone()
        else:
            state[key] = value.clone()  # the stock classifier, as freshly initialised
    missing_body = [k for k in weights if k not in expected]
    if missing_body:
        raise CheckpointError(f"stock {format} {report.arch} has no place for {missing_body[:5]}")
    stock.load_state_dict(state, strict=True)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, out)
    return out
