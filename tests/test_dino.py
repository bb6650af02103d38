"""DINO against facebookresearch/dino: the head (``vision_transformer.py`` ``DINOHead``), the
loss, centre and teacher temperature (``main_dino.py`` ``DINOLoss``), the multi-crop forward
(``utils.MultiCropWrapper``), the schedules (``utils.cosine_scheduler`` for lr, weight decay and
teacher momentum), ``utils.get_params_groups``, ``utils.clip_gradients`` and
``utils.cancel_gradients_last_layer``, each re-typed below as an independent reference; then
DDP on 2 gloo ranks against one process, resume, the CLI on the demo overlay and on real
photographs, and multi-crop through a ViT and a ResNet."""
from __future__ import annotations

import copy
import csv
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import torch.distributed as dist
import torch.nn.functional as F
from pytorch_lightning.callbacks import ModelCheckpoint
from torch import nn

from conftest import REPO
from helpers import invoke, tiny_data
from sslkit.augmentations import DINOViews
from sslkit.methods import DINO, KNNConfig, OptimConfig
from sslkit.methods.method import Schedule
from sslkit.nn.dino import DINOHead, dino_center, dino_loss, teacher_temperature

CONFIGS = Path(REPO) / "configs"
VIT = {"name": "vit_tiny_patch16_224",
       "kwargs": {"img_size": 32, "patch_size": 8, "depth": 2, "embed_dim": 48, "num_heads": 2, "drop_path_rate": 0.1}}


# ---------------------------------------------------------------- the official pieces, re-typed
def ref_trunc_normal_(tensor, mean=0.0, std=1.0, a=-2.0, b=2.0):
    """dino utils.py ``trunc_normal_`` / ``_no_grad_trunc_normal_``."""
    def norm_cdf(x):
        return (1.0 + math.erf(x / math.sqrt(2.0))) / 2.0

    with torch.no_grad():
        lo, up = norm_cdf((a - mean) / std), norm_cdf((b - mean) / std)
        tensor.uniform_(2 * lo - 1, 2 * up - 1)
        tensor.erfinv_()
        tensor.mul_(std * math.sqrt(2.0))
        tensor.add_(mean)
        tensor.clamp_(min=a, max=b)
        return tensor


class RefDINOHead(nn.Module):
    """dino vision_transformer.py ``DINOHead`` (with the deprecated ``nn.utils.weight_norm``)."""

    def __init__(self, in_dim, out_dim, use_bn=False, norm_last_layer=True, nlayers=3, hidden_dim=2048,
                 bottleneck_dim=256):
        super().__init__()
        nlayers = max(nlayers, 1)
        if nlayers == 1:
            self.mlp = nn.Linear(in_dim, bottleneck_dim)
        else:
            layers = [nn.Linear(in_dim, hidden_dim)]
            if use_bn:
                layers.append(nn.BatchNorm1d(hidden_dim))
            layers.append(nn.GELU())
            for _ in range(nlayers - 2):
                layers.append(nn.Linear(hidden_dim, hidden_dim))
                if use_bn:
                    layers.append(nn.BatchNorm1d(hidden_dim))
                layers.append(nn.GELU())
            layers.append(nn.Linear(hidden_dim, bottleneck_dim))
            self.mlp = nn.Sequential(*layers)
        self.apply(self._init_weights)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.last_layer = nn.utils.weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        self.last_layer.weight_g.data.fill_(1)
        if norm_last_layer:
            self.last_layer.weight_g.requires_grad = False

    def _init_weights(self, m):
        if isinstance(m, nn.Linear):
            ref_trunc_normal_(m.weight, std=0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.constant_(m.bias, 0)

    def forward(self, x):
        x = self.mlp(x)
        x = nn.functional.normalize(x, dim=-1, p=2)
        return self.last_layer(x)


class RefDINOLoss(nn.Module):
    """dino main_dino.py ``DINOLoss`` (its all-reduce only under a process group)."""

    def __init__(self, out_dim, ncrops, warmup_teacher_temp, teacher_temp, warmup_teacher_temp_epochs, nepochs,
                 student_temp=0.1, center_momentum=0.9):
        super().__init__()
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.ncrops = ncrops
        self.register_buffer("center", torch.zeros(1, out_dim))
        self.teacher_temp_schedule = np.concatenate((
            np.linspace(warmup_teacher_temp, teacher_temp, warmup_teacher_temp_epochs),
            np.ones(nepochs - warmup_teacher_temp_epochs) * teacher_temp))

    def forward(self, student_output, teacher_output, epoch):
        student_out = student_output / self.student_temp
        student_out = student_out.chunk(self.ncrops)
        temp = self.teacher_temp_schedule[epoch]
        teacher_out = F.softmax((teacher_output - self.center) / temp, dim=-1)
        teacher_out = teacher_out.detach().chunk(2)
        total_loss = 0
        n_loss_terms = 0
        for iq, q in enumerate(teacher_out):
            for v in range(len(student_out)):
                if v == iq:
                    continue
                loss = torch.sum(-q * F.log_softmax(student_out[v], dim=-1), dim=-1)
                total_loss += loss.mean()
                n_loss_terms += 1
        total_loss /= n_loss_terms
        self.update_center(teacher_output)
        return total_loss

    @torch.no_grad()
    def update_center(self, teacher_output):
        batch_center = torch.sum(teacher_output, dim=0, keepdim=True)
        world = 1
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(batch_center)
            world = dist.get_world_size()
        batch_center = batch_center / (len(teacher_output) * world)
        self.center = self.center * self.center_momentum + batch_center * (1 - self.center_momentum)


class RefMultiCropWrapper(nn.Module):
    """dino utils.py ``MultiCropWrapper`` (without replacing the classifier: sslkit's backbone has none)."""

    def __init__(self, backbone, head):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, x):
        if not isinstance(x, list):
            x = [x]
        idx_crops = torch.cumsum(torch.unique_consecutive(torch.tensor([inp.shape[-1] for inp in x]),
                                                          return_counts=True)[1], 0)
        start_idx, output = 0, torch.empty(0).to(x[0].device)
        for end_idx in idx_crops:
            _out = self.backbone(torch.cat(x[start_idx:end_idx]))
            output = torch.cat((output, _out))
            start_idx = end_idx
        return self.head(output)


def ref_cosine_scheduler(base_value, final_value, epochs, niter_per_ep, warmup_epochs=0, start_warmup_value=0):
    """dino utils.py ``cosine_scheduler``."""
    warmup_schedule = np.array([])
    warmup_iters = warmup_epochs * niter_per_ep
    if warmup_epochs > 0:
        warmup_schedule = np.linspace(start_warmup_value, base_value, warmup_iters)
    iters = np.arange(epochs * niter_per_ep - warmup_iters)
    schedule = final_value + 0.5 * (base_value - final_value) * (1 + np.cos(np.pi * iters / len(iters)))
    schedule = np.concatenate((warmup_schedule, schedule))
    assert len(schedule) == epochs * niter_per_ep
    return schedule


def ref_clip_gradients(model, clip):
    """dino utils.py ``clip_gradients``."""
    norms = []
    for name, p in model.named_parameters():
        if p.grad is not None:
            param_norm = p.grad.data.norm(2)
            norms.append(param_norm.item())
            clip_coef = clip / (param_norm + 1e-6)
            if clip_coef < 1:
                p.grad.data.mul_(clip_coef)
    return norms


def ref_cancel_gradients_last_layer(epoch, model, freeze_last_layer):
    """dino utils.py ``cancel_gradients_last_layer``."""
    if epoch >= freeze_last_layer:
        return
    for n, p in model.named_parameters():
        if "last_layer" in n:
            p.grad = None


def ref_get_params_groups(model):
    """dino utils.py ``get_params_groups``."""
    regularized, not_regularized = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if name.endswith(".bias") or len(param.shape) == 1:
            not_regularized.append(param)
        else:
            regularized.append(param)
    return [{"params": regularized}, {"params": not_regularized, "weight_decay": 0.0}]


class RefStudent(nn.Module):
    """The student as main_dino.py names it: ``backbone`` and ``head``."""

    def __init__(self, backbone, head):
        super().__init__()
        self.backbone, self.head = backbone, head


# ---------------------------------------------------------------- helpers
def tiny_dino(vit: bool = True, **kwargs) -> DINO:
    """DINO with a 2-block ViT at 32 px (or the test ResNet), a tiny head, 2 x 32 + 2 x 16 crops."""
    args = dict(backbone=copy.deepcopy(VIT) if vit else "test_resnet", out_dim=64, hidden_dim=32, bottleneck_dim=16,
                augment=DINOViews(global_size=32, local_size=16, num_local=2, blur_p=(0.0, 0.0), local_blur_p=0.0),
                knn=KNNConfig(k=5),
                optim=OptimConfig(name="adamw", lr=0.0005, weight_decay=0.04, weight_decay_end=0.4,
                                  exclude_bias_and_norm=True, warmup_epochs=1, final_lr=1e-6))
    args.update(kwargs)
    return DINO(**args)


def random_views(batch=8, sizes=(32, 32, 16, 16), seed=1):
    g = torch.Generator().manual_seed(seed)
    return [{"image": torch.randn(batch, 3, s, s, generator=g)} for s in sizes]


def trainer(tmp_path, **kwargs) -> pl.Trainer:
    args = dict(default_root_dir=str(tmp_path), logger=False, accelerator="cpu", devices=1, enable_progress_bar=False,
                enable_model_summary=False, limit_val_batches=1, num_sanity_val_steps=0, enable_checkpointing=False)
    args.update(kwargs)
    return pl.Trainer(**args)


# ---------------------------------------------------------------- (a) head, loss, centre, temperature
@pytest.mark.parametrize("use_bn, norm_last_layer, nlayers", [(False, True, 3), (True, False, 3), (False, False, 1)])
def test_head_is_the_official_dino_head(use_bn, norm_last_layer, nlayers):
    """Same seed, same weights (modules built in the official order); keys map 1:1; the same
    output and gradients; the gain frozen exactly when ``norm_last_layer``."""
    torch.manual_seed(3)
    ref = RefDINOHead(24, 40, use_bn, norm_last_layer, nlayers, hidden_dim=32, bottleneck_dim=16).train()
    torch.manual_seed(3)
    mine = DINOHead(24, 40, use_bn, norm_last_layer, nlayers, hidden_dim=32, bottleneck_dim=16).train()
    theirs, ours = ref.state_dict(), mine.state_dict()
    assert list(theirs) == list(ours)
    for key in theirs:
        assert torch.equal(theirs[key], ours[key]), key
    mine.load_state_dict(theirs)  # an official checkpoint's head keys load as they are
    assert [n for n, _ in ref.named_parameters()] == [n for n, _ in mine.named_parameters()]
    assert [p.requires_grad for p in ref.parameters()] == [p.requires_grad for p in mine.parameters()]
    x = torch.randn(10, 24)
    weights = torch.randn(10, 40)
    out_ref, out = ref(x), mine(x)
    assert torch.allclose(out, out_ref, atol=1e-6)
    (out_ref * weights).sum().backward()
    (out * weights).sum().backward()
    scale = max(float(p.grad.abs().max()) for p in ref.parameters() if p.grad is not None)
    for (name, p), q in zip(ref.named_parameters(), mine.parameters()):
        assert (p.grad is None) == (q.grad is None), name
        if p.grad is not None:  # float32 agreement (gradients through BatchNorm of a zero bias are ~1e-7 noise)
            assert torch.allclose(q.grad, p.grad, rtol=1e-4, atol=1e-5 * scale), name


@pytest.mark.parametrize("warmup_epochs", [0, 1, 3])
def test_loss_centre_and_teacher_temperature_are_dino_loss(warmup_epochs):
    """``dino_loss`` + ``dino_center`` + ``teacher_temperature`` over epochs = ``DINOLoss``:
    the value, the student's gradient, the centre after each call."""
    out_dim, batch, ncrops, epochs = 50, 6, 5, 6
    ref = RefDINOLoss(out_dim, ncrops, 0.04, 0.07, warmup_epochs, epochs)
    center = torch.zeros(1, out_dim)
    for epoch in range(epochs):
        assert teacher_temperature(epoch, 0.07, 0.04, warmup_epochs) == pytest.approx(
            float(ref.teacher_temp_schedule[epoch]), abs=1e-12)
        student = torch.randn(ncrops * batch, out_dim, requires_grad=True)
        teacher = torch.randn(2 * batch, out_dim) * 3
        expected = ref(student, teacher, epoch)
        (grad_ref,) = torch.autograd.grad(expected, student)
        loss, parts = dino_loss(student, teacher, center, 0.1, teacher_temperature(epoch, 0.07, 0.04, warmup_epochs),
                                2, parts=True)
        (grad,) = torch.autograd.grad(loss, student)
        center = dino_center(center, teacher, 0.9)
        assert torch.allclose(loss, expected, rtol=1e-6, atol=1e-7)
        assert torch.allclose(grad, grad_ref, rtol=1e-5, atol=1e-9)
        assert torch.allclose(center, ref.center, rtol=1e-6, atol=1e-8)
        assert parts["pairs"].numel() == 2 * (ncrops - 1)
        assert torch.allclose(parts["pairs"].mean(), expected.detach(), atol=1e-6)


def test_step_is_the_multicrop_wrapper_and_dino_loss():
    """``DINO.step`` = the teacher (``MultiCropWrapper``) on the 2 global crops, the student on
    every crop grouped by size, ``DINOLoss`` at the epoch's temperature, then the centre."""
    model = tiny_dino(backbone={**VIT, "kwargs": {**VIT["kwargs"], "drop_path_rate": 0.0}},
                      teacher_temp=0.07, warmup_teacher_temp_epochs=3).train()
    views = random_views(sizes=(32, 32, 16, 16, 16))
    ref_loss = RefDINOLoss(64, 5, 0.04, 0.07, 3, 10)
    student = RefMultiCropWrapper(model.backbone, model.projector)
    teacher = RefMultiCropWrapper(model.momentum_backbone, model.momentum_projector)
    images = [v["image"] for v in views]
    with torch.no_grad():
        teacher_output = teacher(images[:2])
    expected = ref_loss(student(images), teacher_output, 0)
    loss, stats = model.step(views)
    assert torch.allclose(loss, expected, rtol=1e-6)
    assert torch.allclose(model.center, ref_loss.center, atol=1e-7)
    assert stats["train/teacher_temp"] == pytest.approx(0.04)
    assert torch.allclose(stats["train/kl"] + stats["train/teacher_entropy"], expected.detach(), atol=1e-5)
    model.measuring = True  # an evaluator's step leaves the centre alone
    before = model.center.clone()
    model.step(views)
    assert torch.equal(model.center, before)


def test_teacher_is_the_students_copy_without_stochastic_depth_and_evaluated():
    model = tiny_dino()
    drops = [m.drop_prob for m in model.backbone.modules() if type(m).__name__ == "DropPath"]
    teacher_drops = [m.drop_prob for m in model.momentum_backbone.modules() if type(m).__name__ == "DropPath"]
    assert drops and max(drops) == pytest.approx(0.1) and teacher_drops == [0.0] * len(drops)
    assert model.evaluated_backbone() is model.momentum_backbone and not model.uses_negatives
    for a, b in zip(model.backbone.state_dict().values(), model.momentum_backbone.state_dict().values()):
        assert torch.equal(a, b)
    assert all(not p.requires_grad for p in [*model.momentum_backbone.parameters(),
                                             *model.momentum_projector.parameters()])
    assert "center" in model.state_dict()


# ---------------------------------------------------------------- (b) + (d) schedules and EMA in a Trainer
class Recorder(pl.Callback):
    """Per optimiser step: each group's lr and weight decay as the optimiser sees them, the
    student and teacher before and after, and the last layer."""

    def __init__(self):
        self.steps = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.before = {"teacher": [p.detach().clone() for p in [*module.momentum_backbone.parameters(),
                                                                 *module.momentum_projector.parameters()]],
                       "last": module.projector.last_layer.weight_v.detach().clone()}

    def on_before_optimizer_step(self, trainer, module, optimizer):
        self.groups = [{"lr": g["lr"], "weight_decay": g["weight_decay"], "params": list(g["params"])}
                       for g in optimizer.param_groups]

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.steps.append({**self.before, "groups": self.groups,
                           "student": [p.detach().clone() for p in [*module.backbone.parameters(),
                                                                     *module.projector.parameters()]],
                           "teacher_after": [p.detach().clone() for p in [*module.momentum_backbone.parameters(),
                                                                           *module.momentum_projector.parameters()]],
                           "last_after": module.projector.last_layer.weight_v.detach().clone()})


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """3 epochs of 4 steps (64 images, batch 16), 1 warm-up epoch, last layer frozen 1 epoch."""
    pl.seed_everything(0)
    model = tiny_dino(momentum=0.9, norm_last_layer=False)
    recorder = Recorder()
    trainer(tmp_path_factory.mktemp("sched"), max_epochs=3, callbacks=[recorder], limit_val_batches=0).fit(
        model, tiny_data())
    return model, recorder.steps


def test_lr_and_weight_decay_follow_cosine_scheduler(recorded):
    """``lr_schedule`` (lr x B/256, min_lr, 1 warm-up epoch) on every group and
    ``wd_schedule`` on the regularised group only, the groups being ``get_params_groups``."""
    model, steps = recorded
    lr = ref_cosine_scheduler(0.0005 * 16 / 256, 1e-6, 3, 4, warmup_epochs=1)
    wd = ref_cosine_scheduler(0.04, 0.4, 3, 4)
    official = ref_get_params_groups(RefStudent(model.backbone, model.projector))
    assert len(steps) == 12
    for it, step in enumerate(steps):
        groups = step["groups"]
        assert len(groups) == 2
        assert {id(p) for p in groups[0]["params"]} == {id(p) for p in official[0]["params"]}
        assert {id(p) for p in groups[1]["params"]} == {id(p) for p in official[1]["params"]}
        for group in groups:
            assert group["lr"] == pytest.approx(lr[it], rel=1e-9, abs=1e-15), it
        assert groups[0]["weight_decay"] == pytest.approx(wd[it], rel=1e-9), it
        assert groups[1]["weight_decay"] == 0.0


def test_teacher_is_the_official_ema_and_the_last_layer_waits_an_epoch(recorded):
    """After step ``it``: teacher = m_it teacher + (1 - m_it) student over backbone + head (the
    frozen gain included), m from ``cosine_scheduler(0.9, 1, ...)``; the last layer does not
    move during epoch 0 and moves after."""
    _, steps = recorded
    momentum = ref_cosine_scheduler(0.9, 1, 3, 4)
    for it, step in enumerate(steps):
        m = momentum[it]
        for before, student, after in zip(step["teacher"], step["student"], step["teacher_after"]):
            expected = before.clone().mul_(m).add_((1 - m) * student)
            assert torch.allclose(after, expected, rtol=1e-6, atol=1e-7), it
        moved = not torch.equal(step["last"], step["last_after"])
        assert moved == (it >= 4), it


# ---------------------------------------------------------------- (c) clipping and freezing
@pytest.mark.parametrize("steps_done, freeze, clip", [(0, 1.0, True), (4, 1.0, True), (0, 0.0, True), (0, 1.0, False)])
def test_clipping_and_last_layer_freeze_are_the_official_functions(steps_done, freeze, clip, monkeypatch):
    """``on_before_optimizer_step`` = ``clip_gradients`` (when ``clip_grad``) then
    ``cancel_gradients_last_layer`` of the step's epoch (4 steps an epoch), on the student."""
    model = tiny_dino(freeze_last_layer=freeze, norm_last_layer=False)
    model.schedule = Schedule(total_steps=12, steps_per_epoch=4)
    monkeypatch.setattr(DINO, "global_step", property(lambda self: steps_done))
    loss, _ = model.step(random_views())
    loss.backward()
    student = [*model.backbone.parameters(), *model.projector.parameters()]
    before = [float(p.grad.norm()) if p.grad is not None else None for p in student]
    norms = sorted(n for n in before if n is not None)
    model.clip_grad = norms[len(norms) // 2] if clip else 0.0  # about half the gradients clipped
    reference = RefStudent(copy.deepcopy(model.backbone), copy.deepcopy(model.projector))
    for p, q in zip(student, reference.parameters()):
        q.grad = None if p.grad is None else p.grad.clone()
    if clip:
        ref_clip_gradients(reference, model.clip_grad)
    ref_cancel_gradients_last_layer(steps_done // 4, reference, freeze)
    model.on_before_optimizer_step(None)
    for (name, q), p in zip(reference.named_parameters(), student):
        assert (p.grad is None) == (q.grad is None), name
        if p.grad is not None:
            assert torch.allclose(p.grad, q.grad, rtol=1e-6, atol=0), name
    assert any(p.grad is None for p in student) == (steps_done < 4 * freeze)
    clipped = [float(p.grad.norm()) < norm * (1 - 1e-5) for p, norm in zip(student, before) if p.grad is not None]
    assert any(clipped) == clip and not all(clipped)


# ---------------------------------------------------------------- (e) two gloo ranks = one process
def _ddp_step(rank, world_size, use_bn):
    from sslkit.nn.syncbn import convert_global_batchnorm

    torch.manual_seed(0)
    model = convert_global_batchnorm(tiny_dino(backbone={**VIT, "kwargs": {**VIT["kwargs"], "drop_path_rate": 0.0}},
                                               use_bn_in_head=use_bn, norm_last_layer=False)).train()
    batch = 8
    per = batch // world_size
    views = [{"image": v["image"][rank * per:(rank + 1) * per]} for v in random_views(batch)]
    loss, _ = model.step(views)
    loss.backward()
    grads = {}
    for name, p in model.named_parameters():
        if p.grad is not None:
            if world_size > 1:  # what DDP does: average the gradients over ranks
                dist.all_reduce(p.grad)
                p.grad /= world_size
            grads[name] = p.grad.clone()
    total = loss.detach().clone()
    if world_size > 1:
        dist.all_reduce(total)
        total /= world_size
    return float(total), model.center.clone(), grads


def _ddp_both(rank, world_size):
    return {use_bn: _ddp_step(rank, world_size, use_bn) for use_bn in (False, True)}


def test_two_ranks_equal_one_process_in_loss_centre_and_gradients():
    from ddp import run_distributed

    ranks = run_distributed(_ddp_both, 2)
    for use_bn in (False, True):
        single_loss, single_center, single_grads = _ddp_step(0, 1, use_bn)
        assert single_grads and "projector.last_layer.weight_g" in single_grads
        for result in ranks:
            loss, center, grads = result[use_bn]
            assert loss == pytest.approx(single_loss, rel=1e-5)
            assert torch.allclose(center, single_center, atol=1e-6)
            assert grads.keys() == single_grads.keys()
            for name, grad in single_grads.items():
                assert torch.allclose(grads[name], grad, rtol=1e-3, atol=1e-6 + 1e-4 * float(grad.abs().max())), name


# ---------------------------------------------------------------- (f) resume
class StopAt(pl.Callback):
    def __init__(self, step):
        self.step = step

    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step >= self.step:
            trainer.should_stop = True


def _fit(tmp_path, max_steps, ckpt_path=None, every=None):
    pl.seed_everything(7)
    model = tiny_dino(warmup_teacher_temp_epochs=2, teacher_temp=0.07, norm_last_layer=False)
    callbacks = [ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=every, save_top_k=-1), StopAt(every)] \
        if every else []
    fitter = trainer(tmp_path, max_steps=max_steps, callbacks=callbacks, enable_checkpointing=bool(every))
    fitter.fit(model, tiny_data(), ckpt_path=ckpt_path)
    return model, fitter


def test_stop_and_resume_equals_an_uninterrupted_run(tmp_path):
    """Interrupted in epoch 1 (steps 6 of 12) and resumed: centre, teacher, student, optimiser
    and schedule equal the uninterrupted run's; the checkpoint loads back with its centre."""
    whole, whole_trainer = _fit(tmp_path / "whole", 12)
    _fit(tmp_path / "first", 12, every=6)
    ckpt = next((tmp_path / "first").glob("*step=6.ckpt"))
    restored = DINO.load_from_checkpoint(ckpt)
    assert restored.center.abs().sum() > 0 and restored.evaluated_backbone() is restored.momentum_backbone
    resumed, resumed_trainer = _fit(tmp_path / "second", 12, ckpt_path=str(ckpt))
    a, b = whole.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys() and "center" in a
    for key in a:
        assert torch.equal(a[key], b[key]), key
    opt_a = whole_trainer.optimizers[0].state_dict()["state"]
    opt_b = resumed_trainer.optimizers[0].state_dict()["state"]
    assert opt_a.keys() == opt_b.keys()
    for index in opt_a:
        for name, value in opt_a[index].items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(opt_b[index][name])), (index, name)
    groups_a = whole_trainer.optimizers[0].param_groups
    groups_b = resumed_trainer.optimizers[0].param_groups
    assert [g["weight_decay"] for g in groups_a] == [g["weight_decay"] for g in groups_b]
    assert whole_trainer.lr_scheduler_configs[0].scheduler.state_dict() == \
        resumed_trainer.lr_scheduler_configs[0].scheduler.state_dict()


# ---------------------------------------------------------------- (g) the CLI
def metrics(run_dir: Path) -> dict[str, list[float]]:
    values: dict[str, list[float]] = {}
    with open(run_dir / "metrics.csv") as f:
        for row in csv.DictReader(f):
            for key, value in row.items():
                if value not in ("", None):
                    values.setdefault(key, []).append(float(value))
    return values


def test_fit_the_demo_overlay_from_the_cli(tmp_path, capfd, monkeypatch):
    code, out, err = invoke(["fit", "-c", CONFIGS / "demo.yaml", "-c", CONFIGS / "demo_dino.yaml",
                             "--trainer.max_epochs=1", "--trainer.limit_train_batches=2",
                             "--trainer.log_every_n_steps=1", "--trainer.accelerator=cpu", "--trainer.enable_progress_bar=false",
                             "--data.init_args.num_train=128", "--data.init_args.num_val=64",
                             "--data.init_args.batch_size=32", f"--trainer.logger.init_args.save_dir={tmp_path}",
                             "--trainer.logger.init_args.name=demo_dino"], tmp_path, capfd, monkeypatch)
    assert code == 0, err[-3000:]
    logged = metrics(next((tmp_path / "demo_dino").glob("version_*")))
    assert len(logged["train/loss"]) == 2 and all(math.isfinite(v) for v in logged["train/loss"])
    assert 0.0 <= logged["val/knn_top1"][-1] <= 1.0
    assert {"train/teacher_entropy", "train/center_norm", "train/embedding_spread"} <= logged.keys()


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """The suite's real-photo folder (tests/photos.py) with masks from ``sslkit masks``."""
    from photos import photo_folder
    from test_real_photos import sslkit

    root = tmp_path_factory.mktemp("dino_photos")
    photo_folder(root / "data")
    for split in ("train", "val"):
        code, out = sslkit(["masks", "--images", root / "data" / split, "--out", root / "masks" / split,
                            "--model", "border_contrast", "--skip_unreadable"], root)
        assert code == 0, out[-3000:]
    return root


TINY_224 = ("--model.init_args.backbone={name: vit_tiny_patch16_224, kwargs: {depth: 1, embed_dim: 32, num_heads: 2, "
            "drop_path_rate: 0.1}}")
SMALL_HEAD = ["--model.init_args.out_dim=256", "--model.init_args.hidden_dim=64", "--model.init_args.bottleneck_dim=32"]
PHOTO_FITS = {"dino_imagenet": [TINY_224], "dino_imagenet+dino_bg": [TINY_224],
              "dino_resnet50_imagenet": ["--model.init_args.backbone=test_resnet",
                                         "--model.init_args.backbone.kwargs={}"]}


@pytest.mark.parametrize("name", list(PHOTO_FITS))
def test_fit_the_imagenet_configs_on_real_photos(photos, name):
    """The ImageNet configs (224 px global and 96 px local crops from whole photographs, the
    ViT's position embedding interpolated for the local crops) for two steps, and the
    background overlay with masks."""
    from test_real_photos import CPU, TWO_STEPS, sslkit

    files = [a for c in name.split("+") for a in ("-c", CONFIGS / f"{c}.yaml")]
    data = [f"--data.init_args.root={photos / 'data'}", f"--data.init_args.mask_root={photos / 'masks'}",
            "--data.init_args.batch_size=4", "--data.init_args.num_workers=0", "--data.init_args.bad_images=skip"]
    code, out = sslkit(["fit", *files, *CPU, *TWO_STEPS, *data, *PHOTO_FITS[name], *SMALL_HEAD,
                        "--model.init_args.augment.init_args.num_local=2", "--trainer.check_val_every_n_epoch=1",
                        "--trainer.limit_val_batches=1", f"--trainer.logger.init_args.name={name}"], photos)
    assert code == 0, out[-3000:]
    logged = metrics(next((photos / "runs" / name).glob("version_*")))
    assert len(logged["train/loss"]) == 2 and all(math.isfinite(v) for v in logged["train/loss"])
    assert 0.0 <= logged["val/knn_top1"][-1] <= 1.0


# ---------------------------------------------------------------- (h) multi-crop through a ViT and a ResNet
@pytest.mark.parametrize("vit", [True, False], ids=["vit", "resnet"])
def test_local_crops_smaller_than_the_backbone_go_through(vit):
    """Local crops of 16 px through a ViT built for 32 px (position embedding interpolated) and
    through a ResNet; the loss trains every student parameter and the teacher sees only the
    global crops."""
    model = tiny_dino(vit=vit, norm_last_layer=False, use_bn_in_head=not vit).train()
    seen = []
    model.momentum_backbone.register_forward_hook(lambda m, i, o: seen.append(tuple(i[0].shape)))
    loss, stats = model.step(random_views(sizes=(32, 32, 16, 16, 16, 16)))
    loss.backward()
    assert seen == [(16, 3, 32, 32)]
    assert all(p.grad is not None and torch.isfinite(p.grad).all()
               for p in [*model.backbone.parameters(), *model.projector.parameters()] if p.requires_grad)
    assert all(torch.isfinite(v).all() for v in stats.values())


# ---------------------------------------------------------------- the views
def test_views_are_data_augmentation_dino():
    """``DINOViews()`` = ``DataAugmentationDINO((0.4, 1), (0.05, 0.4), 8)``: 2 global + 8 local
    crops, bicubic, flip, jitter (0.4, 0.4, 0.2, 0.1) p 0.8, grey 0.2; blur 1.0 / 0.1 / 0.5,
    solarise 0 / 0.2 / 0."""
    from sslkit.augmentations import (ColorJitter, RandomGaussianBlur, RandomGrayscale, RandomHorizontalFlip,
                                      RandomResizedCrop, RandomSolarize)
    from sslkit.augmentations.views import recipe_of

    views = DINOViews()
    assert views.num_views == 10 and views.num_global == 2
    for index, (size, scale, blur, solarize) in enumerate([(224, (0.4, 1.0), 1.0, 0.0), (224, (0.4, 1.0), 0.1, 0.2)]
                                                          + [(96, (0.05, 0.4), 0.5, 0.0)] * 8):
        stages = recipe_of(views, index).stages
        kinds = [type(s) for s in stages]
        crop = stages[0]
        assert isinstance(crop, RandomResizedCrop) and crop.size == size and tuple(crop.scale) == scale
        assert crop.interpolation == "bicubic"
        assert kinds[1:4] == [RandomHorizontalFlip, ColorJitter, RandomGrayscale]
        blurs = [s for s in stages if isinstance(s, RandomGaussianBlur)]
        assert blurs[0].p == blur and blurs[0].border == "replicate"
        assert sum(s.p for s in stages if isinstance(s, RandomSolarize)) == solarize
    image = torch.randint(0, 256, (3, 3, 40, 40), dtype=torch.uint8)
    out = DINOViews(global_size=32, local_size=16, num_local=3)({"image": image})
    assert [tuple(v["image"].shape) for v in out] == [(3, 3, 32, 32)] * 2 + [(3, 3, 16, 16)] * 3


def test_background_stages_and_swap_work_through_the_crops():
    from sslkit.augmentations import BackgroundRandom, BackgroundRemove, BackgroundSwap

    image = torch.randint(0, 256, (4, 3, 40, 40), dtype=torch.uint8)
    mask = torch.zeros(4, 1, 40, 40, dtype=torch.bool)
    mask[..., 10:30, 10:30] = True
    views = DINOViews(global_size=32, local_size=16, num_local=2,
                      background=[BackgroundRemove(p=0.5), BackgroundRandom(p=0.5)],
                      background_swap=BackgroundSwap(p=0.5, hard_negative=False))
    out = views({"image": image, "mask": mask})
    assert [v["image"].shape[-1] for v in out] == [32, 32, 16, 16]
    with pytest.raises(ValueError, match="hard_negative: false"):
        tiny_dino(augment=DINOViews(global_size=32, local_size=16, num_local=2,
                                    background_swap=BackgroundSwap(p=0.5, hard_negative=True)))
