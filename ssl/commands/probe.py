"""``sslkit probe``: linear probe of a pretrained backbone.

    sslkit probe -c configs/linear_probe.yaml --ckpt_path runs/demo/version_0/checkpoints/last.ckpt
    sslkit probe -c configs/linear_probe_cifar10.yaml --ckpt_path CKPT --protocol standard
    sslkit probe -c configs/linear_probe_imagenet.yaml --ckpt_path dino_full.pth --branch student

Fast path (default): features extracted once (centre crop, no augmentation, progress
bar), cached on disk keyed by checkpoint, data and view; full-batch L-BFGS logistic
regression with an L2 sweep on a held-out part of the train split. Standard path: the
published protocol (SGD, training augmentation) through ``sslkit.eval.LinearProbe``.
Top-1 and top-5 on the data module's val split go to stdout and a JSON file, with the
probe's top-1 on its own training images (``train_top1``) and its generalisation gap
(``gap`` = train - val top-1): Dubois et al. 2020 (decodable information bottleneck) read a
representation by both, the test accuracy and how little the probe needs to memorise.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Literal

import pytorch_lightning as pl
from jsonargparse import ArgumentParser

from sslkit.eval.card import probe_card
from sslkit.eval.linear_probe import LinearProbe

from .common import add_source_arguments, checkpoint_backbone, feature_source, prepared_data, renamed, resolve_device


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="sslkit probe", description=__doc__)
    add_source_arguments(parser)
    parser.add_argument("--protocol", type=Literal["fast", "standard"], default="fast")
    parser.add_argument("--l2_grid", type=list[float], default=[1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1])
    parser.add_argument("--val_fraction", type=float, default=0.2)
    parser.add_argument("--max_iter", type=int, default=500)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--lr", type=float, default=30.0)
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--weight_decay", type=float, default=0.0)
    parser.add_argument("--nesterov", type=bool, default=False)
    parser.add_argument("--milestones", type=list[int], default=[60, 80])
    parser.add_argument("--knn_k", type=int, default=20, help="also report weighted kNN on the cached features")
    parser.add_argument("--knn_temperature", type=float, default=0.07)
    parser.add_argument("--backgrounds", type=bool, default=False,
                        help="also score Only-FG, Mixed-Same, Mixed-Rand and BG-Gap (fast path; needs masks)")
    parser.add_argument("--cache_dir", type=str | None, default="runs/probe_cache")
    parser.add_argument("--out", type=str | None, default=None, help="JSON file (default: beside the checkpoint)")
    parser.add_argument("--device", type=str, default="auto")
    parser.add_argument("--num_workers", type=int | None, default=None)
    return parser


def fast_probe(args, backbone, data, device) -> dict:
    source = feature_source(args, backbone, data, device, args.cache_dir)
    return probe_card(source, args.l2_grid, args.val_fraction, args.max_iter, args.knn_k, args.knn_temperature,
                      args.backgrounds)


def standard_probe(args, backbone, data, device) -> dict:
    num_classes = int(max(data.labels("train").max(), data.labels("val").max())) + 1
    module = LinearProbe(backbone, num_classes, args.crop_size, mean=args.mean or data.mean, std=args.std or data.std,
                         resize=args.resize, lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay,
                         nesterov=args.nesterov, milestones=args.milestones, decode=data.decode)
    trainer = pl.Trainer(max_epochs=args.epochs, accelerator="gpu" if device.type == "cuda" else "cpu",
                         devices=1, logger=False, enable_checkpointing=False,
                         check_val_every_n_epoch=max(1, args.epochs // 10))
    val = data.eval_loader(data.eval_split("val"))
    trainer.fit(module, data.eval_loader(data.eval_split("train"), shuffle=True), val)
    results = trainer.validate(module, val, verbose=False)[0]
    # the probe's accuracy on its own training images (evaluation view): its generalisation gap
    train = trainer.validate(module, data.eval_loader(data.eval_split("train")), verbose=False)[0]
    return {"top1": results["val/top1"], "top5": results["val/top5"], "train_top1": train["val/top1"],
            "gap": train["val/top1"] - results["val/top1"], "epochs": args.epochs, "lr": args.lr}


def parse(argv: list[str]):
    """The command line with its data module built (nothing read yet)."""
    parser = build_parser()
    return parser.instantiate_classes(parser.parse_args(renamed(argv)))


def main(argv: list[str]) -> None:
    run(parse(argv))


def run(init) -> None:
    data = init.data
    if init.num_workers is not None:
        data.num_workers = init.num_workers
    device = resolve_device(init.device)
    data = prepared_data(data, device)
    backbone = checkpoint_backbone(init).to(device)
    start = time.perf_counter()
    record = fast_probe(init, backbone, data, device) if init.protocol == "fast" else standard_probe(init, backbone, data, device)
    record.update(ckpt_path=init.ckpt_path, branch=init.branch, protocol=init.protocol,
                  seconds=time.perf_counter() - start)
    beside = Path(init.ckpt_path).is_file()
    out = Path(init.out) if init.out else (
        Path(init.ckpt_path).with_name(f"probe_{init.protocol}.json") if beside else Path(f"probe_{init.protocol}.json"))
    out.write_text(json.dumps(record, indent=2))
    knn = f", kNN top-1 {100 * record['knn_top1']:.2f}%" if "knn_top1" in record else ""
    if "train_top1" in record:  # Dubois et al. 2020: test accuracy with the probe's generalisation gap
        knn += f" (probe train top-1 {100 * record['train_top1']:.2f}%, gap {100 * record['gap']:+.2f})"
    print(f"\nsslkit probe ({init.protocol}): top-1 {100 * record['top1']:.2f}%, top-5 {100 * record['top5']:.2f}%"
          f"{knn} on {type(data).__name__} val, {record['seconds']:.1f} s")
    for name, value in record.get("backgrounds_top1", {}).items():
        print(f"  {name:>11}: {100 * value:6.2f}")
    print(f"sslkit probe: wrote {out}")
