"""facebookresearch/moco-v3 rebuilt for the tests as its files have it (the reference the
tests compare sslkit with): ``vits.py`` (``VisionTransformerMoCo`` on the installed timm, whose
class-token count is ``num_prefix_tokens``), ``moco/builder.py`` (``_build_mlp``,
``contrastive_loss``) and ``main_moco.py`` (``adjust_moco_momentum``, ``adjust_learning_rate``)."""
import math
from functools import partial, reduce
from operator import mul

import torch
import torch.nn as nn
from timm.layers import PatchEmbed
from timm.models.vision_transformer import VisionTransformer


class VisionTransformerMoCo(VisionTransformer):
    """vits.py ``VisionTransformerMoCo`` on the installed timm (the class token count is
    ``num_prefix_tokens`` there)."""

    def __init__(self, stop_grad_conv1=False, **kwargs):
        super().__init__(**kwargs)
        self.build_2d_sincos_position_embedding()
        for name, m in self.named_modules():
            if isinstance(m, nn.Linear):
                if 'qkv' in name:
                    val = math.sqrt(6. / float(m.weight.shape[0] // 3 + m.weight.shape[1]))
                    nn.init.uniform_(m.weight, -val, val)
                else:
                    nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.cls_token, std=1e-6)
        if isinstance(self.patch_embed, PatchEmbed):
            val = math.sqrt(6. / float(3 * reduce(mul, self.patch_embed.patch_size, 1) + self.embed_dim))
            nn.init.uniform_(self.patch_embed.proj.weight, -val, val)
            nn.init.zeros_(self.patch_embed.proj.bias)
            if stop_grad_conv1:
                self.patch_embed.proj.weight.requires_grad = False
                self.patch_embed.proj.bias.requires_grad = False

    def build_2d_sincos_position_embedding(self, temperature=10000.):
        h, w = self.patch_embed.grid_size
        grid_w = torch.arange(w, dtype=torch.float32)
        grid_h = torch.arange(h, dtype=torch.float32)
        grid_w, grid_h = torch.meshgrid(grid_w, grid_h, indexing="ij")
        pos_dim = self.embed_dim // 4
        omega = torch.arange(pos_dim, dtype=torch.float32) / pos_dim
        omega = 1. / (temperature**omega)
        out_w = torch.einsum('m,d->md', [grid_w.flatten(), omega])
        out_h = torch.einsum('m,d->md', [grid_h.flatten(), omega])
        pos_emb = torch.cat([torch.sin(out_w), torch.cos(out_w), torch.sin(out_h), torch.cos(out_h)], dim=1)[None, :, :]
        pe_token = torch.zeros([1, 1, self.embed_dim], dtype=torch.float32)
        self.pos_embed = nn.Parameter(torch.cat([pe_token, pos_emb], dim=1))
        self.pos_embed.requires_grad = False


def vit_small(**kwargs):
    """vits.vit_small: 12 heads (width, depth and img_size may be shrunk by the tests)."""
    config = dict(patch_size=16, embed_dim=384, depth=12, num_heads=12, mlp_ratio=4, qkv_bias=True,
                  norm_layer=partial(nn.LayerNorm, eps=1e-6))
    return VisionTransformerMoCo(**{**config, **kwargs})


def build_mlp(num_layers, input_dim, mlp_dim, output_dim, last_bn=True):
    mlp = []
    for l in range(num_layers):
        dim1 = input_dim if l == 0 else mlp_dim
        dim2 = output_dim if l == num_layers - 1 else mlp_dim
        mlp.append(nn.Linear(dim1, dim2, bias=False))
        if l < num_layers - 1:
            mlp.append(nn.BatchNorm1d(dim2))
            mlp.append(nn.ReLU(inplace=True))
        elif last_bn:
            mlp.append(nn.BatchNorm1d(dim2, affine=False))
    return nn.Sequential(*mlp)


def contrastive_loss(q, k, T, rank=0, world=1, all_k=None):
    q = nn.functional.normalize(q, dim=1)
    k = nn.functional.normalize(all_k if all_k is not None else k, dim=1)
    logits = torch.einsum('nc,mc->nm', [q, k]) / T
    N = logits.shape[0]
    labels = torch.arange(N, dtype=torch.long) + N * rank
    return nn.CrossEntropyLoss()(logits, labels) * (2 * T)


def adjust_moco_momentum(epoch, epochs, moco_m):
    return 1. - 0.5 * (1. + math.cos(math.pi * epoch / epochs)) * (1. - moco_m)


def adjust_learning_rate(epoch, lr, warmup_epochs, epochs):
    if epoch < warmup_epochs:
        return lr * epoch / warmup_epochs
    return lr * 0.5 * (1. + math.cos(math.pi * (epoch - warmup_epochs) / (epochs - warmup_epochs)))
