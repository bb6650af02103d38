"""Tiny, fast settings shared by the end-to-end tests."""
import pytorch_lightning as pl

from sslkit.augmentations import MoCoV2Views
from sslkit.data import SyntheticScenes
from sslkit.methods import KNNConfig, MoCoV2, OptimConfig


def tiny_data(**kwargs) -> SyntheticScenes:
    args = dict(image_size=32, num_classes=4, num_train=64, num_val=32, batch_size=16)
    args.update(kwargs)
    return SyntheticScenes(**args)


def tiny_moco(**kwargs) -> MoCoV2:
    args = dict(
        backbone="test_resnet", proj_hidden_dim=32, proj_output_dim=16, queue_size=64, momentum=0.9,
        batchnorm="split", bn_splits=2, knn=KNNConfig(k=5),
        augment=MoCoV2Views(crop_size=32, blur_p=0.0), optim=OptimConfig(lr=0.1),
    )
    args.update(kwargs)
    return MoCoV2(**args)


def tiny_trainer(tmp_path, **kwargs) -> pl.Trainer:
    args = dict(
        default_root_dir=str(tmp_path), max_steps=3, limit_val_batches=2, logger=False,
        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", devices=1,
    )
    args.update(kwargs)
    return pl.Trainer(**args)


def tiny_byol(**kwargs):
    from sslkit.augmentations import BYOLViews
    from sslkit.methods import BYOL

    args = dict(backbone="test_resnet", proj_hidden_dim=32, proj_output_dim=16, pred_hidden_dim=32,
                augment=BYOLViews(crop_size=32, blur_p=(0.0, 0.0)), knn=KNNConfig(k=5),
                optim=OptimConfig(name="lars", lr=0.2, exclude_bias_and_norm=True))
    args.update(kwargs)
    return BYOL(**args)


def tiny_swav(**kwargs):
    from sslkit.augmentations import MultiCropViews
    from sslkit.methods import SwAV

    args = dict(backbone="test_resnet", proj_hidden_dim=32, proj_output_dim=16, num_prototypes=10,
                freeze_prototypes_epochs=0, queue_size=32, queue_start_epoch=0, knn=KNNConfig(k=5),
                augment=MultiCropViews(global_size=32, local_size=16, num_local=2, blur_p=0.0))
    args.update(kwargs)
    return SwAV(**args)


def invoke(args, cwd, capfd, monkeypatch):
    """``sslkit ARGS`` in this process (no interpreter start-up), from ``cwd``: a
    ``CompletedProcess`` (returncode, stdout, stderr) as a user would see them; it also
    unpacks as ``code, out, err``."""
    from sslkit.cli import main

    import logging
    import sys

    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", ["sslkit"])  # as a user's shell would leave it
    capfd.readouterr()
    handler = logging.StreamHandler(sys.stderr)  # what Lightning's messages print to outside pytest
    loggers = [logging.getLogger(name) for name in ("pytorch_lightning", "lightning.pytorch", "lightning")]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exit_info:
        code = exit_info.code if isinstance(exit_info.code, int) else (0 if exit_info.code is None else 1)
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
    out, err = capfd.readouterr()
    return Completed(args, code, out, err)


class Completed(__import__("subprocess").CompletedProcess):
    def __iter__(self):
        return iter((self.returncode, self.stdout, self.stderr))


def record_draws(module):
    """The parameters every later call of ``module`` draws (a stage's or BackgroundSwap's
    ``draw``, which it hands back), in a list that grows with each call."""
    draws = []
    draw = module.draw

    def recording(*args, **kwargs):
        draws.append(draw(*args, **kwargs))
        return draws[-1]

    module.draw = recording
    return draws


def tiny_baseline(name: str, **kwargs):
    """SimCLR, SimSiam, BarlowTwins or VICReg with the test backbone and 32 px views."""
    from sslkit.augmentations import BYOLViews
    from sslkit import methods

    args = dict(backbone="test_resnet", knn=KNNConfig(k=5))
    if name in ("SimCLR", "SimSiam"):
        args.update(proj_hidden_dim=32, proj_output_dim=16, augment=MoCoV2Views(crop_size=32, blur_p=0.0))
    else:
        args.update(proj_hidden_dim=32, proj_output_dim=16, augment=BYOLViews(crop_size=32, blur_p=(0.0, 0.0)))
    if name == "SimSiam":
        args.update(pred_hidden_dim=8, optim=OptimConfig(lr=0.1, schedule_interval="step"))
    if name in ("SimCLR", "BarlowTwins", "VICReg"):
        args.update(optim={"lr": 0.5, "warmup_epochs": 1})
    args.update(kwargs)
    return getattr(methods, name)(**args)


TINY_VIT = {"name": "mocov3_vit_tiny", "kwargs": {"img_size": 32, "patch_size": 8, "depth": 2, "embed_dim": 32,
                                                   "num_heads": 2}}


def tiny_mocov3(vit: bool = True, **kwargs):
    """MoCo v3 with a 2-block, 32-wide MoCo v3 ViT at 32 px (or the test ResNet) and tiny heads."""
    from sslkit.augmentations import BYOLViews
    from sslkit.methods import MoCoV3

    args = dict(backbone=dict(TINY_VIT) if vit else "test_resnet", dim=16, mlp_dim=32, temperature=0.2,
                stop_grad_conv1=vit, augment=BYOLViews(crop_size=32, blur_p=(0.0, 0.0)), knn=KNNConfig(k=5),
                optim=OptimConfig(name="adamw", lr=1e-3, weight_decay=0.1, warmup_epochs=1) if vit else None)
    args.update(kwargs)
    return MoCoV3(**args)
