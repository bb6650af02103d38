"""``sslkit preview``: see what a config's augmentation does before spending GPU hours.

    sslkit preview -c configs/demo.yaml -c configs/demo_bg.yaml --out views.png --num_images 8
    sslkit preview -c configs/demo.yaml --ckpt_path runs/demo/version_0/checkpoints/last.ckpt

Writes a PNG grid for one training batch: each row one image, the columns the original
(the whole image, or the canvas of fixed-size data), its mask (when the data has masks),
every training view, and the BG_Swaps hard negative (when the recipe makes one). With
``--ckpt_path`` (any format ``load_backbone`` reads) each view is also titled with the
cosine similarity of its backbone features to view 0's: how hard the recipe makes the
positive pair, and the negative, for that network. Runs on the CPU whatever the config's
trainer asks for. Extra ``--model.*`` / ``--data.*`` arguments override the config.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F

from sslkit.augmentations.stages import Normalize
from sslkit.augmentations.views import recipe_of

from .common import add_config_arguments, checkpoint_backbone, from_config, renamed


def _unnormalise(image: torch.Tensor, recipe: torch.nn.Module) -> torch.Tensor:
    for module in recipe.modules():
        if isinstance(module, Normalize):
            image = image * module.std.to(image) + module.mean.to(image)
    return image.clamp(0, 1)


def preview_grid(batch: dict, views: list[dict], augment: torch.nn.Module, num_images: int,
                 backbone: torch.nn.Module | None = None) -> list[tuple[str, list, list[str] | None]]:
    """Columns of the grid as ``(title, n images [3,h,w] in [0, 1], n captions or None)``; the
    originals are the images as the data module gives them: whole, at their own sizes, or
    the canvas. With ``backbone``: each view's caption is its feature similarity to view 0."""
    n = min(num_images, len(batch["image"]))
    columns = [("original", [image.float() / 255 for image in batch["image"][:n]], None)]
    if batch.get("mask") is not None:
        columns.append(("mask", [mask.float().expand(3, -1, -1) for mask in batch["mask"][:n]], None))
    inputs = [view["image"][:n] for view in views]
    titles = [f"view {i}" for i in range(len(views))]
    recipes = [recipe_of(augment, i) for i in range(len(views))]
    shown = [None] * len(inputs)
    if len(views) > 1 and "hard_negative" in views[1]:
        inputs.append(views[1]["hard_negative"][:n])
        titles.append("BG_Swaps negative\n(black: none drawn)")
        recipes.append(recipes[1])
        shown.append(views[1]["hard_negative_valid"][:n].view(-1, 1, 1, 1))
    captions: list[list[str] | None] = [None] * len(inputs)
    if backbone is not None:
        with torch.no_grad():
            anchor = F.normalize(backbone(inputs[0].float()), dim=1)
            captions = [[f"cos {s:.2f}" for s in (F.normalize(backbone(x.float()), dim=1) * anchor).sum(1).tolist()]
                        for x in inputs]
    for title, x, recipe, caption, drawn in zip(titles, inputs, recipes, captions, shown):
        image = _unnormalise(x.float(), recipe)
        columns.append((title, image if drawn is None else image * drawn.to(image), caption))
    return columns


def save_grid(columns: list[tuple], out: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = len(columns[0][1])
    fig, axes = plt.subplots(rows, len(columns), figsize=(1.3 * len(columns), 1.4 * rows + 0.4), squeeze=False)
    for c, (name, images, captions) in enumerate(columns):
        for r in range(rows):
            ax = axes[r][c]
            ax.imshow(images[r].permute(1, 2, 0).cpu().numpy(), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(name, fontsize=7)
            if captions is not None:
                ax.set_xlabel(captions[r], fontsize=6)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)


def parse(argv: list[str]) -> tuple[argparse.Namespace, object, object]:
    """The command line and the config's model and data module, built (nothing read yet)."""
    parser = argparse.ArgumentParser(prog="sslkit preview", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser)
    parser.add_argument("--out", default="views.png", help="PNG file to write")
    parser.add_argument("--num_images", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0, help="seed of the augmentation draw")
    args, overrides = parser.parse_known_args(renamed(argv))
    model, data = from_config(args.config, overrides)
    return args, model, data


def run(parsed: tuple[argparse.Namespace, object, object]) -> None:
    args, model, data = parsed
    backbone = checkpoint_backbone(args).eval() if args.ckpt_path else None
    data.setup("fit")
    batch = data.prepare(next(iter(data.train_dataloader())), "cpu")
    torch.manual_seed(args.seed)
    with torch.no_grad():
        views = model.augment(batch)
    columns = preview_grid(batch, views, model.augment, args.num_images, backbone)
    out = Path(args.out)
    save_grid(columns, out, f"{' + '.join(args.config)}: {type(model.augment).__name__}")
    print(f"sslkit preview: wrote {out} ({len(columns)} columns x {len(columns[0][1])} images)")


def main(argv: list[str]) -> None:
    run(parse(argv))
