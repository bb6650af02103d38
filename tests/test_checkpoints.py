"""Every supported checkpoint layout, built here from a random ResNet-18, imports to the
same features bit for bit; export -> import round trips; bad files are refused."""
import pickle

import pytest
import timm
import torch
import torchvision

from sslkit.checkpoints import CheckpointError, export_backbone, load_backbone, load_backbone_report
from sslkit.nn.backbones import build_backbone


@pytest.fixture(scope="module")
def reference():
    torch.manual_seed(0)
    model = torchvision.models.resnet18()
    for m in model.modules():  # non-trivial BatchNorm statistics, so they must be loaded too
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    state = model.state_dict()
    model.fc = torch.nn.Identity()
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        features = model.eval()(images)
    return state, images, features


def body(state):
    return {k: v for k, v in state.items() if not k.startswith("fc.")}


RESNET_CHILDREN = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]


def layouts(state):
    """Checkpoints in each library's exact key layout, heads and extras included."""
    extra = torch.randn(4, 4)
    lightly = {}
    for key, value in body(state).items():
        child, _, rest = key.partition(".")
        lightly[f"backbone.{RESNET_CHILDREN.index(child)}.{rest}"] = value
    return {
        "moco": ({"epoch": 200, "arch": "resnet18", "state_dict": {
            **{f"module.encoder_q.{k}": v for k, v in body(state).items()},
            "module.encoder_q.fc.0.weight": extra, "module.encoder_q.fc.2.weight": extra,
            **{f"module.encoder_k.{k}": v for k, v in body(state).items()}, "module.queue": extra}}, None),
        "mocov3": ({"arch": "resnet18", "state_dict": {
            **{f"module.base_encoder.{k}": v for k, v in body(state).items()},
            "module.base_encoder.fc.0.weight": extra, "module.predictor.0.weight": extra,
            **{f"module.momentum_encoder.{k}": v for k, v in body(state).items()}}}, None),
        "swav": ({**{f"module.{k}": v for k, v in body(state).items()},
                  "module.projection_head.0.weight": extra, "module.prototypes.weight": extra},
                 "torchvision.resnet18"),
        "byol": ({**{f"online_encoder.net.{k}": v for k, v in state.items()},
                  "online_encoder.projector.net.0.weight": extra, "online_predictor.net.0.weight": extra},
                 "torchvision.resnet18"),
        "solo-learn": ({"state_dict": {**{f"backbone.{k}": v for k, v in body(state).items()},
                                       "projector.0.weight": extra, "classifier.weight": extra,
                                       **{f"momentum_backbone.{k}": v for k, v in body(state).items()}},
                        "hyper_parameters": {"backbone": {"name": "resnet18", "kwargs": {"cifar": False}}}}, None),
        "lightly": ({"state_dict": {**lightly, "projection_head.layers.0.weight": extra}}, "torchvision.resnet18"),
        "vissl": ({"classy_state_dict": {"base_model": {"model": {
            "trunk": {f"_feature_blocks.{k}": v for k, v in body(state).items()},
            "heads": {"0.clf.0.weight": extra}}}}}, "torchvision.resnet18"),
        "plain": ({**state}, "torchvision.resnet18"),
    }


@pytest.mark.parametrize("name", ["moco", "mocov3", "swav", "byol", "solo-learn", "lightly", "vissl", "plain"])
def test_every_format_imports_to_the_reference_features_bit_for_bit(tmp_path, reference, name):
    state, images, features = reference
    checkpoint, arch = layouts(state)[name]
    path = tmp_path / f"{name}.pth"
    torch.save(checkpoint, path)
    backbone, report = load_backbone_report(path, arch=arch)
    assert report.format == name
    with torch.no_grad():
        assert torch.equal(backbone(images), features)
    assert backbone.dim == 512


def test_plain_timm_state_dict(tmp_path):
    torch.manual_seed(1)
    model = timm.create_model("resnet18", num_classes=10).eval()
    torch.save(model.state_dict(), tmp_path / "timm.pth")
    backbone, report = load_backbone_report(tmp_path / "timm.pth", arch="resnet18")
    assert report.dropped == ["fc.weight", "fc.bias"]
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(backbone(images), model.forward_head(model.forward_features(images), pre_logits=True))


def test_sslkit_checkpoint_and_method_initialisation(tmp_path, reference):
    from sslkit.methods import MoCoV2

    state, images, features = reference
    model = MoCoV2(backbone="torchvision.resnet18", queue_size=16, output_dim=8, hidden_dim=16,
                   backbone_weights=str(_write(tmp_path / "plain.pth", state)))
    with torch.no_grad():
        assert torch.equal(model.backbone.eval()(images), features)
        assert torch.equal(model.key_backbone.eval()(images), features)  # momentum copy made after loading
    ckpt = _write(tmp_path / "sslkit.ckpt", {"state_dict": model.state_dict(),
                                               "hyper_parameters": {"backbone": "torchvision.resnet18"}})
    backbone, report = load_backbone_report(ckpt)
    assert report.format == "sslkit" and report.arch == "torchvision.resnet18"
    with torch.no_grad():
        assert torch.equal(backbone(images), features)


def _write(path, obj):
    torch.save(obj, path)
    return path


@pytest.mark.parametrize("format", ["torchvision", "timm"])
def test_export_then_stock_libraries_load_it_without_edits(tmp_path, reference, format):
    state, images, features = reference
    source = _write(tmp_path / "moco.pth", layouts(state)["moco"][0])
    out = export_backbone(source, tmp_path / f"{format}.pth", format=format)
    if format == "torchvision":
        stock = torchvision.models.resnet18()
        stock.load_state_dict(torch.load(out, weights_only=True))
        stock.fc = torch.nn.Identity()
        exported = stock.eval()
    else:
        stock = timm.create_model("resnet18", pretrained=True, pretrained_cfg_overlay=dict(file=str(out)))
        stock.reset_classifier(0)
        exported = stock.eval()
    with torch.no_grad():
        assert torch.allclose(exported(images), features, atol=1e-6)
    back = load_backbone(out, arch="torchvision.resnet18")  # export -> import round trip
    with torch.no_grad():
        assert torch.equal(back(images), features)


def test_small_image_stem_is_detected_and_not_exported(tmp_path):
    small = build_backbone("torchvision.resnet18", small_images=True)
    path = _write(tmp_path / "cifar.pth", {"state_dict": {f"backbone.{k}": v for k, v in small.model.state_dict().items()}})
    backbone = load_backbone(path, arch="torchvision.resnet18")
    assert tuple(backbone.model.conv1.kernel_size) == (3, 3)
    with pytest.raises(CheckpointError, match="small-image stem"):
        export_backbone(path, tmp_path / "out.pth", arch="torchvision.resnet18")


def test_bad_files_are_refused_clearly(tmp_path, reference):
    state, _, _ = reference
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(_write(tmp_path / "full.pth", state).read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_backbone(truncated, arch="torchvision.resnet18")
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_backbone(text, arch="torchvision.resnet18")
    with pytest.raises(CheckpointError, match=r"tensor 'layer1.0.conv1.weight' has shape \(64, 64, 3, 3\)"):
        load_backbone(tmp_path / "full.pth", arch="torchvision.resnet50")
    with pytest.raises(CheckpointError, match="does not record its architecture"):
        load_backbone(_write(tmp_path / "swav.pth", layouts(state)["swav"][0]))
    both = {"state_dict": {**layouts(state)["moco"][0]["state_dict"], **layouts(state)["mocov3"][0]["state_dict"]}}
    with pytest.raises(ValueError, match=r"fits several formats \(moco, mocov3\)"):
        load_backbone(_write(tmp_path / "both.pth", both), arch="torchvision.resnet18")
    with pytest.raises(ValueError, match="cannot tell the format"):
        load_backbone(_write(tmp_path / "odd.pth", {"weights": {"w": torch.zeros(1)}}), arch="torchvision.resnet18")


class _Payload:
    def __reduce__(self):
        return (open, ("/tmp/sslkit_pwned_by_checkpoint", "w"))


def test_nothing_in_a_checkpoint_is_executed(tmp_path):
    import os

    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"state_dict": _Payload()}, f)
    if os.path.exists("/tmp/sslkit_pwned_by_checkpoint"):
        os.remove("/tmp/sslkit_pwned_by_checkpoint")
    with pytest.raises(CheckpointError, match="refuses to unpickle"):
        load_backbone(path, arch="torchvision.resnet18")
    assert not os.path.exists("/tmp/sslkit_pwned_by_checkpoint")
