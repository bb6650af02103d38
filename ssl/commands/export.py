"""``sslkit export``: a pretrained backbone as a plain timm/torchvision state_dict.

    sslkit export --ckpt_path runs/.../last.ckpt --out backbone.pth --format torchvision
    sslkit export --ckpt_path moco_v2_800ep_pretrain.pth.tar --out r50.pth --format timm
    sslkit export --ckpt_path dino_full.pth --branch student --out student.pth

``--ckpt_path`` is any checkpoint ``sslkit.checkpoints.load_backbone`` reads. The file holds
the stock architecture's keys, classifier included (freshly initialised), so that
``torchvision.models.<arch>().load_state_dict(torch.load(out))`` and
``timm.create_model(<arch>, pretrained=True, pretrained_cfg_overlay=dict(file=out))``
load it as it is.
"""
from __future__ import annotations

from typing import Literal

from sslkit.checkpoints import export_backbone

from .common import add_checkpoint_arguments, renamed


def parse(argv: list[str]):
    """The command line, checked."""
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(prog="sslkit export", description=__doc__)
    add_checkpoint_arguments(parser)
    parser.add_argument("--out", type=str, required=True, help="state_dict file to write")
    parser.add_argument("--format", type=Literal["torchvision", "timm"], default="torchvision",
                        help="library whose stock model loads the file")
    args = parser.parse_args(renamed(argv))
    if args.small_stem_padding is not None:
        raise ValueError("a small-image stem has no stock torchvision/timm equivalent to export to")
    return args


def main(argv: list[str]) -> None:
    run(parse(argv))


def run(args) -> None:
    out = export_backbone(args.ckpt_path, args.out, args.format, args.arch, args.ckpt_format, args.branch)
    print(f"sslkit export: wrote {out} ({args.format} state_dict)")
