"""Vision Transformers as the official self-supervised codes build them, registered in timm.

MoCo v3's ViTs (facebookresearch/moco-v3 ``vits.py``) are timm ViTs with three changes: a
fixed 2D sin-cos position embedding, the patch projection optionally frozen at its random
initialisation (``--stop-grad-conv1``), and their own weight initialisation. Their
``vit_small`` has 12 heads where timm's ``vit_small_patch16_224`` has 6: the weights have the
same shapes, but the function differs, so a MoCo v3 ViT-S file must be built as
``mocov3_vit_small``.

Registered names: ``mocov3_vit_small``, ``mocov3_vit_base`` (patch 16, 224 px; ``img_size``
and ``patch_size`` may be given, e.g. for 32 px demos) and ``mocov3_vit_tiny`` (192 wide,
3 heads: the ViT-Tiny of DeiT, for CPU-sized runs).
"""
from __future__ import annotations

import math
from functools import partial

import torch
from timm.layers import PatchEmbed
from timm.models import register_model
from timm.models.vision_transformer import VisionTransformer
from torch import nn


def sincos_position_embedding(grid: tuple[int, int], dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """MoCo v3's 2D sin-cos position embedding ``[1, 1 + h*w, dim]`` (a zero row for the class
    token first), as ``build_2d_sincos_position_embedding`` in moco-v3 ``vits.py``: a quarter of
    the channels each for sin and cos of the two grid coordinates, frequencies
    ``temperature ** -(i / (dim / 4))``. The grids are made with ``meshgrid(w, h)`` in 'ij'
    order, so the first coordinate runs over the slower token index, as there."""
    h, w = grid
    if dim % 4:
        raise ValueError(f"the 2D sin-cos position embedding needs a width divisible by 4, got {dim}")
    grid_w, grid_h = torch.meshgrid(torch.arange(w, dtype=torch.float32), torch.arange(h, dtype=torch.float32),
                                    indexing="ij")
    quarter = dim // 4
    omega = 1.0 / temperature ** (torch.arange(quarter, dtype=torch.float32) / quarter)
    out_w = grid_w.flatten()[:, None] * omega[None]
    out_h = grid_h.flatten()[:, None] * omega[None]
    embedding = torch.cat([out_w.sin(), out_w.cos(), out_h.sin(), out_h.cos()], dim=1)[None]
    return torch.cat([torch.zeros(1, 1, dim), embedding], dim=1)


class MoCoV3ViT(VisionTransformer):
    """A timm ``VisionTransformer`` with MoCo v3's position embedding, initialisation and
    frozen patch projection (``stop_grad_conv1``), as ``VisionTransformerMoCo``."""

    def __init__(self, stop_grad_conv1: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        self.pos_embed = nn.Parameter(sincos_position_embedding(self.patch_embed.grid_size, self.embed_dim),
                                      requires_grad=False)
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear):
                if "qkv" in name:  # Q, K and V initialised as three separate matrices
                    bound = math.sqrt(6.0 / float(module.weight.shape[0] // 3 + module.weight.shape[1]))
                    nn.init.uniform_(module.weight, -bound, bound)
                else:
                    nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        nn.init.normal_(self.cls_token, std=1e-6)
        if isinstance(self.patch_embed, PatchEmbed):
            patch = self.patch_embed.patch_size
            bound = math.sqrt(6.0 / float(3 * patch[0] * patch[1] + self.embed_dim))
            nn.init.uniform_(self.patch_embed.proj.weight, -bound, bound)
            nn.init.zeros_(self.patch_embed.proj.bias)
            if stop_grad_conv1:
                self.patch_embed.proj.requires_grad_(False)


def _mocov3_vit(width: int, heads: int, **kwargs) -> MoCoV3ViT:
    config = dict(patch_size=16, embed_dim=width, depth=12, num_heads=heads, mlp_ratio=4, qkv_bias=True,
                  norm_layer=partial(nn.LayerNorm, eps=1e-6))
    for hub_only in ("pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):
        kwargs.pop(hub_only, None)
    return MoCoV3ViT(**{**config, **kwargs})


@register_model
def mocov3_vit_small(pretrained: bool = False, **kwargs) -> MoCoV3ViT:
    """MoCo v3's ViT-Small: 384 wide, 12 blocks, **12 heads** (``vits.vit_small``)."""
    if pretrained:
        raise ValueError("mocov3_vit_small has no hub weights: give the released file as backbone.ckpt_path")
    return _mocov3_vit(384, 12, **kwargs)


@register_model
def mocov3_vit_base(pretrained: bool = False, **kwargs) -> MoCoV3ViT:
    """MoCo v3's ViT-Base: 768 wide, 12 blocks, 12 heads (``vits.vit_base``)."""
    if pretrained:
        raise ValueError("mocov3_vit_base has no hub weights: give the released file as backbone.ckpt_path")
    return _mocov3_vit(768, 12, **kwargs)


@register_model
def mocov3_vit_tiny(pretrained: bool = False, **kwargs) -> MoCoV3ViT:
    """A 192-wide, 3-head ViT with MoCo v3's embedding and initialisation, for small runs."""
    if pretrained:
        raise ValueError("mocov3_vit_tiny has no hub weights")
    return _mocov3_vit(192, 3, **kwargs)


def transformer_block_policy(module: nn.Module, recurse: bool, nonwrapped_numel: int) -> bool:
    """An FSDP auto-wrap (and activation-checkpointing) policy for timm ViTs: every transformer
    ``Block`` is one unit (``torch.distributed.fsdp.wrap``'s callable form:
    keep recursing, wrap a module when it is a block). For ``configs/fsdp_vit_large.yaml``."""
    from timm.models.vision_transformer import Block

    return True if recurse else isinstance(module, Block)
