"""MoCo v3 against facebookresearch/moco-v3, rebuilt here from its files: ``vits.py``
(VisionTransformerMoCo, its sin-cos embedding and initialisation), ``moco/builder.py``
(``_build_mlp``, ``contrastive_loss``, ``MoCo.forward``) and ``main_moco.py``
(``adjust_learning_rate``, ``adjust_moco_momentum``)."""
import copy
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from helpers import tiny_data, tiny_mocov3, tiny_trainer
from official_mocov3 import VisionTransformerMoCo, adjust_learning_rate, adjust_moco_momentum, build_mlp
from official_mocov3 import contrastive_loss as official_contrastive_loss
from official_mocov3 import vit_small
from sslkit.methods.optim import OptimConfig, lr_at
from sslkit.nn.backbones import build_backbone
from sslkit.nn.heads import mocov3_mlp
from sslkit.nn.losses import mocov3_loss
from sslkit.nn.vits import sincos_position_embedding


# ----------------------------------------------------------------- the ViT
def test_sincos_embedding_is_the_official_one_on_a_non_square_grid():
    torch.manual_seed(0)
    official = VisionTransformerMoCo(img_size=(32, 48), patch_size=8, embed_dim=32, depth=1, num_heads=2, num_classes=0)
    assert torch.equal(sincos_position_embedding((4, 6), 32), official.pos_embed.data)


def test_mocov3_vit_small_computes_the_official_function():
    """12 heads, not timm's 6: the same weights give the official features, and timm's
    ``vit_small_patch16_224`` with them does not."""
    torch.manual_seed(0)
    official = vit_small(num_classes=0, stop_grad_conv1=True).eval()
    ours = build_backbone("mocov3_vit_small", stop_grad_conv1=True).eval()
    assert ours.model.state_dict().keys() == official.state_dict().keys()
    ours.model.load_state_dict(official.state_dict())
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        expected = official(x)
        assert torch.allclose(ours(x), expected, atol=1e-5)
        timm_small = build_backbone("vit_small_patch16_224").eval()
        timm_small.model.load_state_dict(official.state_dict())
        assert (timm_small(x) - expected).norm() / expected.norm() > 0.01
    frozen = {n for n, p in ours.model.named_parameters() if not p.requires_grad}
    assert frozen == {n for n, p in official.named_parameters() if not p.requires_grad} == {
        "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias"}


def test_mocov3_vit_initialisation_follows_vits_py():
    torch.manual_seed(0)
    model = build_backbone("mocov3_vit_tiny", img_size=32, patch_size=8, depth=2).model
    qkv = model.blocks[0].attn.qkv.weight
    bound = math.sqrt(6.0 / (qkv.shape[0] // 3 + qkv.shape[1]))
    assert qkv.abs().max() <= bound and qkv.abs().max() > 0.95 * bound
    fc1 = model.blocks[0].mlp.fc1.weight
    assert fc1.abs().max() <= math.sqrt(6.0 / sum(fc1.shape)) and model.blocks[0].mlp.fc1.bias.abs().max() == 0
    patch = model.patch_embed.proj.weight
    assert patch.abs().max() <= math.sqrt(6.0 / (3 * 8 * 8 + 192))
    assert model.cls_token.std() < 1e-5


# ----------------------------------------------------------------- heads, loss, schedules
@pytest.mark.parametrize("layers, last_bn", [(3, True), (2, True), (2, False)])
def test_heads_are_build_mlp(layers, last_bn):
    torch.manual_seed(0)
    ours = mocov3_mlp(layers, 12, 20, 8, last_bn)
    official = build_mlp(layers, 12, 20, 8, last_bn)
    assert [type(m) for m in ours] == [type(m) for m in official]
    official.load_state_dict(ours.state_dict())
    x = torch.randn(6, 12)
    assert torch.allclose(ours(x), official(x), atol=1e-6)


def test_loss_is_contrastive_loss():
    torch.manual_seed(0)
    q, k = torch.randn(8, 16), torch.randn(8, 16)
    for t in (1.0, 0.2):
        assert torch.allclose(mocov3_loss(q, k, t), official_contrastive_loss(q, k, t), atol=1e-6)


def test_momentum_and_learning_rate_follow_main_moco():
    """After optimiser step s the key encoder moves with the rate ``main_moco.py`` uses at the
    start of iteration s + 1; the learning rate of step s is ``adjust_learning_rate`` at epoch
    s / iters (the ViT recipe: 40 warm-up epochs of 300)."""
    model = tiny_mocov3(momentum=0.99)
    epochs, iters = 3, 5
    model.schedule.total_steps = epochs * iters
    for s in range(epochs * iters - 1):
        assert model.momentum_at(s) == pytest.approx(adjust_moco_momentum((s + 1) / iters, epochs, 0.99), abs=1e-12)
    epochs, iters, warmup = 300, 7, 40
    for s in [0, 1, 100, 279, 280, 281, 1000, 2099]:
        ours = lr_at(s, epochs * iters, warmup * iters, 1.5e-4, warmup_ends_at_peak=False)
        assert ours == pytest.approx(adjust_learning_rate(s / iters, 1.5e-4, warmup, epochs), rel=1e-9, abs=1e-15)


@pytest.mark.parametrize("vit", [True, False], ids=["vit", "resnet"])
def test_one_step_equals_the_official_forward(vit):
    """``MoCoV3.step`` equals ``MoCo_ViT`` / ``MoCo_ResNet`` forward (the projector as the
    encoders' head) with the same weights, in loss and in every gradient."""
    torch.manual_seed(0)
    model = tiny_mocov3(vit=vit).train()
    assert len(model.projector) == (8 if vit else 5) and isinstance(model.predictor[-1], nn.BatchNorm1d) == vit
    base = copy.deepcopy(model.backbone.model)
    head = build_mlp(3 if vit else 2, model.backbone.dim, 32, 16)
    head.load_state_dict(model.projector.state_dict())
    if vit:
        base.head = head
        forward = base
    else:
        forward = nn.Sequential(base, head)
    predictor = build_mlp(2, 16, 32, 16, last_bn=vit)
    predictor.load_state_dict(model.predictor.state_dict())
    momentum = copy.deepcopy(forward)
    g = torch.Generator().manual_seed(1)
    views = [{"image": torch.randn(8, 3, 32, 32, generator=g)} for _ in range(2)]
    x1, x2 = views[0]["image"], views[1]["image"]

    loss, _ = model.step(views)
    loss.backward()
    q1, q2 = predictor(forward(x1)), predictor(forward(x2))
    with torch.no_grad():
        k1, k2 = momentum(x1), momentum(x2)
    expected = official_contrastive_loss(q1, k2, 0.2) + official_contrastive_loss(q2, k1, 0.2)
    expected.backward()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    for (name, ours), theirs in zip(model.predictor.named_parameters(), predictor.parameters()):
        assert torch.allclose(ours.grad, theirs.grad, atol=1e-6), name
    ours = dict(model.backbone.model.named_parameters())
    for name, theirs in base.named_parameters():
        if name in ours and theirs.grad is not None:
            assert torch.allclose(ours[name].grad, theirs.grad, atol=1e-6), name
    if vit:
        assert model.backbone.model.patch_embed.proj.weight.grad is None


def test_stop_grad_conv1_needs_a_vit():
    with pytest.raises(ValueError, match="stop_grad_conv1.*not a ViT"):
        tiny_mocov3(vit=False, stop_grad_conv1=True)


def test_a_short_fit_with_adamw_and_a_weight_decay_schedule(tmp_path):
    """AdamW with ``weight_decay_end``: every step's weight decay is DINO's cosine from the
    start value to the end one; the momentum encoder moves; the frozen projection does not."""
    torch.manual_seed(0)
    model = tiny_mocov3(optim=OptimConfig(name="adamw", lr=1e-3, weight_decay=0.05, weight_decay_end=0.2,
                                          warmup_epochs=1))
    seen = []

    class Record(__import__("pytorch_lightning").Callback):
        def on_before_optimizer_step(self, trainer, module, optimizer):
            seen.append(optimizer.param_groups[0]["weight_decay"])

    patch = model.backbone.model.patch_embed.proj.weight.clone()
    trainer = tiny_trainer(tmp_path, max_steps=4, callbacks=[Record()])
    trainer.fit(model, tiny_data())
    total = model.total_steps
    assert isinstance(trainer.optimizers[0], torch.optim.AdamW)
    assert seen == pytest.approx([0.2 + (0.05 - 0.2) * 0.5 * (1 + math.cos(math.pi * k / total)) for k in range(4)])
    assert torch.equal(model.backbone.model.patch_embed.proj.weight, patch)
    assert not torch.equal(model.momentum_backbone.model.blocks[0].attn.qkv.weight,
                           tiny_mocov3().momentum_backbone.model.blocks[0].attn.qkv.weight)


def test_activation_checkpointing_gives_the_same_gradients():
    """``speed.activation_checkpointing`` recomputes the blocks in the backward: the same loss
    and gradients."""
    from sslkit.methods.speed import SpeedConfig, apply_speed

    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = tiny_mocov3().train()
        apply_speed(model, SpeedConfig(activation_checkpointing=checkpointing))
        assert model.backbone.model.grad_checkpointing == checkpointing
        g = torch.Generator().manual_seed(1)
        loss, _ = model.step([{"image": torch.randn(8, 3, 32, 32, generator=g)} for _ in range(2)])
        loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        assert torch.allclose(grads[0][name], grads[1][name], atol=1e-6), name


def test_bf16_autocast_step_runs_and_tracks_float32():
    torch.manual_seed(0)
    model = tiny_mocov3().train()
    g = torch.Generator().manual_seed(1)
    views = [{"image": torch.randn(8, 3, 32, 32, generator=g)} for _ in range(2)]
    exact, _ = model.step(views)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low, _ = model.step(views)
    low.backward()
    assert torch.isfinite(low) and abs(low.item() - exact.item()) < 0.05 * abs(exact.item())
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_channels_last_is_ignored_for_a_vit():
    from sslkit.methods.speed import SpeedConfig, apply_speed

    model = tiny_mocov3()
    config = SpeedConfig(channels_last=True)
    with pytest.warns(UserWarning, match="channels_last ignored"):
        apply_speed(model, config)
    assert not config.channels_last
