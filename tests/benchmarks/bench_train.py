"""Training images/s of a method, the share of step time spent in augmentation, and the cost
of the online linear classifier.

    python tests/benchmarks/bench_train.py -c configs/demo.yaml [-c OVERLAY] [--device cuda] [--precision bf16]

Builds the config's model and data through the CLI parser (nothing is trained to
completion), then times ``steps`` optimiser steps on real batches from the DataModule. Where
the config trains the online classifier in the step (``views: global`` or ``all``), steps
with and without it alternate on the same batches, and its share of the step is reported
(median of the per-step differences). A ``views: bank`` classifier costs nothing per step;
its refit on the kNN bank is timed instead, cold before the steps and warm-started after them
(on the features the stepped backbone gives), against an epoch of the timed steps.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from sslkit.cli import SSLKitCLI


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-c", "--config", action="append", help="config, then overlays (repeat -c)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--precision", choices=["32", "bf16"], default="32")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    sys.argv = sys.argv[:1]  # the CLI reads only the arguments given below
    args.config = args.config or ["configs/demo.yaml"]
    configs = [a for c in args.config for a in ("-c", c)]
    cli = SSLKitCLI(args=[*configs, "--trainer.logger=false", *args.overrides], run=False)
    model, data = cli.model, cli.datamodule
    device = torch.device(args.device)
    model.to(device).train()
    data.setup("fit")
    loader = iter(data.train_dataloader())
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9)

    online = model.online is not None and model.online.in_step
    if model.online is not None:
        model.build_online_classifier(int(data.labels("train").max()) + 1)
    if online:
        optimizer.add_param_group({"params": list(model.online_classifier.parameters())})
    refits = []
    if model.online is not None and not online:
        refits.append(time_refit(model, data, device))

    def step(batch, timings, with_online=False):
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        sync(device)
        t0 = time.perf_counter()
        with torch.no_grad():
            batch["views"] = model.augment(batch)
        sync(device)
        t1 = time.perf_counter()
        model._caught = [] if with_online else None
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16"):
            loss, _ = model.step(batch["views"])
            if with_online:
                loss = loss + model._online_loss(batch["views"], batch["label"])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync(device)
        t2 = time.perf_counter()
        timings.append((t1 - t0, t2 - t0, batch["image"].shape[0]))

    warm: list = []
    for _ in range(2):
        step(next(loader), warm)
    timings: list = []
    with_classifier: list = []
    for _ in range(args.steps):
        try:
            batch = next(loader)
        except StopIteration:
            loader = iter(data.train_dataloader())
            batch = next(loader)
        state = torch.random.get_rng_state()
        step(batch, timings)
        if online:  # the same batch and draws, with the classifier
            torch.random.set_rng_state(state)
            step(batch, with_classifier, with_online=True)
    aug = sum(t[0] for t in timings)
    total = sum(t[1] for t in timings)
    images = sum(t[2] for t in timings)
    print(f"config {' + '.join(args.config)} on {device} ({args.precision}): {images / total:,.0f} images/s, "
          f"augmentation {100 * aug / total:.1f}% of step time ({total / len(timings) * 1000:.1f} ms/step)")
    if refits:
        refits.append(time_refit(model, data, device))
        epoch = statistics.median(t[1] for t in timings) * len(data.train_dataloader())
        for name, seconds in zip(("cold", "warm-started"), refits):
            print(f"online classifier (bank): {name} refit {seconds:.3f} s per validation, "
                  f"{100 * seconds / epoch:.1f}% of an epoch's training steps ({epoch:.1f} s)")
    if online:
        extra = [b[1] - a[1] for a, b in zip(timings, with_classifier)]
        base = statistics.median(t[1] for t in timings)
        print(f"online classifier: {1000 * statistics.median(extra):+.1f} ms per step (median of {len(extra)} "
              f"paired steps), {100 * statistics.median(extra) / base:+.1f}% of a {1000 * base:.1f} ms step")


def time_refit(model, data, device: torch.device) -> float:
    """Seconds of one ``views: bank`` refit on the features of the kNN bank under the model's
    evaluation view (extracted first, not timed)."""
    from sslkit.eval.features import extract_features

    features, labels = extract_features(model.backbone, data.eval_loader(data.knn_bank()), model.augment.evaluate,
                                        device, desc="bank", prepare=data.prepare)
    model.online_classifier.collect(features.to(device), labels.to(device))
    sync(device)
    start = time.perf_counter()
    model.online_classifier.fit_bank(model.online.weight_decay, model.online.max_iter)
    sync(device)
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
