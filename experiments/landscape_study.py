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

from sslkit.eval.intervals import mean_interval  # noqa: E402
from sslkit.reliability import COLLAPSE_THRESHOLD  # noqa: E402

ARMS = {  # name: (batchnorm, background augmentations, batch-size factor, same steps and learning rate)
    "plain BN, BG aug": ("plain", True, 1, False),
    "split BN, BG aug": ("split", True, 1, False),
    "plain BN, no BG aug": ("plain", False, 1, False),
    "split BN, no BG aug": ("split", False, 1, False),
    # SGD's noise, at the same learning-rate-to-batch-size ratio (Wei & Schwab, arXiv:1910.00195): 4x the
    # batch and the (batch-scaled) learning rate, the same epochs, so the same noise scale lr/B over a quarter
    # of the steps; the key encoder's momentum follows the EMA scaling rule, m -> m^4 (Busbridge et al. 2023,
    # "How to scale your EMA"). At lr 0.48 this arm collapses in the demo (docs/landscape.md).
    "plain BN, BG aug, 4x batch and lr": ("plain", True, 4, False),
    # SGD's noise reduced: 4x the batch at the same learning rate, warm-up and momentum per step and the same
    # number of steps (5x the epochs), so the same path length with a quarter of the gradient noise: a
    # step from SGD towards full-batch gradient descent
    "plain BN, BG aug, 4x batch, same steps": ("plain", True, 4, True),
}
BATCH = 256  # the demo's batch size
MOMENTUM = 0.99  # the demo's key-encoder momentum per step (configs/demo.yaml)
WARMUP_EPOCHS = 1  # the demo's warm-up (configs/demo.yaml)
QUANTITIES = {"val/hessian_top": "top Hessian eigenvalue", "val/hessian_trace": "Hessian trace",
              "val/fisher_top": "top eigenvalue of the true Fisher", "val/fisher_trace": "true Fisher trace",
              "val/gradient_noise_top": "top eigenvalue of 4 gradients' second moment",
              "val/adaptive_hessian_top": "top eigenvalue of |w| H |w| (BN-scale invariant)",
              "val/adaptive_hessian_trace": "trace of |w| H |w| (BN-scale invariant)",
              "val/weight_norm": "weight norm of the measured parameters"}
SHORT = {"val/hessian_top": "top", "val/hessian_trace": "trace", "val/fisher_top": "Fisher top",
         "val/fisher_trace": "Fisher trace", "val/gradient_noise_top": "grad noise",
         "val/adaptive_hessian_top": "adaptive top", "val/adaptive_hessian_trace": "adaptive trace",
         "val/weight_norm": "|w|"}
RENAMED = {"val/gradient_moment_top": "val/gradient_noise_top"}  # runs logged before this release


TRAINING = ("train/loss", "train/positive_sim", "train/negative_sim", "train/embedding_spread")


def training_state(metrics: Path) -> dict[str, float]:
    """The last logged loss, positive and negative similarity and embedding spread (about 1
    when spread over the sphere, near 0 when collapsed) of a run: a flat landscape may be a
    collapsed network."""
    last = last_values(metrics)
    return {key: last[key] for key in TRAINING if key in last}


def upgraded(record: dict) -> dict:
    """A run's record with the metrics of earlier releases under their present names, and its
    training state where the record predates it and the run's log is still there."""
    metrics = Path(record["checkpoint"]).parents[1] / "metrics.csv"
    if "train" not in record and metrics.exists():
        record["train"] = training_state(metrics)
    for h in record["history"]:
        for old, new in RENAMED.items():
            if old in h:
                h.setdefault(new, h.pop(old))
    return record


def callbacks_overlay(out: Path, name: str, every: int) -> Path:
    """Checkpoints and the landscape monitor instead of the demo's geometry monitor, measuring
    every arm on batches of the demo's size (the 4x-batch arm on the same images as the others),
    one file per run so that invocations sharing ``out`` never read each other's."""
    path = out / f"{name}_monitor.yaml"
    path.write_text(f"""trainer:
  callbacks:
    - class_path: pytorch_lightning.callbacks.ModelCheckpoint
      init_args: {{save_last: true}}
    - class_path: sslkit.eval.LandscapeMonitor
      init_args: {{every_n_epochs: {every}, batches: 1, trace_samples: 10, tol: 0.01, fisher: true,
                  fisher_batches: 4, at_start: true, batch_size: {BATCH}}}
""")
    return path


def training_configs(background: bool) -> list[str]:
    """The demo with its spurious background cue, with or without background augmentations."""
    configs = ["-c", str(REPO / "configs/demo.yaml"), "-c", str(REPO / "configs/demo_bg.yaml")]
    return configs + (["-c", str(REPO / "configs/background_off.yaml")] if not background else [])


def with_backgrounds(out: Path, name: str, record: dict, background: bool, num_train: int) -> dict:
    """The run's record with the Backgrounds Challenge of its last checkpoint (``sslkit
    backgrounds``: kNN top-1 on Original, Only-FG, Mixed-Same, Mixed-Rand and BG-Gap), which
    shows whether the background augmentations acted on the features by the end of training."""
    if "backgrounds" in record:
        return record
    result = out / f"{name}_backgrounds.json"
    subprocess.run([sys.executable, "-m", "sslkit.cli", "backgrounds", *training_configs(background),
                    f"--data.init_args.num_train={num_train}", "--ckpt_path", record["checkpoint"], "--out", str(result)],
                   check=True, stdout=subprocess.DEVNULL)
    record["backgrounds"] = json.loads(result.read_text())["knn_top1"]
    (out / f"{name}.json").write_text(json.dumps(record, indent=2))
    return record


def train(out: Path, name: str, batchnorm: str, background: bool, seed: int, epochs: int, num_train: int,
          every: int, extra: list[str], batch_factor: int = 1, same_steps: bool = False) -> dict:
    """One run, or its record from an earlier run of this script. With ``same_steps`` the batch
    grows by ``batch_factor`` at the same learning rate, warm-up and momentum per step and the
    same number of steps (so the measurements fall at the same steps); without it the learning
    rate grows with the batch (the demo's batch scaling) and the momentum by the EMA scaling rule."""
    done = out / f"{name}.json"
    if done.exists():
        return upgraded(json.loads(done.read_text()))
    configs = training_configs(background)
    batch, schedule = BATCH * batch_factor, []
    if same_steps:
        stretch = (num_train // BATCH) // (num_train // batch)  # steps per epoch, 1x over this arm's
        epochs, every = epochs * stretch, every * stretch
        schedule = [f"--model.init_args.optim.reference_batch_size={batch}",
                    f"--model.init_args.optim.warmup_epochs={WARMUP_EPOCHS * stretch}"]
    momentum = MOMENTUM if same_steps else MOMENTUM ** batch_factor
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "sslkit.cli", "fit", *configs, "-c", str(callbacks_overlay(out, name, every)),
                    f"--seed_everything={seed}", f"--trainer.max_epochs={epochs}",
                    f"--trainer.check_val_every_n_epoch={epochs}", f"--data.init_args.num_train={num_train}",
                    f"--model.init_args.batchnorm={batchnorm}", f"--data.init_args.batch_size={batch}",
                    f"--trainer.logger.init_args.save_dir={out}", f"--trainer.logger.init_args.name={name}",
                    "--trainer.logger.init_args.version=0", "--trainer.enable_progress_bar=false",
                    f"--model.init_args.momentum={momentum:.6g}", *schedule, *extra],
                   check=True, stdout=subprocess.DEVNULL)
    log = out / name / "version_0"
    last = last_values(log / "metrics.csv")
    record = {"seconds": time.perf_counter() - start, "knn_top1": last["val/knn_top1"],
              "online_top1": last.get("val/online_top1"), "history": json.loads((log / "landscape.json").read_text()),
              "checkpoint": str(log / "checkpoints" / "last.ckpt"), "train": training_state(log / "metrics.csv")}
    done.write_text(json.dumps(record, indent=2))
    return upgraded(record)


def summarise(runs: list[dict]) -> dict:
    """Per measurement (epoch and step), the mean of each quantity over seeds with its 95% t interval (``low``,
    ``high``; from two seeds on) and the seeds' min and max, for the plot. The ratios and their
    intervals are ``landscape_tables``' (rendered from ``runs`` and ``paired``)."""
    epochs = [h["epoch"] for h in runs[0]["history"]]
    summary = {"epochs": epochs, "steps": [h["step"] for h in runs[0]["history"]], "seeds": len(runs)}
    for key in QUANTITIES:
        if not all(key in h for run in runs for h in run["history"]):
            continue  # (the true Fisher, the adaptive Hessian, weight norms: not in runs of earlier releases)
        values = [[h[key] for h in run["history"]] for run in runs]
        summary[key] = {"mean": [statistics.fmean(v) for v in zip(*values)],
                        "min": [min(v) for v in zip(*values)], "max": [max(v) for v in zip(*values)]}
        if len(runs) > 1:
            intervals = [mean_interval(v) for v in zip(*values)]
            summary[key]["low"], summary[key]["high"] = [i.low for i in intervals], [i.high for i in intervals]
    if all("backgrounds" in run for run in runs):
        summary["backgrounds"] = {variant: [run["backgrounds"][variant] for run in runs]
                                  for variant in runs[0]["backgrounds"]}
    summary["knn_top1"] = [run["knn_top1"] for run in runs]
    summary["online_top1"] = [run["online_top1"] for run in runs]
    return summary


def paired(runs: dict[str, list[dict]]) -> dict[str, list[float]]:
    """Same-seed ratios at the end of training: split over plain BatchNorm (with and without
    background augmentations), with over without background augmentations, and the 4x-batch
    control over the plain arm, for the trace, the true Fisher's top eigenvalue and trace, the
    adaptive (BN-scale invariant) Hessian's top eigenvalue and trace, the weight norm and the
    gradient noise (where measured); ``landscape_tables`` gives each its interval."""
    def ratios(top: str, bottom: str, key: str) -> list[float]:
        return [a["history"][-1][key] / b["history"][-1][key] for a, b in same_seeds(runs[top], runs[bottom])]

    comparisons = [(f"split BN, {bg}", f"plain BN, {bg}", f"split / plain BN, {bg}") for bg in ("BG aug", "no BG aug")]
    comparisons += [(f"{bn}, BG aug", f"{bn}, no BG aug", f"BG aug / no BG aug, {bn}") for bn in ("plain BN", "split BN")]
    comparisons += [(arm, "plain BN, BG aug", f"{arm.removeprefix('plain BN, BG aug, ')} / 1x, plain BN, BG aug")
                    for arm in runs if "4x batch" in arm]
    out = {}
    for key, label in (("val/hessian_trace", "trace"), ("val/fisher_top", "Fisher top"),
                       ("val/fisher_trace", "Fisher trace"), ("val/adaptive_hessian_top", "adaptive top"),
                       ("val/adaptive_hessian_trace", "adaptive trace"), ("val/weight_norm", "weight norm"),
                       ("val/gradient_noise_top", "gradient noise top")):
        if not all(key in run["history"][-1] for arm in runs.values() for run in arm):
            continue
        for top, bottom, name in comparisons:
            if top in runs and bottom in runs:
                out[f"{label}: {name}"] = ratios(top, bottom, key)
    return out


def same_seeds(a: list[dict], b: list[dict]) -> list[tuple[dict, dict]]:
    """The records of two arms paired by seed (records of earlier releases, without one: in order)."""
    if not all("seed" in r for r in a + b):
        return list(zip(a, b))
    by_seed = {r["seed"]: r for r in b}
    return [(r, by_seed[r["seed"]]) for r in a if r["seed"] in by_seed]


def background_differences(runs: dict[str, list[dict]]) -> dict[str, dict]:
    """Same-seed differences, with over without background augmentations, of the Backgrounds
    Challenge's kNN top-1 (points), with the 95% t interval of their mean."""
    out = {}
    for bn in ("plain BN", "split BN"):
        pairs = same_seeds(runs.get(f"{bn}, BG aug", []), runs.get(f"{bn}, no BG aug", []))
        if not pairs or not all("backgrounds" in r for pair in pairs for r in pair):
            continue
        for variant in pairs[0][0]["backgrounds"]:
            diffs = [100 * (a["backgrounds"][variant] - b["backgrounds"][variant]) for a, b in pairs]
            entry = {"differences": diffs}
            if len(diffs) > 1:
                interval = mean_interval(diffs)
                entry.update(interval.to_dict(), excludes_0=interval.excludes(0.0))
            out[f"{variant}: BG aug - no BG aug, {bn}"] = entry
    return out


def plot(results: dict, runs: dict[str, list[dict]], path: Path) -> None:
    """Each quantity by step, mean over seeds with the seeds' min-max band (log scale; the
    tables carry the intervals). Arms whose runs collapsed (embedding spread at the end under
    ``NumericalGuard``'s collapse threshold) are left out: their near-zero curvature would set the scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    collapsed = {arm for arm, records in runs.items()
                 if any(r.get("train", {}).get("train/embedding_spread", 1.0) < COLLAPSE_THRESHOLD for r in records)}
    drawn = {arm: s for arm, s in results.items() if arm not in collapsed}
    shown = {k: v for k, v in QUANTITIES.items() if all(k in s for s in drawn.values())}
    columns = (len(shown) + 1) // 2
    fig, axes = plt.subplots(2, columns, figsize=(4.2 * columns, 6.6), squeeze=False)
    for ax, (key, title) in zip(axes.flat, shown.items()):
        for i, (arm, summary) in enumerate(results.items()):
            if arm in collapsed:
                continue
            style = "-" if "split" in arm else "--"
            ax.plot(summary["steps"], summary[key]["mean"], style, color=f"C{i}", label=arm, marker="o", ms=3)
            ax.fill_between(summary["steps"], summary[key]["min"], summary[key]["max"], color=f"C{i}", alpha=0.15)
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_title(title, fontsize=9)
    for ax in list(axes.flat)[len(shown):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    note = f"; not drawn, collapsed: {', '.join(sorted(collapsed))}" if collapsed else ""
    fig.suptitle("MoCo v2 demo: InfoNCE landscape on a fixed batch (mean over seeds, band = seeds' min-max"
                 + note + ")", fontsize=9)
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
                        help=f"which arms (0-{len(ARMS) - 1}, in the order of ARMS)")
    parser.add_argument("--results", default=str(REPO / "docs" / "data" / "landscape_study.json"),
                        help="where the results file the docs cite is written (committed with them)")
    parser.add_argument("--only_finished", action="store_true",
                        help="summarise the runs already finished in --out, training none (a partial study)")
    parser.add_argument("--backgrounds", action="store_true",
                        help="also run the Backgrounds Challenge (sslkit backgrounds) on each run's last checkpoint")
    args, extra = parser.parse_known_args()
    extra = [a for a in extra if a != "--"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs: dict[str, list[dict]] = {}
    for seed in args.seeds:
        for i, (arm, (batchnorm, background, factor, same_steps)) in enumerate(ARMS.items()):
            if i not in args.arms:
                continue
            if args.only_finished and not (out / f"arm{i}_seed{seed}.json").exists():
                print(f"{arm}, seed {seed}: not run (--only_finished)")
                continue
            record = train(out, f"arm{i}_seed{seed}", batchnorm, background, seed, args.epochs, args.num_train,
                           args.every, extra, factor, same_steps)
            if args.backgrounds:
                record = with_backgrounds(out, f"arm{i}_seed{seed}", record, background, args.num_train)
            runs.setdefault(arm, []).append({**record, "seed": seed})
            last = record["history"][-1]
            print(f"{arm}, seed {seed}: top {last['val/hessian_top']:.3g}, trace {last['val/hessian_trace']:.4g}, "
                  f"Fisher top {last.get('val/fisher_top', float('nan')):.3g}, gradient noise "
                  f"{last['val/gradient_noise_top']:.3g}, kNN {100 * record['knn_top1']:.1f}% "
                  f"({record['seconds']:.0f} s)", flush=True)
    results = {arm: summarise(records) for arm, records in runs.items()}
    pairs = paired(runs)
    differences = background_differences(runs)
    summary = {"settings": vars(args), "arms": results, "paired": pairs, "backgrounds_differences": differences,
               "runs": runs}
    text = json.dumps(summary, indent=2)
    (out / "results.json").write_text(text)
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    Path(args.results).write_text(text)
    plot(results, runs, out / "landscape_study.png")
    from landscape_tables import tables

    print("\n" + "\n\n".join(tables(summary)))
    print(f"\nwrote {out / 'results.json'}, {args.results} and {out / 'landscape_study.png'}")


if __name__ == "__main__":
    main()
