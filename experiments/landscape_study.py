"""The loss landscape of MoCo v2 through training on the demo data: split vs plain BatchNorm,
with and without background augmentations, over seeds.

Each run trains the MoCo v2 demo (configs/demo.yaml + demo_bg.yaml, optionally
background_off.yaml), shortened, with ``LandscapeMonitor``: on the same fixed batch and
augmentation draws at initialisation and every few epochs it measures the top Hessian
eigenvalue and the Hutchinson trace of the InfoNCE objective (BatchNorm in train mode,
queue and momentum encoder frozen), the top eigenvalue and trace of the true Fisher of the
InfoNCE softmax (its 1 + K logits), and the top eigenvalue of the second moment of 4
mini-batch gradients (the gradient noise, between tr/4 and tr: no Fisher eigenvalue; runs
before this release logged it as ``val/gradient_moment_top`` and have no Fisher).

Questions (docs/landscape.md): does SGD lower the trace, as Wei & Schwab (arXiv:1910.00195)
show on average in degenerate valleys; does split BatchNorm flatten the Fisher spectrum, as
BatchNorm does for supervised networks (Karakida et al. 2019); what background augmentations do.

    python experiments/landscape_study.py --out runs/landscape_study [--seeds 0 1] [--epochs 12]

Writes results.json and landscape_study.png to --out; finished runs are reused on a rerun.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "experiments"))
from hardness_study import last_values  # noqa: E402

ARMS = {  # name: (batchnorm, background augmentations)
    "plain BN, BG aug": ("plain", True),
    "split BN, BG aug": ("split", True),
    "plain BN, no BG aug": ("plain", False),
    "split BN, no BG aug": ("split", False),
}
QUANTITIES = {"val/hessian_top": "top Hessian eigenvalue", "val/hessian_trace": "Hessian trace",
              "val/fisher_top": "top eigenvalue of the true Fisher", "val/fisher_trace": "true Fisher trace",
              "val/gradient_noise_top": "top eigenvalue of 4 gradients' second moment"}
SHORT = {"val/hessian_top": "top", "val/hessian_trace": "trace", "val/fisher_top": "Fisher top",
         "val/fisher_trace": "Fisher trace", "val/gradient_noise_top": "grad noise"}
RENAMED = {"val/gradient_moment_top": "val/gradient_noise_top"}  # runs logged before this release


def upgraded(record: dict) -> dict:
    """A run's record with the metrics of earlier releases under their present names."""
    for h in record["history"]:
        for old, new in RENAMED.items():
            if old in h:
                h.setdefault(new, h.pop(old))
    return record


def callbacks_overlay(out: Path, every: int) -> Path:
    """Checkpoints and the landscape monitor instead of the demo's geometry monitor."""
    path = out / "landscape_monitor.yaml"
    path.write_text(f"""trainer:
  callbacks:
    - class_path: pytorch_lightning.callbacks.ModelCheckpoint
      init_args: {{save_last: true}}
    - class_path: sslkit.eval.LandscapeMonitor
      init_args: {{every_n_epochs: {every}, batches: 1, trace_samples: 10, tol: 0.01, fisher: true,
                  fisher_batches: 4, at_start: true}}
""")
    return path


def train(out: Path, name: str, batchnorm: str, background: bool, seed: int, epochs: int, num_train: int,
          every: int, extra: list[str]) -> dict:
    """One run, or its record from an earlier run of this script."""
    done = out / f"{name}.json"
    if done.exists():
        return upgraded(json.loads(done.read_text()))
    configs = ["-c", str(REPO / "configs/demo.yaml"), "-c", str(REPO / "configs/demo_bg.yaml")]
    if not background:
        configs += ["-c", str(REPO / "configs/background_off.yaml")]
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "sslkit.cli", "fit", *configs, "-c", str(callbacks_overlay(out, every)),
                    f"--seed_everything={seed}", f"--trainer.max_epochs={epochs}",
                    f"--trainer.check_val_every_n_epoch={epochs}", f"--data.init_args.num_train={num_train}",
                    f"--model.init_args.batchnorm={batchnorm}",
                    f"--trainer.logger.init_args.save_dir={out}", f"--trainer.logger.init_args.name={name}",
                    "--trainer.logger.init_args.version=0", "--trainer.enable_progress_bar=false", *extra],
                   check=True, stdout=subprocess.DEVNULL)
    log = out / name / "version_0"
    last = last_values(log / "metrics.csv")
    record = {"seconds": time.perf_counter() - start, "knn_top1": last["val/knn_top1"],
              "online_top1": last.get("val/online_top1"), "history": json.loads((log / "landscape.json").read_text()),
              "checkpoint": str(log / "checkpoints" / "last.ckpt")}
    done.write_text(json.dumps(record, indent=2))
    return upgraded(record)


def summarise(runs: list[dict]) -> dict:
    """Per epoch, the mean and the seeds' min and max of each quantity; per run, the trace's
    ratios: end over initialisation, first measurement after it over initialisation, and end
    over that first measurement."""
    epochs = [h["epoch"] for h in runs[0]["history"]]
    summary = {"epochs": epochs}
    for key in QUANTITIES:
        if not all(key in h for run in runs for h in run["history"]):
            continue  # (the true Fisher: not in runs before this release)
        values = [[h[key] for h in run["history"]] for run in runs]
        summary[key] = {"mean": [statistics.fmean(v) for v in zip(*values)],
                        "min": [min(v) for v in zip(*values)], "max": [max(v) for v in zip(*values)]}
    summary["trace_end_over_init"] = [run["history"][-1]["val/hessian_trace"] / run["history"][0]["val/hessian_trace"]
                                      for run in runs]
    summary["trace_first_over_init"] = [run["history"][1]["val/hessian_trace"] / run["history"][0]["val/hessian_trace"]
                                        for run in runs]
    summary["trace_end_over_first"] = [run["history"][-1]["val/hessian_trace"] / run["history"][1]["val/hessian_trace"]
                                       for run in runs]
    summary["knn_top1"] = [run["knn_top1"] for run in runs]
    summary["online_top1"] = [run["online_top1"] for run in runs]
    return summary


def paired(runs: dict[str, list[dict]]) -> dict[str, list[float]]:
    """Same-seed ratios at the end of training: split over plain BatchNorm (with and without
    background augmentations) and with over without background augmentations, for the trace
    the true Fisher's top eigenvalue and trace (where measured) and the gradient noise."""
    def end(arm: str, key: str) -> list[float]:
        return [run["history"][-1][key] for run in runs[arm]]

    out = {}
    for key, label in (("val/hessian_trace", "trace"), ("val/fisher_top", "Fisher top"),
                       ("val/fisher_trace", "Fisher trace"), ("val/gradient_noise_top", "gradient noise top")):
        if not all(key in run["history"][-1] for arm in runs.values() for run in arm):
            continue
        for bg in ("BG aug", "no BG aug"):
            if f"split BN, {bg}" not in runs or f"plain BN, {bg}" not in runs:
                continue
            split, plain = end(f"split BN, {bg}", key), end(f"plain BN, {bg}", key)
            out[f"{label}: split / plain BN, {bg}"] = [s / p for s, p in zip(split, plain)]
        for bn in ("plain BN", "split BN"):
            if f"{bn}, BG aug" not in runs or f"{bn}, no BG aug" not in runs:
                continue
            with_, without = end(f"{bn}, BG aug", key), end(f"{bn}, no BG aug", key)
            out[f"{label}: BG aug / no BG aug, {bn}"] = [a / b for a, b in zip(with_, without)]
    return out


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = {k: v for k, v in QUANTITIES.items() if all(k in s for s in results.values())}
    fig, axes = plt.subplots(1, len(shown), figsize=(4.2 * len(shown), 3.4))
    for ax, (key, title) in zip(axes, shown.items()):
        for i, (arm, summary) in enumerate(results.items()):
            style = "-" if "split" in arm else "--"
            ax.plot(summary["epochs"], summary[key]["mean"], style, color=f"C{i}", label=arm, marker="o", ms=3)
            ax.fill_between(summary["epochs"], summary[key]["min"], summary[key]["max"], color=f"C{i}", alpha=0.15)
        ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_title(title, fontsize=9)
    axes[0].legend(fontsize=7)
    fig.suptitle("MoCo v2 demo: InfoNCE landscape on a fixed batch (mean over seeds, band = min-max)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="runs/landscape_study")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--every", type=int, default=3, help="measure every this many epochs")
    parser.add_argument("--num_train", type=int, default=4000)
    parser.add_argument("--arms", type=int, nargs="+", default=list(range(len(ARMS))),
                        help="which arms (0-3, in the order of ARMS)")
    args, extra = parser.parse_known_args()
    extra = [a for a in extra if a != "--"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs: dict[str, list[dict]] = {}
    for seed in args.seeds:
        for i, (arm, (batchnorm, background)) in enumerate(ARMS.items()):
            if i not in args.arms:
                continue
            record = train(out, f"arm{i}_seed{seed}", batchnorm, background, seed, args.epochs, args.num_train,
                           args.every, extra)
            runs.setdefault(arm, []).append(record)
            last = record["history"][-1]
            print(f"{arm}, seed {seed}: top {last['val/hessian_top']:.3g}, trace {last['val/hessian_trace']:.4g}, "
                  f"Fisher top {last.get('val/fisher_top', float('nan')):.3g}, gradient noise "
                  f"{last['val/gradient_noise_top']:.3g}, kNN {100 * record['knn_top1']:.1f}% "
                  f"({record['seconds']:.0f} s)", flush=True)
    results = {arm: summarise(records) for arm, records in runs.items()}
    pairs = paired(runs)
    (out / "results.json").write_text(json.dumps({"settings": vars(args), "arms": results, "paired": pairs,
                                                  "runs": runs}, indent=2))
    plot(results, out / "landscape_study.png")
    shown = [k for k in QUANTITIES if all(k in s for s in results.values())]
    print(f"\n{'arm':<22}" + "".join(f"{SHORT[k] + ' (init -> end)':>26}" for k in shown)
          + f"{'kNN':>8}")
    for arm, s in results.items():
        cells = [f"{s[k]['mean'][0]:.3g} -> {s[k]['mean'][-1]:.3g}" for k in shown]
        print(f"{arm:<22}" + "".join(f"{c:>26}" for c in cells) + f"{100 * statistics.fmean(s['knn_top1']):>7.1f}%")
    print("\ntrace ratios per seed: first measurement / init, end / first measurement")
    for arm, s in results.items():
        print(f"  {arm:<22}" + " ".join(f"{r:8.2g}" for r in s["trace_first_over_init"]) + "   |"
              + " ".join(f"{r:6.2f}" for r in s["trace_end_over_first"]))
    print("\npaired by seed, at the end of training (ratio per seed):")
    for name, ratios in pairs.items():
        print(f"  {name:<58}" + " ".join(f"{r:6.2f}" for r in ratios))
    print(f"\nwrote {out / 'results.json'} and {out / 'landscape_study.png'}")


if __name__ == "__main__":
    main()
