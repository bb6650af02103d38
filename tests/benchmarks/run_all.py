"""Every benchmark, one after the other, each printing its table.

    python tests/benchmarks/run_all.py [--device cuda]     # pip install -e ".[bench]" first (lightly, scikit-image)

(a) training images/s against lightly, (b) augmentation throughput (sslkit on the device
vs torchvision per sample, in one process and in DataLoader workers), (c) cost against
queue size, crops and batch, then the background stages, the hardness band and the
evaluators.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    gpu = args.device != "cpu"
    runs = [
        ("(a) sslkit vs lightly", "bench_vs_lightly.py", ["--device", "gpu" if gpu else "cpu"]),
        ("JPEG files to views", "bench_pipeline.py", ["--device", args.device, "--workers", "2"]),
        ("(b) augmentation throughput", "bench_augment.py", ["--device", args.device, "--workers", "2"]),
        ("(c) scaling", "bench_scaling.py", ["--device", args.device]),
        ("peak memory", "bench_memory.py", ["--device", args.device]),
        ("background stages", "bench_background.py", ["--device", args.device]),
        ("hardness band", "bench_hardness.py", ["--device", args.device, "--repeats", "3"]),
        ("evaluators", "bench_eval.py", ["--device", args.device]),
    ]
    for title, script, extra in runs:
        print(f"\n===== {title}: python tests/benchmarks/{script} {' '.join(extra)}", flush=True)
        result = subprocess.run([sys.executable, str(HERE / script), *extra], capture_output=True, text=True)
        lines = [l for l in result.stdout.splitlines() if l.strip() and "Trainer" not in l]
        print("\n".join(lines) if result.returncode == 0 else f"failed:\n{result.stderr[-2000:]}", flush=True)


if __name__ == "__main__":
    main()
