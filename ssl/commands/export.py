"""``sslkit export``: a pretrained backbone as a plain timm/torchvision state_dict.

    sslkit export --ckpt runs/.../last.ckpt --out backbone.pth --format torchvision
    sslkit export --ckpt moco_v2_800ep_pretrain.pth.tar --out r50.pth --format timm

``--ckpt`` is any checkpoint ``sslkit.checkpoints.load_backbone`` reads. The file holds
the stock architecture's keys, classifier included (freshly initialised), so that
``torchvision.models.<arch>().load_state_dict(torch.load(out))`` and
``timm.create_model(<arch>, pretrained=True, pretrained_cfg_overlay=dict(file=out))``
load it as it is.
"""
from __future__ import annotations

import argparse

from sslkit.checkpoints import export_backbone


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="sslkit export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", required=True, help="checkpoint to export the backbone of")
    parser.add_argument("--out", required=True, help="state_dict file to write")
    parser.add_argument("--format", choices=["torchvision", "timm"], default="torchvision")
    parser.add_argument("--arch", default=None, help="architecture, where the checkpoint does not record it")
    parser.add_argument("--source_format", default="auto", help="layout of --ckpt (default: detected)")
    args = parser.parse_args(argv)
    out = export_backbone(args.ckpt, args.out, args.format, args.arch, args.source_format)
    print(f"sslkit export: wrote {out} ({args.format} state_dict)")
