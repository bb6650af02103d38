"""``sslkit preview``: see what a config's augmentation does before spending GPU hours.

    sslkit preview -c configs/demo_bg.yaml --out views.png --num_images 8

Writes a PNG grid for one training batch: each row one image, the columns the original
(the whole image, or the canvas of fixed-size data), its mask (when the data has masks),
every training view, and the BG_Swaps hard negative (when the recipe makes one). Runs on
the CPU whatever the config's trainer asks for. Extra ``--model.*`` / ``--data.*``
arguments override the config.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from sslkit.augmentations.stages import Normalize
from sslkit.augmentations.views import recipe_of
from sslkit.data.base import prepare_batch

from .common import add_config_arguments, from_config, load_weights


def _unnormalise(image: torch.Tensor, recipe: torch.nn.Module) -> torch.Tensor:
    for module in recipe.modules():
        if isinstance(module, Normalize):
            image = image * module.std.to(image) + module.mean.to(image)
    return image.clamp(0, 1)


def preview_grid(batch: dict, views: list[dict], augment: torch.nn.Module, num_images: int) -> list[tuple[str, list]]:
    """Columns of the grid as ``(title, n images [3,h,w] in [0, 1])``; the originals are the
    images as the data module gives them: whole, at their own sizes, or the canvas."""
    n = min(num_images, len(batch["image"]))
    columns = [("original", [image.float() / 255 for image in batch["image"][:n]])]
    if batch.get("mask") is not None:
        columns.append(("mask", [mask.float().expand(3, -1, -1) for mask in batch["mask"][:n]]))
    for i, view in enumerate(views):
        columns.append((f"view {i}", _unnormalise(view["image"][:n].float(), recipe_of(augment, i))))
    if len(views) > 1 and "hard_negative" in views[1]:
        negative = _unnormalise(views[1]["hard_negative"][:n].float(), recipe_of(augment, 1))
        drawn = views[1]["hard_negative_valid"][:n].view(-1, 1, 1, 1).to(negative)
        columns.append(("BG_Swaps negative\n(black: none drawn)", negative * drawn))
    return columns


def save_grid(columns: list[tuple[str, torch.Tensor]], out: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = len(columns[0][1])
    fig, axes = plt.subplots(rows, len(columns), figsize=(1.3 * len(columns), 1.3 * rows + 0.4), squeeze=False)
    for c, (name, images) in enumerate(columns):
        for r in range(rows):
            ax = axes[r][c]
            ax.imshow(images[r].permute(1, 2, 0).cpu().numpy(), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(name, fontsize=7)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="sslkit preview", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser)
    parser.add_argument("--out", default="views.png", help="PNG file to write")
    parser.add_argument("--num_images", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0, help="seed of the augmentation draw")
    args, overrides = parser.parse_known_args(argv)
    model, data = from_config(args.config, overrides)
    if args.ckpt_path:
        load_weights(model, args.ckpt_path)
    data.setup("fit")
    batch = prepare_batch(next(iter(data.train_dataloader())), "cpu", getattr(data, "bad_images", "error"))
    torch.manual_seed(args.seed)
    with torch.no_grad():
        views = model.augment(batch)
    columns = preview_grid(batch, views, model.augment, args.num_images)
    out = Path(args.out)
    save_grid(columns, out, f"{' + '.join(args.config)}: {type(model.augment).__name__}")
    print(f"sslkit preview: wrote {out} ({len(columns)} columns x {len(columns[0][1])} images)")
