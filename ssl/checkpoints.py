"""Backbones out of checkpoints.

``load_backbone(source)`` rebuilds the backbone of an sslkit checkpoint (any method) from
the hyperparameters stored in it and loads its weights, strictly. Files are read with
``weights_only=True``: nothing in them is executed.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from sslkit.nn.backbones import Backbone, build_backbone


class CheckpointError(ValueError):
    """A checkpoint that cannot give what was asked of it; the message names the file."""


def read_checkpoint(path: str | Path) -> dict:
    """The checkpoint dict at ``path``, loaded with ``weights_only=True``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint '{path}' does not exist")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many types for a bad file
        raise CheckpointError(
            f"cannot read checkpoint '{path}' with weights_only=True (truncated, not a torch file, "
            f"or it holds arbitrary Python objects, which sslkit refuses to unpickle): {err}"
        ) from err
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"'{path}' holds a {type(checkpoint).__name__}, not a checkpoint dict")
    return checkpoint


def load_backbone(source: str | Path) -> Backbone:
    """The backbone of an sslkit/Lightning checkpoint: built from its ``hyper_parameters``
    (``backbone``, ``small_images``, ``backbone_kwargs``) with the ``backbone.*`` weights."""
    checkpoint = read_checkpoint(source)
    hparams = checkpoint.get("hyper_parameters") or {}
    state = checkpoint.get("state_dict") or {}
    weights = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    if "backbone" not in hparams or not weights:
        raise CheckpointError(
            f"'{source}' has no sslkit backbone (needs hyper_parameters['backbone'] and 'backbone.*' weights)"
        )
    backbone = build_backbone(hparams["backbone"], small_images=hparams.get("small_images", False),
                              **(hparams.get("backbone_kwargs") or {}))
    result = backbone.load_state_dict(weights, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"backbone weights in '{source}' do not fit {hparams['backbone']}: missing {result.missing_keys[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}"
        )
    return backbone.eval()


def load_projector(source: str | Path) -> torch.nn.Module | None:
    """The projection head of an sslkit checkpoint (MoCo's ``head``, BYOL's and SwAV's
    ``projector``) when the checkpoint records its method, else ``None``."""
    checkpoint = read_checkpoint(source)
    hparams = checkpoint.get("hyper_parameters") or {}
    class_path = checkpoint.get("sslkit_class_path") or hparams.get("_class_path")
    if class_path is None:
        return None
    module_name, _, class_name = class_path.rpartition(".")
    import importlib

    cls = getattr(importlib.import_module(module_name), class_name)
    model = cls(**{k: v for k, v in hparams.items() if k != "augment" and not k.startswith("_")})
    model.load_state_dict(checkpoint["state_dict"], strict=False)
    for name in ("head", "projector"):
        if hasattr(model, name):
            return getattr(model, name).eval()
    return None


def file_digest(path: str | Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes (the identity of a checkpoint for caches)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()
