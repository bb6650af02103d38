"""The demos over several seeds: kNN top-1 at random initialisation and after training,
the wall time of each run, and the last ``val/online_top1`` beside ``sslkit probe`` of the
same checkpoint (on the run's own data), from the committed configs.

    python experiments/demo_seeds.py --out runs/demo_seeds --seeds 0 1 2
    python experiments/demo_seeds.py --demos demo --seeds 0 --threads 1   # thread-count dependence
    python experiments/demo_seeds.py --threads 1 --jobs 2                  # two runs at a time on 2 cores

Writes results.json and a markdown table (results.md) to --out; finished runs are reused.
Wall times depend on the machine as much as on the demo, so machine.json records the
machine's speed at the start, and each new run's record keeps it (``machine_images_per_s``):
training images/s of the demos' ``test_resnet`` (32 px, batch 256, forward and backward) with
the runs' thread count. Scale a wall time by the ratio of two machines' speeds before
comparing it with another machine's.
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEMOS = {
    "demo": ["configs/demo.yaml"],
    "demo_byol": ["configs/demo.yaml", "configs/demo_byol.yaml"],
    "demo_swav": ["configs/demo.yaml", "configs/demo_swav.yaml"],
    "demo_simclr": ["configs/demo.yaml", "configs/demo_simclr.yaml"],
    "demo_simsiam": ["configs/demo.yaml", "configs/demo_simsiam.yaml"],
    "demo_barlow_twins": ["configs/demo.yaml", "configs/demo_barlow_twins.yaml"],
    "demo_vicreg": ["configs/demo.yaml", "configs/demo_vicreg.yaml"],
    "demo_mocov3": ["configs/demo.yaml", "configs/demo_mocov3.yaml"],
    "demo_dino": ["configs/demo.yaml", "configs/demo_dino.yaml"],
}
# the overlays' data where it differs from configs/linear_probe.yaml's (greyscale scenes),
# so the probe scores the run's own val split
PROBE_DATA = {"demo_simclr": ["--data.init_args.saturation=0.3"]}


SPEED_SCRIPT = f"""
import json, sys, timm, torch
sys.path.insert(0, {str(REPO / "tests" / "benchmarks")!r})
from timing import timed
net = timm.create_model("test_resnet", num_classes=0)
x = torch.randn(256, 3, 32, 32)
seconds = timed(lambda: net(x).sum().backward(), repeats=5, device=torch.device("cpu"))
print(json.dumps({{"images_per_s": 256 / seconds, "threads": torch.get_num_threads()}}))
"""


def machine_speed(env: dict) -> dict:
    """Training images/s of ``test_resnet`` at 32 px with ``env``'s thread count (a subprocess)."""
    done = subprocess.run([sys.executable, "-c", SPEED_SCRIPT], check=True, capture_output=True, text=True, env=env)
    return json.loads(done.stdout.strip().splitlines()[-1])


def last_logged(metrics: Path, key: str = "val/knn_top1") -> float:
    """The last logged ``key`` of a CSVLogger metrics file."""
    values = [float(r[key]) for r in csv.DictReader(metrics.open()) if r.get(key)]
    if not values:
        raise RuntimeError(f"{metrics} has no {key}")
    return values[-1]


def probe(checkpoint: Path, demo: str, env: dict) -> float:
    """``sslkit probe`` (fast protocol) top-1 of ``checkpoint`` on the demo's data."""
    out = checkpoint.with_name("probe_fast.json")
    subprocess.run([sys.executable, "-m", "sslkit.cli", "probe", "-c", str(REPO / "configs/linear_probe.yaml"),
                    "--ckpt_path", str(checkpoint), *PROBE_DATA.get(demo, []), "--out", str(out)],
                   check=True, stdout=subprocess.DEVNULL, env=env)
    return json.loads(out.read_text())["top1"]


def run(command: str, config: list[str], out: Path, name: str, seed: int, env: dict) -> float:
    """Runs ``sslkit <command>`` and returns its wall time in seconds."""
    args = [sys.executable, "-m", "sslkit.cli", command, *[a for c in config for a in ("-c", str(REPO / c))],
            f"--seed_everything={seed}", f"--trainer.logger.init_args.save_dir={out}",
            f"--trainer.logger.init_args.name={name}", "--trainer.logger.init_args.version=0",
            "--trainer.enable_progress_bar=false"]
    start = time.perf_counter()
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, env=env)
    return time.perf_counter() - start


def one_run(demo: str, seed: int, out: Path, env: dict, tag: str, threads: int | None) -> tuple[str, dict]:
    """Random-init kNN, training, and the probe of the last checkpoint, for one demo and seed."""
    key = f"{demo}_seed{seed}{tag}"
    config = DEMOS[demo]
    run("validate", config, out, f"{key}_init", seed, env)
    init = last_logged(out / f"{key}_init" / "version_0" / "metrics.csv")
    seconds = run("fit", config, out, key, seed, env)
    metrics = out / key / "version_0" / "metrics.csv"
    trained, online = last_logged(metrics), last_logged(metrics, "val/online_top1")
    probed = probe(out / key / "version_0" / "checkpoints" / "last.ckpt", demo, env)
    print(f"{key}: {100 * init:.1f}% -> {100 * trained:.1f}% in {seconds:.0f} s; online {100 * online:.1f}%, "
          f"probe {100 * probed:.1f}%", flush=True)
    return key, {"demo": demo, "seed": seed, "threads": threads, "random_init": init, "trained": trained,
                 "wall_s": seconds, "online_top1": online, "probe_top1": probed}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="runs/demo_seeds")
    parser.add_argument("--demos", nargs="+", default=list(DEMOS), choices=list(DEMOS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=None, help="OMP/MKL threads (default: torch's choice)")
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time (give --threads so they share the cores)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    tag = ""
    if args.threads:
        env.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
        tag = f"_t{args.threads}"
    speed = machine_speed(env)
    (out / "machine.json").write_text(json.dumps(speed, indent=2))
    print(f"machine: test_resnet trains at {speed['images_per_s']:.0f} images/s with {speed['threads']} "
          f"thread(s) (32 px, batch 256)", flush=True)
    results_file = out / "results.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    todo = [(d, s) for d in args.demos for s in args.seeds if f"{d}_seed{s}{tag}" not in results]
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for key, record in pool.map(lambda job: one_run(*job, out, env, tag, args.threads), todo):
            results[key] = {**record, "jobs": args.jobs, "machine_images_per_s": speed["images_per_s"]}
            results_file.write_text(json.dumps(results, indent=2))
    lines = ["| run | seed | threads | random init | trained | wall | online top-1 | probe top-1 | gap |",
             "|---|---|---|---|---|---|---|---|---|"]
    order = sorted(results.values(), key=lambda r: (list(DEMOS).index(r["demo"]), r["seed"], r["threads"] or 0))
    for r in order:
        gap = ((f"{100 * r['online_top1']:.1f}% | {100 * r['probe_top1']:.1f}% | "
                f"{100 * (r['probe_top1'] - r['online_top1']):.1f}") if "probe_top1" in r else " | | ")
        lines.append(f"| {r['demo']} | {r['seed']} | {r['threads'] or 'default'} | {100 * r['random_init']:.1f}% "
                     f"| {100 * r['trained']:.1f}% | {r['wall_s']:.0f} s | {gap} |")
    for demo in DEMOS:
        for threads in sorted({r["threads"] or 0 for r in results.values() if r["demo"] == demo}):
            runs = [r for r in results.values() if r["demo"] == demo and (r["threads"] or 0) == threads]
            trained = [100 * r["trained"] for r in runs]
            gain = [100 * (r["trained"] - r["random_init"]) for r in runs]
            if len(trained) > 1:
                lines.append(f"| {demo}: {len(trained)} seeds | | {threads or 'default'} | | "
                             f"{statistics.mean(trained):.1f} ± {statistics.stdev(trained):.1f}% "
                             f"(range {max(trained) - min(trained):.1f}) | | gain {min(gain):.1f} to "
                             f"{max(gain):.1f} | | |")
    lines.insert(0, f"test_resnet trains at {speed['images_per_s']:.0f} images/s on this machine with "
                    f"{speed['threads']} thread(s) (32 px, batch 256, measured before this call's new runs; each record in results.json "
                    f"keeps the speed of the call that made it as machine_images_per_s).\n")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
