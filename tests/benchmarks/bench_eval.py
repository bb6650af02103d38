"""Evaluator speed: the eigenspectrum of 50,000 x 2,048 features, and the linear probe on
cached features versus re-encoding the images every epoch.

    python tests/benchmarks/bench_eval.py [--device cuda] [--backbone test_resnet --size 32]
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from sslkit.augmentations.recipes import eval_view
from sslkit.data import SyntheticScenes
from sslkit.eval.features import extract_features
from sslkit.eval.linear import linear_probe
from sslkit.eval.spectrum import eigenspectrum
from sslkit.nn.backbones import build_backbone


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--backbone", default="test_resnet")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=100, help="epochs of the probe being compared")
    args = parser.parse_args()
    device = torch.device(args.device)

    features = torch.randn(50_000, 2048) * torch.arange(1, 2049).float() ** -0.5
    start = time.perf_counter()
    report = eigenspectrum(features.to(device))
    if device.type == "cuda":
        torch.cuda.synchronize()
    print(f"eigenspectrum of 50,000 x 2,048 (float64): {time.perf_counter() - start:.2f} s  "
          f"(alpha {report.alpha:.3f} for a true 1.0; effective rank {report.effective_rank:.0f})")

    data = SyntheticScenes(image_size=args.size)
    data.setup("fit")
    backbone = build_backbone(args.backbone, small_images=args.size <= 64).to(device).eval()
    view = eval_view(args.size, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)).to(device)
    loader = torch.utils.data.DataLoader(data.train_set, batch_size=256)
    test_loader = torch.utils.data.DataLoader(data.val_set, batch_size=256)
    start = time.perf_counter()
    train = extract_features(backbone, loader, lambda b: view(b)["image"], device, "train", progress=False)
    encode_epoch = time.perf_counter() - start
    test = extract_features(backbone, test_loader, lambda b: view(b)["image"], device, "val", progress=False)

    start = time.perf_counter()
    result = linear_probe(train, test, device=device)
    lbfgs = time.perf_counter() - start

    x, y = train[0].to(device), train[1].to(device)
    classifier = torch.nn.Linear(x.shape[1], int(y.max()) + 1).to(device)
    optimizer = torch.optim.SGD(classifier.parameters(), lr=0.1, momentum=0.9)
    start = time.perf_counter()
    for _ in range(args.epochs):
        for idx in torch.randperm(len(x), device=device).split(256):
            optimizer.zero_grad()
            F.cross_entropy(classifier(x[idx]), y[idx]).backward()
            optimizer.step()
    sgd_cached = time.perf_counter() - start
    reencode = args.epochs * encode_epoch
    print(f"linear probe, {args.backbone} at {args.size} px, {len(x):,} train images:")
    print(f"  encoding the train split once: {encode_epoch:.2f} s; x {args.epochs} epochs = {reencode:.1f} s of "
          f"forward passes alone when re-encoding every epoch")
    print(f"  cached features, {args.epochs} epochs of mini-batch SGD: {sgd_cached:.2f} s "
          f"({reencode / sgd_cached:.0f}x faster than re-encoding)")
    print(f"  cached features, L-BFGS with a {len(result.sweep)}-value L2 sweep: {lbfgs:.2f} s "
          f"({reencode / lbfgs:.0f}x faster; top-1 {100 * result.top1:.1f}% for a random-init backbone)")


if __name__ == "__main__":
    main()
