"""The `sslkit` command as a user runs it: the demo and DDP in fresh processes, the rest
in this process (the same ``main``, without the interpreter's start-up)."""
import os
import re
import shutil
import subprocess
import sys

import pytest

from conftest import REPO
from helpers import invoke

SSLKIT = [sys.executable, "-m", "sslkit.cli"]
FAST = [
    "--trainer.max_epochs=1", "--trainer.limit_train_batches=3", "--trainer.limit_val_batches=2", "--trainer.check_val_every_n_epoch=1", "--trainer.log_every_n_steps=1", "--trainer.enable_progress_bar=false",
    "--data.init_args.num_train=128", "--data.init_args.num_val=64", "--data.init_args.batch_size=32",
]
MOCO = ["--model.init_args.queue_size=256"]


def run(args, cwd):
    return subprocess.run(SSLKIT + args, cwd=cwd, capture_output=True, text=True, timeout=300)


def test_the_demo_command_in_a_fresh_process(tmp_path):
    shutil.copytree(os.path.join(REPO, "configs"), tmp_path / "configs")
    out = run(["fit", "-c", "configs/demo.yaml", *FAST, *MOCO], tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "val/knn_top1 =" in out.stdout + out.stderr
    assert list((tmp_path / "runs" / "demo").glob("version_*/checkpoints/last.ckpt"))


@pytest.mark.parametrize("overlay, extra", [("demo_byol", []), ("demo_swav", []), ("demo_bg", MOCO), ("demo_hard", MOCO),
                                            ("demo_simclr", []), ("demo_simsiam", []), ("demo_barlow_twins", []),
                                            ("demo_vicreg", []), ("demo_mocov3", []), ("demo_dino", [])])
def test_fit_demo_overlays_end_to_end(tmp_path, capfd, monkeypatch, overlay, extra):
    shutil.copytree(os.path.join(REPO, "configs"), tmp_path / "configs")
    code, out, err = invoke(["fit", "-c", "configs/demo.yaml", "-c", f"configs/{overlay}.yaml", *FAST, *extra],
                            tmp_path, capfd, monkeypatch)
    assert code == 0, err[-3000:]
    assert "val/knn_top1 =" in out + err
    name = f"demo+{overlay}"
    ckpts = list((tmp_path / "runs" / name).glob("version_*/checkpoints/last.ckpt"))
    assert ckpts, os.listdir(tmp_path)
    metrics = next((tmp_path / "runs" / name).glob("version_*/metrics.csv")).read_text()
    assert "train/loss" in metrics and "val/knn_top1" in metrics


DEMO = os.path.join(REPO, "configs", "demo.yaml")


@pytest.mark.parametrize("args, named", [
    (["--model.init_args.temprature=0.1"], ["temprature"]),                       # a typo in a key
    (["--model.init_args.queue_size=many"], ["queue_size", "many"]),              # a wrong type
    (["--model.class_path=sslkit.methods.MoCoV9"], ["MoCoV9"]),                   # an unknown method
    (["--data.class_path=sslkit.data.ImageFolderData", "--data.init_args.root=/nowhere"],
     ["data.root '/nowhere' does not exist"]),                                    # a missing path
    (["--trainer.max_epochz=3"], ["max_epochz"]),                                 # a typo in the trainer
])
def test_user_errors_end_in_one_plain_line_naming_the_key(tmp_path, capfd, monkeypatch, args, named):
    code, out, err = invoke(["fit", "-c", DEMO, *args], tmp_path, capfd, monkeypatch)
    assert code != 0
    assert all(word in err for word in named), err[-2000:]
    assert "Traceback" not in err and "Does not validate against any of the Union subtypes" not in err


def stack_for(name: str) -> list[str]:
    """The configs to give for ``name``: an overlay (first line ``# overlay on: configs/X.yaml``)
    after the base it names, recursively; ``background_off.yaml`` after the demo's BG overlay."""
    path = os.path.join(REPO, "configs", name)
    with open(path) as f:
        first = f.readline()
    if name == "background_off.yaml":
        return stack_for("demo_bg.yaml") + [path]
    if not first.startswith("# overlay on:"):
        return [path]
    base = next(w for w in first.split() if w.startswith("configs/")).rstrip(",")
    return stack_for(os.path.basename(base)) + [path]


def test_every_config_parses(capsys):
    """In-process (one interpreter for all configs): LightningCLI resolves each config
    (overlays on their base) and prints it, as `sslkit fit --print_config -c ...` does."""
    from sslkit.cli import main

    for name in sorted(os.listdir(os.path.join(REPO, "configs"))):
        if name.startswith("linear_probe") or "finetune" in name:
            continue  # probe configs: test_probe_configs_parse; fine-tuning: test_finetune_configs_parse
        configs = stack_for(name)
        with pytest.raises(SystemExit) as exit_info:
            main(["fit", "--print_config", *[a for c in configs for a in ("-c", c)]])
        out = capsys.readouterr()
        assert exit_info.value.code in (0, None), (name, out.err[-2000:])
        assert "class_path: sslkit.methods" in out.out, name

def test_finetune_configs_parse(tmp_path):
    """Each fine-tuning recipe resolves with ``sslkit finetune``'s parser (model built from a
    random backbone, data on a folder laid out like ImageNet's), and so does the demo overlay on
    each semi-supervised recipe it names."""
    from photos import photo_folder
    from sslkit.commands.finetune import parse

    root = tmp_path / "imagenet"
    photo_folder(root)
    configs = os.path.join(REPO, "configs")
    recipes = sorted(n for n in os.listdir(configs) if n.startswith("finetune_"))
    assert {"finetune_semisup_simclr.yaml", "finetune_semisup_byol.yaml", "finetune_mae_vit.yaml"} <= set(recipes)
    for name in recipes:
        arch = "vit_tiny_patch16_224" if "vit" in name else "resnet18"
        cli = parse(["-c", os.path.join(configs, name), "--ckpt_path", f"random:{arch}", f"--data.init_args.root={root}"])
        assert cli.config.model.optim.name in ("sgd", "lars", "adamw"), name
        if name.startswith("finetune_semisup"):
            cli = parse(["-c", os.path.join(configs, name), "-c", os.path.join(configs, "demo_finetune.yaml"),
                         "--ckpt_path", "random:test_resnet"])
            assert cli.config.model.optim.lr == 0.05 and cli.config.model.labels == "1%", name


def test_an_overlay_given_alone_names_its_base(tmp_path, capfd, monkeypatch):
    code, _, err = invoke(["fit", "-c", os.path.join(REPO, "configs/demo_byol.yaml")], tmp_path, capfd, monkeypatch)
    assert code != 0
    assert "is an overlay" in err and "-c configs/demo.yaml -c" in err


def test_a_recipe_this_machine_cannot_run_says_what_to_change(tmp_path, capfd, monkeypatch):
    """An 8-GPU recipe on a machine without GPUs (made so here, whatever the machine has)."""
    from lightning_fabric.accelerators.cuda import CUDAAccelerator

    monkeypatch.setattr(CUDAAccelerator, "is_available", staticmethod(lambda: False))
    (tmp_path / "data" / "train" / "a").mkdir(parents=True)
    (tmp_path / "data" / "val" / "a").mkdir(parents=True)
    code, _, err = invoke(["fit", "-c", os.path.join(REPO, "configs/mocov2_imagenet.yaml"),
                           f"--data.init_args.root={tmp_path / 'data'}"], tmp_path, capfd, monkeypatch)
    assert code == 2
    assert "--trainer.accelerator=cpu --trainer.devices=1" in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()


def test_crop_larger_than_canvas_fails_before_anything_is_written(tmp_path, capfd, monkeypatch):
    code, _, err = invoke(["fit", "-c", DEMO, *FAST, *MOCO, "--model.init_args.augment.init_args.crop_size=48"],
                          tmp_path, capfd, monkeypatch)
    assert code != 0
    assert "RandomResizedCrop size 48 is larger than the data's 32x32 image canvas" in err
    assert not (tmp_path / "runs").exists()


def test_renamed_model_keys_keep_working_with_a_note(tmp_path, capfd, monkeypatch):
    """0.1 configs (BYOL's tau_base/tau_final, MoCo's hidden_dim) still train, as the new keys."""
    (tmp_path / "old_byol.yaml").write_text(
        "model:\n  class_path: sslkit.methods.BYOL\n  init_args:\n    tau_base: 0.9\n    proj_hidden_dim: 64\n"
        "    pred_hidden_dim: 64\n    optim: {name: sgd, lr: 0.1}\n")
    code, _, err = invoke(["fit", "-c", DEMO, "-c", "old_byol.yaml", *FAST, "--model.init_args.tau_final=0.95"],
                          tmp_path, capfd, monkeypatch)
    assert code == 0, err[-3000:]
    assert "old_byol.yaml: model.init_args.tau_base is now momentum" in err
    assert "--model.init_args.tau_final is now --model.init_args.momentum_end" in err
    saved = next((tmp_path / "runs" / "demo+old_byol").glob("version_*/config.yaml")).read_text()
    assert "momentum: 0.9\n" in saved and "momentum_end: 0.95\n" in saved and "tau_" not in saved
    code, _, err = invoke(["fit", "-c", DEMO, *FAST, *MOCO, "--model.init_args.hidden_dim=32", "--trainer.max_epochs=0",
                           "--model.init_args.knn_k=7"], tmp_path, capfd, monkeypatch)
    assert code == 0, err[-3000:]
    assert "--model.init_args.hidden_dim is now --model.init_args.proj_hidden_dim" in err
    assert "--model.init_args.knn_k is now --model.init_args.knn.k" in err
    saved = sorted((tmp_path / "runs" / "demo").glob("version_*/config.yaml"))[-1].read_text()
    model = saved.split("\nmodel:")[1].split("\ndata:")[0]
    assert "proj_hidden_dim: 32\n" in model and "k: 7\n" in model
    assert not re.search(r"^\s+(hidden_dim|knn_k):", model, re.M)


def test_probe_configs_parse():
    from sslkit.commands.probe import build_parser

    for name in sorted(os.listdir(os.path.join(REPO, "configs"))):
        if name.startswith("linear_probe"):
            cfg = build_parser().parse_args(["-c", os.path.join(REPO, "configs", name), "--ckpt_path", "x.ckpt"])
            assert cfg.data.class_path.startswith("sslkit.data."), name


def test_ddp_on_two_cpu_processes_then_resume_on_one(tmp_path):
    """Lightning DDP (gloo) with global BatchNorm: checkpoints come from rank 0 alone, and
    the run resumes on a single process with the same global batch. The demo's online
    classifier is refitted on the bank gathered from both ranks."""
    demo = os.path.join(REPO, "configs/demo.yaml")
    small = ["--trainer.limit_train_batches=3", "--trainer.limit_val_batches=1", "--trainer.enable_progress_bar=false",
             "--data.init_args.num_train=128", "--data.init_args.num_val=32", "--model.init_args.queue_size=128",
             "--model.init_args.batchnorm=sync", "--trainer.accelerator=cpu"]
    two = run(["fit", "-c", demo, *small, "--trainer.max_epochs=1", "--trainer.strategy=ddp", "--trainer.devices=2",
               "--data.init_args.batch_size=16"], tmp_path)
    assert two.returncode == 0, two.stderr[-3000:]
    ckpts = sorted(p.name for p in (tmp_path / "runs" / "demo").rglob("*.ckpt"))
    assert ckpts == ["epoch=0-step=3.ckpt", "last.ckpt"]
    metrics = sorted((tmp_path / "runs" / "demo").rglob("metrics.csv"))[0].read_text()
    assert "val/online_top1" in metrics and "train/online_top1" in metrics  # the bank refit, on both ranks
    last = next((tmp_path / "runs" / "demo").rglob("last.ckpt"))
    one = run(["fit", "-c", demo, *small, "--trainer.max_epochs=2", "--trainer.devices=1",
               "--data.init_args.batch_size=32", f"--ckpt_path={last}"], tmp_path)
    assert one.returncode == 0, one.stderr[-3000:]
    assert "finished 6 steps, 2 epochs" in one.stdout + one.stderr
