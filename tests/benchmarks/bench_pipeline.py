"""From JPEG files to ready MoCo v2 training views (2 x 224 px), images/s, side by side:

(a) torchvision transforms in DataLoader workers, what lightly and solo-learn do without
    DALI (MoCo's ``main_moco.py --aug-plus`` pipeline: PIL decode, RandomResizedCrop,
    ColorJitter, grayscale, PIL Gaussian blur, flip, normalise, twice per image);
(b) sslkit on the CPU: workers read and decode (libjpeg-turbo), the main process makes the
    views of the whole batch (``MoCoV2Views`` on whole images);
(c) with --device cuda: sslkit with workers reading bytes only and nvJPEG decoding on the
    GPU, the views made there; and NVIDIA DALI's reader + augmentations when it is installed.

The JPEGs (ImageNet-like sizes, quality 90) are made once from scikit-image's sample
photos (``pip install scikit-image``) into --data.

Fairness: every pipeline runs under the same thread budget in the main process (what
``sslkit fit`` sets: the cores the workers do not use, ``sslkit.data.share_cores``), the
pipelines alternate within each of ``--repeats`` rounds (so a slow spell of the machine hits
them alike), and each is reported as the median of its rounds with the min-max spread.

    python tests/benchmarks/bench_pipeline.py [--images 2000] [--workers 2] [--batch 64] [--repeats 3] [--device cuda]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFilter
from torch.utils.data import DataLoader

SIZES = [(500, 375), (375, 500), (500, 333), (500, 400), (400, 500), (640, 480), (500, 500), (333, 500)]


def make_jpegs(root: Path, count: int, seed: int = 0) -> Path:
    """``count`` JPEGs of ImageNet-like sizes in 10 class folders, cut from scikit-image's
    natural photos (random crops, rescales, flips, colour shifts)."""
    done = root / f".done_{count}"
    if done.exists():
        return root
    import skimage.data as sk

    photos = [sk.astronaut(), sk.chelsea(), sk.coffee(), sk.rocket(), sk.hubble_deep_field(), sk.retina(),
              sk.immunohistochemistry()]
    rng = random.Random(seed)
    for i in range(count):
        source = Image.fromarray(photos[i % len(photos)])
        width, height = source.size
        s = rng.uniform(0.4, 1.0)
        w, h = int(width * s), int(height * s)
        x, y = rng.randint(0, width - w), rng.randint(0, height - h)
        size = SIZES[rng.randrange(len(SIZES))]
        image = source.crop((x, y, x + w, y + h)).resize(size, Image.BICUBIC)
        if rng.random() < 0.5:
            image = image.transpose(Image.FLIP_LEFT_RIGHT)
        shift = np.array([rng.uniform(0.8, 1.2) for _ in range(3)])
        image = Image.fromarray((np.asarray(image) * shift).clip(0, 255).astype(np.uint8))
        folder = root / "train" / f"class_{i % 10}"
        folder.mkdir(parents=True, exist_ok=True)
        image.save(folder / f"{i:05d}.jpg", quality=90)
    done.touch()
    return root


class PILGaussianBlur:
    """moco/loader.py GaussianBlur: PIL's GaussianBlur with radius ~ U(0.1, 2.0)."""

    def __call__(self, image):
        return image.filter(ImageFilter.GaussianBlur(radius=random.uniform(0.1, 2.0)))


def torchvision_pipeline(root: Path, workers: int, batch: int):
    import torchvision.transforms as T
    from torchvision.datasets import ImageFolder

    augment = T.Compose([
        T.RandomResizedCrop(224, scale=(0.2, 1.0)), T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
        T.RandomGrayscale(p=0.2), T.RandomApply([PILGaussianBlur()], p=0.5), T.RandomHorizontalFlip(), T.ToTensor(),
        T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    two_views = lambda image: [augment(image), augment(image)]  # noqa: E731 (moco.loader.TwoCropsTransform)
    dataset = ImageFolder(str(root / "train"), transform=two_views)
    loader = DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers, drop_last=True,
                        persistent_workers=workers > 0)
    return loader, lambda batch: batch[0]


def sslkit_pipeline(root: Path, workers: int, batch: int, device: torch.device, decoder: str):
    from sslkit.augmentations import MoCoV2Views
    from sslkit.data import ImageFolderData, prepare_batch

    data = ImageFolderData(str(root), batch_size=batch, num_workers=workers, pin_memory=device.type == "cuda",
                           decoder=decoder, train_dir="train", val_dir="train")
    data.setup("fit")
    views = MoCoV2Views(crop_size=224).to(device)

    def make(batch):
        with torch.no_grad():
            out = views(prepare_batch(batch, device))
        if device.type == "cuda":
            torch.cuda.synchronize()
        return out

    return data.train_dataloader(), make


def measure(loader, make, batches: int) -> float:
    """Images/s over ``batches`` batches after two warm-up batches (workers started)."""
    iterator = iter(loader)
    for _ in range(2):
        make(next(iterator))
    images, start = 0, time.perf_counter()
    for _ in range(batches):
        batch = next(iterator)
        make(batch)
        images += len(batch["label"]) if isinstance(batch, dict) else len(batch[1])
    return images / (time.perf_counter() - start)


def main() -> None:
    from sslkit.data import share_cores

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="/tmp/sslkit_bench_jpegs")
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3, help="rounds; the pipelines alternate within each")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=None, help="JSON file for the figures")
    args = parser.parse_args()
    root = make_jpegs(Path(args.data), args.images)
    device = torch.device(args.device)
    default_threads = torch.get_num_threads()
    share_cores(args.workers, device)
    results = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
                          + (f", {torch.cuda.get_device_name()}" if device.type == "cuda" else ""),
               "workers": args.workers, "batch": args.batch, "batches": args.batches, "repeats": args.repeats,
               "main_threads": torch.get_num_threads(), "torch_default_threads": default_threads,
               "images_per_s": {}}
    runs = {"(a) torchvision in workers": lambda: torchvision_pipeline(root, args.workers, args.batch),
            "(b) sslkit, CPU": lambda: sslkit_pipeline(root, args.workers, args.batch, torch.device("cpu"), "torchvision")}
    if device.type == "cuda":
        runs["(c) sslkit, nvJPEG + views on the GPU"] = lambda: sslkit_pipeline(root, args.workers, args.batch, device,
                                                                                 "device")
    print(f"main process: {results['main_threads']} thread(s) (torch default {default_threads}), "
          f"{args.workers} workers, batch {args.batch}, {args.batches} batches x {args.repeats} rounds", flush=True)
    rates: dict[str, list[float]] = {name: [] for name in runs}
    for round_ in range(args.repeats):
        for name, build in runs.items():
            loader, make = build()
            rates[name].append(measure(loader, make, args.batches))
            print(f"round {round_ + 1}: {name:>40}: {rates[name][-1]:8.1f} images/s", flush=True)
            del loader
    base = statistics.median(rates["(a) torchvision in workers"])
    for name, values in rates.items():
        median = statistics.median(values)
        results["images_per_s"][name] = {"median": median, "min": min(values), "max": max(values), "all": values}
        print(f"{name:>40}: {median:8.1f} images/s (min {min(values):.1f}, max {max(values):.1f}), "
              f"{median / base:5.2f}x (a)")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
