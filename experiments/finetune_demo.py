"""Semi-supervised fine-tuning on the demo: 1% and 10% of SyntheticScenes' labels, from a
trained MoCo v2 demo checkpoint (all parameters, and BatchNorm-only) and from random
initialisation, over seeds (each seed draws the labelled subset and the run's randomness).

    python experiments/finetune_demo.py --pretrained runs/demo/version_0/checkpoints/last.ckpt --out runs/finetune_demo
    python experiments/finetune_demo.py --out runs/finetune_demo      # trains the MoCo v2 demo first

Every run is ``sslkit finetune -c configs/finetune_semisup_simclr.yaml -c configs/demo_finetune.yaml ...`` (printed); val/top1 is
its last logged value. Writes results.json and results.md to --out; finished runs are reused.
"""
from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from sslkit.eval.intervals import mean_interval

REPO = Path(__file__).resolve().parents[1]
EPOCHS = {"1%": 100, "10%": 8}  # 200 steps of 32 images each
SETTINGS = {  # name: (backbone source, train)
    "pretrained": ("pretrained", "all"),
    "random": ("random:test_resnet", "all"),
    "pretrained_bn_only": ("pretrained", "batchnorm"),
}


def sslkit(args: list[str]) -> None:
    command = [sys.executable, "-m", "sslkit.cli", *args]
    print("$ sslkit " + " ".join(args), flush=True)
    subprocess.run(command, cwd=REPO, check=True, stdout=subprocess.DEVNULL)


def last_logged(metrics: Path, key: str) -> float:
    values = [float(r[key]) for r in csv.DictReader(metrics.open()) if r.get(key)]
    if not values:
        raise RuntimeError(f"{metrics} has no {key}")
    return values[-1]


def pretrain(out: Path) -> Path:
    ckpt = out / "pretrain" / "version_0" / "checkpoints" / "last.ckpt"
    if not ckpt.is_file():
        sslkit(["fit", "-c", "configs/demo.yaml", "--data.init_args.saturation=0.3",  # the fine-tuning data's colour
                f"--trainer.logger.init_args.save_dir={out}",
                "--trainer.logger.init_args.name=pretrain"])
    return ckpt


def finetune(out: Path, name: str, source: str, train: str, labels: str, seed: int) -> dict:
    run = out / name / "version_0"
    metrics = run / "metrics.csv"
    if not (metrics.is_file() and (run / "checkpoints" / "last.ckpt").is_file()):
        epochs = EPOCHS[labels]
        start = time.perf_counter()
        sslkit(["finetune", "-c", "configs/finetune_semisup_simclr.yaml", "-c", "configs/demo_finetune.yaml", "--ckpt_path", source, "--train", train,
                "--labels", labels, "--label_seed", str(seed), f"--seed_everything={seed}",
                f"--trainer.max_epochs={epochs}", f"--trainer.check_val_every_n_epoch={epochs}",
                f"--trainer.logger.init_args.save_dir={out}", f"--trainer.logger.init_args.name={name}",
                "--trainer.enable_progress_bar=false"])
        (run / "seconds.txt").write_text(f"{time.perf_counter() - start:.1f}")
    seconds = float((run / "seconds.txt").read_text()) if (run / "seconds.txt").is_file() else None
    return {"val_top1": last_logged(metrics, "val/top1"), "val_top5": last_logged(metrics, "val/top5"),
            "labelled": json.loads((run / "labelled.json").read_text())["num_labelled"], "seconds": seconds}


def summary(values: list[float]) -> str:
    pct = [100 * v for v in values]
    sd = statistics.stdev(pct) if len(pct) > 1 else 0.0
    return f"{statistics.mean(pct):.1f} ± {sd:.1f} ({min(pct):.1f}-{max(pct):.1f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pretrained", default=None, help="MoCo v2 demo checkpoint (default: train one)")
    parser.add_argument("--out", default="runs/finetune_demo")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--labels", nargs="+", default=["1%", "10%"])
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS))
    args = parser.parse_args()
    out = (REPO / args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    pretrained = str(Path(args.pretrained).resolve()) if args.pretrained else str(pretrain(out))
    results = {"pretrained": pretrained, "runs": {}}
    for labels in args.labels:
        for setting in args.settings:
            source, train = SETTINGS[setting]
            source = pretrained if source == "pretrained" else source
            for seed in args.seeds:
                name = f"{setting}_{labels.rstrip('%')}pct_seed{seed}"
                results["runs"][name] = {"setting": setting, "labels": labels, "seed": seed,
                                         **finetune(out, name, source, train, labels, seed)}
                print(f"{name}: val/top1 {100 * results['runs'][name]['val_top1']:.1f}", flush=True)
                (out / "results.json").write_text(json.dumps(results, indent=2))
    lines = ["| labels | setting | val top-1 % mean ± sd (min-max) | per seed |", "|---|---|---|---|"]
    for labels in args.labels:
        for setting in args.settings:
            runs = [r for r in results["runs"].values() if r["labels"] == labels and r["setting"] == setting]
            if runs:
                per_seed = ", ".join(f"{100 * r['val_top1']:.1f}" for r in runs)
                lines.append(f"| {labels} | {setting} | {summary([r['val_top1'] for r in runs])} | {per_seed} |")
    lines += ["", "| labels | paired by seed (same labelled subset) | difference, points: mean [95% t interval] | per seed |",
              "|---|---|---|---|"]
    for labels in args.labels:
        for a, b in (("pretrained", "random"), ("pretrained_bn_only", "random"), ("pretrained", "pretrained_bn_only")):
            runs = results["runs"]
            pairs = [(runs.get(f"{a}_{labels.rstrip('%')}pct_seed{s}"), runs.get(f"{b}_{labels.rstrip('%')}pct_seed{s}"))
                     for s in args.seeds]
            diffs = [100 * (x["val_top1"] - y["val_top1"]) for x, y in pairs if x and y]
            if len(diffs) > 1:
                interval = mean_interval(diffs)
                lines.append(f"| {labels} | {a} - {b} | {interval.estimate:.1f} [{interval.low:.1f}, {interval.high:.1f}] | "
                             + ", ".join(f"{d:.1f}" for d in diffs) + " |")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
