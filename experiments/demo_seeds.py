"""The demos over several seeds: kNN top-1 at random initialisation and after training,
and the wall time of each run, from the committed configs.

    python experiments/demo_seeds.py --out runs/demo_seeds --seeds 0 1 2
    python experiments/demo_seeds.py --demos demo --seeds 0 --threads 1   # thread-count dependence

Writes results.json and a markdown table (results.md) to --out; finished runs are reused.
A run is deterministic for a given machine and thread count; a different thread count
changes float reductions in the CPU kernels from the first steps on, and training
amplifies that into a different trajectory, so compare spreads, not single runs.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEMOS = {
    "demo": ["configs/demo.yaml"],
    "demo_byol": ["configs/demo.yaml", "configs/demo_byol.yaml"],
    "demo_swav": ["configs/demo.yaml", "configs/demo_swav.yaml"],
}


def last_knn(metrics: Path) -> float:
    """The last logged ``val/knn_top1`` of a CSVLogger metrics file."""
    values = [float(r["val/knn_top1"]) for r in csv.DictReader(metrics.open()) if r.get("val/knn_top1")]
    if not values:
        raise RuntimeError(f"{metrics} has no val/knn_top1")
    return values[-1]


def run(command: str, config: list[str], out: Path, name: str, seed: int, env: dict) -> float:
    """Runs ``sslkit <command>`` and returns its wall time in seconds."""
    args = [sys.executable, "-m", "sslkit.cli", command, *[a for c in config for a in ("-c", str(REPO / c))],
            f"--seed_everything={seed}", f"--trainer.logger.init_args.save_dir={out}",
            f"--trainer.logger.init_args.name={name}", "--trainer.logger.init_args.version=0",
            "--trainer.enable_progress_bar=false"]
    start = time.perf_counter()
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, env=env)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="runs/demo_seeds")
    parser.add_argument("--demos", nargs="+", default=list(DEMOS), choices=list(DEMOS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=None, help="OMP/MKL threads (default: torch's choice)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    tag = ""
    if args.threads:
        env.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
        tag = f"_t{args.threads}"
    results_file = out / "results.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    for demo in args.demos:
        for seed in args.seeds:
            key = f"{demo}_seed{seed}{tag}"
            if key in results:
                continue
            config = DEMOS[demo]
            run("validate", config, out, f"{key}_init", seed, env)
            init = last_knn(out / f"{key}_init" / "version_0" / "metrics.csv")
            seconds = run("fit", config, out, key, seed, env)
            trained = last_knn(out / key / "version_0" / "metrics.csv")
            results[key] = {"demo": demo, "seed": seed, "threads": args.threads, "random_init": init,
                            "trained": trained, "wall_s": seconds}
            results_file.write_text(json.dumps(results, indent=2))
            print(f"{key}: {100 * init:.1f}% -> {100 * trained:.1f}% in {seconds:.0f} s", flush=True)
    lines = ["| run | seed | threads | random init | trained | wall |", "|---|---|---|---|---|---|"]
    for key, r in results.items():
        lines.append(f"| {r['demo']} | {r['seed']} | {r['threads'] or 'default'} | {100 * r['random_init']:.1f}% "
                     f"| {100 * r['trained']:.1f}% | {r['wall_s']:.0f} s |")
    for demo in DEMOS:
        trained = [100 * r["trained"] for r in results.values() if r["demo"] == demo and not r["threads"]]
        if len(trained) > 1:
            lines.append(f"| {demo}: mean ± sd over {len(trained)} seeds | | | | "
                         f"{statistics.mean(trained):.1f} ± {statistics.stdev(trained):.1f}% | |")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
