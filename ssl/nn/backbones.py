"""Backbone factory: timm and torchvision models as `images -> features`.

Every method builds its encoder here, so a backbone is named the same way in every
config: any timm model name (``resnet50``, ``test_resnet``, ``vit_small_patch16_224``,
``mocov3_vit_small``: ``sslkit.nn.vits``) or a torchvision classification model prefixed
with ``torchvision.`` (``torchvision.resnet18``).

Which features a ViT gives (``features``) is set here, once, so that training, the online
classifier, kNN, the probe, the spectrum, the report and the landscape all see the same ones.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Literal

import timm
import torch
import torchvision
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from sslkit.nn import vits  # noqa: F401  (registers MoCo v3's ViTs in timm)

TORCHVISION_PREFIX = "torchvision."
FEATURES = ("cls", "avgpool", "last_n_cls")
Features = Literal["cls", "avgpool", "last_n_cls"]


def is_vit(model: nn.Module) -> bool:
    """A timm Vision Transformer (token features, position embedding, no BatchNorm)."""
    return isinstance(model, VisionTransformer)


class Backbone(nn.Module):
    """Wraps a classification network without its classifier.

    Maps normalised float images ``[B, 3, H, W]`` to features ``[B, dim]``: a CNN's pooled
    features; for a timm ViT, by ``features``:

    - ``cls``: the class token after the last norm (the official linear evaluations of MoCo v3,
      DINO and MAE's pretrain encoder);
    - ``avgpool``: the mean of the patch tokens (after the final norm, or ``fc_norm`` for
      models built with ``global_pool='avg'``);
    - ``last_n_cls``: the class tokens of the last ``last_n`` blocks, each layer-normed,
      concatenated (DINO ``eval_linear.py``, ``n_last_blocks`` 4 for ViT-S): ``dim`` is
      ``last_n`` x the width.

    ``name`` and ``dim`` travel with the module so heads and exporters can read them.
    """

    def __init__(self, model: nn.Module, dim: int, name: str, small_stem_padding: int | None = None,
                 features: Features | None = None, last_n: int = 4) -> None:
        super().__init__()
        self.model = model
        self.name = name
        self.small_stem_padding = small_stem_padding
        self.vit = is_vit(model)
        if features is None:
            features = "cls" if self.vit else "avgpool"
        if features not in FEATURES:
            raise ValueError(f"backbone.features must be one of {FEATURES}, got '{features}'")
        if features != "avgpool" and not self.vit:
            raise ValueError(f"backbone.features: {features} needs a timm Vision Transformer; '{name}' gives pooled "
                             f"features (features: avgpool)")
        if features == "last_n_cls" and not 1 <= last_n <= len(model.blocks):
            raise ValueError(f"backbone.last_n must be 1-{len(model.blocks)} for '{name}', got {last_n}")
        self.features, self.last_n = features, last_n
        self.dim = dim * last_n if features == "last_n_cls" else dim

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if not self.vit or (self.features == "cls" and self.model.global_pool == "token"):
            return self.model(images)
        model = self.model
        if self.features == "last_n_cls":
            layers = model.forward_intermediates(images, indices=self.last_n, norm=True, return_prefix_tokens=True,
                                                 output_fmt="NLC", intermediates_only=True)
            return torch.cat([prefix[:, 0] for _, prefix in layers], dim=1)
        tokens = model.forward_features(images)
        if self.features == "cls":
            return tokens[:, 0]
        return model.fc_norm(tokens[:, model.num_prefix_tokens:].mean(1))


@dataclass
class BackboneConfig:
    """The network a method trains, evaluates and exports (``model.init_args.backbone``).

    ``name``: a timm model or ``torchvision.<arch>``. ``small_images``: the 3x3 stride-1 stem
    without max-pool for 32-96 px images, with ``small_stem_padding``. ``kwargs``: for the
    model's constructor (a ViT's ``img_size``, ``patch_size``, ``drop_path_rate``...; timm ViTs
    are built with ``dynamic_img_size`` so crops of any size go through, the position embedding
    interpolated). ``features``, ``last_n``: what a ViT gives (``Backbone``; default ``cls``). ``ckpt_path``: initialise from a checkpoint in any format
    ``sslkit.checkpoints.load_backbone`` reads, strictly (``ckpt_format``: its layout, default
    detected; ``branch``: the network of a file that holds several)."""

    name: str = "torchvision.resnet50"
    small_images: bool = False
    small_stem_padding: int = 1
    kwargs: dict = field(default_factory=dict)
    ckpt_path: str | None = None
    ckpt_format: str = "auto"
    branch: str | None = None
    features: Features | None = None
    last_n: int = 4

    def build(self) -> "Backbone":
        """The backbone, initialised from ``ckpt_path`` when given."""
        backbone = build_backbone(self.name, small_images=self.small_images, small_stem_padding=self.small_stem_padding,
                                  features=self.features, last_n=self.last_n, **(self.kwargs or {}))
        if self.ckpt_path:
            from sslkit.checkpoints import load_backbone_weights

            load_backbone_weights(backbone, self.ckpt_path, self.ckpt_format, self.branch)
        return backbone


def build_backbone(
    name: str,
    small_images: bool = False,
    pretrained: bool = False,
    small_stem_padding: int = 1,
    features: Features | None = None,
    last_n: int = 4,
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
        features, last_n: what a ViT gives (see ``Backbone``).
        **kwargs: passed to ``timm.create_model`` / the torchvision constructor.
    """
    if name.startswith(TORCHVISION_PREFIX):
        model, dim = _torchvision_model(name[len(TORCHVISION_PREFIX):], pretrained, kwargs)
    else:
        model, dim = _timm_model(name, pretrained, kwargs)
    if small_images:
        _use_small_image_stem(model, name, small_stem_padding)
    return Backbone(model, dim, name, small_stem_padding if small_images else None, features, last_n)


def _timm_model(name: str, pretrained: bool, kwargs: dict) -> tuple[nn.Module, int]:
    if not timm.is_model(name):
        raise ValueError(_unknown_name_message(name))
    try:  # a ViT takes crops of any size, its position embedding interpolated (DINO's local crops)
        model = timm.create_model(name, pretrained=pretrained, num_classes=0, **{"dynamic_img_size": True, **kwargs})
    except TypeError as err:
        if "dynamic_img_size" not in str(err) or "dynamic_img_size" in kwargs:
            raise
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
