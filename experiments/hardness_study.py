"""Which negatives matter (Cai et al. 2020) on the embedded data: MoCo v2 trained with
different hardness bands, same backbone, seed and steps, compared by kNN accuracy and by
the share of same-class negatives in each band.

    python experiments/hardness_study.py --out runs/hardness_study [-- --trainer.accelerator=gpu]

Writes results.json and results.png to --out; finished arms are reused on a rerun.
"""
from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ARMS = {
    "full queue": None,
    "hardest 5%": (0.0, 0.05),
    "hardest 5% without hardest 0.1%": (0.001, 0.05),
    "easiest 95%": (0.05, 1.0),
    "hardest 0.1% only": (0.0, 0.001),
}


def last_values(metrics: Path) -> dict[str, float]:
    """The last logged value of every column of a CSVLogger metrics file."""
    last: dict[str, float] = {}
    with metrics.open() as f:
        for row in csv.DictReader(f):
            for key, value in row.items():
                if value not in ("", None):
                    last[key] = float(value)
    return last


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default=str(REPO / "configs" / "demo.yaml"))
    parser.add_argument("--out", default="runs/hardness_study")
    args, extra = parser.parse_known_args()
    extra = [a for a in extra if a != "--"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    for i, (arm, band) in enumerate(ARMS.items()):
        name = f"arm{i}"
        done = out / f"{name}.json"
        if done.exists():
            results[arm] = json.loads(done.read_text())
            continue
        overrides = [f"--model.init_args.hardness_band=[{band[0]},{band[1]}]"] if band else []
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "sslkit.cli", "fit", "-c", args.config, *overrides,
                        f"--trainer.logger.init_args.save_dir={out}", f"--trainer.logger.init_args.name={name}",
                        "--trainer.logger.init_args.version=0", "--trainer.enable_progress_bar=false",
                        "--model.init_args.hardness_log_every=20", *extra],
                       check=True, stdout=subprocess.DEVNULL)
        seconds = time.perf_counter() - start
        last = last_values(out / name / "version_0" / "metrics.csv")
        record = {"band": band, "seconds": seconds, "knn_top1": last["val/knn_top1"],
                  "same_class_band": last.get("hardness/same_class_band"),
                  "same_class_queue": last.get("hardness/same_class_queue")}
        done.write_text(json.dumps(record))
        results[arm] = record
        print(f"{arm}: kNN {100 * record['knn_top1']:.1f}% ({seconds:.0f} s)", flush=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print(f"\n{'band':<34}{'kNN top-1':>10}{'same class in band':>20}{'in queue':>10}")
    for arm, r in results.items():
        band = r["same_class_band"]
        queue = r["same_class_queue"]
        print(f"{arm:<34}{100 * r['knn_top1']:>9.1f}%"
              f"{'' if band is None else f'{100 * band:.1f}%':>20}{'' if queue is None else f'{100 * queue:.1f}%':>10}")
    plot(results, out / "results.png")
    print(f"\nwrote {out / 'results.json'} and {out / 'results.png'}")


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3))
    names = list(results)
    ax.barh(names[::-1], [100 * results[n]["knn_top1"] for n in names[::-1]], color="C0")
    ax.set_xlabel("kNN top-1 (%) after training")
    ax.set_title("MoCo v2 on SyntheticScenes, by hardness band of the negatives", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
