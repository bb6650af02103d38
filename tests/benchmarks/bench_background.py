"""Cost of the background stages: images/s of the MoCo v2 recipe (2 views) with and
without BG_RM, BG_Random and BG_Swaps (p = 1, the worst case, and p = 0.2, the preset).

    python tests/benchmarks/bench_background.py [--device cuda] [--canvas 32 --crop 32] [--batch 256]
"""
from __future__ import annotations

import argparse

import torch

from timing import timed

from sslkit.augmentations import BackgroundRandom, BackgroundRemove, BackgroundSwap, MoCoV2Views




def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--canvas", type=int, default=32)
    parser.add_argument("--crop", type=int, default=32)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    device = torch.device(args.device)
    images = torch.randint(0, 256, (args.batch, 3, args.canvas, args.canvas), dtype=torch.uint8, device=device)
    mask = torch.zeros(args.batch, 1, args.canvas, args.canvas, dtype=torch.bool, device=device)
    quarter = args.canvas // 4
    mask[:, :, quarter:3 * quarter, quarter:3 * quarter] = True
    batch = {"image": images, "mask": mask}
    blur = 0.5 if args.crop >= 96 else 0.0

    def recipe(p: float | None) -> MoCoV2Views:
        if p is None:
            return MoCoV2Views(crop_size=args.crop, blur_p=blur).to(device)
        return MoCoV2Views(crop_size=args.crop, blur_p=blur,
                           background=[BackgroundRemove(p), BackgroundRandom(p)],
                           background_swap=BackgroundSwap(p)).to(device)

    rows = []
    base = None
    for name, p in (("plain MoCo v2 recipe", None), ("+ BG_RM, BG_Random, BG_Swaps, p=0.2", 0.2),
                    ("+ BG_RM, BG_Random, BG_Swaps, p=1.0", 1.0)):
        views = recipe(p)
        with torch.no_grad():
            seconds = timed(lambda: views(batch), args.repeats, device)
        rate = args.batch / seconds
        base = base or rate
        outputs = 2 if p is None else 3
        rows.append((name, rate, rate / base, rate * outputs))
    print(f"device {device}, canvas {args.canvas}, crop {args.crop}, batch {args.batch}")
    print("  images/s: source images turned into their training inputs (2 views; with BG_Swaps also 1 hard negative)")
    for name, rate, ratio, views in rows:
        print(f"  {name:<38} {rate:>10,.0f} images/s  ({ratio:.2f}x plain)  {views:>10,.0f} output views/s")


if __name__ == "__main__":
    main()
