"""``sslkit masks``: write one foreground mask per image with a saliency model.

    sslkit masks --images data/train --out masks/train --model u2net
    sslkit masks --images data/train --out masks/train --model border_contrast --threshold 0.4

Masks for the background augmentations come from the dataset itself (``SyntheticScenes``
renders exact masks), from a mask folder mirroring the image folder
(``ImageFolderData(mask_root=...)``), or from this command, which writes that folder once.
Resumable: rerun the same command after an interruption and only missing masks are
computed; each file is written under a temporary name and renamed.
"""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision.datasets.folder import IMG_EXTENSIONS
from tqdm.auto import tqdm

from sslkit.data.decode import ImageDecodeError, as_chw, open_image
from sslkit.data.files import image_files, mask_path

from .common import resolve_device
from .saliency import SALIENCY_MODELS, SaliencyMasker, load_saliency_model


class _Images(Dataset):
    def __init__(self, files: list[Path]) -> None:
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int):
        path = self.files[index]
        try:
            return path, as_chw(open_image(str(path), "RGB"))
        except ImageDecodeError as err:
            return path, str(err)


def _single(items: list):
    return items[0]


@dataclass
class MaskReport:
    """What ``write_masks`` did: files written and skipped (already there), images that
    could not be read, and the foreground fraction of each written mask."""

    written: int = 0
    skipped: int = 0
    failed: list[str] = field(default_factory=list)
    foreground_fractions: list[float] = field(default_factory=list)

    def summary(self, foreground_range: tuple[float, float] = (0.05, 0.95)) -> str:
        lines = [f"masks: {self.written} written, {self.skipped} already there, {len(self.failed)} unreadable"]
        if self.foreground_fractions:
            fractions = np.asarray(self.foreground_fractions)
            outside = int(((fractions < foreground_range[0]) | (fractions > foreground_range[1])).sum())
            lines.append(
                f"foreground fraction: median {np.median(fractions):.2f}; {outside} of {len(fractions)} "
                f"outside {list(foreground_range)} (the background stages skip those images)"
            )
        lines.extend(f"  unreadable: {message}" for message in self.failed)
        return "\n".join(lines)


def _save_atomically(mask: torch.Tensor, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    Image.fromarray(mask.squeeze(0).cpu().numpy().astype(np.uint8) * 255).save(partial, format="PNG")
    os.replace(partial, path)


def write_masks(
    images: str | Path,
    out: str | Path,
    masker: SaliencyMasker,
    batch_size: int = 16,
    device: str | torch.device = "cpu",
    overwrite: bool = False,
    skip_unreadable: bool = False,
    num_workers: int = 0,
    progress: bool = True,
) -> MaskReport:
    """One PNG mask per image under ``images``, mirrored under ``out``.

    Resumable: masks already present are skipped unless ``overwrite``; each file is
    written to a temporary name and renamed, so an interrupted run leaves no half file.
    An unreadable image stops the run with its path, or is counted with
    ``skip_unreadable``.
    """
    images, out = Path(images), Path(out)
    if not images.is_dir():
        raise FileNotFoundError(f"image folder '{images}' does not exist")
    files = image_files(images)
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(IMG_EXTENSIONS)}) under '{images}'")
    report = MaskReport()
    todo = [f for f in files if overwrite or not mask_path(f, images, out).exists()]
    report.skipped = len(files) - len(todo)
    if isinstance(masker.model, nn.Module):
        masker.model.to(device)
    loader = DataLoader(_Images(todo), batch_size=1, num_workers=num_workers, collate_fn=_single)
    pending: list[tuple[Path, torch.Tensor]] = []

    def flush() -> None:
        by_size: dict[tuple[int, int], list[tuple[Path, torch.Tensor]]] = {}
        for path, image in pending:
            by_size.setdefault(tuple(image.shape[-2:]), []).append((path, image))
        for group in by_size.values():
            masks = masker(torch.stack([image for _, image in group]).to(device))
            for (path, _), mask in zip(group, masks):
                _save_atomically(mask, mask_path(path, images, out))
                report.written += 1
                report.foreground_fractions.append(float(mask.float().mean()))
        pending.clear()

    for path, item in tqdm(loader, total=len(todo), desc="masks", unit="img", disable=not progress):
        if isinstance(item, str):
            if not skip_unreadable:
                raise RuntimeError(f"{item} (pass --skip_unreadable true to count and go on)")
            report.failed.append(item)
            continue
        pending.append((path, item))
        if len(pending) >= batch_size:
            flush()
    flush()
    return report


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
