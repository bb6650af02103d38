"""Checkpoint import: every layout rebuilt here the way its project's saving code writes it
(top-level keys, prefixes, head keys, pickled extras such as argparse.Namespace), with every
momentum/teacher/EMA tensor shifted so that taking the wrong network fails. Each import is
compared with the reference network on parameters, buffers and a forward pass.

Sources (read for these fixtures): MoCo ``main_moco.py`` / ``moco/builder.py``; MoCo v3
``main_moco.py`` / ``moco/builder.py``; SwAV ``main_swav.py`` / ``src/resnet50.py`` /
``hubconf.py``; DINO ``main_dino.py`` / ``utils.py``; timm ``timm/utils/checkpoint_saver.py``;
lucidrains ``byol_pytorch/byol_pytorch.py`` and ``examples/lightning/train.py``; sthalles
PyTorch-BYOL ``trainer.py`` / ``models/resnet_base_network.py``; yaox12 BYOL-PyTorch
``trainer/byol_trainer.py`` / ``model/basic_modules.py``; solo-learn ``solo/methods/base.py``
and its Lightning checkpointer (``encoder.`` before Dec 2021); lightly's tutorial,
``examples/pytorch_lightning`` and ``benchmarks/imagenet/resnet50``; VISSL's checkpoint writer.
"""
import argparse
import copy
import os
import pickle
import subprocess
import sys

import pytest
import timm
import torch
import torchvision
from torch import nn

from conftest import REPO
from sslkit.checkpoints import CheckpointError, export_backbone, load_backbone, load_backbone_report

SHIFT = 0.5


def random_resnet18(small_stem_padding=None, seed=0) -> nn.Module:
    torch.manual_seed(seed)
    model = torchvision.models.resnet18()
    if small_stem_padding is not None:  # solo-learn's / MoCo demo's CIFAR stem
        model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=small_stem_padding, bias=False)
        model.maxpool = nn.Identity()
    for m in model.modules():  # non-trivial BatchNorm statistics: buffers must load too
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def shifted(module_or_state):
    """The momentum/teacher/EMA copy: every float tensor moved, so it gives other features."""
    state = module_or_state.state_dict() if isinstance(module_or_state, nn.Module) else module_or_state
    return {k: v + SHIFT if v.is_floating_point() else v.clone() for k, v in state.items()}


def body(state):
    return {k: v for k, v in state.items() if not k.startswith("fc.")}


def prefixed(prefix, state):
    return {f"{prefix}{k}": v for k, v in state.items()}


def as_sequential(model: nn.Module) -> nn.Sequential:
    return nn.Sequential(*list(model.children())[:-1])


def mlp(i, h, o):
    return nn.Sequential(nn.Linear(i, h), nn.BatchNorm1d(h), nn.ReLU(), nn.Linear(h, o))


def optimizer_state(module: nn.Module) -> dict:
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1, momentum=0.9)
    for p in module.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    return optimizer.state_dict()


def lightning_checkpoint(state, **extra):
    """What ``Trainer.save_checkpoint`` writes around a module's state_dict."""
    return {"epoch": 9, "global_step": 100, "pytorch-lightning_version": "2.6.0", "state_dict": state,
            "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"total": {"ready": 10}}}},
            "callbacks": {"ModelCheckpoint{'monitor': None}": {"best_model_path": "", "dirpath": "/tmp"}},
            "optimizer_states": [{"state": {}, "param_groups": [{"lr": 0.1, "params": [0]}]}], "lr_schedulers": [],
            **extra}


@pytest.fixture(scope="module")
def net():
    return random_resnet18()


# ------------------------------------------------------------------------- layouts
def moco(model):
    q = model.state_dict()
    head = {"fc.0.weight": torch.randn(512, 512), "fc.0.bias": torch.randn(512), "fc.2.weight": torch.randn(128, 512),
            "fc.2.bias": torch.randn(128)}
    state = {"module.queue": torch.randn(128, 64), "module.queue_ptr": torch.zeros(1, dtype=torch.long),
             **prefixed("module.encoder_q.", {**body(q), **head}),
             **prefixed("module.encoder_k.", shifted({**body(q), **head}))}
    return {"epoch": 800, "arch": "resnet18", "state_dict": state, "optimizer": {"state": {}, "param_groups": []}}


def mocov3(model):
    q = body(model.state_dict())
    fc = {"fc.0.weight": torch.randn(64, 512), "fc.1.weight": torch.ones(64), "fc.1.bias": torch.zeros(64),
          "fc.1.running_mean": torch.zeros(64), "fc.1.running_var": torch.ones(64),
          "fc.1.num_batches_tracked": torch.tensor(3), "fc.3.weight": torch.randn(32, 64),
          "fc.4.running_mean": torch.zeros(32), "fc.4.running_var": torch.ones(32)}
    state = {**prefixed("module.base_encoder.", {**q, **fc}), **prefixed("module.momentum_encoder.", shifted({**q, **fc})),
             "module.predictor.0.weight": torch.randn(64, 32), "module.predictor.3.weight": torch.randn(32, 64)}
    return {"epoch": 300, "arch": "resnet18", "state_dict": state, "optimizer": {}, "scaler": {"scale": 65536.0}}


def swav_release(model):
    head = mlp(512, 64, 16).state_dict()
    return {**prefixed("module.", body(model.state_dict())), **prefixed("module.projection_head.", head),
            "module.prototypes.weight": torch.randn(30, 16)}


def swav_training(model):
    return {"epoch": 800, "state_dict": swav_release(model), "optimizer": {}, "amp": {"loss_scaler0": {"loss_scale": 1.0}}}


def dino_full(model):
    head = {"mlp.0.weight": torch.randn(64, 512), "mlp.0.bias": torch.randn(64), "mlp.2.weight": torch.randn(64, 64),
            "mlp.2.bias": torch.randn(64), "mlp.4.weight": torch.randn(16, 64), "mlp.4.bias": torch.randn(16),
            "last_layer.weight_g": torch.ones(100, 1), "last_layer.weight_v": torch.randn(100, 16)}
    student = {**prefixed("module.backbone.", body(model.state_dict())), **prefixed("module.head.", head)}
    teacher = shifted(student)  # ResNet teachers are wrapped in DDP too (they have BatchNorm)
    args = argparse.Namespace(arch="resnet18", patch_size=16, out_dim=100, lr=0.03, epochs=100, output_dir="/tmp/dino",
                              use_fp16=True, momentum_teacher=0.996, global_crops_scale=(0.4, 1.0))
    return {"student": student, "teacher": teacher, "optimizer": {"state": {}, "param_groups": []}, "epoch": 100,
            "args": args, "dino_loss": {"center": torch.randn(1, 100)},
            "fp16_scaler": {"scale": 1024.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000,
                            "_growth_tracker": 11}}


def timm_training(model):
    args = argparse.Namespace(model="resnet18", lr=0.1, epochs=100, batch_size=256, device="cuda:0", world_size=1,
                              rank=0, distributed=False, model_ema=True, model_ema_decay=0.9998)
    state = model.state_dict()
    return {"epoch": 99, "arch": "resnet18", "optimizer": optimizer_state(nn.Linear(2, 2)), "version": 2, "args": args,
            "amp_scaler": {"scale": 65536.0, "growth_factor": 2.0}, "state_dict": state, "state_dict_ema": shifted(state),
            "metric": 71.2}


class NetWrapper(nn.Module):  # byol_pytorch.NetWrapper: the backbone registered as .net, and a projector
    def __init__(self, net):
        super().__init__()
        self.net = net
        self.projector = mlp(512, 64, 32)


class LucidrainsBYOL(nn.Module):  # byol_pytorch.BYOL after its constructor's dummy forward
    def __init__(self, net):
        super().__init__()
        self.net = net
        self.online_encoder = NetWrapper(net)
        self.online_predictor = mlp(32, 64, 32)
        self.target_encoder = copy.deepcopy(self.online_encoder)
        self.target_encoder.load_state_dict(shifted(self.target_encoder))


def lucidrains_lightning(model):
    learner = nn.Module()
    learner.learner = LucidrainsBYOL(copy.deepcopy(model))  # examples/lightning/train.py: self.learner = BYOL(...)
    return lightning_checkpoint(learner.state_dict())


def lucidrains_learner(model):
    return LucidrainsBYOL(copy.deepcopy(model)).state_dict()


class SthallesNet(nn.Module):  # models/resnet_base_network.py ResNet18 (the attribute really is "projetion")
    def __init__(self, model):
        super().__init__()
        self.encoder = as_sequential(model)
        self.projetion = nn.Module()
        self.projetion.net = mlp(512, 64, 16)


def sthalles(model):
    online = SthallesNet(copy.deepcopy(model))
    return {"online_network_state_dict": online.state_dict(), "target_network_state_dict": shifted(online),
            "optimizer_state_dict": optimizer_state(nn.Linear(2, 2))}


class Yaox12MLP(nn.Module):  # model/basic_modules.py MLP with named layers
    def __init__(self, i, h, o):
        super().__init__()
        self.l1, self.bn1, self.relu1, self.l2 = nn.Linear(i, h), nn.BatchNorm1d(h), nn.ReLU(), nn.Linear(h, o)


def yaox12(model):
    online = nn.Module()
    online.encoder, online.projetion = as_sequential(copy.deepcopy(model)), Yaox12MLP(512, 64, 16)
    byol = nn.Module()
    byol.online_network, byol.target_network = online, copy.deepcopy(online)
    byol.target_network.load_state_dict(shifted(byol.target_network))
    byol.predictor = nn.Module()
    byol.predictor.predictor = Yaox12MLP(16, 64, 16)
    return {"config": {"model": {"backbone": {"type": "resnet18"}}}, "epoch": 300, "steps": 5000,
            "model": prefixed("module.", byol.state_dict()), "optimizer": {}, "amp": {"loss_scaler0": {}}}


def solo(model, name="backbone"):
    backbone = body(model.state_dict())  # solo-learn sets fc = nn.Identity()
    state = {**prefixed(f"{name}.", backbone), "classifier.weight": torch.randn(10, 512), "classifier.bias": torch.zeros(10),
             **prefixed(f"momentum_{name}.", shifted(backbone)), **prefixed("projector.", mlp(512, 64, 16).state_dict()),
             **prefixed("momentum_projector.", mlp(512, 64, 16).state_dict())}
    return lightning_checkpoint(state)  # solo-learn never calls save_hyperparameters


def lightly_tutorial(model, extra_conv=False):
    sequential = as_sequential(copy.deepcopy(model))
    if extra_conv:  # the April-November 2021 tutorial appended Conv2d(512, 32, 1) to the Sequential
        sequential.append(nn.Conv2d(512, 32, 1))
    return {"resnet18_parameters": sequential.state_dict()}


def lightly_example(model):
    backbone = as_sequential(copy.deepcopy(model))
    state = {**prefixed("backbone.", backbone.state_dict()), **prefixed("backbone_momentum.", shifted(backbone)),
             "projection_head.layers.0.weight": torch.randn(64, 512)}
    return lightning_checkpoint(state)


def lightly_benchmark(model, method="byol"):
    backbone = body(model.state_dict())  # benchmarks/imagenet/resnet50: resnet.fc = Identity(); self.backbone = resnet
    head = {"online_classifier.classification_head.weight": torch.randn(10, 512),
            "online_classifier.classification_head.bias": torch.zeros(10),
            "projection_head.layers.0.weight": torch.randn(64, 512)}
    if method == "dino":  # the teacher is `backbone`, the student `student_backbone`
        state = {**prefixed("backbone.", shifted(backbone)), **prefixed("student_backbone.", backbone), **head}
    else:
        state = {**prefixed("backbone.", backbone), **prefixed("teacher_backbone.", shifted(backbone)), **head}
    return lightning_checkpoint(state, hparams_name="kwargs",
                                hyper_parameters={"batch_size_per_device": 128, "num_classes": 10})


def vissl(model):
    trunk = prefixed("_feature_blocks.", body(model.state_dict()))
    return {"phase_idx": 199, "iteration": 5000, "loss": {}, "iteration_num": 5000, "train_phase_idx": 199,
            "classy_state_dict": {"train": True, "base_model": {"model": {"trunk": trunk, "heads": {
                "0.clf.0.weight": torch.randn(10, 512)}}, "meta": {"trunk": {}, "heads": []}},
                "meters": {}, "optimizer": {}, "phase_idx": 199, "train_phase_idx": 199, "num_updates": 5000},
            "type": "consolidated"}


# (layout, load kwargs, format, branch taken, whether the momentum copy is what loads)
CASES = {
    "moco_v2_800ep_pretrain.pth.tar": (moco, {}, "moco", "online", False),
    "moco key encoder": (moco, {"branch": "key"}, "moco", "momentum", True),
    "r-50-1000ep.pth.tar (MoCo v3)": (mocov3, {}, "mocov3", "online", False),
    "swav_800ep_pretrain.pth.tar": (swav_release, {}, "swav", "online", False),
    "swav checkpoint.pth.tar": (swav_training, {}, "swav", "online", False),
    "dino full checkpoint (teacher)": (dino_full, {}, "dino", "momentum", True),
    "dino full checkpoint, student": (dino_full, {"branch": "student"}, "dino", "online", False),
    "timm model_best.pth.tar (EMA)": (timm_training, {}, "timm", "momentum", True),
    "timm model_best.pth.tar, model": (timm_training, {"branch": "model"}, "timm", "online", False),
    "lucidrains Lightning example": (lucidrains_lightning, {}, "byol-lucidrains", "online", False),
    "lucidrains learner, target": (lucidrains_learner, {"branch": "target"}, "byol-lucidrains", "momentum", True),
    "sthalles model.pth": (sthalles, {}, "byol-sthalles", "online", False),
    "sthalles target": (sthalles, {"branch": "target"}, "byol-sthalles", "momentum", True),
    "yaox12 resnet18_300.pth.tar": (yaox12, {}, "byol-yaox12", "online", False),
    "yaox12 target": (yaox12, {"branch": "momentum"}, "byol-yaox12", "momentum", True),
    "solo-learn": (solo, {}, "solo-learn", "online", False),
    "solo-learn momentum": (solo, {"branch": "momentum"}, "solo-learn", "momentum", True),
    "solo-learn before Dec 2021 (encoder.)": (lambda m: solo(m, "encoder"), {}, "solo-learn", "online", False),
    "lightly tutorial": (lightly_tutorial, {}, "lightly", "online", False),
    "lightly tutorial 2021 (extra conv)": (lambda m: lightly_tutorial(m, True), {}, "lightly", "online", False),
    "lightly example": (lightly_example, {}, "lightly", "online", False),
    "lightly example momentum": (lightly_example, {"branch": "momentum"}, "lightly", "momentum", True),
    "lightly benchmark BYOL": (lightly_benchmark, {}, "lightly-benchmark", "online", False),
    "lightly benchmark DINO (teacher)": (lambda m: lightly_benchmark(m, "dino"), {}, "lightly-benchmark", "momentum", True),
    "vissl model_final_checkpoint_phase199.torch": (vissl, {}, "vissl", "online", False),
    "vissl converted": (lambda m: body(m.state_dict()), {}, "plain", "online", False),
    "dino_resnet18_pretrain.pth (backbone only)": (lambda m: body(m.state_dict()), {}, "plain", "online", False),
    "torchvision resnet18-f37072fd.pth": (lambda m: m.state_dict(), {}, "plain", "online", False),
}


def reference_network(model, momentum):
    reference = copy.deepcopy(model)
    if momentum:
        reference.load_state_dict(shifted(reference))
    reference.fc = nn.Identity()
    return reference.eval()


def assert_same_network(backbone, reference):
    expected = reference.state_dict()
    got = backbone.model.state_dict()
    assert got.keys() == expected.keys()
    for key in expected:
        assert torch.equal(got[key], expected[key]), key
    images = torch.randn(2, 3, 48, 48, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.equal(backbone(images), reference(images))


@pytest.mark.parametrize("case", list(CASES))
def test_every_layout_imports_the_right_network_bit_for_bit(tmp_path, net, case):
    build, kwargs, fmt, branch, momentum = CASES[case]
    path = tmp_path / "checkpoint.pth"
    torch.save(build(net), path)
    backbone, report = load_backbone_report(path, **kwargs)
    assert (report.format, report.branch) == (fmt, branch)
    recorded = {"moco": "torchvision.resnet18", "mocov3": "torchvision.resnet18", "dino": "torchvision.resnet18",
                "timm": "resnet18"}  # timm's args.model is a timm name
    assert report.arch == recorded.get(fmt, "torchvision.resnet18") and report.arch_inferred == (fmt not in recorded)
    assert_same_network(backbone, reference_network(net, momentum))
    if len(report.branches) > 1:  # the report says which network it took and how to take the other
        assert report.branch_word in report.summary() and "branch='" in report.summary()


def test_legacy_pickle_format_of_the_2020_moco_release(tmp_path, net):
    path = tmp_path / "moco_v2_200ep_pretrain.pth.tar"
    torch.save(moco(net), path, _use_new_zipfile_serialization=False)
    assert_same_network(load_backbone(path), reference_network(net, False))


def test_timm_bin_and_safetensors(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(1)
    model = timm.create_model("resnet18", num_classes=10).eval()
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    save_file(model.state_dict(), str(tmp_path / "model.safetensors"))
    images = torch.randn(2, 3, 64, 64)
    expected = model.forward_head(model.forward_features(images), pre_logits=True)
    for name in ("pytorch_model.bin", "model.safetensors"):
        backbone, report = load_backbone_report(tmp_path / name, arch="resnet18")
        assert sorted(report.dropped) == ["fc.bias", "fc.weight"]
        with torch.no_grad():
            assert torch.equal(backbone(images), expected)


def test_timm_training_checkpoint_loads_into_timm_architecture(tmp_path):
    torch.manual_seed(2)
    model = timm.create_model("resnet18", num_classes=10).eval()
    checkpoint = timm_training(model)
    torch.save(checkpoint, tmp_path / "last.pth.tar")
    backbone, report = load_backbone_report(tmp_path / "last.pth.tar")
    assert report.arch == "resnet18" and report.branch == "momentum"  # args.model, and timm's own default: EMA
    model.load_state_dict(checkpoint["state_dict_ema"])
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(backbone(images), model.forward_head(model.forward_features(images), pre_logits=True))


def test_solo_learn_cifar_stem_is_built_with_padding_2(tmp_path):
    """solo/methods/base.py: Conv2d(3, 64, kernel_size=3, stride=1, padding=2, bias=False), no
    max-pool. Same weights as sslkit's padding-1 stem, other features: loading must build padding 2."""
    solo_net = random_resnet18(small_stem_padding=2)
    torch.save(solo(solo_net), tmp_path / "byol-cifar10-ep=999.ckpt")
    backbone, report = load_backbone_report(tmp_path / "byol-cifar10-ep=999.ckpt")
    assert report.small_stem_padding == 2 and "padding 2" in report.summary()
    assert_same_network(backbone, reference_network(solo_net, False))
    other = random_resnet18(small_stem_padding=1)
    other.load_state_dict(solo_net.state_dict())
    with torch.no_grad():
        x = torch.randn(2, 3, 32, 32)
        assert not torch.allclose(reference_network(other, False)(x), backbone(x))  # the mismatch that must not happen


def test_a_small_stem_whose_padding_is_not_recorded_must_be_named(tmp_path):
    small = random_resnet18(small_stem_padding=1)
    torch.save(body(small.state_dict()), tmp_path / "cifar.pth")
    with pytest.raises(CheckpointError, match=r"does not record its padding.*small_stem_padding=1 .* or 2"):
        load_backbone(tmp_path / "cifar.pth")
    backbone = load_backbone(tmp_path / "cifar.pth", small_stem_padding=1)
    assert_same_network(backbone, reference_network(small, False))
    with pytest.raises(CheckpointError, match="small-image"):  # stock torchvision/timm models have no such stem
        export_backbone(tmp_path / "cifar.pth", tmp_path / "out.pth")


def test_asking_for_a_network_the_file_does_not_hold(tmp_path, net):
    torch.save(swav_release(net), tmp_path / "swav.pth")
    with pytest.raises(CheckpointError, match="holds no momentum network"):
        load_backbone(tmp_path / "swav.pth", branch="teacher")
    with pytest.raises(ValueError, match="unknown branch 'sideways'"):
        load_backbone(tmp_path / "swav.pth", branch="sideways")


def test_sslkit_checkpoint_and_method_initialisation(tmp_path, net):
    from sslkit.methods import MoCoV2

    torch.save(net.state_dict(), tmp_path / "plain.pth")
    model = MoCoV2(backbone="torchvision.resnet18", queue_size=16, proj_output_dim=8, proj_hidden_dim=16,
                   backbone_weights=str(tmp_path / "plain.pth"))
    reference = reference_network(net, False)
    assert_same_network(model.backbone.eval(), reference)
    assert_same_network(model.momentum_backbone.eval(), reference)  # momentum copy made after loading
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": {"backbone": "torchvision.resnet18"}},
               tmp_path / "sslkit.ckpt")
    backbone, report = load_backbone_report(tmp_path / "sslkit.ckpt")
    assert report.format == "sslkit" and report.arch == "torchvision.resnet18"
    assert_same_network(backbone, reference)


FRESH = """
import sys, torch
from sslkit.checkpoints import load_backbone_report
from sslkit.cli import main
for name in sys.argv[1:]:
    backbone, report = load_backbone_report(name)
    print(report.format, report.branch, report.arch)
    torch.save(backbone.model.state_dict(), name + ".pt")
main(["export", "--ckpt_path", sys.argv[-1], "--out", sys.argv[-1] + ".tv.pth"])
"""


def test_checkpoints_written_from_python_load_in_a_fresh_interpreter(tmp_path):
    """A MoCo v2 trained with a plain Trainer stores OptimConfig, SpeedConfig and MoCHi
    dataclasses in hyper_parameters: a fresh process that imports only sslkit.checkpoints
    reads it (and `sslkit export` writes it), as it reads DINO's argparse.Namespace."""
    from helpers import tiny_data, tiny_trainer
    from sslkit.augmentations import MoCoV2Views
    from sslkit.methods import MoCoV2, OptimConfig, SpeedConfig
    from sslkit.nn.hardness import MoCHi

    model = MoCoV2(backbone="torchvision.resnet18", small_images=True, queue_size=64, proj_output_dim=8, proj_hidden_dim=16,
                   batchnorm="plain", optim=OptimConfig(lr=0.01), speed=SpeedConfig(),
                   augment=MoCoV2Views(crop_size=32, blur_p=0.0),
                   mochi=MoCHi(hardest=16, synthetic=4, query_synthetic=2))
    trainer = tiny_trainer(tmp_path, max_steps=1)
    trainer.fit(model, tiny_data())
    trainer.save_checkpoint(tmp_path / "moco.ckpt")
    torch.save(dino_full(random_resnet18()), tmp_path / "dino.pth")
    out = subprocess.run([sys.executable, "-c", FRESH, str(tmp_path / "moco.ckpt"), str(tmp_path / "dino.pth")],
                         capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    assert "sslkit online torchvision.resnet18" in lines[0] and "dino momentum torchvision.resnet18" in lines[1]
    loaded = torch.load(tmp_path / "moco.ckpt.pt", weights_only=True)
    assert all(torch.equal(loaded[k], v) for k, v in model.backbone.model.state_dict().items())
    stock = torchvision.models.resnet18()
    stock.load_state_dict(torch.load(tmp_path / "dino.pth.tv.pth", weights_only=True))


@pytest.mark.parametrize("format", ["torchvision", "timm"])
def test_export_then_stock_libraries_load_it_without_edits(tmp_path, net, format):
    torch.save(moco(net), tmp_path / "moco.pth")
    out = export_backbone(tmp_path / "moco.pth", tmp_path / f"{format}.pth", format=format)
    if format == "torchvision":
        stock = torchvision.models.resnet18()
        stock.load_state_dict(torch.load(out, weights_only=True))
        stock.fc = nn.Identity()
    else:
        stock = timm.create_model("resnet18", pretrained=True, pretrained_cfg_overlay=dict(file=str(out)))
        stock.reset_classifier(0)
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(stock.eval()(images), reference_network(net, False)(images), atol=1e-6)
    assert_same_network(load_backbone(out), reference_network(net, False))  # export -> import round trip


def test_bad_files_get_a_plain_message(tmp_path, net):
    torch.save(net.state_dict(), tmp_path / "full.pth")
    (tmp_path / "truncated.pth").write_bytes((tmp_path / "full.pth").read_bytes()[:1000])
    (tmp_path / "empty.pth").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("learning rate 0.03, 200 epochs\n")
    cases = {
        "truncated.pth": "truncated or not a PyTorch file",
        "empty.pth": r"is empty \(0 bytes\)",
        "notes.txt": "is a text file",
        "missing.pth": "missing.pth' is no checkpoint file that exists",
        "missing_name": "neither|is no file, nor a timm",
    }
    for name, message in cases.items():
        with pytest.raises((CheckpointError, FileNotFoundError), match=message) as info:
            load_backbone(tmp_path / name if name != "missing_name" else "no_such_model_xyz")
        text = str(info.value)
        assert "\x1b[" not in text and "weights_only=False" not in text, text
        assert "pop from empty list" not in text
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:  # a bare file name that does not exist is a missing file, not an unknown model
        with pytest.raises(FileNotFoundError, match="'missing.pth' is no checkpoint file"):
            load_backbone("missing.pth")
    finally:
        os.chdir(cwd)
    with pytest.raises(CheckpointError, match=r"tensor 'layer1.0.conv1.weight' has shape \(64, 64, 3, 3\)"):
        load_backbone(tmp_path / "full.pth", arch="torchvision.resnet50")
    both = {"state_dict": {**moco(net)["state_dict"], **mocov3(net)["state_dict"]}}
    torch.save(both, tmp_path / "both.pth")
    with pytest.raises(CheckpointError, match=r"fits several formats \(moco, mocov3\)"):
        load_backbone(tmp_path / "both.pth")
    torch.save({"weights": {"w": torch.zeros(1)}}, tmp_path / "odd.pth")
    with pytest.raises(CheckpointError, match="cannot tell the format"):
        load_backbone(tmp_path / "odd.pth")
    torch.save({"state_dict": {"model.encoder.weight": torch.zeros(2, 2)}, "arch": "vit"}, tmp_path / "vit.pth")
    with pytest.raises(CheckpointError, match="cannot tell the format"):
        load_backbone(tmp_path / "vit.pth")


class _Payload:
    def __reduce__(self):
        return (open, ("/tmp/sslkit_pwned_by_checkpoint", "w"))


@pytest.mark.parametrize("writer", ["pickle", "torch"])
def test_nothing_in_a_checkpoint_is_executed(tmp_path, writer):
    path = tmp_path / "evil.pth"
    if writer == "pickle":
        with open(path, "wb") as f:
            pickle.dump({"state_dict": _Payload()}, f)
    else:
        torch.save({"state_dict": _Payload()}, path)
    if os.path.exists("/tmp/sslkit_pwned_by_checkpoint"):
        os.remove("/tmp/sslkit_pwned_by_checkpoint")
    with pytest.raises(CheckpointError, match=r"holds Python objects sslkit does not unpickle \((builtins|io)\.open\)") as info:
        load_backbone(path, arch="torchvision.resnet18")
    assert "weights_only=False" not in str(info.value)
    assert not os.path.exists("/tmp/sslkit_pwned_by_checkpoint")


def test_readme_lists_every_format():
    from sslkit.checkpoints import FORMATS

    readme = open(os.path.join(REPO, "README.md")).read()
    for fmt in FORMATS:
        assert f"`{fmt.name}`" in readme, fmt.name


def test_reading_a_checkpoint_leaves_sslkit_types_loadable(tmp_path):
    """Lightning's resume calls ``torch.load(weights_only=True)`` itself; a ``read_checkpoint``
    before it (torch's ``safe_globals`` context removes on exit what it added, the process-wide
    registration included) must not make the next resume fail on an sslkit config."""
    from sslkit.checkpoints.reading import read_checkpoint
    from sslkit.methods.optim import OptimConfig

    path = tmp_path / "hp.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"optim": OptimConfig()}}, path)
    read_checkpoint(path)
    assert isinstance(torch.load(path, weights_only=True)["hyper_parameters"]["optim"], OptimConfig)
