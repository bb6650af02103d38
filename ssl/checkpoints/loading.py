"""Backbones from any supported checkpoint, loaded strictly.

``load_backbone(source, arch=None, format="auto")`` returns an ``nn.Module`` with the
``build_backbone`` contract (normalised images -> pooled features, ``.dim``, ``.name``).
Files are read with ``weights_only=True``: tensors and plain containers only, nothing
executed. Classifier and SSL-head keys are dropped and reported; any other missing or
unexpected key, or a tensor of the wrong shape, is an error that names it.
"""
from __future__ import annotations

import hashlib
import importlib
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from sslkit.nn.backbones import Backbone, build_backbone

from .formats import FORMATS_BY_NAME, CheckpointError, StateDict, detect_format

HEAD_PREFIXES = ("fc.", "head.", "heads.", "classifier.", "projection_head.", "prototypes.", "predictor.",
                 "projector.", "head_drop.")


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


@dataclass
class LoadReport:
    """What strict loading did: the format, the architecture, and the head keys dropped."""

    format: str
    arch: str
    dropped: list[str] = field(default_factory=list)


def load_state_strict(backbone: Backbone, state: StateDict, source: str) -> list[str]:
    """Load ``state`` into ``backbone.model``; return the dropped head keys."""
    expected = backbone.model.state_dict()
    dropped = [k for k in state if k not in expected and k.startswith(HEAD_PREFIXES)]
    unexpected = [k for k in state if k not in expected and k not in dropped]
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    for key, value in state.items():
        if key in expected and tuple(value.shape) != tuple(expected[key].shape):
            raise CheckpointError(
                f"'{source}' does not match {backbone.name}: tensor '{key}' has shape {tuple(value.shape)} in "
                f"the checkpoint but {tuple(expected[key].shape)} in the model (another architecture?"
                f"{' a small-image stem?' if key.startswith('conv1') else ''})"
            )
    if missing or unexpected:
        raise CheckpointError(
            f"'{source}' does not match {backbone.name}: {len(missing)} missing keys {missing[:5]}, "
            f"{len(unexpected)} unexpected keys {unexpected[:5]}"
        )
    filled = {k: v for k, v in expected.items() if k not in state}  # num_batches_tracked only
    backbone.model.load_state_dict({**filled, **{k: v for k, v in state.items() if k in expected}}, strict=True)
    return dropped


def _resolve(checkpoint: dict, source: str, arch: str | None, format: str, small_images: bool | None):
    if format == "auto":
        spec = detect_format(checkpoint, source)
    elif format in FORMATS_BY_NAME:
        spec = FORMATS_BY_NAME[format]
        if not spec.detect(checkpoint):
            raise CheckpointError(f"'{source}' does not have the key layout of format '{format}': {spec.description}")
    else:
        raise ValueError(f"unknown format '{format}'; choose auto or one of {', '.join(FORMATS_BY_NAME)}")
    state = spec.extract(checkpoint)
    arch = arch or spec.arch(checkpoint)
    if arch is None:
        raise CheckpointError(
            f"'{source}' ({spec.name} format) does not record its architecture: pass arch=, e.g. "
            f"'torchvision.resnet50' or a timm name"
        )
    if small_images is None:
        small_images = spec.small_images(checkpoint)
    if small_images is None:
        conv1 = state.get("conv1.weight")
        small_images = conv1 is not None and conv1.dim() == 4 and tuple(conv1.shape[-2:]) == (3, 3)
    return spec, state, arch, bool(small_images)


def load_backbone_report(
    source: str | Path, arch: str | None = None, format: str = "auto", small_images: bool | None = None,
) -> tuple[Backbone, LoadReport]:
    """``load_backbone`` that also returns the ``LoadReport``."""
    source = str(source)
    if not Path(source).exists():
        if format in ("auto", "hub") and "/" not in source and not source.endswith((".pth", ".pt", ".ckpt", ".tar")):
            backbone = build_backbone(source, small_images=bool(small_images), pretrained=True)
            return backbone.eval(), LoadReport("hub", source)
        raise FileNotFoundError(f"checkpoint '{source}' does not exist")
    checkpoint = read_checkpoint(source)
    spec, state, arch, small = _resolve(checkpoint, source, arch, format, small_images)
    hparams = checkpoint.get("hyper_parameters") or {}
    kwargs = (hparams.get("backbone_kwargs") or {}) if spec.name == "sslkit" else {}
    backbone = build_backbone(arch, small_images=small, **kwargs)
    dropped = load_state_strict(backbone, state, source)
    return backbone.eval(), LoadReport(spec.name, arch, dropped)


def load_backbone(
    source: str | Path, arch: str | None = None, format: str = "auto", small_images: bool | None = None,
) -> Backbone:
    """A pretrained backbone from ``source``: a checkpoint file in any supported format
    (``sslkit``, ``moco``, ``mocov3``, ``swav``, ``byol``, ``solo-learn``, ``lightly``,
    ``vissl``, ``plain`` timm/torchvision state_dicts; ``auto`` detects it from the keys),
    or, when no such file exists, a timm model name (or ``torchvision.<arch>``) whose
    published weights are downloaded (needs network).

    ``arch``: the architecture (``torchvision.resnet50``, a timm name), needed where the
    file does not record it. ``small_images``: the 3x3 stride-1 ResNet stem; by default
    from the checkpoint, else detected from a 3x3 ``conv1``.
    """
    return load_backbone_report(source, arch, format, small_images)[0]


def load_backbone_weights(backbone: Backbone, source: str | Path, format: str = "auto") -> LoadReport:
    """Initialise an existing ``backbone`` (of the right architecture) from ``source``."""
    source = str(source)
    checkpoint = read_checkpoint(source)
    spec, state, _, _ = _resolve(checkpoint, source, backbone.name, format, None)
    dropped = load_state_strict(backbone, state, source)
    return LoadReport(spec.name, backbone.name, dropped)


def load_projector(source: str | Path) -> nn.Module | None:
    """The projection head of an sslkit checkpoint (MoCo's ``head``, BYOL's and SwAV's
    ``projector``) when the checkpoint records its method, else ``None``."""
    checkpoint = read_checkpoint(source)
    hparams = checkpoint.get("hyper_parameters") or {}
    class_path = checkpoint.get("sslkit_class_path") or hparams.get("_class_path")
    if class_path is None:
        return None
    module_name, _, class_name = class_path.rpartition(".")
    cls = getattr(importlib.import_module(module_name), class_name)
    kwargs = {k: v for k, v in hparams.items() if k not in ("augment", "backbone_weights") and not k.startswith("_")}
    model = cls(**kwargs)
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
