"""docs/report.md: `sslkit report` on two MoCo v2 demo checkpoints, trained on scenes with a
spurious background cue, with and without background augmentations (Ryali et al. 2021).

The two runs are the seed-0, plain-BatchNorm arms of experiments/landscape_study.py (trained
here if that study has not run). Each checkpoint first gets ``sslkit landscape`` (one batch),
so the report carries the Hessian figures beside the probe, kNN, spectrum, Backgrounds
Challenge and the training curves.

    python experiments/report_demo.py --runs runs/landscape_study --out docs/report

Writes DIR/report.json, DIR/report.md and its figures.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from landscape_study import ARMS, train  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PICKED = {"BG aug": "plain BN, BG aug", "no BG aug": "plain BN, no BG aug"}
# the demo_bg scenes: every class owns a background, shown in 90% of train and val scenes
CUE = ["--data.init_args.num_backgrounds=10", "--data.init_args.background_class_correlation=0.9",
       "--data.init_args.val_background_class_correlation=0.9", "--data.init_args.saturation=0.3"]


INTRO = """<!-- written by experiments/report_demo.py; the part below the line is sslkit report's own output -->
# Example: `sslkit report` on two MoCo v2 runs, with and without background augmentations

MoCo v2 demo (`test_resnet`, plain BatchNorm, seed 0) trained {epochs} epochs on {num_train} SyntheticScenes
with a spurious background cue (each class owns a background, shown in 90% of train and val scenes),
once with BG_RM, BG_Random and BG_Swaps (p 0.2 each) and once without: the seed-0 plain-BN arms of
experiments/landscape_study.py. Each checkpoint was measured by `sslkit landscape` first (1 batch), so
the Hessian columns come from the `landscape.json` beside it; online top-1 comes from the run's metrics.

    python experiments/report_demo.py --runs runs/landscape_study --out docs/report

---

"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", default="runs/landscape_study")
    parser.add_argument("--out", default="docs/report")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--num_train", type=int, default=4000)
    args = parser.parse_args()
    runs = Path(args.runs)
    runs.mkdir(parents=True, exist_ok=True)
    checkpoints = []
    for arm in PICKED.values():
        index = list(ARMS).index(arm)
        batchnorm, background = ARMS[arm]
        record = train(runs, f"arm{index}_seed0", batchnorm, background, 0, args.epochs, args.num_train, 3, [])
        ckpt = record["checkpoint"]
        checkpoints.append(ckpt)
        if Path(ckpt).with_name("landscape.json").exists():
            continue
        configs = ["-c", str(REPO / "configs/demo.yaml"), "-c", str(REPO / "configs/demo_bg.yaml")]
        if not background:
            configs += ["-c", str(REPO / "configs/background_off.yaml")]
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "sslkit.cli", "landscape", *configs, f"--model.init_args.batchnorm={batchnorm}",
                        "--ckpt_path", ckpt, "--batches", "1", "--out", str(Path(ckpt).parent / "landscape")],
                       check=True)
        print(f"landscape of {ckpt}: {time.perf_counter() - start:.0f} s", flush=True)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "sslkit.cli", "report", "-c", str(REPO / "configs/linear_probe.yaml"),
                    "--ckpt_path", *checkpoints, "--names", *PICKED, "--out", args.out, *CUE], check=True)
    report = Path(args.out) / "report.md"
    report.write_text(INTRO.format(epochs=args.epochs, num_train=args.num_train) + report.read_text())
    print(f"report: {time.perf_counter() - start:.0f} s; wrote {report}")


if __name__ == "__main__":
    main()
