"""``sslkit backgrounds``: Backgrounds-Challenge-style kNN evaluation of a checkpoint.

    sslkit backgrounds -c configs/demo_bg.yaml --ckpt_path runs/demo_bg/version_0/checkpoints/last.ckpt

Bank: the data module's train split (clean); queries: its val split as Original, Only-FG,
Mixed-Same and Mixed-Rand (masks and labels needed). Prints the accuracies and BG-Gap and
writes them to JSON. Without ``--ckpt_path`` the model is at random initialisation.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from sslkit.eval.backgrounds import VARIANTS, backgrounds_knn

from .common import add_config_arguments, from_config, load_weights, resolve_device


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="sslkit backgrounds", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser)
    parser.add_argument("--out", default=None, help="JSON file (default: beside the checkpoint, or ./backgrounds.json)")
    parser.add_argument("--k", type=int, default=None, help="neighbours (default: the model's knn_k)")
    parser.add_argument("--temperature", type=float, default=None, help="default: the model's knn temperature")
    parser.add_argument("--seed", type=int, default=0, help="seed of the donor draw")
    args, overrides = parser.parse_known_args(argv)
    model, data = from_config(args.config, overrides)
    if args.ckpt_path:
        load_weights(model, args.ckpt_path)
    device = resolve_device(args.device)
    model.to(device)
    data.setup("validate")
    k = args.k or model.knn.k
    temperature = args.temperature or model.knn.temperature
    results = backgrounds_knn(model.backbone, model.augment.evaluate, data.knn_bank(), data.val_set, k, temperature,
                              data.batch_size, device, VARIANTS, args.seed)
    out = Path(args.out) if args.out else (
        Path(args.ckpt_path).with_name("backgrounds.json") if args.ckpt_path else Path("backgrounds.json"))
    record = {"config": args.config, "ckpt_path": args.ckpt_path, "k": k, "temperature": temperature,
              "knn_top1": results}
    out.write_text(json.dumps(record, indent=2))
    for name, value in results.items():
        print(f"{name:>11}: {100 * value:6.2f}")
    print(f"sslkit backgrounds: wrote {out}")
