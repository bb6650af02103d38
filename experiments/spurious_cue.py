"""Background augmentations against a spurious background cue, measured.

Trains the demo_bg recipe with and without background augmentations (same backbone,
seed and epochs; configs/background_off.yaml switches them off), then evaluates each
checkpoint, and the random-init backbone, with `sslkit backgrounds` (kNN on Original,
Only-FG, Mixed-Same, Mixed-Rand, BG-Gap). Writes results.json and results.png to --out.

    python experiments/spurious_cue.py --out runs/spurious_cue --seeds 0 1 [-- --trainer.accelerator=gpu]

Runs whose results are already in --out are reused, so an interrupted study resumes.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VARIANTS = ("original", "only_fg", "mixed_same", "mixed_rand", "bg_gap")


def sslkit(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "sslkit.cli", *args], check=True, stdout=subprocess.DEVNULL)


def evaluate(config: list[str], ckpt: str | None, out: Path, extra: list[str]) -> dict[str, float]:
    args = ["backgrounds", *[a for c in config for a in ("-c", c)], "--out", str(out), *extra]
    if ckpt:
        args += ["--ckpt_path", ckpt]
    sslkit(*args)
    return json.loads(out.read_text())["knn_top1"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", nargs="+", default=[str(REPO / "configs" / "demo.yaml"),
                                                        str(REPO / "configs" / "demo_bg.yaml")])
    parser.add_argument("--out", default="runs/spurious_cue")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    args, extra = parser.parse_known_args()
    extra = [a for a in extra if a != "--"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    arms = {"with background augmentations": list(args.config),
            "without": [*args.config, str(REPO / "configs" / "background_off.yaml")]}
    random_init = out / "random.json"
    results: dict[str, list[dict]] = {"random init": [
        json.loads(random_init.read_text())["knn_top1"] if random_init.exists()
        else evaluate(list(args.config), None, random_init, [])]}
    for arm, config in arms.items():
        results[arm] = []
        for seed in args.seeds:
            name = f"{'bg' if config == list(args.config) else 'nobg'}_seed{seed}"
            if (out / f"{name}.json").exists():  # finished earlier: resume the study
                results[arm].append(json.loads((out / f"{name}.json").read_text())["knn_top1"])
                continue
            start = time.perf_counter()
            sslkit("fit", *[a for c in config for a in ("-c", c)], f"--seed_everything={seed}",
                   f"--trainer.logger.init_args.save_dir={out}", f"--trainer.logger.init_args.name={name}",
                   "--trainer.logger.init_args.version=0", "--trainer.enable_progress_bar=false", *extra)
            seconds = time.perf_counter() - start
            ckpt = out / name / "version_0" / "checkpoints" / "last.ckpt"
            record = evaluate(config, str(ckpt), out / f"{name}.json", [])
            results[arm].append(record)
            print(f"{arm}, seed {seed}: " + ", ".join(f"{k} {100 * record[k]:.1f}" for k in VARIANTS)
                  + f" ({seconds:.0f} s)", flush=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print(f"\n{'kNN top-1 (%)':<32}" + "".join(f"{k:>12}" for k in VARIANTS))
    for arm, records in results.items():
        means = [100 * sum(r[k] for r in records) / len(records) for k in VARIANTS]
        print(f"{arm:<32}" + "".join(f"{m:>12.1f}" for m in means))
    plot(results, out / "results.png")
    print(f"\nwrote {out / 'results.json'} and {out / 'results.png'}")


def plot(results: dict[str, list[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.2))
    width = 0.8 / len(results)
    for i, (arm, records) in enumerate(results.items()):
        means = [100 * sum(r[k] for r in records) / len(records) for k in VARIANTS]
        ax.bar([x + i * width for x in range(len(VARIANTS))], means, width, label=arm)
    ax.set_xticks([x + 0.4 - width / 2 for x in range(len(VARIANTS))], [v.replace("_", "-") for v in VARIANTS])
    ax.set_ylabel("kNN top-1 (%)")
    ax.set_title("SyntheticScenes, background tied to class in 90% of scenes")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
