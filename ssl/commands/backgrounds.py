"""``sslkit backgrounds``: Backgrounds-Challenge-style kNN evaluation of a checkpoint.

    sslkit backgrounds -c configs/demo.yaml -c configs/demo_bg.yaml --ckpt_path runs/demo+demo_bg/version_0/checkpoints/last.ckpt
    sslkit backgrounds -c configs/mocov2_imagenet.yaml --ckpt_path moco_v2_800ep_pretrain.pth.tar --data.init_args.root=DIR

The config names the data (masks and labels needed) and the evaluation view; the backbone
comes from ``--ckpt_path``, a checkpoint in any format ``load_backbone`` reads (without
it: the config's backbone at random initialisation). Bank: the train split (clean);
queries: the val split as Original, Only-FG, Mixed-Same and Mixed-Rand. Prints the
accuracies and BG-Gap and writes them to JSON.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from sslkit.eval.backgrounds import VARIANTS, backgrounds_knn

from .common import add_config_arguments, checkpoint_backbone, from_config, prepared_data, renamed, resolve_device


def parse(argv: list[str]) -> tuple[argparse.Namespace, object, object]:
    """The command line and the config's model and data module, built (nothing read yet)."""
    parser = argparse.ArgumentParser(prog="sslkit backgrounds", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser)
    parser.add_argument("--out", default=None, help="JSON file (default: beside the checkpoint, or ./backgrounds.json)")
    parser.add_argument("--k", type=int, default=None, help="neighbours (default: the model's knn_k)")
    parser.add_argument("--temperature", type=float, default=None, help="default: the model's knn temperature")
    parser.add_argument("--seed", type=int, default=0, help="seed of the donor draw")
    args, overrides = parser.parse_known_args(renamed(argv))
    model, data = from_config(args.config, overrides)
    return args, model, data


def run(parsed: tuple[argparse.Namespace, object, object]) -> None:
    args, model, data = parsed
    device = resolve_device(args.device)
    backbone = checkpoint_backbone(args) if args.ckpt_path else model.backbone
    data = prepared_data(data, device)
    k = args.k or model.knn.k
    temperature = args.temperature or model.knn.temperature
    results = backgrounds_knn(backbone.to(device), model.augment.to(device).evaluate, data, k, temperature, device,
                              VARIANTS, args.seed)
    beside = args.ckpt_path and Path(args.ckpt_path).is_file()
    out = Path(args.out) if args.out else (
        Path(args.ckpt_path).with_name("backgrounds.json") if beside else Path("backgrounds.json"))
    record = {"config": args.config, "ckpt_path": args.ckpt_path, "branch": args.branch, "k": k,
              "temperature": temperature, "knn_top1": results}
    out.write_text(json.dumps(record, indent=2))
    for name, value in results.items():
        print(f"{name:>11}: {100 * value:6.2f}")
    print(f"sslkit backgrounds: wrote {out}")


def main(argv: list[str]) -> None:
    run(parse(argv))
