"""Peak memory of each method at the benchmark settings (test_resnet, 32 px, batch 256,
MoCo queue 4,096 / 65,536, SwAV 2x32 + 4x16 crops): each method trains a few steps in a
fresh process; reported is the peak resident set size, and its growth over the process
after building the model and data (CPU), or the CUDA peak allocation (GPU).

    python tests/benchmarks/bench_memory.py [--device cuda]
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys


def measure(method: str, device: str, queue: int, steps: int = 5) -> dict:
    import torch

    sys.path.insert(0, __file__.rsplit("/", 1)[0])
    from bench_scaling import training_step
    from bench_vs_lightly import sslkit_model

    batch = {"image": torch.randint(0, 256, (256, 3, 32, 32), dtype=torch.uint8, device=device)}
    step = training_step(sslkit_model(method, 256, queue), batch, torch.device(device))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for _ in range(steps):
        step()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out = {"method": method, "queue": queue, "peak_rss_mb": peak, "growth_mb": peak - before}
    if device == "cuda":
        out["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--one", nargs=2, metavar=("METHOD", "QUEUE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one[0], args.device, int(args.one[1]))))
        return
    print(f"device {args.device}; peak memory over 5 training steps at batch 256, 32 px, test_resnet")
    for method, queue in (("MoCo v2", 4096), ("MoCo v2", 65536), ("BYOL", 0), ("SwAV", 0)):
        result = subprocess.run([sys.executable, __file__, "--device", args.device, "--one", method, str(queue)],
                                capture_output=True, text=True, check=True)
        r = json.loads(result.stdout.strip().splitlines()[-1])
        label = f"{method}{f' (K={queue})' if queue else ''}"
        extra = f", CUDA peak {r['cuda_peak_mb']:,.0f} MB" if "cuda_peak_mb" in r else ""
        print(f"  {label:<20} peak RSS {r['peak_rss_mb']:,.0f} MB (+{r['growth_mb']:,.0f} MB while training){extra}")


if __name__ == "__main__":
    main()
