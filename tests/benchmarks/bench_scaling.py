"""How the cost of a training step grows: MoCo v2 with queue size 4k -> 64k, SwAV with
2 -> 8 crops, MoCo v2 with batch 64 -> 256. Each step: on-device augmentation, forward,
backward, SGD update (test_resnet, 32 px).

    python tests/benchmarks/bench_scaling.py [--device cuda] [--repeats 5]
"""
from __future__ import annotations

import argparse
import torch

from timing import timed

from sslkit.augmentations import MoCoV2Views, MultiCropViews
from sslkit.methods import MoCoV2, SwAV


def training_step(model, batch: dict, device: torch.device):
    """One plain training step of ``model`` on ``batch``: on-device augmentation, forward,
    backward, SGD update."""
    model.to(device).train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01)

    def one() -> None:
        with torch.no_grad():
            views = model.augment(batch)
        loss, _ = model.step(views)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return one


def step_seconds(model, batch: dict, repeats: int, device: torch.device) -> float:
    return timed(training_step(model, batch, device), repeats, device)


def images(batch: int, device: torch.device) -> dict:
    return {"image": torch.randint(0, 256, (batch, 3, 32, 32), dtype=torch.uint8, device=device)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    device = torch.device(args.device)
    recipe = lambda: MoCoV2Views(crop_size=32, blur_p=0.0)  # noqa: E731
    print(f"device {device}; ms per training step (images/s)")
    print("MoCo v2, batch 256, by queue size:")
    for queue in (4096, 16384, 65536):
        model = MoCoV2(backbone="test_resnet", proj_output_dim=128, queue_size=queue, batchnorm="plain",
                       augment=recipe(), hardness_log_every=0)
        t = step_seconds(model, images(256, device), args.repeats, device)
        print(f"  K = {queue:>6}: {1e3 * t:8.1f} ms ({256 / t:,.0f} img/s)")
    print("SwAV, batch 256, by number of crops (2 x 32 px + n x 16 px):")
    for local in (0, 2, 4, 6):
        model = SwAV(backbone="test_resnet", proj_output_dim=128, num_prototypes=1000, queue_size=0,
                     augment=MultiCropViews(global_size=32, local_size=16, num_local=local, blur_p=0.0))
        t = step_seconds(model, images(256, device), args.repeats, device)
        print(f"  {2 + local} crops: {1e3 * t:8.1f} ms ({256 / t:,.0f} img/s)")
    print("MoCo v2, K = 4096, by batch size:")
    for batch in (64, 128, 256):
        model = MoCoV2(backbone="test_resnet", proj_output_dim=128, queue_size=4096, batchnorm="plain",
                       augment=recipe(), hardness_log_every=0)
        t = step_seconds(model, images(batch, device), args.repeats, device)
        print(f"  B = {batch:>3}: {1e3 * t:8.1f} ms ({batch / t:,.0f} img/s)")


if __name__ == "__main__":
    main()
