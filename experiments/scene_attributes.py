"""What a backbone encodes on SyntheticScenes: kNN top-1 for the class (the object's shape) and
for the background's texture family, and how well a ridge regression on the features predicts
plain image statistics (mean luminance of the object and of the background, their contrast,
the object's area), as R^2 on the val split.

    python experiments/scene_attributes.py runs/tune/A/version_0/checkpoints/last.ckpt [more.ckpt ...]
    python experiments/scene_attributes.py random --seed 2     # test_resnet at seed 2's initialisation

A method whose kNN trails on the class while its features predict the luminances almost exactly
has learned the statistics two crops of a scene share, not the shape; docs/demos.md uses this
to compare SimSiam with VICReg trained on the same views.
"""
from __future__ import annotations

import argparse
import json

import torch
from kornia.color import rgb_to_grayscale

from sslkit.augmentations.recipes import eval_view
from sslkit.checkpoints.loading import load_backbone
from sslkit.data import SyntheticScenes
from sslkit.eval.features import extract_features
from sslkit.eval.knn import knn_predict
from sslkit.nn.backbones import Backbone, build_backbone


def image_statistics(images: torch.Tensor, masks: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-scene object and background luminance, their absolute difference, and object area."""
    luma = rgb_to_grayscale(images.float() / 255)[:, 0]
    inside = masks[:, 0].float()
    fg = (luma * inside).sum((1, 2)) / inside.sum((1, 2)).clamp(min=1)
    bg = (luma * (1 - inside)).sum((1, 2)) / (1 - inside).sum((1, 2)).clamp(min=1)
    return {"object_luminance": fg, "background_luminance": bg, "contrast": (fg - bg).abs(), "object_area": inside.mean((1, 2))}


@torch.no_grad()
def features(backbone: Backbone, split: dict, desc: str, batch: int = 500) -> torch.Tensor:
    """The backbone's features of a split's images through the evaluation view."""
    view = eval_view(split["image"].shape[-1])
    batches = [{"image": split["image"][i:i + batch], "label": split["label"][i:i + batch]}
               for i in range(0, len(split["image"]), batch)]
    return extract_features(backbone, batches, lambda b: view(b)["image"], desc=desc)[0]


def ridge_r2(train_x: torch.Tensor, train_y: torch.Tensor, val_x: torch.Tensor, val_y: torch.Tensor, alpha: float = 0.1) -> float:
    """Val R^2 of a ridge regression on standardised features."""
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    design = lambda x: torch.cat([(x - mean) / std, torch.ones(len(x), 1)], 1)  # noqa: E731
    a, b = design(train_x).double(), design(val_x).double()
    w = torch.linalg.solve(a.T @ a + alpha * torch.eye(a.shape[1], dtype=a.dtype), a.T @ train_y.double())
    return float(1 - ((b @ w - val_y.double()) ** 2).mean() / val_y.double().var())


def describe(backbone: Backbone, train: dict, val: dict, k: int, temperature: float) -> dict[str, float]:
    train_f, val_f = features(backbone, train, "train features"), features(backbone, val, "val features")
    out = {}
    for name, key in (("knn_class", "label"), ("knn_texture", "texture")):
        classes = int(train[key].max()) + 1
        scores = knn_predict(val_f, train_f, train[key], classes, k=k, temperature=temperature)
        out[name] = float((scores.argmax(1) == val[key]).float().mean())
    train_s, val_s = image_statistics(train["image"], train["mask"]), image_statistics(val["image"], val["mask"])
    for name in train_s:
        out[f"r2_{name}"] = ridge_r2(train_f, train_s[name], val_f, val_s[name])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", nargs="+", help="checkpoint files, or 'random' for test_resnet at --seed")
    parser.add_argument("--seed", type=int, default=0, help="the initialisation 'random' draws")
    parser.add_argument("--saturation", type=float, default=0.0, help="the scenes' colour (the demos: 0, SimCLR's 0.3)")
    parser.add_argument("--num_train", type=int, default=8000)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--temperature", type=float, default=0.1)
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()
    data = SyntheticScenes(saturation=args.saturation, num_train=args.num_train)
    data.setup("fit")
    train, val = data.train_set.data, data.val_set.data
    results = {}
    for source in args.checkpoints:
        if source == "random":
            torch.manual_seed(args.seed)
            backbone = build_backbone("test_resnet")
        else:
            backbone = load_backbone(source)
        results[source] = describe(backbone, train, val, args.k, args.temperature)
        print(source, " ".join(f"{key} {value:.3f}" for key, value in results[source].items()), flush=True)
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
