"""Cost of the hardness band: one MoCo v2 training step (forward, backward, enqueue) with
the full queue versus a band, and the selection alone.

    python tests/benchmarks/bench_hardness.py [--device cuda] [--backbone resnet50 --size 224]
        [--queue 65536] [--batch 256] [--band 0.001 0.05]
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from timing import timed

from sslkit.methods import MoCoV2
from sslkit.nn.hardness import HardnessBand




def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--backbone", default="test_resnet")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--queue", type=int, default=65536)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--band", type=float, nargs=2, default=(0.001, 0.05))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--precision", choices=["32", "bf16"], default="32")
    args = parser.parse_args()
    device = torch.device(args.device)

    q = F.normalize(torch.randn(args.batch, args.dim, device=device), dim=1)
    queue = F.normalize(torch.randn(args.queue, args.dim, device=device), dim=1)
    band = HardnessBand(*args.band, args.queue)
    similarity_only = timed(lambda: q @ queue.T, args.repeats * 4, device)
    selection = timed(lambda: band.select(q @ queue.T), args.repeats * 4, device)

    step_times = {}
    for name, hardness_band in (("full queue", None), (f"band {list(args.band)}", tuple(args.band))):
        torch.manual_seed(0)
        model = MoCoV2(backbone=args.backbone, small_images=args.size <= 64, proj_output_dim=args.dim,
                       queue_size=args.queue, batchnorm="plain", hardness_band=hardness_band,
                       hardness_log_every=0).to(device)
        images = torch.randn(args.batch, 3, args.size, args.size, device=device)
        views = [{"image": images}, {"image": images.flip(3)}]

        def step() -> None:
            with torch.autocast(device.type, torch.bfloat16, enabled=args.precision == "bf16"):
                loss, _ = model.step(views)
            loss.backward()
            model.zero_grad(set_to_none=True)

        step_times[name] = timed(step, args.repeats, device)

    full, banded = step_times.values()
    print(f"device {device}, {args.backbone} at {args.size} px, batch {args.batch}, queue {args.queue}, "
          f"dim {args.dim}, band {list(args.band)} = {band.size} negatives per query")
    print(f"  similarities q @ queue.T        {1e3 * similarity_only:9.2f} ms")
    print(f"  similarities + topk band        {1e3 * selection:9.2f} ms  (selection {1e3 * (selection - similarity_only):.2f} ms)")
    print(f"  training step, full queue       {1e3 * full:9.2f} ms")
    print(f"  training step, band             {1e3 * banded:9.2f} ms  ({100 * (banded - full) / full:+.1f}% of the step; "
          f"selection alone {100 * (selection - similarity_only) / full:.1f}%)")


if __name__ == "__main__":
    main()
