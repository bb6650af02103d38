"""``sslkit masks``: write one foreground mask per image with a saliency model.

    sslkit masks --images data/train --out masks/train --model u2net
    sslkit masks --images data/train --out masks/train --model border_contrast --threshold 0.4

Resumable: rerun the same command after an interruption and only missing masks are
computed. The output folder mirrors the image folder, as ``ImageFolderData(mask_root=...)``
expects.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from sslkit.augmentations.masks import SALIENCY_MODELS, SaliencyMasker, load_saliency_model, write_masks

from .common import resolve_device


def parse(argv: list[str]) -> argparse.Namespace:
    """The command line, checked: the image folder exists and the model name is one sslkit
    knows or a ``package.module:attribute`` path (loaded only by ``run``)."""
    parser = argparse.ArgumentParser(prog="sslkit masks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", required=True, help="image folder (searched recursively)")
    parser.add_argument("--out", required=True, help="mask folder to write (mirrors --images)")
    parser.add_argument("--model", default="border_contrast",
                        help="border_contrast | u2net | u2netp | isnet-general-use | silueta | package.module:attribute")
    parser.add_argument("--weights", default=None, help="state_dict for a torch saliency module")
    parser.add_argument("--threshold", type=float, default=0.5, help="on the min-max normalised saliency")
    parser.add_argument("--input_size", type=int, default=320, help="side the model sees; 0 = native size")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--num_workers", type=int, default=0, help="image-decoding processes")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--overwrite", action="store_true", help="recompute masks that exist")
    parser.add_argument("--skip_unreadable", action="store_true", help="count unreadable images and go on")
    args = parser.parse_args(argv)
    if not Path(args.images).is_dir():
        raise FileNotFoundError(f"--images '{args.images}' is not a folder")
    if args.model not in SALIENCY_MODELS and ":" not in args.model:
        raise ValueError(f"--model '{args.model}' is none of {', '.join(SALIENCY_MODELS)} and no package.module:attribute")
    return args


def run(args: argparse.Namespace) -> None:
    model = load_saliency_model(args.model, args.weights)
    masker = SaliencyMasker(model, args.threshold, args.input_size or None)
    report = write_masks(args.images, args.out, masker, args.batch_size, resolve_device(args.device),
                         args.overwrite, args.skip_unreadable, args.num_workers)
    print(report.summary())


def main(argv: list[str]) -> None:
    run(parse(argv))
