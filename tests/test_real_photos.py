"""Every command the README shows, on a folder of real photographs at their own sizes, the
way a researcher runs them: JPEG (baseline, progressive, CMYK, EXIF-rotated, greyscale),
PNG, one corrupt file and one listed file that is gone (``photos.py``), masks written by
``sslkit masks``, the ImageNet configs with a tiny backbone on the CPU. Each command is
judged by what it wrote, not only by its exit code."""
from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import REPO
from photos import photo_folder, vanish_after_caching

CONFIGS = Path(REPO) / "configs"
CPU = ["--trainer.accelerator=cpu", "--trainer.devices=1", "--trainer.num_nodes=1", "--trainer.strategy=auto",
       "--trainer.sync_batchnorm=false", "--trainer.precision=32", "--trainer.enable_progress_bar=false"]
TWO_STEPS = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=2", "--trainer.log_every_n_steps=1"]


def sslkit(args: list, cwd: Path) -> tuple[int, str]:
    """``sslkit ARGS`` in this process from ``cwd``: (exit code, what it printed)."""
    from sslkit.cli import main

    out = io.StringIO()
    here, argv = os.getcwd(), sys.argv
    os.chdir(cwd)
    sys.argv = ["sslkit"]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            main([str(a) for a in args])
        code = 0
    except SystemExit as exit_info:
        code = exit_info.code if isinstance(exit_info.code, int) else 1
    finally:
        os.chdir(here)
        sys.argv = argv
    return code, out.getvalue()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The photo folder, its masks from ``sslkit masks``, cached file lists with one file
    gone since, and a MoCo v2 checkpoint trained on it for two steps."""
    root = tmp_path_factory.mktemp("photos")
    record = photo_folder(root / "data")
    w = {"root": root, "data": root / "data", "masks": root / "masks", "cache": root / "lists", **record}
    for split in ("train", "val"):
        code, out = sslkit(["masks", "--images", w["data"] / split, "--out", w["masks"] / split,
                            "--model", "border_contrast", "--skip_unreadable"], root)
        assert code == 0, out[-3000:]
    w["gone"] = vanish_after_caching(w["data"], w["cache"])
    w["data_args"] = [f"--data.init_args.root={w['data']}", f"--data.init_args.mask_root={w['masks']}",
                      "--data.init_args.batch_size=4", "--data.init_args.num_workers=0",
                      f"--data.init_args.index_cache={w['cache']}", "--data.init_args.bad_images=skip"]
    code, out = sslkit(["fit", "-c", CONFIGS / "mocov2_imagenet.yaml", *CPU, *TWO_STEPS, *w["data_args"],
                        "--model.init_args.backbone=test_resnet", "--trainer.logger.init_args.name=moco"], root)
    assert code == 0, out[-3000:]
    w["ckpt"] = next((root / "runs" / "moco").glob("version_*/checkpoints/last.ckpt"))
    return w


def metrics(run_dir: Path) -> dict[str, list[float]]:
    values: dict[str, list[float]] = {}
    with open(run_dir / "metrics.csv") as f:
        for row in csv.DictReader(f):
            for key, value in row.items():
                if value not in ("", None):
                    values.setdefault(key, []).append(float(value))
    return values


def test_masks_cover_every_readable_image_at_its_size(world):
    for path, (width, height) in world["sizes"].items():
        mask = world["masks"] / Path(path).relative_to(world["data"]).with_suffix(".png")
        array = np.asarray(Image.open(mask))
        assert array.shape == (height, width) and set(np.unique(array)) <= {0, 255}
        assert 0.0 < (array > 0).mean() < 1.0  # a foreground and a background on real photos
    corrupt = world["masks"] / Path(world["corrupt"][0]).relative_to(world["data"]).with_suffix(".png")
    assert not corrupt.exists()


IMAGENET_FITS = [["mocov2_imagenet"], ["mocov2_imagenet", "mocov2_bg"], ["mocov2_imagenet", "mocov2_hard"],
                 ["byol_imagenet"], ["byol_imagenet", "byol_bg"], ["swav_imagenet"], ["swav_imagenet", "swav_bg"],
                 ["swav_imagenet", "swav_imagenet_bs256"], ["simclr_imagenet"], ["simclr_imagenet", "simclr_bg"],
                 ["simsiam_imagenet"], ["simsiam_imagenet", "simsiam_bg"], ["barlow_twins_imagenet"],
                 ["barlow_twins_imagenet", "barlow_twins_bg"], ["vicreg_imagenet"], ["vicreg_imagenet", "vicreg_bg"],
                 ["mocov3_imagenet"], ["mocov3_imagenet", "mocov3_bg"]]
# not 8192-d heads on a CPU, and no torchvision constructor arguments (zero_init_residual) for timm's test_resnet
SMALL_HEADS = ["--model.init_args.proj_hidden_dim=64", "--model.init_args.proj_output_dim=64",
               "--model.init_args.backbone.kwargs={}"]


@pytest.mark.parametrize("configs", IMAGENET_FITS, ids=["+".join(c) for c in IMAGENET_FITS])
def test_fit_every_imagenet_config_on_real_photos(world, configs):
    name = "+".join(configs)
    files = [a for c in configs for a in ("-c", CONFIGS / f"{c}.yaml")]
    heads = SMALL_HEADS if configs[0] in ("barlow_twins_imagenet", "vicreg_imagenet", "simsiam_imagenet") else []
    if configs[0] == "mocov3_imagenet":
        heads = ["--model.init_args.mlp_dim=64", "--model.init_args.backbone.kwargs={}"]
    code, out = sslkit(["fit", *files, *CPU, *TWO_STEPS, *world["data_args"], "--model.init_args.backbone=test_resnet",
                        *heads, "--trainer.check_val_every_n_epoch=1", f"--trainer.logger.init_args.name={name}"],
                       world["root"])
    assert code == 0, out[-3000:]
    run = next((world["root"] / "runs" / name).glob("version_*"))
    assert (run / "checkpoints" / "last.ckpt").stat().st_size > 0 and (run / "config.yaml").is_file()
    logged = metrics(run)
    assert len(logged["train/loss"]) == 2 and all(math.isfinite(v) for v in logged["train/loss"])
    assert 0.0 <= logged["val/knn_top1"][-1] <= 1.0  # kNN on whole images: bank and queries read and decoded
    if "bg" in name:
        has_negatives = name.startswith(("mocov2", "simclr"))
        assert ("train/swap_negative_rate" in logged) == has_negatives


VIT_FITS = [["mocov3_vit_small_imagenet"], ["mocov3_vit_base_imagenet", "mocov3_bg"]]
TINY_VIT = ["--model.init_args.backbone.name=mocov3_vit_tiny", "--model.init_args.mlp_dim=64",
            "--model.init_args.backbone.kwargs={depth: 2, embed_dim: 48, num_heads: 3}", "--trainer.precision=bf16-mixed"]


@pytest.mark.parametrize("configs", VIT_FITS, ids=["+".join(c) for c in VIT_FITS])
def test_fit_the_vit_configs_on_real_photos(world, configs):
    """The ViT recipes (AdamW, frozen patch projection, bf16 autocast) at 224 px on the photos,
    with a 2-block ViT of the same family."""
    name = "+".join(configs)
    files = [a for c in configs for a in ("-c", CONFIGS / f"{c}.yaml")]
    cpu = [a for a in CPU if not a.startswith("--trainer.precision")]
    code, out = sslkit(["fit", *files, *cpu, *TWO_STEPS, *world["data_args"], *TINY_VIT,
                        "--trainer.check_val_every_n_epoch=1", f"--trainer.logger.init_args.name={name}"],
                       world["root"])
    assert code == 0, out[-3000:]
    logged = metrics(next((world["root"] / "runs" / name).glob("version_*")))
    assert len(logged["train/loss"]) == 2 and all(math.isfinite(v) for v in logged["train/loss"])
    assert 0.0 <= logged["val/knn_top1"][-1] <= 1.0


def test_the_bank_online_classifier_on_real_photos(world):
    """``online_classifier.views: bank`` (the demos' choice) on whole photos: refitted on the
    kNN bank's evaluation views each epoch, then scored on the val split."""
    name = "bank_classifier"
    code, out = sslkit(["fit", "-c", CONFIGS / "mocov2_imagenet.yaml", *CPU, *TWO_STEPS, *world["data_args"],
                        "--model.init_args.backbone=test_resnet", "--trainer.check_val_every_n_epoch=1",
                        "--model.init_args.online_classifier={views: bank, weight_decay: 1.0e-4}",
                        f"--trainer.logger.init_args.name={name}"], world["root"])
    assert code == 0, out[-3000:]
    logged = metrics(next((world["root"] / "runs" / name).glob("version_*")))
    assert "train/online_loss" not in logged
    assert 0.0 <= logged["val/online_top1"][-1] <= logged["val/online_top5"][-1] <= 1.0
    assert 0.0 <= logged["train/online_top1"][-1] <= 1.0


@pytest.mark.parametrize("subcommand", ["validate", "test"])
def test_validate_and_test_a_checkpoint_on_real_photos(world, subcommand):
    code, out = sslkit([subcommand, "-c", CONFIGS / "mocov2_imagenet.yaml", *CPU, *world["data_args"],
                        "--model.init_args.backbone=test_resnet", "--ckpt_path", world["ckpt"],
                        f"--trainer.logger.init_args.name={subcommand}"], world["root"])
    assert code == 0, out[-3000:]
    assert "val/knn_top1" in out
    value = float(out.split("val/knn_top1")[1].split()[1].strip("│|"))
    assert 0.0 <= value <= 1.0


def probe_data(world, command="probe"):
    """The README's ImageNet probe command line, on the photo folder."""
    return [command, "-c", CONFIGS / "linear_probe_imagenet.yaml", "--ckpt_path", world["ckpt"],
            f"--data.init_args.root={world['data']}", "--data.init_args.batch_size=4",
            "--data.init_args.num_workers=2",  # whole images collated in worker processes
            f"--data.init_args.index_cache={world['cache']}", "--data.init_args.bad_images=skip"]


def probe_args(world, *extra):
    return [*probe_data(world), f"--cache_dir={world['root'] / 'probe_cache'}", "--l2_grid=[0.001,0.1]", *extra]


def test_probe_fast_on_real_photos(world):
    out_file = world["root"] / "probe_fast.json"
    with pytest.warns(UserWarning, match="unreadable images left out"):
        code, out = sslkit(probe_args(world, "--out", out_file), world["root"])
    assert code == 0, out[-3000:]
    record = json.loads(out_file.read_text())
    assert record["n_train"] == 15 and record["n_test"] == 11  # the corrupt file and the vanished one left out
    assert 0.0 <= record["top1"] <= record["top5"] <= 1.0 and 0.0 <= record["knn_top1"] <= 1.0
    assert record["dim"] > 0


def test_probe_standard_on_real_photos(world):
    out_file = world["root"] / "probe_standard.json"
    code, out = sslkit(probe_args(world, "--protocol", "standard", "--epochs", "2", "--out", out_file), world["root"])
    assert code == 0, out[-3000:]
    record = json.loads(out_file.read_text())
    assert 0.0 <= record["top1"] <= record["top5"] <= 1.0 and record["epochs"] == 2


def test_spectrum_on_real_photos(world):
    out_dir = world["root"] / "spectrum"
    code, out = sslkit([*probe_data(world, "spectrum"), "--out", out_dir], world["root"])
    assert code == 0, out[-3000:]
    report = json.loads((out_dir / "spectrum.json").read_text())
    for name in ("backbone", "projector"):
        part = report[name]
        assert part["n_samples"] == 11 and math.isfinite(part["alpha"])
        assert 1.0 <= part["effective_rank"] <= min(part["n_samples"], part["dim"]) + 1e-6
        assert 1.0 <= part["participation_ratio"] <= part["rank_limit"] + 1e-6
    assert Image.open(out_dir / "spectrum.png").width > 100


def test_export_then_load_the_backbone_from_real_photo_training(world):
    out_file = world["root"] / "backbone.pth"
    code, out = sslkit(["export", "--ckpt_path", world["ckpt"], "--out", out_file, "--format", "timm"], world["root"])
    assert code == 0, out[-3000:]
    from sslkit.checkpoints import load_backbone

    exported, trained = load_backbone(out_file, arch="test_resnet"), load_backbone(world["ckpt"])
    images = torch.rand(2, 3, 64, 80)
    with torch.no_grad():
        assert torch.allclose(exported.eval()(images), trained.eval()(images), atol=1e-6)
    world["exported"] = out_file


@pytest.mark.parametrize("source", ["sslkit", "exported"])
def test_backgrounds_on_real_photos_with_any_checkpoint(world, source):
    ckpt = world["ckpt"] if source == "sslkit" else world.get("exported")
    if ckpt is None:
        pytest.skip("needs the exported backbone")
    extra = ["--arch", "test_resnet"] if source == "exported" else []
    out_file = world["root"] / f"backgrounds_{source}.json"
    code, out = sslkit(["backgrounds", "-c", CONFIGS / "mocov2_imagenet.yaml", "-c", CONFIGS / "mocov2_bg.yaml",
                        "--ckpt_path", ckpt, *extra, "--out", out_file, "--k", "5", *world["data_args"],
                        "--model.init_args.backbone=test_resnet"], world["root"])
    assert code == 0, out[-3000:]
    results = json.loads(out_file.read_text())["knn_top1"]
    assert set(results) == {"original", "only_fg", "mixed_same", "mixed_rand", "bg_gap"}
    assert all(0.0 <= results[k] <= 1.0 for k in ("original", "only_fg", "mixed_same", "mixed_rand"))
    assert results["bg_gap"] == pytest.approx(results["mixed_same"] - results["mixed_rand"])


def test_preview_on_real_photos_with_a_checkpoint(world):
    out_file = world["root"] / "views.png"
    code, out = sslkit(["preview", "-c", CONFIGS / "mocov2_imagenet.yaml", "-c", CONFIGS / "mocov2_bg.yaml",
                        "--ckpt_path", world["ckpt"], "--num_images", "3", "--out", out_file, *world["data_args"],
                        "--model.init_args.backbone=test_resnet"], world["root"])
    assert code == 0, out[-3000:]
    assert "5 columns x 3 images" in out  # original, mask, two views, BG_Swaps negative
    assert Image.open(out_file).width > 300


def test_unreadable_files_end_in_one_plain_line_naming_them(world):
    """Without bad_images: skip, the corrupt file (train) and the vanished one (val) stop the
    command with one line naming the file and what to do."""
    strict = [a for a in probe_args(world) if a != "--data.init_args.bad_images=skip"]
    code, out = sslkit(strict, world["root"])
    errors = [line for line in out.splitlines() if line.startswith("sslkit: error:")]
    assert code == 2 and "Traceback" not in out and len(errors) == 1
    assert f"cannot decode image file '{world['corrupt'][0]}'" in errors[0] and "bad_images: skip" in errors[0]
    strict = [a for a in probe_data(world, "spectrum") if a != "--data.init_args.bad_images=skip"]
    code, out = sslkit(strict, world["root"])  # the val split: the vanished file
    errors = [line for line in out.splitlines() if line.startswith("sslkit: error:")]
    assert code == 2 and "Traceback" not in out and len(errors) == 1
    assert f"'{world['gone']}' is in the file list but no longer exists" in errors[0]
    assert "index_cache" in errors[0] and "bad_images: skip" in errors[0]


def test_report_on_real_photos_side_by_side(world):
    """`sslkit report` on the trained checkpoint and its exported backbone: the same network,
    so the same figures, each in range, with the Backgrounds Challenge from the masks."""
    exported = world.get("exported")
    if exported is None:
        pytest.skip("needs the exported backbone")
    out_dir = world["root"] / "report"
    code, out = sslkit([*probe_data(world, "report")[:3], "--ckpt_path", world["ckpt"], exported,
                        "--names", "ckpt", "exported", "--arch", "test_resnet", *probe_data(world)[5:],
                        f"--data.init_args.mask_root={world['masks']}", f"--cache_dir={world['root'] / 'report_cache'}",
                        "--l2_grid=[0.001,0.1]", "--out", out_dir], world["root"])
    assert code == 0, out[-3000:]
    cards = json.loads((out_dir / "report.json").read_text())["checkpoints"]
    assert [c["name"] for c in cards] == ["ckpt", "exported"]
    for card in cards:
        assert 0.0 <= card["probe_top1"] <= card["probe_top5"] <= 1.0 and 0.0 <= card["knn_top1"] <= 1.0
        assert math.isfinite(card["alpha"]) and card["effective_rank"] >= 1.0
        assert 0.0 <= card["backgrounds_top1"]["mixed_rand"] <= 1.0
    assert cards[0]["knn_top1"] == pytest.approx(cards[1]["knn_top1"])
    assert (out_dir / "report.md").read_text().count("| ckpt |") == 1


@pytest.mark.parametrize("loss", ["ssl", "probe"])
def test_landscape_on_real_photos(world, loss):
    out_dir = world["root"] / f"landscape_{loss}"
    code, out = sslkit(["landscape", "-c", CONFIGS / "mocov2_imagenet.yaml", "--ckpt_path", world["ckpt"],
                        "--loss", loss, "--batches", "1", "--top_k", "1", "--trace_samples", "3",
                        "--density_probes", "1", "--lanczos_steps", "5", "--tol", "0.1", "--by_block", "false",
                        "--out", out_dir, *world["data_args"], "--model.init_args.backbone=test_resnet"],
                       world["root"])
    assert code == 0, out[-3000:]
    record = json.loads((out_dir / "landscape.json").read_text())
    assert record["loss"] == loss and record["batch_size"] == 4
    assert math.isfinite(record["top_eigenvalues"][0]) and math.isfinite(record["trace"])
    assert record["most_negative_eigenvalue"] <= record["top_eigenvalues"][0]
    assert (out_dir / "landscape.png").stat().st_size > 0
