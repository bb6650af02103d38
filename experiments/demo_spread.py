"""Where a demo's spread over seeds comes from: its initial backbones crossed with its training
draws. The initial backbone of seed i is saved as the CLI builds it (``seed_everything`` then
the model), and a run with ``--seed_everything=j --model.init_args.backbone.ckpt_path=init_i``
trains that backbone with the crops, colours and data order of seed j.

    python experiments/demo_spread.py --out runs/spread --seeds 0 1 --threads 1

Writes results.json and prints the table of final kNN top-1 by (initial backbone, draws).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def save_initial_backbone(configs: list[str], seed: int, path: Path) -> None:
    """The backbone a run of ``seed`` starts from, as a plain state_dict ``load_backbone`` reads."""
    import torch

    from sslkit.cli import SSLKitCLI

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cli = SSLKitCLI(args=[a for c in configs for a in ("-c", str(REPO / c))] + [f"--seed_everything={seed}"],
                        run=False)
    torch.save(cli.model.backbone.model.state_dict(), path)


def last_knn(metrics: Path) -> float:
    import csv

    return [float(r["val/knn_top1"]) for r in csv.DictReader(metrics.open()) if r.get("val/knn_top1")][-1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="runs/spread")
    parser.add_argument("--configs", nargs="+", default=["configs/demo.yaml"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    if args.threads:
        env.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    results_file = out / "results.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    for init in args.seeds:
        weights = out / f"init_seed{init}.pth"
        if not weights.exists():
            save_initial_backbone(args.configs, init, weights)
        for draws in args.seeds:
            name = f"init{init}_draws{draws}"
            if name in results:
                continue
            subprocess.run([sys.executable, "-m", "sslkit.cli", "fit",
                            *[a for c in args.configs for a in ("-c", str(REPO / c))],
                            f"--seed_everything={draws}", f"--model.init_args.backbone.ckpt_path={weights}",
                            f"--trainer.logger.init_args.save_dir={out}", f"--trainer.logger.init_args.name={name}",
                            "--trainer.logger.init_args.version=0", "--trainer.enable_progress_bar=false"],
                           check=True, stdout=subprocess.DEVNULL, env=env)
            results[name] = last_knn(out / name / "version_0" / "metrics.csv")
            results_file.write_text(json.dumps(results, indent=2))
    print("| initial backbone | " + " | ".join(f"draws of seed {d}" for d in args.seeds) + " |")
    print("|---|" + "---|" * len(args.seeds))
    for init in args.seeds:
        print(f"| seed {init} | " + " | ".join(f"{100 * results[f'init{init}_draws{d}']:.1f}%" for d in args.seeds)
              + " |")


if __name__ == "__main__":
    main()
