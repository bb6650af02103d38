"""What the subcommands share: a model and data module from a training config, weights
from a checkpoint, and the device to run on."""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch

from sslkit.data.contract import data_contract


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """``-c`` (a training config, as given to ``sslkit fit``), the checkpoint arguments of
    ``add_checkpoint_arguments`` (optional: without ``--ckpt_path`` the config's backbone at
    random initialisation) and ``--device``."""
    parser.add_argument("-c", "--config", action="append", required=True,
                        help="training config (YAML), as given to 'sslkit fit'; may repeat")
    add_checkpoint_arguments(parser, required=False)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def from_config(configs: list[str], overrides: list[str]) -> tuple[pl.LightningModule, pl.LightningDataModule]:
    """Instantiate the config's model and data module exactly as ``sslkit fit`` would;
    ``overrides`` are LightningCLI-style ``--model.x=...`` / ``--data.x=...`` arguments. The
    trainer is not built: inspection runs on whatever device is here, whatever the config's
    trainer asks for."""
    from sslkit.cli import SSLKitCLI, check_overlays

    for config in configs:
        if not Path(config).is_file():
            raise FileNotFoundError(f"config file '{config}' does not exist")
    check_overlays(list(configs), "fit")
    args = [item for config in configs for item in ("-c", config)] + list(overrides)
    with warnings.catch_warnings():  # the tool's own command line is not the CLI's: no mix-up to warn of
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
        cli = SSLKitCLI(args=args, run=False, instantiate_trainer=False)
    from sslkit.methods import SSLMethod

    if isinstance(cli.model, SSLMethod):  # the recipe fitted to the data, as 'sslkit fit' does
        cli.model.check_data(cli.datamodule)
    return cli.model, cli.datamodule


RENAMED_FLAGS = {"--source": "--ckpt_path", "--ckpt": "--ckpt_path", "--source_format": "--ckpt_format"}


def renamed(argv: list[str]) -> list[str]:
    """Flags renamed in 0.2 keep working for one release, with a note naming the new one."""
    out = []
    for arg in argv:
        flag, eq, value = arg.partition("=")
        if flag in RENAMED_FLAGS:
            print(f"sslkit: {flag} is now {RENAMED_FLAGS[flag]} (the old name goes in the next release)",
                  file=sys.stderr)
            arg = RENAMED_FLAGS[flag] + eq + value
        out.append(arg)
    return out


def add_checkpoint_arguments(parser, required: bool = True, many: bool = False) -> None:
    """``--ckpt_path`` (any checkpoint ``load_backbone`` reads, or a timm/torchvision model
    name for hub weights) and how to read it: ``--arch``, ``--ckpt_format``, ``--branch``,
    ``--small_stem_padding``. The same flags in every command that takes a backbone, whether
    its parser is jsonargparse's (``null`` accepted) or argparse's."""
    from jsonargparse import ArgumentParser

    optional = (lambda t: t | None) if isinstance(parser, ArgumentParser) else (lambda t: t)
    if many:
        parser.add_argument("--ckpt_path", type=str, required=required, nargs="+",
                            help="checkpoints in any format sslkit reads (README: formats), or timm model names")
    else:
        parser.add_argument("--ckpt_path", type=str, required=required, default=None,
                            help="checkpoint in any format sslkit reads (README: formats), or a timm model name")
    parser.add_argument("--arch", type=optional(str), default=None,
                        help="architecture, where the file does not record it and it is no torchvision ResNet")
    parser.add_argument("--ckpt_format", type=str, default="auto", help="layout of the checkpoint (default: detected)")
    parser.add_argument("--branch", type=optional(str), default=None,
                        help="online or momentum (student/teacher, query/key, model/ema) where the file holds both")
    parser.add_argument("--small_stem_padding", type=optional(int), default=None,
                        help="padding of a 3x3 small-image stem the file does not record (1 or 2)")
    parser.add_argument("--features", type=optional(str), default=None,
                        help="a ViT's features: cls, avgpool or last_n_cls (default: what the checkpoint records, "
                             "else cls)")
    parser.add_argument("--last_n", type=optional(int), default=None,
                        help="blocks whose class tokens last_n_cls concatenates (DINO's linear protocol: 4)")


def checkpoint_backbone(args):
    """The backbone the checkpoint arguments name, and the one-line report of how it was read."""
    from sslkit.checkpoints import load_backbone_report

    backbone, report = load_backbone_report(args.ckpt_path, args.arch, args.ckpt_format, args.branch,
                                            args.small_stem_padding, getattr(args, "features", None),
                                            getattr(args, "last_n", None))
    print(f"sslkit: loaded {report.summary()}", file=sys.stderr)
    return backbone


def add_source_arguments(parser, many: bool = False) -> None:
    """What ``sslkit probe`` and ``sslkit spectrum`` share (jsonargparse): ``-c``, the
    checkpoint arguments, ``--data`` and the evaluation view (``--crop_size``, ``--resize``,
    ``--mean``, ``--std``; mean/std default to the data module's statistics)."""
    from jsonargparse import ActionConfigFile

    parser.add_argument("-c", "--config", action=ActionConfigFile)
    add_checkpoint_arguments(parser, many=many)
    parser.add_subclass_arguments(pl.LightningDataModule, "data", required=True)
    parser.add_argument("--crop_size", type=int, default=224)
    parser.add_argument("--resize", type=int | None, default=None,
                        help="shorter side before the centre crop (default: crop / 0.875 for whole images)")
    parser.add_argument("--mean", type=tuple[float, float, float] | None, default=None)
    parser.add_argument("--std", type=tuple[float, float, float] | None, default=None)


def prepared_data(data, device: torch.device):
    """The data module set up for evaluation on ``device``, its workers given their cores."""
    from sslkit.data import share_cores

    data.setup("validate")
    share_cores(data_contract(data).num_workers, device)
    return data


def feature_source(args, backbone, data, device, cache_dir):
    """The features every instrument of ``probe`` and ``report`` reads: ``backbone`` under the
    evaluation view of ``args``, cached by checkpoint (its bytes) and how it was read (branch,
    features, ``arch``, ``ckpt_format``, ``small_stem_padding``), data and view."""
    from sslkit.checkpoints import file_digest
    from sslkit.eval.card import FeatureSource

    view = eval_view_of(args, data).to(device)
    normalize = view.stages[-1]
    digest = file_digest(args.ckpt_path) if Path(args.ckpt_path).is_file() else f"hub:{args.ckpt_path}"
    key = {"checkpoint": digest, "branch": args.branch, "features": getattr(backbone, "features", None),
           "last_n": getattr(backbone, "last_n", None), "arch": getattr(args, "arch", None),
           "ckpt_format": getattr(args, "ckpt_format", "auto"),
           "small_stem_padding": getattr(args, "small_stem_padding", None),
           "view": {"crop_size": args.crop_size, "resize": args.resize, "mean": normalize.mean.flatten().tolist(),
                    "std": normalize.std.flatten().tolist()}}
    return FeatureSource(backbone, data, view, device, key, cache_dir)


def eval_view_of(args, data):
    """The evaluation view of ``args`` with the data module's statistics where none are given."""
    from sslkit.augmentations.recipes import eval_view

    mean = args.mean or data_contract(data).mean
    std = args.std or data.std
    return eval_view(args.crop_size, mean, std, args.resize)
