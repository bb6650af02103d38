"""Everything sslkit 0.2 wrote still loads (tests/data/v0.2: its configs and three demo
checkpoints, written by 0.2 itself): each 0.2 config builds the model today's config
builds, each checkpoint loads into its method, into load_backbone and the tools, and a 0.2
run resumes."""
from __future__ import annotations

import contextlib
import dataclasses
import inspect
import io
import re
import sys
import warnings
from pathlib import Path

import pytest
import torch

from conftest import REPO
from helpers import invoke
from sslkit.methods import OptimConfig

OLD = Path(REPO) / "tests" / "data" / "v0.2"
NEW = Path(REPO) / "configs"


def runs(configs: Path) -> list[list[Path]]:
    """Every full config alone and every overlay on its first base, as config paths."""
    out = []
    for path in sorted(configs.glob("*.yaml")):
        if path.name.startswith("linear_probe"):
            continue
        first = path.read_text().splitlines()[0]
        if not first.startswith("# overlay on:"):
            out.append([path])
        else:
            base = re.search(r"configs/(\w+\.yaml)", first)
            if base:
                out.append([configs / base.group(1), path])
    return out


def build(files: list[Path], root: Path):
    from sslkit.cli import SSLKitCLI

    args = [a for f in files for a in ("-c", str(f))]
    data_root = [f"--data.init_args.root={root}"] if "/path/to/imagenet" in "".join(f.read_text() for f in files) else []
    with contextlib.redirect_stderr(io.StringIO()) as notes, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cli = SSLKitCLI(args=args + data_root, run=False, instantiate_trainer=False)
    return cli.model, notes.getvalue()


@pytest.mark.parametrize("files", runs(OLD / "configs"), ids=lambda files: "+".join(f.stem for f in files))
def test_every_0_2_config_builds_the_model_of_todays_config(files, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["sslkit"])
    (tmp_path / "train").mkdir()
    (tmp_path / "val").mkdir()
    old, notes = build(files, tmp_path)
    new, _ = build([NEW / f.name for f in files], tmp_path)
    assert type(old) is type(new)
    drop = ("_class_path", "online_classifier")  # 0.2 had no online classifier; today's configs switch it on
    old_hparams = {k: v for k, v in old.hparams.items() if k not in drop}
    new_hparams = {k: v for k, v in new.hparams.items() if k not in drop}
    if [f.stem for f in files] == ["demo", "demo_byol"]:  # the BYOL demo runs at a quarter of 0.2's rate
        assert (old_hparams["optim"].lr, new_hparams["optim"].lr) == (0.12, 0.03)  # with its predictor
        assert (old_hparams["pred_lr_mult"], new_hparams["pred_lr_mult"]) == (1.0, 10.0)  # at 10x (docs/demos.md)
        old_hparams["optim"] = dataclasses.replace(old_hparams["optim"], lr=0.03)
        old_hparams["pred_lr_mult"] = 10.0
    recipe = inspect.signature(type(old).__init__).parameters["optim"].default
    for field in dataclasses.fields(OptimConfig):  # what a 0.2 file left to the generic default now comes
        name = field.name                           # from the method's recipe; today's configs state it
        before, now = getattr(old_hparams["optim"], name), getattr(new_hparams["optim"], name)
        if before != now:
            assert before == getattr(recipe, name) and now == getattr(OptimConfig(), name), name
            old_hparams["optim"] = dataclasses.replace(old_hparams["optim"], **{name: now})
    redesigned = set()
    if files[0].stem == "demo" and old_hparams.get("batchnorm") == "plain":  # the MoCo v2 demo splits BatchNorm
        assert new_hparams["batchnorm"] in ("plain", "split")                  # and keeps 1,024 keys, not 4,096
        old_hparams["batchnorm"] = new_hparams["batchnorm"]                    # (docs/demos.md)
        if new_hparams["queue_size"] == 1024 and old_hparams["queue_size"] == 4096:
            old_hparams["queue_size"], redesigned = 1024, {"queue.keys", "queue.labels"}
    assert old_hparams == new_hparams
    shapes = [{k: v.shape for k, v in m.state_dict().items() if k not in redesigned} for m in (old, new)]
    assert shapes[0] == shapes[1]
    if "knn_k" in "".join(f.read_text() for f in files):
        assert "model.init_args.knn_k is now knn.k" in notes


CHECKPOINTS = {"mocov2": "MoCoV2", "byol": "BYOL", "swav": "SwAV"}


@pytest.mark.parametrize("name", CHECKPOINTS)
def test_a_0_2_checkpoint_loads_into_its_method_and_load_backbone(name):
    import sslkit.methods as methods
    from sslkit.checkpoints import load_backbone, read_checkpoint

    path = OLD / f"{name}.ckpt"
    stored = {k: v for k, v in read_checkpoint(path)["state_dict"].items()
              if not re.fullmatch(r"queues\.\d\.labels", k)}  # 0.2's SwAV queue carried labels it never used
    model = getattr(methods, CHECKPOINTS[name]).load_from_checkpoint(path)
    assert model.state_dict().keys() == stored.keys()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in stored.items())
    assert model.backbone.name == "test_resnet" and model.knn.k == 20  # the 0.2 flat keys, folded
    backbone = load_backbone(path)
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(backbone(images), model.backbone.eval()(images))


@pytest.mark.parametrize("name", CHECKPOINTS)
def test_a_0_2_run_resumes_from_its_checkpoint_with_its_own_config(name, tmp_path, capfd, monkeypatch):
    code, out, err = invoke(["fit", "-c", OLD / f"{name}.config.yaml", "--ckpt_path", OLD / f"{name}.ckpt",
                             "--trainer.max_epochs=2", "--trainer.enable_progress_bar=false"], tmp_path, capfd, monkeypatch)
    assert code == 0, err[-3000:]
    assert "finished 4 steps, 2 epochs" in out + err  # 2 steps in 0.2, 2 more now


def test_the_tools_read_a_0_2_checkpoint(tmp_path, capfd, monkeypatch):
    import json

    small = ["--data.init_args.num_train=64", "--data.init_args.num_val=48", "--data.init_args.batch_size=16"]
    probe = Path(REPO) / "configs" / "linear_probe.yaml"
    code, _, err = invoke(["spectrum", "-c", probe, "--ckpt_path", OLD / "mocov2.ckpt", "--out", tmp_path, *small],
                          tmp_path, capfd, monkeypatch)
    assert code == 0, err[-3000:]
    report = json.loads((tmp_path / "spectrum.json").read_text())
    assert report["projector"]["dim"] == 8 and report["backbone"]["n_samples"] == 48


@pytest.mark.parametrize("name", ["linear_probe.yaml", "linear_probe_cifar10.yaml", "linear_probe_imagenet.yaml"])
def test_every_0_2_probe_config_parses_as_todays(name):
    from sslkit.commands.probe import build_parser

    old = build_parser().parse_args(["-c", str(OLD / "configs" / name), "--ckpt_path", "x.ckpt"])
    new = build_parser().parse_args(["-c", str(NEW / name), "--ckpt_path", "x.ckpt"])
    drop = ("config", "__path__")
    if name == "linear_probe.yaml":  # greyscale scenes, as the MoCo v2 demo's since it moved to them (docs/demos.md)
        assert (old.data.init_args.saturation, new.data.init_args.saturation) == (0.3, 0.0)
        new.data.init_args.saturation = 0.3
    assert {k: v for k, v in vars(old).items() if k not in drop} == {k: v for k, v in vars(new).items() if k not in drop}
