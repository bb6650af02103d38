"""`sslkit preview`, `masks`, `backgrounds`, `probe`, `spectrum` and `export`, as a user
calls them (in this process: the same ``main``, without the interpreter's start-up)."""
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import REPO
from helpers import invoke
from test_cli import FAST, MOCO


@pytest.fixture
def sslkit(tmp_path, capfd, monkeypatch):
    """``sslkit(args) -> (exit code, stdout, stderr)``, run from ``tmp_path``."""
    return lambda args: invoke(args, tmp_path, capfd, monkeypatch)

DEMO = os.path.join(REPO, "configs", "demo.yaml")
DEMO_BG = ["-c", DEMO, "-c", os.path.join(REPO, "configs", "demo_bg.yaml")]
SMALL = ["--data.init_args.num_train=128", "--data.init_args.num_val=64", "--data.init_args.batch_size=32"]


def test_preview_writes_a_grid_of_the_views(tmp_path, sslkit):
    out = sslkit(["preview", *DEMO_BG, "--out", "grid.png", "--num_images", "3", *SMALL])
    assert out.returncode == 0, out.stderr[-3000:]
    assert "5 columns x 3 images" in out.stdout  # original, mask, 2 views, BG_Swaps negative
    image = Image.open(tmp_path / "grid.png")
    assert image.width > image.height > 100
    off = sslkit(["preview", *DEMO_BG, "-c", os.path.join(REPO, "configs", "background_off.yaml"),
               "--out", "plain.png", "--num_images", "3", *SMALL])
    assert off.returncode == 0 and "4 columns x 3 images" in off.stdout


def test_backgrounds_evaluates_a_trained_checkpoint(tmp_path, sslkit):
    fit = sslkit(["fit", *DEMO_BG, *FAST, *MOCO])
    assert fit.returncode == 0, fit.stderr[-3000:]
    ckpt = next((tmp_path / "runs" / "demo+demo_bg").glob("version_*/checkpoints/last.ckpt"))
    out = sslkit(["backgrounds", *DEMO_BG, "--ckpt_path", str(ckpt), *SMALL, *MOCO])
    assert out.returncode == 0, out.stderr[-3000:]
    record = json.loads((ckpt.parent / "backgrounds.json").read_text())
    accuracy = record["knn_top1"]
    assert set(accuracy) == {"original", "only_fg", "mixed_same", "mixed_rand", "bg_gap"}
    assert accuracy["bg_gap"] == accuracy["mixed_same"] - accuracy["mixed_rand"]
    assert all(0.0 <= accuracy[k] <= 1.0 for k in ("original", "only_fg", "mixed_same", "mixed_rand"))
    assert "bg_gap" in out.stdout
    missing = sslkit(["backgrounds", *DEMO_BG, "--ckpt_path", str(tmp_path / "nope.ckpt"), *SMALL])
    assert missing.returncode != 0 and "nope.ckpt' is no checkpoint file that exists" in missing.stderr


def test_masks_command_writes_and_resumes(tmp_path, sslkit):
    from sslkit.data.synthetic import render_scenes

    scenes = render_scenes(0, "val", torch.arange(6), image_size=40, saturation=0.3)
    (tmp_path / "images" / "a").mkdir(parents=True)
    for i in range(6):
        Image.fromarray(scenes["image"][i].permute(1, 2, 0).numpy()).save(tmp_path / "images" / "a" / f"{i}.jpg")
    args = ["masks", "--images", "images", "--out", "masks", "--model", "border_contrast", "--input_size", "0"]
    first = sslkit(args)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "6 written, 0 already there" in first.stdout
    assert np.asarray(Image.open(tmp_path / "masks" / "a" / "0.png")).shape == (40, 40)
    again = sslkit(args)
    assert "0 written, 6 already there" in again.stdout


def test_probe_and_spectrum_of_a_trained_checkpoint(tmp_path, sslkit):
    demo = os.path.join(REPO, "configs", "demo.yaml")
    fit = sslkit(["fit", "-c", demo, *FAST, *MOCO])
    assert fit.returncode == 0, fit.stderr[-3000:]
    ckpt = next((tmp_path / "runs" / "demo").glob("version_*/checkpoints/last.ckpt"))
    probe_cfg = os.path.join(REPO, "configs", "linear_probe.yaml")
    small = ["--data.init_args.num_train=256", "--data.init_args.num_val=128", "--data.init_args.batch_size=64"]
    first = sslkit(["probe", "-c", probe_cfg, "--ckpt_path", str(ckpt), *small, "--l2_grid=[0.001,0.1]"])
    assert first.returncode == 0, first.stderr[-3000:]
    record = json.loads((ckpt.parent / "probe_fast.json").read_text())
    assert 0.0 < record["top1"] <= record["top5"] <= 1.0 and record["n_train"] == 256
    assert 0.0 < record["knn_top1"] <= 1.0
    assert record["features_from_cache"] is False
    again = sslkit(["probe", "-c", probe_cfg, "--ckpt_path", str(ckpt), *small, "--l2_grid=[0.001,0.1]"])
    assert json.loads((ckpt.parent / "probe_fast.json").read_text())["features_from_cache"] is True
    assert again.returncode == 0

    unlabelled = sslkit(["probe", "-c", probe_cfg, "--ckpt_path", str(tmp_path / "nope.ckpt"), *small])
    assert unlabelled.returncode != 0 and "nope.ckpt' is no checkpoint file that exists" in unlabelled.stderr
    assert "Traceback" not in unlabelled.stderr  # one plain line

    spectrum = sslkit(["spectrum", "-c", probe_cfg, "--ckpt_path", str(ckpt), *small])
    assert spectrum.returncode == 0, spectrum.stderr[-3000:]
    report = json.loads((ckpt.parent / "spectrum.json").read_text())
    assert set(report) >= {"backbone", "projector"}
    assert report["backbone"]["n_samples"] == 128 and report["projector"]["dim"] == 64
    assert (ckpt.parent / "spectrum.png").stat().st_size > 0

    exported = sslkit(["export", "--ckpt", str(ckpt), "--out", "backbone.pth", "--format", "timm"])
    assert exported.returncode == 0, exported.stderr[-3000:]
    assert "--ckpt is now --ckpt_path" in exported.stderr  # the old flag still works, for one release
    import timm

    from sslkit.checkpoints import load_backbone

    stock = timm.create_model("test_resnet", pretrained=True, pretrained_cfg_overlay=dict(file=str(tmp_path / "backbone.pth")))
    stock.reset_classifier(0)
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(stock.eval()(images), load_backbone(ckpt)(images), atol=1e-6)


def test_preview_shows_black_where_no_bg_swaps_negative_was_drawn():
    """Its caption says so: the column is 0 after un-normalising, not the normalised 0 (grey)."""
    from sslkit.augmentations import BackgroundSwap, MoCoV2Views
    from sslkit.commands.preview import preview_grid
    from sslkit.data import SyntheticScenes

    data = SyntheticScenes(num_train=32, num_val=8, batch_size=16)
    data.setup("fit")
    batch = data.prepare(next(iter(data.train_dataloader())), "cpu")
    augment = MoCoV2Views(crop_size=32, blur_p=0.0, background_swap=BackgroundSwap(p=0.5, hard_negative=True))
    torch.manual_seed(0)
    views = augment(batch)
    drawn = views[1]["hard_negative_valid"]
    assert 0 < int(drawn.sum()) < len(drawn)
    title, images, _ = preview_grid(batch, views, augment, 16)[-1]
    assert title.startswith("BG_Swaps negative")
    for image, valid in zip(images, drawn.tolist()):
        assert (image.abs().sum() > 0) == valid
