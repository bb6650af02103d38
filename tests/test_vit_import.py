"""Released ViT checkpoints import to the official function, or are refused in one line.

Each official model is rebuilt here from its project's code, reduced to what the forward
needs (DINO ``vision_transformer.py``; moco-v3 ``vits.py`` and ``moco/builder.py``; MAE
``models_mae.py`` and ``util/pos_embed.py``), given random weights at a tiny size, saved in the
project's own layout (``main_dino.py``'s save_dict with its ``args`` Namespace, the
``dino_*_pretrain.pth`` backbone, moco-v3 ``main_moco.py``'s ``{'arch', 'state_dict', ...}``
through DDP, MAE's ``{'model': ...}`` release and ``util/misc.py`` ``save_model``), loaded
with sslkit, and the backbone's features compared with the official forward (CLS after the
final norm). A file's tensors prove its width, depth, patch size and position grid but not its
heads: MoCo v3's ViT-S has 12 where timm's and DINO's have 6, so that case is tested at the
real size too.
"""
import argparse
import math
from functools import partial

import numpy as np
import pytest
import timm
import torch
from timm.models.vision_transformer import Block as TimmBlock
from timm.models.vision_transformer import PatchEmbed as TimmPatchEmbed
from torch import nn

from official_mocov3 import build_mlp, vit_small
from sslkit.checkpoints import CheckpointError, load_backbone, load_backbone_report, load_backbone_weights
from sslkit.nn.backbones import BackboneConfig, build_backbone

TINY = dict(embed_dim=48, depth=2)
ATOL = 1e-5


def randomize(module: nn.Module, seed: int, keep=("pos_embed",)) -> nn.Module:
    """Every weight random (norms around 1), so that each tensor shows in the features;
    fixed sin-cos embeddings kept."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.split(".")[-1] in keep or name in keep:
                continue
            noise = torch.randn(p.shape, generator=g)
            if isinstance(module.get_submodule(name.rpartition(".")[0]) if "." in name else None, nn.LayerNorm) \
                    and name.endswith("weight"):
                p.copy_(1 + 0.2 * noise)
            else:
                p.copy_(0.1 * noise)
    return module.eval()


def features_close(got, expected, atol=ATOL):
    assert got.shape == expected.shape, (got.shape, expected.shape)
    assert torch.allclose(got, expected, atol=atol, rtol=1e-4), (got - expected).abs().max()


def relative_error(a, b):
    return ((a - b).norm() / b.norm()).item()


# ===================================================================== DINO vision_transformer.py
class DinoMlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class DinoAttention(nn.Module):
    def __init__(self, dim, num_heads, qkv_bias):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(B, N, C))


class DinoBlock(nn.Module):
    def __init__(self, dim, num_heads, mlp_ratio, qkv_bias, norm_layer):
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = DinoAttention(dim, num_heads, qkv_bias)
        self.norm2 = norm_layer(dim)
        self.mlp = DinoMlp(dim, int(dim * mlp_ratio))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class DinoPatchEmbed(nn.Module):
    def __init__(self, img_size, patch_size, embed_dim):
        super().__init__()
        self.patch_size = patch_size
        self.num_patches = (img_size // patch_size) ** 2
        self.proj = nn.Conv2d(3, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class DinoViT(nn.Module):
    def __init__(self, img_size=(224,), patch_size=16, embed_dim=768, depth=12, num_heads=12, mlp_ratio=4.,
                 qkv_bias=False, norm_layer=nn.LayerNorm):
        super().__init__()
        self.patch_embed = DinoPatchEmbed(img_size[0], patch_size, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches + 1, embed_dim))
        self.blocks = nn.ModuleList([DinoBlock(embed_dim, num_heads, mlp_ratio, qkv_bias, norm_layer)
                                     for _ in range(depth)])
        self.norm = norm_layer(embed_dim)
        self.head = nn.Identity()

    def interpolate_pos_encoding(self, x, w, h):
        npatch = x.shape[1] - 1
        N = self.pos_embed.shape[1] - 1
        if npatch == N and w == h:
            return self.pos_embed
        class_pos_embed = self.pos_embed[:, 0]
        patch_pos_embed = self.pos_embed[:, 1:]
        dim = x.shape[-1]
        w0 = w // self.patch_embed.patch_size + 0.1
        h0 = h // self.patch_embed.patch_size + 0.1
        patch_pos_embed = nn.functional.interpolate(
            patch_pos_embed.reshape(1, int(math.sqrt(N)), int(math.sqrt(N)), dim).permute(0, 3, 1, 2),
            scale_factor=(w0 / math.sqrt(N), h0 / math.sqrt(N)), mode="bicubic")
        patch_pos_embed = patch_pos_embed.permute(0, 2, 3, 1).view(1, -1, dim)
        return torch.cat((class_pos_embed.unsqueeze(0), patch_pos_embed), dim=1)

    def prepare_tokens(self, x):
        B, nc, w, h = x.shape
        x = self.patch_embed(x)
        x = torch.cat((self.cls_token.expand(B, -1, -1), x), dim=1)
        return x + self.interpolate_pos_encoding(x, w, h)

    def forward(self, x):
        x = self.prepare_tokens(x)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)[:, 0]


DINO_ARCHS = {"vit_tiny": (192, 3), "vit_small": (384, 6), "vit_base": (768, 12)}  # vision_transformer.py


def dino_vit(arch, patch_size=16, seed=0, **kwargs):
    """``vits.__dict__[arch](patch_size=...)``: the arch's heads; width/depth/img_size may be shrunk."""
    width, heads = DINO_ARCHS[arch]
    config = dict(patch_size=patch_size, embed_dim=width, depth=12, num_heads=heads, mlp_ratio=4, qkv_bias=True,
                  norm_layer=partial(nn.LayerNorm, eps=1e-6))
    torch.manual_seed(seed)
    return randomize(DinoViT(**{**config, **kwargs}), seed)


def dino_head_state(in_dim, out_dim=64):
    """DINOHead's keys (mlp.0/2/4, weight-normed last_layer)."""
    return {"mlp.0.weight": torch.randn(32, in_dim), "mlp.0.bias": torch.randn(32), "mlp.2.weight": torch.randn(32, 32),
            "mlp.2.bias": torch.randn(32), "mlp.4.weight": torch.randn(16, 32), "mlp.4.bias": torch.randn(16),
            "last_layer.weight_g": torch.ones(out_dim, 1), "last_layer.weight_v": torch.randn(out_dim, 16)}


def prefixed(prefix, state):
    return {f"{prefix}{k}": v for k, v in state.items()}


def dino_full_checkpoint(student, teacher, arch, patch_size, teacher_prefix=""):
    """main_dino.py's save_dict: MultiCropWrapper(backbone, head) states, the student through DDP
    (``module.``), a ViT teacher without (it has no BatchNorm), and the argparse Namespace."""
    width = student.cls_token.shape[-1]
    args = argparse.Namespace(arch=arch, patch_size=patch_size, out_dim=64, norm_last_layer=True,
                              momentum_teacher=0.996, use_bn_in_head=False, lr=0.0005, epochs=100, batch_size_per_gpu=64,
                              global_crops_scale=(0.4, 1.0), local_crops_number=8, output_dir="/tmp/dino", use_fp16=True)
    return {"student": {**prefixed("module.backbone.", student.state_dict()),
                        **prefixed("module.head.", dino_head_state(width))},
            "teacher": {**prefixed(f"{teacher_prefix}backbone.", teacher.state_dict()),
                        **prefixed(f"{teacher_prefix}head.", dino_head_state(width))},
            "optimizer": {"state": {}, "param_groups": []}, "epoch": 100, "args": args,
            "dino_loss": {"center": torch.randn(1, 64)}, "fp16_scaler": {"scale": 1024.0, "_growth_tracker": 3}}


# ===================================================================== moco-v3 vits.py, moco/builder.py
class MoCoViT(nn.Module):
    """builder.MoCo_ViT: base and momentum encoders with the 3-layer projector as their head, and a predictor."""

    def __init__(self, base_encoder, dim=16, mlp_dim=32):
        super().__init__()
        self.base_encoder = base_encoder(num_classes=mlp_dim)
        self.momentum_encoder = base_encoder(num_classes=mlp_dim)
        hidden_dim = self.base_encoder.head.weight.shape[1]
        del self.base_encoder.head, self.momentum_encoder.head
        self.base_encoder.head = build_mlp(3, hidden_dim, mlp_dim, dim)
        self.momentum_encoder.head = build_mlp(3, hidden_dim, mlp_dim, dim)
        self.predictor = build_mlp(2, dim, mlp_dim, dim)


class DDP(nn.Module):  # what DistributedDataParallel adds to the keys: module.
    def __init__(self, module):
        super().__init__()
        self.module = module


def mocov3_checkpoint(encoder_fn, arch="vit_small", seed=0):
    """main_moco.py's save_checkpoint({'epoch', 'arch', 'state_dict': model.state_dict(), 'optimizer', 'scaler'}),
    the momentum encoder holding other weights."""
    torch.manual_seed(seed)
    moco = MoCoViT(encoder_fn)
    randomize(moco.base_encoder, seed + 1)
    randomize(moco.momentum_encoder, seed + 2)
    checkpoint = {"epoch": 300, "arch": arch, "state_dict": DDP(moco).state_dict(), "optimizer": {"state": {}},
                  "scaler": {"scale": 65536.0}}
    return checkpoint, moco


def moco_reference(moco, which="base_encoder"):
    """main_lincls.py: the encoder without its projector head, CLS after the final norm."""
    encoder = getattr(moco, which)
    encoder.head = nn.Identity()
    return encoder.eval()


# ===================================================================== MAE models_mae.py, util/pos_embed.py
def get_1d_sincos_pos_embed_from_grid(embed_dim, pos):
    omega = np.arange(embed_dim // 2, dtype=np.float64)
    omega /= embed_dim / 2.
    omega = 1. / 10000 ** omega
    out = np.einsum("m,d->md", pos.reshape(-1), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def get_2d_sincos_pos_embed(embed_dim, grid_size, cls_token=False):
    grid_h = np.arange(grid_size, dtype=np.float32)
    grid_w = np.arange(grid_size, dtype=np.float32)
    grid = np.stack(np.meshgrid(grid_w, grid_h), axis=0).reshape([2, 1, grid_size, grid_size])
    emb = np.concatenate([get_1d_sincos_pos_embed_from_grid(embed_dim // 2, grid[0]),
                          get_1d_sincos_pos_embed_from_grid(embed_dim // 2, grid[1])], axis=1)
    if cls_token:
        emb = np.concatenate([np.zeros([1, embed_dim]), emb], axis=0)
    return emb


def interpolate_pos_embed(model, checkpoint_model):
    """util/pos_embed.py (from DeiT): what MAE's fine-tuning does to a checkpoint of another size."""
    pos_embed_checkpoint = checkpoint_model["pos_embed"]
    embedding_size = pos_embed_checkpoint.shape[-1]
    num_patches = model.patch_embed.num_patches
    num_extra_tokens = model.pos_embed.shape[-2] - num_patches
    orig_size = int((pos_embed_checkpoint.shape[-2] - num_extra_tokens) ** 0.5)
    new_size = int(num_patches ** 0.5)
    if orig_size != new_size:
        extra_tokens = pos_embed_checkpoint[:, :num_extra_tokens]
        pos_tokens = pos_embed_checkpoint[:, num_extra_tokens:]
        pos_tokens = pos_tokens.reshape(-1, orig_size, orig_size, embedding_size).permute(0, 3, 1, 2)
        pos_tokens = torch.nn.functional.interpolate(pos_tokens, size=(new_size, new_size), mode="bicubic",
                                                     align_corners=False)
        pos_tokens = pos_tokens.permute(0, 2, 3, 1).flatten(1, 2)
        checkpoint_model["pos_embed"] = torch.cat((extra_tokens, pos_tokens), dim=1)


class MaskedAutoencoderViT(nn.Module):
    def __init__(self, img_size=224, patch_size=16, embed_dim=1024, depth=24, num_heads=16, decoder_embed_dim=512,
                 decoder_depth=8, decoder_num_heads=16, mlp_ratio=4., norm_layer=nn.LayerNorm):
        super().__init__()
        self.patch_embed = TimmPatchEmbed(img_size, patch_size, 3, embed_dim)
        num_patches = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, embed_dim), requires_grad=False)
        self.blocks = nn.ModuleList([TimmBlock(embed_dim, num_heads, mlp_ratio, qkv_bias=True, norm_layer=norm_layer)
                                     for _ in range(depth)])
        self.norm = norm_layer(embed_dim)
        self.decoder_embed = nn.Linear(embed_dim, decoder_embed_dim, bias=True)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, decoder_embed_dim), requires_grad=False)
        self.decoder_blocks = nn.ModuleList([
            TimmBlock(decoder_embed_dim, decoder_num_heads, mlp_ratio, qkv_bias=True, norm_layer=norm_layer)
            for _ in range(decoder_depth)])
        self.decoder_norm = norm_layer(decoder_embed_dim)
        self.decoder_pred = nn.Linear(decoder_embed_dim, patch_size ** 2 * 3, bias=True)
        side = int(num_patches ** .5)
        self.pos_embed.data.copy_(torch.from_numpy(get_2d_sincos_pos_embed(embed_dim, side, True)).float()[None])
        self.decoder_pos_embed.data.copy_(
            torch.from_numpy(get_2d_sincos_pos_embed(decoder_embed_dim, side, True)).float()[None])

    def random_masking(self, x, mask_ratio):
        N, L, D = x.shape
        len_keep = int(L * (1 - mask_ratio))
        noise = torch.rand(N, L, device=x.device)
        ids_shuffle = torch.argsort(noise, dim=1)
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        x_masked = torch.gather(x, dim=1, index=ids_shuffle[:, :len_keep].unsqueeze(-1).repeat(1, 1, D))
        return x_masked, ids_restore

    def forward_encoder(self, x, mask_ratio):
        x = self.patch_embed(x)
        x = x + self.pos_embed[:, 1:, :]
        x, _ = self.random_masking(x, mask_ratio)
        cls_token = self.cls_token + self.pos_embed[:, :1, :]
        x = torch.cat((cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)


def mae_vit_base_patch16(**kwargs):
    """mae_vit_base_patch16_dec512d8b: 12 heads (widths and depths may be shrunk)."""
    config = dict(patch_size=16, embed_dim=768, depth=12, num_heads=12, decoder_embed_dim=512, decoder_depth=8,
                  decoder_num_heads=16, mlp_ratio=4, norm_layer=partial(nn.LayerNorm, eps=1e-6))
    return MaskedAutoencoderViT(**{**config, **kwargs})


def mae_features(mae, images):
    """The pretrain encoder's class token after ``norm`` (all patches kept: mask ratio 0 shuffles only)."""
    with torch.no_grad():
        return mae.forward_encoder(images, mask_ratio=0.0)[:, 0]


# ===================================================================== tests
def images(size, n=2, seed=7):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def run(backbone, x):
    with torch.no_grad():
        return backbone.eval()(x)


@pytest.mark.parametrize("arch,patch", [("vit_small", 16), ("vit_small", 8), ("vit_base", 16), ("vit_base", 8)])
def test_dino_full_checkpoint_loads_the_teacher(tmp_path, arch, patch):
    """dino_deitsmall16_full_checkpoint.pth-like: args.arch + args.patch_size name the timm ViT
    (DINO's heads: 6 for vit_small, 12 for vit_base), the teacher is what loads by default."""
    student = dino_vit(arch, patch, seed=1, img_size=[32], **TINY)
    teacher = dino_vit(arch, patch, seed=2, img_size=[32], **TINY)
    path = tmp_path / f"dino_{arch}{patch}_full_checkpoint.pth"
    torch.save(dino_full_checkpoint(student, teacher, arch, patch), path)
    backbone, report = load_backbone_report(path)
    assert (report.format, report.branch) == ("dino", "momentum")
    assert report.arch == f"{arch}_patch{patch}_224" and not report.arch_inferred
    assert report.kwargs == {"embed_dim": 48, "depth": 2, "img_size": 32}  # proven by the tensors
    assert report.notes == []  # the heads come from args.arch: nothing assumed
    assert backbone.model.blocks[0].attn.num_heads == DINO_ARCHS[arch][1]
    x = images(32)
    with torch.no_grad():
        features_close(run(backbone, x), teacher(x))
        student_backbone = load_backbone(path, branch="student")
        features_close(run(student_backbone, x), student(x))
    assert "teacher" in report.summary() and "branch='online' for the student" in report.summary()


def test_dino_teacher_saved_through_ddp_too(tmp_path):
    teacher = dino_vit("vit_small", 16, seed=3, img_size=[32], **TINY)
    path = tmp_path / "checkpoint.pth"
    torch.save(dino_full_checkpoint(dino_vit("vit_small", 16, seed=4, img_size=[32], **TINY), teacher, "vit_small", 16,
                                    teacher_prefix="module."), path)
    features_close(run(load_backbone(path), images(32)), teacher(images(32)))


def test_dino_pretrain_file_through_the_backbone_config(tmp_path):
    """dino_deitsmall16_pretrain.pth: a bare state_dict of the backbone; built as named, the heads
    (which the file cannot show) reported as the named model's."""
    dino = dino_vit("vit_small", 16, seed=5, img_size=[32], **TINY)
    path = tmp_path / "dino_deitsmall16_pretrain.pth"
    torch.save(dino.state_dict(), path)
    config = BackboneConfig(name="vit_small_patch16_224", kwargs=dict(img_size=32, **TINY))
    backbone = config.build()
    report = load_backbone_weights(backbone, path)
    assert report.format == "plain" and any("does not record its attention heads: 6, those of vit_small_patch16_224" in n
                                             for n in report.notes)
    features_close(run(backbone, images(32)), dino(images(32)))
    features_close(run(BackboneConfig(name="vit_small_patch16_224", kwargs=dict(img_size=32, **TINY),
                                      ckpt_path=str(path)).build(), images(32)), dino(images(32)))


def test_mocov3_vit_file_builds_mocov3_vit_small(tmp_path):
    """vit-s-300ep.pth.tar-like: 'arch': 'vit_small' is recorded (no longer "records no architecture"),
    the base encoder loads as mocov3_vit_small (12 heads), its projector head is dropped and reported."""
    checkpoint, moco = mocov3_checkpoint(partial(vit_small, img_size=32, **TINY))
    path = tmp_path / "vit-s-300ep.pth.tar"
    torch.save(checkpoint, path)
    backbone, report = load_backbone_report(path)
    assert (report.format, report.branch, report.arch) == ("mocov3", "online", "mocov3_vit_small")
    assert not report.arch_inferred and "(recorded)" in report.summary()
    assert backbone.model.blocks[0].attn.num_heads == 12
    assert sorted(report.dropped) == sorted(k for k in moco.base_encoder.state_dict() if k.startswith("head."))
    assert "dropped" in report.summary() and "head.0.weight" in report.summary()
    x = images(32)
    features_close(run(backbone, x), run(moco_reference(moco), x))
    momentum = load_backbone(path, branch="momentum")
    features_close(run(momentum, x), run(moco_reference(moco, "momentum_encoder"), x))
    config = BackboneConfig(name="mocov3_vit_small", kwargs=dict(img_size=32, **TINY), ckpt_path=str(path))
    features_close(run(config.build(), x), run(moco_reference(moco), x))


def test_mocov3_vit_small_into_timm_vit_small_is_refused(tmp_path):
    """Same tensor shapes, other function: a 6-head model named for a file that records MoCo v3's
    12-head vit_small is refused in one line naming the file, the record and the name to use."""
    checkpoint, moco = mocov3_checkpoint(partial(vit_small, img_size=32, **TINY))
    path = tmp_path / "vit-s-300ep.pth.tar"
    torch.save(checkpoint, path)
    config = BackboneConfig(name="vit_small_patch16_224", kwargs=dict(img_size=32, **TINY), ckpt_path=str(path))
    with pytest.raises(CheckpointError) as info:
        config.build()
    message = str(info.value)
    assert "\n" not in message and "vit-s-300ep.pth.tar" in message and "arch 'vit_small'" in message
    assert "12 attention heads" in message and "has 6 heads" in message and "use mocov3_vit_small" in message
    # what refusing prevents: the same tensors in the 6-head model give other features
    six = build_backbone("vit_small_patch16_224", img_size=32, **TINY)
    six.model.load_state_dict({k: v for k, v in moco_reference(moco).state_dict().items()})
    assert relative_error(run(six, images(32)), run(moco_reference(moco), images(32))) > 0.05


def test_mocov3_vit_small_at_the_real_size(tmp_path):
    """The released ViT-S shape (384 wide, 12 blocks, 12 heads, 224 px): loads as mocov3_vit_small
    with MoCo v3's function; timm's vit_small_patch16_224 is refused (before it is built)."""
    torch.manual_seed(0)
    encoder = vit_small(num_classes=0).eval()  # vits.py's own random initialisation
    state = {**prefixed("module.base_encoder.", encoder.state_dict()),
             **prefixed("module.momentum_encoder.", encoder.state_dict()),  # the same tensors: a smaller file
             **prefixed("module.base_encoder.head.", build_mlp(3, 384, 32, 16).state_dict()),
             **prefixed("module.predictor.", build_mlp(2, 16, 32, 16).state_dict())}
    path = tmp_path / "vit-s-300ep.pth.tar"
    torch.save({"epoch": 300, "arch": "vit_small", "state_dict": state, "optimizer": {}, "scaler": {}}, path)
    backbone, report = load_backbone_report(path)
    assert report.arch == "mocov3_vit_small" and report.kwargs == {} and backbone.dim == 384
    x = images(224, n=1)
    expected = run(encoder, x)
    features_close(run(backbone, x), expected, atol=1e-4)
    with pytest.raises(CheckpointError, match=r"'.*vit-s-300ep.pth.tar' records its architecture \(MoCo v3 arch "
                                              r"'vit_small': mocov3_vit_small, 12 attention heads\) but "
                                              r"vit_small_patch16_224 has 6 heads.*use mocov3_vit_small"):
        load_backbone(path, arch="vit_small_patch16_224")


def test_mae_pretrain_release_and_full_checkpoint(tmp_path):
    """mae_pretrain_vit_base.pth ({'model': encoder}) and the pretraining checkpoint ({'model': encoder +
    decoder + mask_token, ..., 'args'}): the encoder as vit_base_patch16_224 (12 heads, as MAE's
    ViT-B), features the class token after norm; decoder keys dropped and reported."""
    torch.manual_seed(0)
    mae = mae_vit_base_patch16(img_size=32, decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=4, **TINY)
    randomize(mae, 21, keep=("pos_embed", "decoder_pos_embed"))
    encoder = {k: v for k, v in mae.state_dict().items() if not k.startswith(("decoder_", "mask_token"))}
    args = argparse.Namespace(model="mae_vit_base_patch16", input_size=32, mask_ratio=0.75, norm_pix_loss=True,
                              batch_size=64, epochs=800, output_dir="/tmp/mae")
    torch.save({"model": mae.state_dict(), "optimizer": {"state": {}}, "epoch": 799, "scaler": {"scale": 1.0},
                "args": args}, tmp_path / "checkpoint-799.pth")
    torch.save({"model": encoder}, tmp_path / "mae_pretrain_vit_base.pth")
    x = images(32)
    expected = mae_features(mae, x)

    backbone, report = load_backbone_report(tmp_path / "checkpoint-799.pth")
    assert (report.format, report.arch) == ("plain", "vit_base_patch16_224") and not report.arch_inferred
    assert report.notes == [] and backbone.model.blocks[0].attn.num_heads == 12
    assert "mask_token" in report.dropped and any(k.startswith("decoder_blocks.") for k in report.dropped)
    assert len(report.dropped) == len(mae.state_dict()) - len(encoder)
    features_close(run(backbone, x), expected)

    config = BackboneConfig(name="vit_base_patch16_224", kwargs=dict(img_size=32, **TINY),
                            ckpt_path=str(tmp_path / "mae_pretrain_vit_base.pth"))
    features_close(run(config.build(), x), expected)


def test_mae_release_at_the_real_width_is_inferred_with_the_heads_assumed(tmp_path):
    """A bare ViT-B encoder records nothing: vit_base_patch16_224 is inferred from the width, depth
    and patch its tensors prove, the 12 heads assumed and said so (ViT-B: 2 blocks here, to stay fast)."""
    torch.manual_seed(0)
    mae = mae_vit_base_patch16(img_size=32, depth=2, decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=4)
    randomize(mae, 22, keep=("pos_embed", "decoder_pos_embed"))
    encoder = {k: v for k, v in mae.state_dict().items() if not k.startswith(("decoder_", "mask_token"))}
    torch.save({"model": encoder}, tmp_path / "mae_pretrain_vit_base.pth")
    backbone, report = load_backbone_report(tmp_path / "mae_pretrain_vit_base.pth")
    assert report.arch == "vit_base_patch16_224" and report.arch_inferred
    assert report.kwargs == {"depth": 2, "img_size": 32}
    assert len(report.notes) == 1 and "does not record its attention heads: assumed 12" in report.notes[0]
    assert "note: the file does not record" in report.summary()
    features_close(run(backbone, images(32)), mae_features(mae, images(32)))


def test_dino_pretrain_at_the_real_size_assumes_six_heads(tmp_path):
    """dino_deitsmall16_pretrain.pth at its real size: vit_small_patch16_224 inferred, 6 heads assumed
    (with the MoCo v3 alternative named), DINO's forward at 224 px; built at 96 px, the position
    embedding is resampled and reported."""
    dino = dino_vit("vit_small", 16, seed=8)
    path = tmp_path / "dino_deitsmall16_pretrain.pth"
    torch.save(dino.state_dict(), path)
    backbone, report = load_backbone_report(path)
    assert (report.format, report.arch, report.kwargs) == ("plain", "vit_small_patch16_224", {})
    assert report.arch_inferred and len(report.notes) == 1
    assert "assumed 6" in report.notes[0] and "arch='mocov3_vit_small'" in report.notes[0]
    x = images(224, n=1)
    features_close(run(backbone, x), dino(x), atol=1e-4)
    small = build_backbone("vit_small_patch16_224", img_size=96)  # what BackboneConfig(kwargs={'img_size': 96}) builds
    report = load_backbone_weights(small, path)
    assert small.model.pos_embed.shape == (1, 37, 384)
    assert any("resampled from the file's 14x14 grid (224 px) to the model's 6x6 (96 px)" in n for n in report.notes)
    assert run(small, images(96, n=1)).shape == (1, 384)


def test_timm_vit_state_dicts_and_training_checkpoints(tmp_path):
    """A state_dict saved from a timm ViT (bare, under state_dict or model) and timm train.py's checkpoint."""
    torch.manual_seed(0)
    model = randomize(timm.create_model("vit_tiny_patch16_224", depth=2, img_size=32, num_classes=10), 31)
    x = images(32)
    with torch.no_grad():
        expected = model.forward_head(model.forward_features(x), pre_logits=True)
    for name, saved in (("bare.pth", model.state_dict()), ("wrapped.pth", {"state_dict": model.state_dict()}),
                        ("model.pth", {"model": model.state_dict()})):
        torch.save(saved, tmp_path / name)
        backbone, report = load_backbone_report(tmp_path / name)
        assert (report.format, report.arch, report.kwargs) == ("plain", "vit_tiny_patch16_224", {"depth": 2, "img_size": 32})
        assert sorted(report.dropped) == ["head.bias", "head.weight"] and "assumed 3" in report.notes[0]
        features_close(run(backbone, x), expected)

    small = randomize(timm.create_model("vit_small_patch16_224", img_size=32, num_classes=10, **TINY), 32)
    ema = randomize(timm.create_model("vit_small_patch16_224", img_size=32, num_classes=10, **TINY), 33)
    args = argparse.Namespace(model="vit_small_patch16_224", img_size=32, lr=5e-4, epochs=300, model_ema=True)
    torch.save({"epoch": 299, "arch": "vit_small_patch16_224", "state_dict": small.state_dict(),
                "state_dict_ema": ema.state_dict(), "optimizer": {}, "version": 2, "args": args, "metric": 80.1},
               tmp_path / "model_best.pth.tar")
    backbone, report = load_backbone_report(tmp_path / "model_best.pth.tar")
    assert (report.format, report.branch, report.arch) == ("timm", "momentum", "vit_small_patch16_224")
    assert report.notes == []  # args.model names the heads
    with torch.no_grad():
        features_close(run(backbone, x), ema.forward_head(ema.forward_features(x), pre_logits=True))


def test_position_embedding_resampled_to_the_models_grid(tmp_path):
    """A file made at 64 px (8x8 patches of 8) into backbones built at 32 and 96 px: resampled with
    timm's resample_abs_pos_embed (bicubic, no antialiasing): the features equal MAE/DeiT's
    interpolate_pos_embed on the checkpoint and DINO's own interpolate_pos_encoding at that size; reported."""
    dino = dino_vit("vit_small", 8, seed=9, img_size=[64], **TINY)
    path = tmp_path / "dino_deitsmall8_pretrain.pth"
    torch.save(dino.state_dict(), path)
    for size, grid in ((32, 4), (96, 12)):
        backbone = build_backbone("vit_small_patch8_224", img_size=size, **TINY)
        report = load_backbone_weights(backbone, path)
        note = [n for n in report.notes if "resampled" in n]
        assert note and f"from the file's 8x8 grid (64 px) to the model's {grid}x{grid} ({size} px)" in note[0]
        assert "note: position embedding resampled" in report.summary()
        x = images(size)
        got = run(backbone, x)
        deit = dino_vit("vit_small", 8, seed=9, img_size=[size], **TINY)  # util/pos_embed.py on the checkpoint
        state = dict(dino.state_dict())
        interpolate_pos_embed(deit, state)
        deit.load_state_dict(state)
        features_close(got, run(deit, x))
        features_close(got, run(dino, x))  # DINO's own interpolate_pos_encoding at that size
    tiny = dino_vit("vit_tiny", 8, seed=10, img_size=[64], depth=2)  # 192 wide: vit_tiny is inferred
    torch.save(tiny.state_dict(), path)
    backbone, report = load_backbone_report(path)  # built at the file's own grid, nothing resampled
    assert report.arch == "vit_tiny_patch16_224" and report.kwargs == {"depth": 2, "patch_size": 8, "img_size": 64}
    assert not any("resampled" in n for n in report.notes)
    features_close(run(backbone, images(64)), tiny(images(64)))


def test_names_that_disagree_with_the_file_are_refused_in_one_line(tmp_path):
    student = dino_vit("vit_small", 8, seed=1, img_size=[32], **TINY)
    teacher = dino_vit("vit_small", 8, seed=2, img_size=[32], **TINY)
    path = tmp_path / "dino_deitsmall8_full_checkpoint.pth"
    torch.save(dino_full_checkpoint(student, teacher, "vit_small", 8), path)
    cases = {  # name (built with the tiny width and depth unless the case is about them) -> expected words
        ("vit_small_patch16_224", True): "patch 8 (recorded as DINO args.arch 'vit_small', patch_size 8: "
                                         "vit_small_patch8_224) but vit_small_patch16_224 is 48 wide with 2 blocks and "
                                         "patch 16: use vit_small_patch8_224 with kwargs",
        ("vit_base_patch8_224", False): "holds a ViT 48 wide with 2 blocks and patch 8",
        ("mocov3_vit_small", True): "vit_small_patch8_224, 6 attention heads) but mocov3_vit_small has 12 heads",
        ("torchvision.resnet18", False): "but torchvision.resnet18 is not a timm Vision Transformer",
    }
    for (name, tiny), words in cases.items():
        kwargs = dict(img_size=32, **TINY) if tiny else {}
        if name == "mocov3_vit_small":
            kwargs["patch_size"] = 8
        with pytest.raises(CheckpointError) as info:
            BackboneConfig(name=name, kwargs=kwargs, ckpt_path=str(path)).build()
        message = str(info.value)
        assert "\n" not in message and "dino_deitsmall8_full_checkpoint.pth" in message, message
        assert words in message, message
    with pytest.raises(CheckpointError, match=r"holds a ViT 48 wide with 2 blocks.* but vit_small_patch8_224 is 384 "
                                              r"wide with 12 blocks"):
        load_backbone(path, arch="vit_small_patch8_224")
    with pytest.raises(CheckpointError, match=r"with 1 blocks and patch 8.*use vit_small_patch8_224 with kwargs"):
        BackboneConfig(name="vit_small_patch8_224", kwargs=dict(img_size=32, embed_dim=48, depth=1),
                       ckpt_path=str(path)).build()


def test_files_that_name_no_buildable_vit_are_refused_in_one_line(tmp_path):
    odd = dino_vit("vit_small", 16, seed=1, img_size=[32], **TINY)  # 48 wide: no standard ViT
    torch.save(odd.state_dict(), tmp_path / "odd.pth")
    with pytest.raises(CheckpointError, match=r"'.*odd.pth' holds a ViT \(48 wide, 2 blocks, patch 16, 2x2 position grid\) "
                                              r"and records no architecture.*pass arch="):
        load_backbone(tmp_path / "odd.pth")
    checkpoint, _ = mocov3_checkpoint(partial(vit_small, img_size=32, **TINY), arch="vit_conv_small")
    torch.save(checkpoint, tmp_path / "vit-conv-s.pth.tar")
    with pytest.raises(CheckpointError, match=r"records its architecture as MoCo v3 arch 'vit_conv_small' "
                                              r"\(mocov3_vit_conv_small\), which is no ViT sslkit builds"):
        load_backbone(tmp_path / "vit-conv-s.pth.tar")
