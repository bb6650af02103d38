"""What the subcommands share: a model and data module from a training config, weights
from a checkpoint, and the device to run on."""
from __future__ import annotations

import argparse
import sys
from unittest import mock
from pathlib import Path

import pytorch_lightning as pl
import torch


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", action="append", required=True,
                        help="training config (YAML), as given to 'sslkit fit'; may repeat")
    parser.add_argument("--ckpt_path", default=None, help="sslkit checkpoint (.ckpt) to load weights from")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def from_config(configs: list[str], overrides: list[str]) -> tuple[pl.LightningModule, pl.LightningDataModule]:
    """Instantiate the config's model and data module exactly as ``sslkit fit`` would;
    ``overrides`` are LightningCLI-style ``--model.x=...`` / ``--data.x=...`` arguments."""
    from sslkit.cli import SSLKitCLI, check_overlays

    for config in configs:
        if not Path(config).is_file():
            raise FileNotFoundError(f"config file '{config}' does not exist")
    check_overlays(list(configs), "fit")
    args = [item for config in configs for item in ("-c", config)] + list(overrides)
    with mock.patch.object(sys, "argv", sys.argv[:1]):
        cli = SSLKitCLI(args=args, run=False)
    return cli.model, cli.datamodule


def load_weights(model: pl.LightningModule, ckpt_path: str) -> None:
    """Weights of an sslkit checkpoint into ``model`` (strict; missing or unexpected keys
    are named). Loaded with ``weights_only=True``: nothing in the file is executed."""
    if not Path(ckpt_path).is_file():
        raise FileNotFoundError(f"checkpoint '{ckpt_path}' does not exist")
    try:
        checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many types for a bad file
        raise ValueError(f"cannot read checkpoint '{ckpt_path}': {err}") from err
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ValueError(f"'{ckpt_path}' is not an sslkit/Lightning checkpoint (no 'state_dict')")
    result = model.load_state_dict(checkpoint["state_dict"], strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f"checkpoint '{ckpt_path}' does not fit the config's model: missing {result.missing_keys[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}"
        )


def add_source_arguments(parser) -> None:
    """``-c``, ``--source`` (any checkpoint ``load_backbone`` reads, or a hub name),
    ``--arch``, ``--source_format``, ``--data`` and the evaluation view (``--crop_size``,
    ``--mean``, ``--std``): what ``sslkit probe`` and ``sslkit spectrum`` share (jsonargparse)."""
    from jsonargparse import ActionConfigFile

    from sslkit.augmentations.stages import IMAGENET_MEAN, IMAGENET_STD

    parser.add_argument("-c", "--config", action=ActionConfigFile)
    parser.add_argument("--source", type=str, required=True,
                        help="checkpoint in any format load_backbone reads, or a timm model name (hub weights)")
    parser.add_argument("--arch", type=str | None, default=None, help="architecture, where --source does not record it")
    parser.add_argument("--source_format", type=str, default="auto", help="layout of --source (default: detected)")
    parser.add_subclass_arguments(pl.LightningDataModule, "data", required=True)
    parser.add_argument("--crop_size", type=int, default=224)
    parser.add_argument("--mean", type=tuple[float, float, float], default=IMAGENET_MEAN)
    parser.add_argument("--std", type=tuple[float, float, float], default=IMAGENET_STD)
