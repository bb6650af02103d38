"""Backbone factory: timm and torchvision models as `images -> pooled features`.

Every method builds its encoder here, so a backbone is named the same way in every
config: any timm model name (``resnet50``, ``test_resnet``, ``vit_small_patch16_224``)
or a torchvision classification model prefixed with ``torchvision.``
(``torchvision.resnet18``).
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field

import timm
import torch
import torchvision
from torch import nn

TORCHVISION_PREFIX = "torchvision."


class Backbone(nn.Module):
    """Wraps a classification network without its classifier.

    Maps normalised float images ``[B, 3, H, W]`` to pooled features ``[B, dim]``.
    ``name`` and ``dim`` travel with the module so heads and exporters can read them.
    """

    def __init__(self, model: nn.Module, dim: int, name: str, small_stem_padding: int | None = None) -> None:
        super().__init__()
        self.model = model
        self.dim = dim
        self.name = name
        self.small_stem_padding = small_stem_padding

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)


@dataclass
class BackboneConfig:
    """The network a method trains, evaluates and exports (``model.init_args.backbone``).

    ``name``: a timm model or ``torchvision.<arch>``. ``small_images``: the 3x3 stride-1 stem
    without max-pool for 32-96 px images, with ``small_stem_padding``. ``kwargs``: for the
    model's constructor. ``ckpt_path``: initialise from a checkpoint in any format
    ``sslkit.checkpoints.load_backbone`` reads, strictly (``ckpt_format``: its layout, default
    detected; ``branch``: the network of a file that holds several)."""

    name: str = "torchvision.resnet50"
    small_images: bool = False
    small_stem_padding: int = 1
    kwargs: dict = field(default_factory=dict)
    ckpt_path: str | None = None
    ckpt_format: str = "auto"
    branch: str | None = None

    def build(self) -> "Backbone":
        """The backbone, initialised from ``ckpt_path`` when given."""
        backbone = build_backbone(self.name, small_images=self.small_images, small_stem_padding=self.small_stem_padding,
                                  **(self.kwargs or {}))
        if self.ckpt_path:
            from sslkit.checkpoints import load_backbone_weights

            load_backbone_weights(backbone, self.ckpt_path, self.ckpt_format, self.branch)
        return backbone


def build_backbone(
    name: str,
    small_images: bool = False,
    pretrained: bool = False,
    small_stem_padding: int = 1,
    **kwargs,
) -> Backbone:
    """Build a backbone by name.

    Args:
        name: a timm model name, or ``torchvision.<arch>`` for torchvision models.
        small_images: replace the stem by a 3x3 stride-1 convolution without max-pool,
            the usual ResNet variant for 32-96 px inputs (CIFAR, STL-10).
        small_stem_padding: that convolution's padding: 1 (the MoCo authors' CIFAR demo) or 2
            (solo-learn's ``solo/methods/base.py``, which makes 34x34 maps from 32x32 images).
            The weights are the same shape either way, but the features are not.
        pretrained: load the library's published weights (timm hub or torchvision);
            needs network access the first time.
        **kwargs: passed to ``timm.create_model`` / the torchvision constructor.
    """
    if name.startswith(TORCHVISION_PREFIX):
        model, dim = _torchvision_model(name[len(TORCHVISION_PREFIX):], pretrained, kwargs)
    else:
        model, dim = _timm_model(name, pretrained, kwargs)
    if small_images:
        _use_small_image_stem(model, name, small_stem_padding)
    return Backbone(model, dim, name, small_stem_padding if small_images else None)


def _timm_model(name: str, pretrained: bool, kwargs: dict) -> tuple[nn.Module, int]:
    if not timm.is_model(name):
        raise ValueError(_unknown_name_message(name))
    model = timm.create_model(name, pretrained=pretrained, num_classes=0, **kwargs)
    return model, int(model.num_features)


def _torchvision_model(arch: str, pretrained: bool, kwargs: dict) -> tuple[nn.Module, int]:
    available = torchvision.models.list_models(module=torchvision.models)
    if arch not in available:
        raise ValueError(_unknown_name_message(TORCHVISION_PREFIX + arch))
    weights = "DEFAULT" if pretrained else None
    model = torchvision.models.get_model(arch, weights=weights, **kwargs)
    for attr in ("fc", "classifier", "heads", "head"):
        head = getattr(model, attr, None)
        if head is None:
            continue
        dim = _input_features(head)
        setattr(model, attr, nn.Identity())
        return model, dim
    raise ValueError(f"torchvision model '{arch}' has no recognised classifier to remove")


def _input_features(head: nn.Module) -> int:
    if isinstance(head, nn.Linear):
        return head.in_features
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"cannot infer the feature size from classifier {head}")
    return linears[0].in_features


def _use_small_image_stem(model: nn.Module, name: str, padding: int = 1) -> None:
    conv = getattr(model, "conv1", None)
    if isinstance(conv, nn.Sequential):
        conv_path, conv = "conv1.0", conv[0]
    else:
        conv_path = "conv1"
    if not isinstance(conv, nn.Conv2d) or not hasattr(model, "maxpool"):
        raise ValueError(
            f"small_images=True is supported for ResNet-style backbones (conv1 + maxpool); "
            f"'{name}' has a different stem"
        )
    if padding not in (1, 2):
        raise ValueError(f"small_stem_padding must be 1 or 2, got {padding}")
    small = nn.Conv2d(conv.in_channels, conv.out_channels, 3, stride=1, padding=padding, bias=False)
    model.set_submodule(conv_path, small)
    model.maxpool = nn.Identity()


def _unknown_name_message(name: str) -> str:
    candidates = timm.list_models() + [
        TORCHVISION_PREFIX + a for a in torchvision.models.list_models(module=torchvision.models)
    ]
    close = difflib.get_close_matches(name, candidates, n=5, cutoff=0.6)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    return (
        f"unknown backbone '{name}': use a timm model name (timm.list_models()) or "
        f"'torchvision.<arch>' (torchvision.models.list_models()).{hint}"
    )
