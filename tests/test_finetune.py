"""``sslkit finetune``: labelled subsets (class-balanced, and SimCLR's ImageNet lists resolved
against an ImageNet-layout folder), BatchNorm-only training, MAE's layer-wise learning-rate
decay, exact resume, and the command on the demo data and on a folder of real photographs."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from PIL import Image

from conftest import REPO
from helpers import tiny_data, tiny_moco, tiny_trainer

from sslkit.eval.finetune import (FineTuner, LabelledData, balanced_subset, imagenet_list, layer_decay_groups,
                                  norm_parameters, select_labelled)

CONFIGS = Path(REPO) / "configs"
CPU = ["--trainer.accelerator=cpu", "--trainer.devices=1", "--trainer.num_nodes=1", "--trainer.strategy=auto",
       "--trainer.sync_batchnorm=false", "--trainer.precision=32", "--trainer.enable_progress_bar=false"]


def sslkit(args, cwd):
    from test_real_photos import sslkit as run

    return run(args, cwd)


def metrics(run_dir: Path) -> dict[str, list[float]]:
    values: dict[str, list[float]] = {}
    with open(run_dir / "metrics.csv") as f:
        for row in csv.DictReader(f):
            for key, value in row.items():
                if value not in ("", None):
                    values.setdefault(key, []).append(float(value))
    return values


# ----------------------------------------------------------------------------- subsets
def test_balanced_subset_is_class_balanced_and_deterministic():
    labels = torch.tensor([0] * 200 + [1] * 100 + [2] * 30 + [3] * 7)
    a = balanced_subset(labels, 0.1, seed=0)
    assert a == balanced_subset(labels, 0.1, seed=0)
    assert a != balanced_subset(labels, 0.1, seed=1)
    assert torch.bincount(labels[a]).tolist() == [20, 10, 3, 1]  # rounded, at least one per class
    assert len(set(a)) == len(a) and a == sorted(a)


def test_select_labelled_on_synthetic_data_records_the_draw():
    data = tiny_data(num_train=400, num_classes=4)
    data.setup("validate")
    indices, record = select_labelled(data.eval_split("train"), "10%", seed=3)
    counts = torch.bincount(data.labels("train")).tolist()
    assert record["per_class"] == [max(1, round(0.1 * c)) for c in counts] == torch.bincount(
        data.labels("train")[indices]).tolist()
    assert record["num_labelled"] == len(indices) == sum(record["per_class"])
    assert record["seed"] == 3 and "class-balanced" in record["source"]
    assert select_labelled(data.eval_split("train"), "0.1", seed=3)[0] == indices
    assert len(select_labelled(data.eval_split("train"), "all", seed=0)[0]) == 400
    with pytest.raises(ValueError, match="fraction"):
        select_labelled(data.eval_split("train"), "150%", seed=0)


def test_imagenet_lists_ship_with_the_package_and_resolve_against_an_imagenet_folder(tmp_path):
    one, ten = imagenet_list("1%"), imagenet_list("10%")
    assert (len(one), len(ten)) == (12811, 128116)  # google-research/simclr imagenet_subsets
    assert set(one) <= set(ten)
    assert 'sslkit.data" = ["imagenet_subsets/*.txt.gz"]' in (Path(REPO) / "pyproject.toml").read_text()
    # an ImageNet-layout folder: two classes, three listed files each and two that are not listed
    listed = {}
    for name in one:
        listed.setdefault(name.split("_")[0], []).append(name)
    classes = sorted(listed)[:2]
    image = Image.new("RGB", (40, 30), (120, 30, 200))
    expected = set()
    for wnid in classes:
        for split in ("train", "val"):
            (tmp_path / split / wnid).mkdir(parents=True)
        for name in listed[wnid][:3]:
            image.save(tmp_path / "train" / wnid / name, format="JPEG")
            expected.add(name)
        for k in range(2):
            image.save(tmp_path / "train" / wnid / f"{wnid}_9999999{k}.JPEG", format="JPEG")
        image.save(tmp_path / "val" / wnid / f"ILSVRC2012_val_{wnid}.JPEG", format="JPEG")
    from sslkit.data import ImageFolderData

    data = ImageFolderData(root=str(tmp_path), index_cache=None, batch_size=2, num_workers=0)
    data.setup("validate")
    train = data.eval_split("train")
    indices, record = select_labelled(train, "1%", seed=0)
    assert {Path(train.samples[i][0]).name for i in indices} == expected
    assert "1percent" in record["source"] and record["per_class"] == [3, 3]
    # a file of names resolves the same way
    names = tmp_path / "mine.txt"
    names.write_text("\n".join(sorted(expected)[:2]))
    assert len(select_labelled(train, str(names), seed=0)[0]) == 2


# ----------------------------------------------------------------------------- training modes
def fit_steps(module, data, tmp_path, steps=3, **kwargs):
    trainer = tiny_trainer(tmp_path, max_steps=steps, limit_val_batches=1, num_sanity_val_steps=0, **kwargs)
    trainer.fit(module, datamodule=data)
    return trainer


def test_batchnorm_only_leaves_every_other_parameter_bit_identical(tmp_path):
    pl.seed_everything(0)
    module = FineTuner("random:test_resnet", train="batchnorm", crop_size=32, crop_scale=(0.2, 1.0))
    norm = {id(p) for p in norm_parameters(module.backbone)}
    before = {n: p.detach().clone() for n, p in module.backbone.named_parameters()}
    fit_steps(module, LabelledData(tiny_data(), "all"), tmp_path)
    changed_norm = 0
    for name, p in module.backbone.named_parameters():
        if id(p) in norm:
            changed_norm += not torch.equal(p, before[name])
        else:
            assert torch.equal(p, before[name]), name
    assert changed_norm > 0
    assert module.classifier.weight.requires_grad


def test_head_only_freezes_the_backbone_in_eval_mode(tmp_path):
    pl.seed_everything(0)
    module = FineTuner("random:test_resnet", train="head", crop_size=32)
    before = {k: v.clone() for k, v in module.backbone.state_dict().items()}
    fit_steps(module, LabelledData(tiny_data(), "all"), tmp_path)
    after = module.backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # running statistics too


def mae_reference(model, weight_decay, layer_decay, no_weight_decay=("pos_embed", "cls_token")):
    """MAE util/lr_decay.py param_groups_lrd, rebuilt: each parameter's (lr scale, weight decay)."""
    num_layers = len(model.blocks) + 1
    scales = [layer_decay ** (num_layers - i) for i in range(num_layers + 1)]
    out = {}
    for name, p in model.named_parameters():
        if name in ("cls_token", "pos_embed") or name.startswith("patch_embed"):
            layer = 0
        elif name.startswith("blocks"):
            layer = int(name.split(".")[1]) + 1
        else:
            layer = num_layers
        decay = 0.0 if (p.ndim == 1 or name in no_weight_decay) else weight_decay
        out[name] = (scales[layer], decay)
    return out


def test_layer_decay_groups_follow_maes_formula():
    import timm

    from sslkit.methods.optim import OptimConfig, optimizer_groups

    model = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=4, embed_dim=32, num_heads=2,
                              num_classes=0)
    config = OptimConfig(name="adamw", lr=1e-3, weight_decay=0.05)
    groups = optimizer_groups(layer_decay_groups(model, 0.65), config, peak=1e-3)
    got = {id(p): (g["lr"], g["weight_decay"]) for g in groups for p in g["params"]}
    reference = mae_reference(model, 0.05, 0.65)
    assert len(got) == len(reference)
    for name, p in model.named_parameters():
        scale, decay = reference[name]
        assert got[id(p)][0] == pytest.approx(1e-3 * scale, rel=1e-12), name
        assert got[id(p)][1] == decay, name
    assert reference["blocks.0.attn.qkv.weight"][0] == pytest.approx(0.65 ** 4)
    assert reference["norm.weight"] == (1.0, 0.0)


def test_layer_decay_in_the_fine_tuners_optimiser(tmp_path):
    from sslkit.methods.optim import OptimConfig

    pl.seed_everything(0)
    module = FineTuner("random:vit_tiny_patch16_224", crop_size=32, layer_decay=0.75, num_classes=4,
                       optim=OptimConfig(name="adamw", lr=1e-3, lr_scaling="none", weight_decay=0.05))
    # a 2-block ViT at 32 px so the step is quick
    import timm

    from sslkit.nn.backbones import Backbone

    model = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=2, embed_dim=32, num_heads=2,
                              num_classes=0)
    module.backbone = Backbone(model, 32, "vit_tiny")
    module._build_head(4)
    trainer = fit_steps(module, LabelledData(tiny_data(batch_size=8), "all"), tmp_path, steps=1)
    groups = trainer.optimizers[0].param_groups
    by_param = {id(p): g for g in groups for p in g["params"]}
    reference = mae_reference(model, 0.05, 0.75)
    for name, p in model.named_parameters():
        assert by_param[id(p)]["initial_lr"] == pytest.approx(1e-3 * reference[name][0]), name
        assert by_param[id(p)]["weight_decay"] == reference[name][1], name
    assert by_param[id(module.classifier.weight)]["initial_lr"] == pytest.approx(1e-3)
    assert by_param[id(module.classifier.bias)]["weight_decay"] == 0.0


def test_resume_is_exact(tmp_path):
    from pytorch_lightning.callbacks import ModelCheckpoint

    def run(root, ckpt=None, save_every=None):
        pl.seed_everything(0)
        module = FineTuner("random:test_resnet", crop_size=32, crop_scale=(0.2, 1.0))
        callbacks = [ModelCheckpoint(dirpath=root, every_n_train_steps=save_every, save_top_k=-1)] if save_every else []
        trainer = tiny_trainer(root, max_epochs=2, max_steps=-1, limit_val_batches=0, num_sanity_val_steps=0,
                               callbacks=callbacks, enable_checkpointing=bool(save_every))
        trainer.fit(module, datamodule=LabelledData(tiny_data(), "0.5", seed=1), ckpt_path=ckpt)
        return module

    straight = run(tmp_path / "a", save_every=3)  # 2 steps per epoch: step 3 is in the middle of epoch 2
    mid = next((tmp_path / "a").glob("*step=3.ckpt"))
    resumed = run(tmp_path / "b", ckpt=str(mid))
    a, b = straight.state_dict(), resumed.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


# ----------------------------------------------------------------------------- the command
@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrained")
    pl.seed_everything(0)
    trainer = tiny_trainer(root, max_steps=2, limit_val_batches=0, num_sanity_val_steps=0)
    trainer.fit(tiny_moco(), datamodule=tiny_data())
    path = root / "moco.ckpt"
    trainer.save_checkpoint(path)
    return path


TINY_DEMO = ["--data.init_args.num_train=200", "--data.init_args.num_val=40", "--data.init_args.num_classes=4",
             "--data.init_args.batch_size=8", "--trainer.max_epochs=2", "--trainer.check_val_every_n_epoch=1",
             "--trainer.log_every_n_steps=1"]


def test_finetune_command_on_the_demo_then_test(tiny_checkpoint, tmp_path):
    code, out = sslkit(["finetune", "-c", CONFIGS / "finetune_semisup_simclr.yaml", "-c", CONFIGS / "demo_finetune.yaml",
                        "--ckpt_path", tiny_checkpoint, "--labels", "10%", "--label_seed", "2", *TINY_DEMO, *CPU,
                        "--trainer.logger.init_args.name=ft"], tmp_path)
    assert code == 0, out[-3000:]
    run = tmp_path / "runs" / "ft" / "version_0"
    logged = metrics(run)
    assert {"train/loss", "val/top1", "val/top5"} <= set(logged)
    labelled = json.loads((run / "labelled.json").read_text())
    assert labelled["num_labelled"] == 20 and labelled["seed"] == 2 and len(labelled["indices"]) == 20
    assert "labelled" in (run / "hparams.yaml").read_text()
    ckpt = run / "checkpoints" / "last.ckpt"
    assert torch.load(ckpt, weights_only=False)["labelled"]["num_labelled"] == 20
    code, out = sslkit(["finetune", "test", "-c", CONFIGS / "finetune_semisup_simclr.yaml", "-c",
                        CONFIGS / "demo_finetune.yaml", "--ckpt_path", tiny_checkpoint, "--labels", "10%",
                        "--label_seed", "2", *TINY_DEMO, *CPU, "--resume", ckpt,
                        "--trainer.logger.init_args.name=ft_test"], tmp_path)
    assert code == 0, out[-3000:]
    tested = metrics(next((tmp_path / "runs" / "ft_test").glob("version_*")))
    assert tested["test/top1"][-1] == pytest.approx(logged["val/top1"][-1])  # the same weights, the same images


def test_finetune_command_from_random_init_batchnorm_only(tmp_path):
    code, out = sslkit(["finetune", "-c", CONFIGS / "finetune_semisup_swav.yaml", "-c", CONFIGS / "demo_finetune.yaml",
                        "--ckpt_path", "random:test_resnet", "--train", "batchnorm", "--labels", "1%", *TINY_DEMO,
                        *CPU, "--trainer.logger.init_args.name=bn"], tmp_path)
    assert code == 0, out[-3000:]
    assert "fine-tuning (batchnorm) on 4 labelled images" in out


@pytest.mark.parametrize("train", ["all", "batchnorm", "head"])
def test_finetune_on_real_photos(tmp_path, train):
    from photos import photo_folder

    photo_folder(tmp_path / "data")
    code, out = sslkit(["finetune", "-c", CONFIGS / "finetune_semisup_byol.yaml", *CPU, "--ckpt_path",
                        "random:test_resnet", "--train", train, "--labels", "1%", f"--data.init_args.root={tmp_path / 'data'}",
                        "--data.init_args.batch_size=4", "--data.init_args.num_workers=0",
                        "--data.init_args.index_cache=null", "--data.init_args.bad_images=skip",
                        "--model.crop_size=64", "--model.resize=72", "--trainer.max_epochs=1",
                        "--trainer.check_val_every_n_epoch=1",
                        "--trainer.logger.init_args.name=photos"], tmp_path)
    assert code == 0, out[-3000:]
    assert f"fine-tuning ({train})" in out
    run = next((tmp_path / "runs" / "photos").glob("version_*"))
    assert "val/top1" in metrics(run)
    assert json.loads((run / "finetune.json").read_text())["train"] == train
    labelled = json.loads((run / "labelled.json").read_text())
    assert labelled["per_class"] == [1, 1] and "class-balanced" in labelled["source"]  # not an ImageNet layout
    assert all(name.endswith((".jpg", ".png")) for name in labelled["files"])


# ----------------------------------------------------------------------------- the probe's generalisation gap
def test_the_probe_reports_its_train_accuracy_and_generalisation_gap():
    from sslkit.commands.report import COLUMNS
    from sslkit.eval.linear import linear_probe

    g = torch.Generator().manual_seed(0)
    means = torch.randn(3, 64, generator=g)
    y_train, y_test = torch.arange(30) % 3, torch.arange(300) % 3
    x_train = means[y_train] * 0.5 + torch.randn(30, 64, generator=g)  # few examples, many dimensions: memorised
    x_test = means[y_test] * 0.5 + torch.randn(300, 64, generator=g)
    result = linear_probe((x_train, y_train), (x_test, y_test), l2_grid=[1e-6], max_iter=200)
    assert result.train_top1 == 1.0 and result.top1 < 1.0
    record = result.to_dict()
    assert record["train_top1"] == result.train_top1 and record["gap"] == pytest.approx(result.train_top1 - result.top1)
    assert {"probe_train_top1", "probe_gap"} <= {key for key, _, _ in COLUMNS}
