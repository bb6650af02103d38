"""Views/s of the MoCo v2 recipe: Kornia stages on whole batches vs torchvision v2 per sample.

    python tests/benchmarks/bench_augment.py [--device cuda] [--size 32] [--batch 256]
"""
from __future__ import annotations

import argparse
import time

import torch
from torchvision.transforms import v2

from timing import timed

from sslkit.augmentations import MoCoV2Views


def torchvision_recipe(size: int, blur: bool) -> v2.Compose:
    steps = [
        v2.RandomResizedCrop(size, scale=(0.2, 1.0), antialias=True),
        v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
        v2.RandomGrayscale(p=0.2),
    ]
    if blur:
        k = max(3, int(0.1 * size) // 2 * 2 + 1)
        steps.append(v2.RandomApply([v2.GaussianBlur(k, (0.1, 2.0))], p=0.5))
    steps += [
        v2.RandomHorizontalFlip(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    ]
    return v2.Compose(steps)




def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--blur", action="store_true")
    parser.add_argument("--workers", type=int, default=0, help="also time torchvision in N DataLoader workers")
    args = parser.parse_args()
    device = torch.device(args.device)
    images = torch.randint(0, 256, (args.batch, 3, args.size, args.size), dtype=torch.uint8)
    batch = {"image": images.to(device)}

    kornia_recipe = MoCoV2Views(crop_size=args.size, blur_p=0.5 if args.blur else 0.0).to(device)
    t_kornia = timed(lambda: kornia_recipe(batch), args.repeats, device)
    tv = torchvision_recipe(args.size, args.blur)
    t_tv = timed(lambda: [tv(img) for img in images for _ in range(2)], args.repeats, torch.device("cpu"))

    views = 2 * args.batch
    print("| recipe | device | image | views/s |")
    print("|---|---|---|---|")
    print(f"| sslkit Kornia, batched | {device} | {args.size}px | {views / t_kornia:,.0f} |")
    print(f"| torchvision v2, per sample | cpu (1 process) | {args.size}px | {views / t_tv:,.0f} |")
    if args.workers:
        loader = torch.utils.data.DataLoader(TwoViews(images, tv), batch_size=args.batch,
                                             num_workers=args.workers, persistent_workers=True)
        next(iter(loader))
        start = time.perf_counter()
        for _ in range(args.repeats):
            for _ in loader:
                pass
        t_workers = (time.perf_counter() - start) / args.repeats
        print(f"| torchvision v2, per sample | cpu ({args.workers} DataLoader workers) | {args.size}px | "
              f"{views / t_workers:,.0f} |")
    print(f"ratio (Kornia / torchvision in one process): {t_tv / t_kornia:.2f}x")


class TwoViews(torch.utils.data.Dataset):
    def __init__(self, images: torch.Tensor, transform) -> None:
        self.images, self.transform = images, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.transform(self.images[i]), self.transform(self.images[i])


if __name__ == "__main__":
    main()
